"""Train a picker: supervised U-Net training, then iterative self-training on the particles
you did not label (skipped when your labels look complete; --self-train-complete-labels).

Examples:
  # CryoPPP-style per-micrograph CSVs (diameter taken from the files)
  selfpick train --image-dir micrographs/ --coords-file coordinates/ --output-dir exp1

  # the original script's command line still works
  selfpick train --image-dir data/images --coords-file data/coordinates.json \\
      --output-dir experiments/v1 --initial-epochs 100 --self-training-iterations 3 \\
      --retrain-epochs 30 --batch-size 128 --learning-rate 0.001 --particle-radius 10

  # continue after an interruption (a crash, Ctrl-C, a job time limit)
  selfpick train --output-dir exp1 --resume

  # every flag can also come from a JSON/YAML file with the same names
  selfpick train --config settings.yaml --output-dir exp2

With a few picks (say 100-300 particles on 1-5 micrographs), give every other micrograph
too, without coordinates or with --unlabeled-dir: self-training learns from them. Then:
  1. validation: 10 % of the labelled micrographs are held out (--val-fraction); with 1 or 2
     labelled micrographs (3 with 120 picks or more), or picks so sparse that a held-out
     micrograph would carry fewer than 30, a strip of a quarter of each one's rows instead,
     never trained on or pseudo-labelled (config.json: split.val_regions);
  2. the share of particles you picked (label completeness) is estimated on validation from
     the picks the model is surest of, with its binomial error. Below 0.8 precision is
     corrected for it and the threshold is where the corrected F1, averaged over that error,
     is highest (a share read too high would put it among the particles); with fewer than 30
     labelled validation particles, in the middle of the thresholds within one standard
     error of the best (a fresh student, below, at the maximum: its scores crowd near 0 and 1);
  3. below 0.5 (below 0.8 with fewer than 30 labelled validation particles) the supervised
     stage goes on for --pu-epochs (20) with a positive-unlabelled loss (unpicked particles
     are not background) and keeps the model that validates better (with fewer than 30, the
     positive-unlabelled one). The share is first read after a quarter of the supervised
     epochs (--pu-after); under 0.15, read on 30 or more labelled validation particles,
     supervised training stops there and the remaining epochs use the positive-unlabelled
     loss;
  4. self-training (--self-training-iterations, 1; skipped from 0.8 on) turns confident peaks
     on every training and unlabelled micrograph into pseudo-particles (at least half of the
     particles the picks imply) and trains with a positive-unlabelled loss: other pixels are
     unlabelled, a share of them taken to be particles not picked yet (--unpicked-pixels).
     With strip validation it trains a fresh network on the pseudo-labels instead of
     fine-tuning the supervised one (--student, --student-epochs);
  5. best_model.pt is the latest stage that validates within one standard error of the best.
  training.log, metrics.json and selfpick report say for each stage the estimated
  completeness and its error, the thresholds the validation picks cannot tell apart, whether
  the positive-unlabelled model was kept, and how many pseudo-particles were added with their
  estimated precision.

The experiment folder gets config.json, training.log, metrics.json, one folder per stage
(model.pt, metrics.json, visualization.png), best_model.pt and final_model.pt. Pick with
  selfpick pick --model exp1/best_model.pt --images 'more/*.mrc' --output picks/
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from selfpick.config import add_config_arguments, config_from_args, given_keys, load_config_file
from selfpick.errors import OutputError, SelfpickError

log = logging.getLogger("selfpick")

SECTIONS = ("data", "preprocess", "model", "targets", "loss", "train", "selftrain", "pick")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="JSON or YAML file of settings (flat names as the flags, e.g. "
                        "initial_epochs: 20); flags given on the command line win")
    parser.add_argument("--resume", action="store_true",
                        help="continue the experiment in --output-dir after its last completed "
                        "epoch/stage (the experiment's own settings are used)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing experiment in --output-dir")
    parser.add_argument("--nproc", type=int, default=None, metavar="N",
                        help="with --multi-gpu: number of processes (default: one per GPU)")
    add_config_arguments(parser, SECTIONS)


def main(args: argparse.Namespace) -> int:
    from selfpick.training.experiment import run_training, stage_table

    base = load_config_file(args.config) if args.config else None
    cfg = config_from_args(args, base, source=args.config)
    if args.resume and not cfg.train.output_dir:
        raise SelfpickError("--resume needs --output-dir (the experiment to continue)")
    if args.resume and cfg.train.output_dir and not cfg.data.image_dir:
        # Resuming needs only the folder: the data paths are in its config.json.
        saved = Path(cfg.train.output_dir) / "config.json"
        if saved.is_file():
            cfg.update({k: v for k, v in load_config_file(saved).get("data", {}).items()},
                       source=saved)
    if cfg.train.multi_gpu and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _launch_torchrun(args, cfg)
    argv = _command_argv(args)
    try:
        result = run_training(cfg, resume=args.resume, overwrite=args.overwrite,
                              command_line=argv, progress=not args.quiet,
                              explicit=given_keys(args, base))
    finally:
        # Under torchrun: leave the process group cleanly (no-op in a single process).
        from selfpick.training import distributed

        distributed.shutdown()
    if result.stages:
        print(stage_table(result.stages))
        print(f"\nbest stage: {result.best_stage}; models in {result.output_dir}")
    return 0


def _command_argv(args: argparse.Namespace) -> list[str]:
    """The arguments after ``train`` as given to ``selfpick.cli.main``."""
    argv = list(getattr(args, "_argv", sys.argv[1:]))
    return argv[1:] if argv[:1] == ["train"] else argv


def _check_data(cfg) -> None:
    """The cheap input checks rank 0 would make, before any process starts: the micrographs
    exist and the coordinates read and match (errors are then one line with exit code 2)."""
    from selfpick.errors import InputError
    from selfpick.io import coords
    from selfpick.io.micrographs import list_micrographs, micrograph_name

    if not cfg.data.image_dir:
        raise InputError("no micrographs given: use --image-dir")
    if not cfg.data.coords_file:
        raise InputError("no coordinates given: use --coords-file")
    names = [micrograph_name(p) for p in list_micrographs(cfg.data.image_dir)]
    picks = coords.read_coordinates(cfg.data.coords_file, cfg.data.coords_format)
    by_name, report = coords.match_coordinates(picks, names)
    if not by_name:
        raise InputError("no coordinates match any micrograph by name: " + report.summary(),
                         cfg.data.coords_file)


def _launch_torchrun(args: argparse.Namespace, cfg) -> int:
    """Re-run this command under torchrun with one process per GPU (DistributedDataParallel)."""
    import torch

    from selfpick.training.experiment import _is_experiment

    spec = cfg.train.device.strip().lower()
    on_cpu = spec == "cpu" or (spec == "auto" and not torch.cuda.is_available())
    n_gpu = 0 if on_cpu else torch.cuda.device_count()
    n = args.nproc or n_gpu
    if n < 1:
        raise SelfpickError("--multi-gpu: no CUDA GPU is visible (use --nproc N with "
                            "--device cpu to test DDP on CPUs)")
    if not on_cpu and n > n_gpu:
        raise SelfpickError(f"--multi-gpu --nproc {n}: only {n_gpu} GPU(s) are visible "
                            "(one process per GPU)")
    # Refuse here what rank 0 would refuse, so the user gets the one-line message (exit code 2)
    # instead of torchrun's report of a failed worker.
    out = Path(cfg.train.output_dir) if cfg.train.output_dir else None
    if out is None:
        raise SelfpickError("no experiment folder given: use --output-dir")
    if _is_experiment(out) and not (args.resume or args.overwrite):
        raise OutputError("this folder already holds a selfpick experiment; use --resume to "
                          "continue it or --overwrite to start over", out)
    if not args.resume:
        _check_data(cfg)
    argv = ["train", *_command_argv(args)]
    # "--" ends torchrun's own options: without it torchrun's argparse also reads our flags
    # ("--nproc" is an ambiguous prefix of its --nproc-per-node, and an abbreviated flag could
    # be taken as one of its options).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={n}", "-m", "--", "selfpick", *argv]
    log.info("starting %d training processes: %s", n, " ".join(cmd))
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        # torchrun would set 1 (and warn); share the cores among the processes instead, which
        # matters for CPU training and for data loading next to GPUs.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
    return subprocess.call(cmd, env=env)

