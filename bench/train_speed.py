#!/usr/bin/env python
"""Training throughput: patches (random crops) per second and seconds per epoch.

Runs selfpick's own training loop (``selfpick.training.loop.train_stage``: DataLoader, random
augmented crops, forward, loss, backward, AdamW, gradient clipping, mixed precision on GPU)
with the default architecture, crop size and batch size on preprocessed simulated
micrographs, on the CPU and, when one is visible, a GPU. The first epoch is a warm-up (thread
pools, cuDNN autotuning, page cache); the figures are medians over the remaining epochs.
Validation, pseudo-labelling and checkpoints are not included: they are per-stage costs.

With ``--ddp-nproc N`` it also runs ``selfpick train --multi-gpu --nproc N`` (DDP, gloo on
CPU / NCCL on GPU) and reads the epoch times from its training.log, to show how throughput
scales with processes. On a CPU machine, N processes share the same cores: expect no gain.

Usage:
  python bench/train_speed.py                       # CPU (+ GPU when present)
  python bench/train_speed.py --crops-per-epoch 32 --epochs 2      # a quick look
  python bench/train_speed.py --workers 0,2 --ddp-nproc 2

Writes bench/results/train_speed.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import (machine_info, machine_line, median, now, publish,  # noqa: E402
                   selfpick_cmd, simulate_unique, versions, workdir)


def _config(data: Path, out: Path, args, device: str, workers: int):
    from selfpick.config import Config

    cfg = Config()
    settings = {
        "image_dir": str(data / "micrographs"),
        "coords_file": str(data / "labels" / "coordinates.json"),
        "particle_diameter": args.diameter,
        "output_dir": str(out),
        "crops_per_epoch": args.crops_per_epoch,
        "device": device,
        "workers": workers,
        "seed": 0,
    }
    # Architecture, crop size, batch size and preprocessing stay at the defaults unless given.
    for key in ("batch_size", "crop_size", "depth", "width"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    cfg.update(settings)
    return cfg


def measure_loop(data: Path, work: Path, args, device: str, workers: int) -> dict:
    """Epoch times of ``train_stage`` on one device, in this process."""
    import torch

    from selfpick.model.losses import CombinedLoss
    from selfpick.model.unet import UNet
    from selfpick.training.data import CropDataset, crop_side, load_training_set
    from selfpick.training.loop import train_stage
    from selfpick.utils.runtime import resolve_device, seed_everything

    cfg = _config(data, work / "unused", args, device, workers)
    dev = resolve_device(device)
    seed_everything(0)
    ts = load_training_set(cfg, cache_dir=work / "cache", progress=False)
    mics = ts.subset("train") + ts.subset("val")
    model = UNet.from_config(cfg.model).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    crop = crop_side(cfg, model.multiple)
    dataset = CropDataset([m.image for m in mics], [m.gt_target for m in mics], crop,
                          cfg.train.crops_per_epoch, seed=0)
    loss_fn = CombinedLoss.from_config(cfg.loss)
    t0 = time.perf_counter()
    history = train_stage(model, dataset, cfg.train, args.epochs, dev, loss_fn, "bench",
                          checkpoint_path=None, progress=False)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    secs = [e["seconds"] for e in history.epochs]
    timed = secs[1:] if len(secs) > 1 else secs  # the first epoch is the warm-up
    per_epoch = median(timed)
    return {
        "kind": "loop", "device": str(dev), "workers": workers, "processes": 1,
        "batch_size": cfg.train.batch_size, "crop_size": crop,
        "architecture": {"depth": cfg.model.depth, "width": cfg.model.width,
                         "input_stride": cfg.model.input_stride},
        "amp": bool(cfg.train.amp and dev.type == "cuda"),
        "crops_per_epoch": len(dataset), "epochs": args.epochs, "epoch_seconds": secs,
        "seconds_per_epoch": per_epoch, "patches_per_s": len(dataset) / per_epoch,
        "wall_s": wall,
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
    }


EPOCH_LINE = re.compile(r"iteration_0_supervised epoch (\d+)/\d+: .*?, ([0-9.]+) s$")


def measure_ddp(data: Path, work: Path, args, device: str, nproc: int) -> dict:
    """Epoch times of ``selfpick train --multi-gpu --nproc N`` from its training.log."""
    out = work / f"ddp_{device}_{nproc}"
    if out.exists():
        shutil.rmtree(out)
    cmd = [*selfpick_cmd(), "train", "-q", "--image-dir", str(data / "micrographs"),
           "--coords-file", str(data / "labels" / "coordinates.json"),
           "--particle-diameter", str(args.diameter), "--output-dir", str(out),
           "--crops-per-epoch", str(args.crops_per_epoch), "--initial-epochs", str(args.epochs),
           "--self-training-iterations", "0", "--device", device, "--multi-gpu",
           "--nproc", str(nproc)]
    for key in ("batch_size", "crop_size", "depth", "width"):
        if getattr(args, key) is not None:
            cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    env = dict(os.environ)
    if device == "cpu" and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"DDP run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    secs = []
    for line in (out / "training.log").read_text().splitlines():
        m = EPOCH_LINE.search(line)
        if m:
            secs.append(float(m.group(2)))
    timed = secs[1:] if len(secs) > 1 else secs
    per_epoch = median(timed)
    shutil.rmtree(out, ignore_errors=True)
    return {
        "kind": "ddp", "device": device, "workers": 0, "processes": nproc,
        # Each rank takes batch_size crops per step: the global batch is nproc x batch_size.
        "batch_size": args.batch_size, "crops_per_epoch": args.crops_per_epoch,
        "epochs": args.epochs, "epoch_seconds": secs, "seconds_per_epoch": per_epoch,
        "patches_per_s": args.crops_per_epoch / per_epoch,
        "wall_s_including_startup_and_validation": wall,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--micrographs", type=int, default=4, help="simulated micrographs")
    ap.add_argument("--size", type=int, default=1024, help="their side in pixels")
    ap.add_argument("--diameter", type=float, default=108.0, help="particle diameter, pixels")
    ap.add_argument("--crops-per-epoch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3, help="epochs, the first one a warm-up")
    ap.add_argument("--batch-size", type=int, default=None, help="default: selfpick's")
    ap.add_argument("--crop-size", type=int, default=None, help="default: selfpick's")
    ap.add_argument("--depth", type=int, default=None, help="default: selfpick's")
    ap.add_argument("--width", type=int, default=None, help="default: selfpick's")
    ap.add_argument("--workers", default="0", help="DataLoader workers, comma-separated")
    ap.add_argument("--devices", default="auto",
                    help="comma-separated: cpu, cuda; auto = cpu, plus cuda when available")
    ap.add_argument("--ddp-nproc", type=int, default=0,
                    help="also time DDP with this many processes per device (0 = skip)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where data go (default: a temporary folder, removed)")
    ap.add_argument("--name", default="train_speed",
                    help="results file bench/results/NAME.json")
    args = ap.parse_args(argv)

    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) \
        if args.devices == "auto" else [d.strip() for d in args.devices.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    started = now()
    machine = machine_info()
    rows = []
    with workdir(args.workdir, "selfpick-train-speed-") as work:
        mics = simulate_unique(work / f"sim_{args.size}", args.micrographs, args.size,
                               args.diameter, seed=7)
        data = mics[0].parent.parent
        for device in devices:
            for w in workers:
                print(f"training loop on {device}, {w} worker(s) ...", flush=True)
                rows.append(measure_loop(data, work, args, device, w))
            if args.ddp_nproc > 1:
                print(f"DDP with {args.ddp_nproc} processes on {device} ...", flush=True)
                rows.append(measure_ddp(data, work, args, device, args.ddp_nproc))

    payload = {
        "benchmark": "train_speed", "date": started, "finished": now(), "machine": machine,
        "versions": versions(),
        "settings": {"micrographs": args.micrographs, "size": args.size,
                     "diameter": args.diameter, "crops_per_epoch": args.crops_per_epoch,
                     "epochs": args.epochs, "devices": devices, "workers": workers,
                     "ddp_nproc": args.ddp_nproc,
                     "timing": "per-epoch time.perf_counter inside train_stage; median over "
                               "epochs after the first (warm-up)"},
        "results": rows,
    }
    return publish(args.name, payload, markdown)


def markdown(p: dict) -> str:
    lines = [
        "## Training throughput (selfpick's training loop, default U-Net)",
        "",
        machine_line(p),
        "",
        "| run | device | processes | workers | batch (per process) | crops/epoch | "
        "s per epoch | patches/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in p["results"]:
        lines.append(f"| {r['kind']} | {r['device']} | {r['processes']} | {r['workers']} | "
                     f"{r['batch_size'] or 'default'} | {r['crops_per_epoch']} | "
                     f"{r['seconds_per_epoch']:.2f} | {r['patches_per_s']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
