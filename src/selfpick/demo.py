"""The built-in demonstration: simulate -> train -> pick -> evaluate -> report.

Everything is written under one folder (``demo_output/`` by default)::

    demo_output/
    ├── data/            simulated micrographs, complete truth, partial labels, preview.png
    ├── experiment/      the training experiment (see selfpick.training.experiment)
    ├── picks/           picks of the held-out micrographs (RELION autopick STAR)
    ├── test_metrics.json  held-out particle-level metrics against the complete truth
    └── experiment/report/ report.html with figures (when the report module is available)
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from selfpick.config import Config
from selfpick.errors import OutputError

log = logging.getLogger("selfpick")


@dataclass
class DemoSettings:
    n_train: int = 8  # labelled micrographs (a 1-in-8 validation split is taken from them)
    n_test: int = 2  # held-out micrographs, never seen in training
    size: int = 1024  # micrograph side, pixels
    diameter: float = 40.0  # particle diameter, pixels
    label_fraction: float = 0.5  # share of particles the "hand-picker" labelled
    initial_epochs: int = 12
    retrain_epochs: int = 5
    iterations: int = 2
    seed: int = 0


def run_demo(output: str | Path = "demo_output", settings: DemoSettings | None = None,
             overwrite: bool = True, progress: bool = True) -> dict:
    """Run the whole pipeline on simulated data; returns a summary dict."""
    from selfpick.evaluation.evaluate import evaluate_picks, metrics_table
    from selfpick.picking.pick import PickOptions, pick
    from selfpick.simulate import SimulationConfig, simulate_dataset
    from selfpick.training.experiment import run_training, stage_table
    from selfpick.utils.atomic import atomic_write_json, atomic_write_text

    s = settings or DemoSettings()
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputError("the demo folder exists; remove it or allow overwriting", out)
        if not (out / "data" / "simulation.json").exists() and not (out / "experiment").exists():
            raise OutputError("the folder is not empty and does not look like a selfpick demo; "
                              "choose another --output", out)
        shutil.rmtree(out)
    t0 = time.perf_counter()
    times = {}

    log.info("1/5 simulating %d micrographs (%d px, particle %.0f px, %.0f%% of particles "
             "labelled)", s.n_train + s.n_test, s.size, s.diameter, 100 * s.label_fraction)
    sim = simulate_dataset(SimulationConfig(n_micrographs=s.n_train + s.n_test, size=s.size,
                                            diameter=s.diameter, label_fraction=s.label_fraction,
                                            seed=s.seed), out / "data")
    mics = sorted(sim.micrographs)
    train, test = mics[: s.n_train], mics[s.n_train:]
    atomic_write_text(out / "data" / "train_micrographs.txt",
                      "\n".join(str(p.resolve()) for p in train) + "\n")
    atomic_write_text(out / "data" / "test_micrographs.txt",
                      "\n".join(str(p.resolve()) for p in test) + "\n")
    times["simulate"] = time.perf_counter() - t0

    log.info("2/5 training: supervised, then %d self-training iterations", s.iterations)
    t = time.perf_counter()
    cfg = Config()
    cfg.data.image_dir = str(out / "data" / "train_micrographs.txt")
    cfg.data.coords_file = str(out / "data" / "labels" / "coordinates.json")
    cfg.data.particle_diameter = s.diameter
    cfg.train.output_dir = str(out / "experiment")
    cfg.train.initial_epochs = s.initial_epochs
    cfg.train.retrain_epochs = s.retrain_epochs
    cfg.train.seed = s.seed
    cfg.train.val_fraction = 1 / s.n_train
    cfg.selftrain.self_training_iterations = s.iterations
    result = run_training(cfg, command_line=["(selfpick demo)"], progress=progress)
    times["train"] = time.perf_counter() - t
    table = stage_table(result.stages)

    log.info("3/5 picking the %d held-out micrographs", len(test))
    t = time.perf_counter()
    best_model = out / "experiment" / "best_model.pt"
    pick(best_model, [str(p) for p in test], out / "picks", PickOptions(fmt="star"),
         progress=progress)
    times["pick"] = time.perf_counter() - t

    log.info("4/5 evaluating the picks against the complete truth")
    test_list = out / "data" / "test_micrographs.txt"
    metrics = evaluate_picks(out / "picks" / "autopick.star", test_list,
                             out / "data" / "truth" / "coordinates.json",
                             particle_diameter=s.diameter)
    atomic_write_json(out / "test_metrics.json", metrics)

    report_path = None
    t = time.perf_counter()
    try:
        from selfpick.report.html import build_report

        log.info("5/5 writing the report")
        report_path = build_report(out / "experiment", image_dir=test_list,
                                   coords_file=out / "data" / "truth" / "coordinates.json",
                                   picks=out / "picks" / "autopick.star")
    except ImportError:
        log.info("5/5 report: not available in this build")
    times["report"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    p = metrics["particle"]
    summary = {
        "stages": table,
        "best_stage": result.best_stage,
        "test": {k: p[k] for k in ("precision", "recall", "f1", "best_f1", "average_precision",
                                   "n_true", "n_pred")},
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "report": str(report_path) if report_path else None,
        "test_table": metrics_table(metrics),
    }
    atomic_write_json(out / "demo_summary.json", summary)
    return summary
