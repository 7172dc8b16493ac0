"""DistributedDataParallel training: 2 CPU processes (gloo) through the real command line.

The acceptance test of multi-process training: ``selfpick train --multi-gpu --nproc 2
--device cpu`` starts torchrun itself, both ranks train, and rank 0 alone validates,
pseudo-labels and writes -- so the experiment folder looks exactly like a 1-process one (one
set of models, one metrics entry per stage, a log without repeated lines) and reaches a
comparable validation F1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

import pytest
import torch

from conftest import TINY_DIAMETER

# Settings of conftest.tiny_config as flags, so the DDP run and the session's 1-process
# tiny_experiment train with the same settings.
TINY_FLAGS = ["--particle-diameter", str(TINY_DIAMETER), "--downsample", "2", "--depth", "2",
              "--width", "8", "--crop-size", "64", "--crops-per-epoch", "16", "--batch-size", "4",
              "--initial-epochs", "2", "--retrain-epochs", "1", "--self-training-iterations", "1",
              "--self-train-complete-labels", "--val-fraction", "0.25", "--seed", "0"]
STAGES = ["iteration_0_supervised", "iteration_1_selftrain"]
# Two epochs on three micrographs: F1 moves by a few hundredths with the batch composition
# (2 ranks x 4 crops per step instead of 4), so "comparable" is this close.
F1_TOLERANCE = 0.15


def _selfpick_env() -> dict[str, str]:
    env = dict(os.environ)
    # Two processes on a 2-core machine: one thread each, or they fight over the cores.
    env["OMP_NUM_THREADS"] = "1"
    env.pop("WORLD_SIZE", None)  # never inherit a surrounding torchrun's rank
    env.pop("RANK", None)
    return env


def _train(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfpick", "train", *args],
                          capture_output=True, text=True, timeout=timeout, env=_selfpick_env())


def _best_f1(metrics: dict) -> float:
    from selfpick.training.experiment import selection_f1

    return max(selection_f1(s) for s in metrics["stages"])


@pytest.mark.slow
def test_two_gloo_processes_train_like_one(tiny_data, tiny_experiment, tmp_path):
    out = tmp_path / "ddp"
    data = tiny_data.output_dir
    proc = _train("--image-dir", str(data / "micrographs"),
                  "--coords-file", str(data / "labels" / "coordinates.json"),
                  "--output-dir", str(out), *TINY_FLAGS,
                  "--multi-gpu", "--nproc", "2", "--device", "cpu")
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, report
    # Both ranks joined one process group.
    assert "DistributedDataParallel: 2 processes, gloo backend" in proc.stderr, report

    # One set of model files, nothing half-written or left behind.
    for stage in STAGES:
        assert (out / stage / "model.pt").is_file()
        assert (out / stage / "metrics.json").is_file()
        assert not (out / stage / "checkpoint.pt").exists()
    assert (out / "best_model.pt").is_file() and (out / "final_model.pt").is_file()
    assert not list(out.rglob("*.tmp")), "temporary files left behind (raced writes?)"
    assert sorted(p.name for p in out.glob("iteration_*")) == STAGES

    # metrics.json: exactly one entry per stage.
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["stage"] for s in metrics["stages"]] == STAGES

    # training.log written by rank 0 alone: no line twice, each epoch once.
    lines = (out / "training.log").read_text().splitlines()
    messages = [re.sub(r"^\S+ \S+ \w+ ", "", line) for line in lines if line.strip()]
    repeated = [m for m, c in Counter(messages).items() if c > 1]
    assert not repeated, f"lines logged more than once: {repeated}"
    assert sum(m.startswith("selfpick train ") for m in messages) == 1
    for stage, epochs in (("iteration_0_supervised", 2), ("iteration_1_selftrain", 1)):
        for e in range(1, epochs + 1):
            assert sum(m.startswith(f"{stage} epoch {e}/{epochs}:") for m in messages) == 1

    # Pseudo-labels were made once and shared (not recomputed per rank).
    assert len(list((out / "iteration_1_selftrain" / "pseudo_labels").glob("*.npy"))) == 3

    # The saved model is a normal single-process model (no DDP "module." prefix).
    from selfpick.model.modelfile import load_model

    saved = load_model(out / "best_model.pt", torch.device("cpu"))
    assert not any(k.startswith("module.") for k in saved.model.state_dict())

    # Validation F1 comparable to the same settings in one process.
    ref = json.loads((tiny_experiment.output_dir / "metrics.json").read_text())
    f1_ddp, f1_one = _best_f1(metrics), _best_f1(ref)
    assert f1_ddp >= 0.5, f"DDP run did not learn: best validation F1 {f1_ddp:.3f}"
    assert abs(f1_ddp - f1_one) <= F1_TOLERANCE, (f1_ddp, f1_one)


def test_multi_gpu_refuses_an_existing_experiment_before_starting_processes(tiny_data,
                                                                            tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "config.json").write_text("{}")
    data = tiny_data.output_dir
    proc = _train("--image-dir", str(data / "micrographs"),
                  "--coords-file", str(data / "labels" / "coordinates.json"),
                  "--output-dir", str(out), *TINY_FLAGS,
                  "--multi-gpu", "--nproc", "2", "--device", "cpu", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--resume" in proc.stderr and "Traceback" not in proc.stderr
    assert "starting 2 training processes" not in proc.stderr
