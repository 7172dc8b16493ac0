"""Picking on a CUDA GPU gives what picking on the CPU gives (skipped without a GPU: CI has
none; run on a GPU machine with ``pytest tests/picking/test_cuda.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from selfpick.config import PreprocessConfig
from selfpick.io import coords as coordio
from selfpick.io.micrographs import micrograph_name
from selfpick.model.modelfile import load_model
from selfpick.picking.pick import PickOptions, pick
from selfpick.preprocess import preprocess, preprocess_tensor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_preprocessing_on_the_gpu_equals_the_cpu_one():
    img = (np.random.default_rng(0).normal(size=(1536, 2048)) * 4 + 30).astype(np.float32)
    want, want_scale = preprocess(img, 2.7, PreprocessConfig())
    got, got_scale = preprocess_tensor(torch.from_numpy(img).cuda(), 2.7, PreprocessConfig())
    assert got.is_cuda and got_scale == want_scale
    np.testing.assert_allclose(got.cpu().numpy(), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("options", [{}, {"batch_size": 3}, {"preprocess_on": "cpu"}])
def test_gpu_picks_are_the_cpu_picks(tiny_experiment, tiny_data, tmp_path, options):
    """bf16 on the GPU moves scores by about a hundredth: picks well above the threshold
    must all be found, at the same places."""
    model = tiny_experiment.output_dir / "best_model.pt"
    threshold = load_model(model).threshold
    tables = {}
    for device in ("cpu", "cuda"):
        opts = PickOptions(fmt="csv", device=device, **(options if device == "cuda" else {}))
        pick(model, tiny_data.micrographs, tmp_path / device, opts, progress=False)
        tables[device] = coordio.read_coordinates(tmp_path / device / "picks.csv", "csv",
                                                  allow_empty=True)
    for path in tiny_data.micrographs:
        name = micrograph_name(path)
        cpu, gpu = (t[t["micrograph"] == name] for t in (tables["cpu"], tables["cuda"]))
        sure = cpu[cpu["score"] >= threshold + 0.05]
        assert len(sure) > 0
        d, _ = cKDTree(gpu[["x", "y"]].to_numpy()).query(sure[["x", "y"]].to_numpy())
        assert np.all(d < 1.0), f"{name}: CPU picks missing on the GPU ({np.sum(d >= 1.0)})"
        assert abs(len(gpu) - len(cpu)) <= 0.05 * len(cpu) + 2
