"""The optimisation loop: stopping a stage early (``stop_after``), also on resume."""

from __future__ import annotations

import numpy as np
import torch

from selfpick.config import TrainConfig
from selfpick.model.losses import CombinedLoss
from selfpick.training.data import CropDataset
from selfpick.training.loop import train_stage


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(32, 32)).astype(np.float32)
    target = (rng.random((32, 32)) < 0.1).astype(np.int8)
    data = CropDataset([image], [target], crop=16, length=4, seed=seed)
    return model, data, TrainConfig(batch_size=2, workers=0)


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_stop_after_ends_the_stage_and_sees_every_epoch(tmp_path):
    model, data, cfg = _setup()
    seen = []

    def stop(done: int) -> bool:
        seen.append(done)
        return done == 2

    history = train_stage(model, data, cfg, 5, torch.device("cpu"), CombinedLoss(), "s",
                          tmp_path / "ckpt.pt", progress=False, stop_after=stop)
    assert seen == [1, 2] and [e["epoch"] for e in history.epochs] == [1, 2]


def test_a_stage_let_run_is_the_stage_without_stop_after(tmp_path):
    runs = []
    for stop in (None, lambda done: False):
        model, data, cfg = _setup()
        train_stage(model, data, cfg, 3, torch.device("cpu"), CombinedLoss(), "s",
                    None, progress=False, stop_after=stop)
        runs.append(_flat(model))
    assert torch.equal(runs[0], runs[1])


def test_on_resume_stop_after_is_asked_about_the_epochs_already_done(tmp_path):
    model, data, cfg = _setup()
    ckpt = tmp_path / "ckpt.pt"
    train_stage(model, data, cfg, 5, torch.device("cpu"), CombinedLoss(), "s", ckpt,
                progress=False, stop_after=lambda done: done == 2)
    stopped = _flat(model)
    fresh, _, _ = _setup(seed=1)  # other weights: the checkpoint must replace them
    seen = []

    def stop(done: int) -> bool:
        seen.append(done)
        return done == 2

    history = train_stage(fresh, data, cfg, 5, torch.device("cpu"), CombinedLoss(), "s", ckpt,
                          progress=False, stop_after=stop)
    assert seen == [2] and len(history.epochs) == 2
    assert torch.equal(_flat(fresh), stopped)
