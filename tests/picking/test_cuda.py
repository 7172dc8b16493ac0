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
    """bf16 on the GPU moves scores by about a hundredth: nearly every pick well above the
    threshold must be found at the same place (seen on an H200: 1 of ~160 was not -- two
    close maxima of nearly equal score, of which the NMS kept the other)."""
    model = tiny_experiment.output_dir / "best_model.pt"
    threshold = load_model(model).threshold
    tables = {}
    for device in ("cpu", "cuda"):
        opts = PickOptions(fmt="csv", device=device, **(options if device == "cuda" else {}))
        pick(model, tiny_data.micrographs, tmp_path / device, opts, progress=False)
        tables[device] = coordio.read_coordinates(tmp_path / device / "picks.csv", "csv",
                                                  allow_empty=True)
    found = total = 0
    for path in tiny_data.micrographs:
        name = micrograph_name(path)
        cpu, gpu = (t[t["micrograph"] == name] for t in (tables["cpu"], tables["cuda"]))
        sure = cpu[cpu["score"] >= threshold + 0.05]
        assert len(sure) > 0
        d, _ = cKDTree(gpu[["x", "y"]].to_numpy()).query(sure[["x", "y"]].to_numpy())
        found += int(np.sum(d < 1.0))
        total += len(sure)
        assert abs(len(gpu) - len(cpu)) <= 0.05 * len(cpu) + 2
    assert found >= 0.95 * total, f"{total - found} of {total} CPU picks not found on the GPU"
