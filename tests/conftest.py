"""Shared fixtures: tiny simulated data sets and a tiny trained experiment.

Everything here is small enough to train in seconds on 2 CPU cores; tests that need a trained
model share the session-scoped ``tiny_experiment`` instead of training their own.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

# Two cores on CI: one BLAS/OpenMP thread per test process keeps pytest-xdist workers from
# oversubscribing the machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "real"
BETAGAL = REAL_DATA / "empiar10017_betagal_cryosegnet"

TINY_SIZE = 256  # micrograph side, original pixels
TINY_DIAMETER = 24.0  # particle diameter, original pixels


def tiny_simulation(output: Path, n: int = 4, seed: int = 1, label_fraction: float = 1.0,
                    size: int = TINY_SIZE, diameter: float = TINY_DIAMETER, snr: float = 0.3):
    """Simulate ``n`` small micrographs (easy SNR: the tests check plumbing, not accuracy)."""
    from selfpick.simulate import SimulationConfig, simulate_dataset

    cfg = SimulationConfig(n_micrographs=n, size=size, diameter=diameter, snr=snr,
                           label_fraction=label_fraction, seed=seed)
    return simulate_dataset(cfg, output)


def tiny_config(data_dir: Path, output_dir: Path, **overrides):
    """A Config that trains a tiny U-Net for a few epochs on a ``tiny_simulation`` folder.

    ``overrides`` are flat setting names (``initial_epochs=3``).
    """
    from selfpick.config import Config

    cfg = Config()
    cfg.update({
        "image_dir": str(Path(data_dir) / "micrographs"),
        "coords_file": str(Path(data_dir) / "labels" / "coordinates.json"),
        "particle_diameter": TINY_DIAMETER,
        "output_dir": str(output_dir),
        "downsample": 2.0,
        "depth": 2,
        "width": 8,
        "crop_size": 64,
        "crops_per_epoch": 16,
        "batch_size": 4,
        "initial_epochs": 2,
        "retrain_epochs": 1,
        "self_training_iterations": 1,
        # Simulated labels are complete; the tests exercise self-training all the same.
        "self_train_complete_labels": True,
        "val_fraction": 0.25,
        "seed": 0,
    })
    cfg.update(overrides)
    return cfg


@pytest.fixture(autouse=True)
def _no_console_log_between_tests():
    """``selfpick.cli.main`` installs a console log handler on the "selfpick" logger; drop it
    after each test so one test's logging set-up never shapes another test's output."""
    yield
    logger = logging.getLogger("selfpick")
    for handler in [h for h in logger.handlers if getattr(h, "_selfpick_console", False)]:
        logger.removeHandler(handler)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """4 simulated 256-px micrographs with complete labels (session-wide, read-only)."""
    return tiny_simulation(tmp_path_factory.mktemp("tiny_data") / "sim")


@pytest.fixture(scope="session")
def tiny_experiment(tiny_data, tmp_path_factory):
    """A finished tiny experiment (supervised + 1 self-training iteration); do not modify."""
    from selfpick.training.experiment import run_training

    out = tmp_path_factory.mktemp("tiny_experiment") / "exp"
    result = run_training(tiny_config(tiny_data.output_dir, out), progress=False)
    return result


@pytest.fixture
def real_betagal():
    """The EMPIAR-10017 folder, or skip when ../shared/data/real is absent."""
    if not BETAGAL.is_dir():
        pytest.skip(f"real data not available at {BETAGAL}")
    return BETAGAL
