#!/usr/bin/env python
"""Picking speed on large micrographs: the floor, `selfpick pick` end to end, and their ratio.

For a simulated 4096x4096 float32 MRC micrograph (particle diameter 108 px, so the model
downsamples by the factor that size implies, with the default U-Net), in one run:

- **floor**: what any picker must do -- read the file and downsample + normalise it
  (``read_micrograph`` + ``preprocess`` with the model's factor and settings), nothing else;
  measured before and again after the pick runs (the median of both), so that load drifting
  on a shared machine biases the ratios less;
- **stages**: the same micrograph through the library, timed per step as ``selfpick pick``
  runs them (read, preprocess, network, peaks, write), to show where the time goes;
- **pick, first micrograph**: ``selfpick pick`` on a folder of one micrograph, as a user runs
  it (a new process): wall time including Python start-up, imports and model loading, and
  the in-loop time the command itself reports (``pick_summary.json``: read to written picks,
  excluding start-up and model loading);
- **pick, folder**: ``selfpick pick`` over a folder of >= 50 micrographs: wall time, the
  marginal time per micrograph ((wall_N - wall_1) / (N - 1): start-up excluded), micrographs
  per second, and peak resident memory of the process tree (DataLoader workers included);
- **ratios** pick/floor, from figures measured in this run.

CPU always; CUDA as well when a GPU is visible (the floor is CPU work in both cases).

The folder holds ``--unique`` simulated micrographs repeated under different names (hard links;
simulating 4096^2 takes seconds each and 50 x 64 MB of distinct files is a lot of disk): the
files are then read from the page cache, as are the floor's, so both sides see the same I/O.
Pass ``--unique`` = ``--n-micrographs`` for distinct files (``--copy``: copies, not hard links).

Usage:
  python bench/speed.py                       # 4096^2, 50 micrographs (minutes on 2 cores)
  python bench/speed.py --size 1024 --n-micrographs 10 --repeats 1     # a quick look
  python bench/speed.py --model exp/best_model.pt

Writes bench/results/speed.json (machine, versions, date, settings, results) and prints a
Markdown table. Without --model it trains a small model with the default architecture first
(a few epochs on simulated data: the weights' quality does not matter for speed, the
architecture and the downsampling factor do).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


# ------------------------------------------------------------------------- shared helpers
# (bench/memory.py and bench/train_speed.py import these)


def machine_info() -> dict:
    """What the figures were measured on."""
    import psutil
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        # Timings on a shared machine are only comparable within one run; say how busy it was.
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "gpus": [],
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def versions() -> dict:
    import numpy
    import scipy
    import torch

    import selfpick

    return {"selfpick": selfpick.__version__, "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__,
            "cuda": torch.version.cuda or "none"}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def selfpick_cmd() -> list[str]:
    # The same interpreter as this script, so the benchmark measures this checkout.
    return [sys.executable, "-m", "selfpick"]


def median(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _high_water_mark(pid: int) -> int | None:
    """Peak resident memory (bytes) of process ``pid`` so far: VmHWM from /proc (Linux).

    Read from /proc rather than taken from ``wait4``'s ru_maxrss, which on Linux includes the
    resident size of the *parent* at fork/exec time -- this benchmark's own memory.
    """
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def run_measured(cmd: list[str], log_path: Path, env: dict | None = None,
                 interval: float = 0.05) -> dict:
    """Run ``cmd``, sampling the memory of its whole process tree every ``interval`` s.

    - ``peak_tree_rss_mb``: the largest sum of RSS over the process and all its descendants
      (DataLoader workers) seen at one sample. With workers it over-counts pages shared
      between processes (the torch libraries count once per process): an upper bound.
    - ``max_rss_mb``: the largest high-water mark (VmHWM) of any single process of the tree.
      The kernel keeps it, so spikes between samples are included (only the last
      ``interval`` before a process ends can be missed). Without workers this is the peak
      memory of the command, exactly.
    - ``sum_hwm_mb``: the high-water marks of all processes of the tree added up: an upper
      bound of the tree's peak even for spikes between samples.
    """
    import psutil

    with open(log_path, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        ps = psutil.Process(proc.pid)
        peak_tree = peak_main = 0
        hwm: dict[int, int] = {}
        while proc.poll() is None:
            try:
                procs = [ps, *ps.children(recursive=True)]
            except psutil.NoSuchProcess:
                procs = []
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:  # a worker ended between listing and reading
                    continue
                total += rss
                if p.pid == proc.pid:
                    peak_main = max(peak_main, rss)
                h = _high_water_mark(p.pid)
                if h is not None:
                    hwm[p.pid] = max(hwm.get(p.pid, 0), h)
            peak_tree = max(peak_tree, total)
            time.sleep(interval)
        wall = time.perf_counter() - t0
    rc = proc.returncode
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): {' '.join(cmd)}; see {log_path}")
    return {"wall_s": wall, "peak_tree_rss_mb": peak_tree / 2**20,
            "peak_main_rss_mb": peak_main / 2**20,
            "max_rss_mb": max(hwm.values(), default=peak_main) / 2**20,
            "sum_hwm_mb": sum(hwm.values()) / 2**20 if hwm else None,
            "processes_seen": max(1, len(hwm))}


def simulate_unique(folder: Path, n: int, size: int, diameter: float, seed: int = 0,
                    snr: float = 0.3) -> list[Path]:
    """``n`` simulated micrographs in ``folder`` (reused when already there)."""
    from selfpick.simulate import SimulationConfig, simulate_dataset

    mics = sorted((folder / "micrographs").glob("*.mrc")) if folder.is_dir() else []
    if len(mics) >= n:  # a kept --workdir: simulate only once
        return mics[:n]
    # The SNR of the small model's training data, so it finds a realistic number of particles
    # (peak finding and writing scale with the picks).
    cfg = SimulationConfig(n_micrographs=n, size=size, diameter=diameter, snr=snr, seed=seed)
    print(f"simulating {n} micrograph(s) of {size}^2 px ...", flush=True)
    return simulate_dataset(cfg, folder, overwrite=True).micrographs


def make_folder(folder: Path, sources: list[Path], n: int, copy: bool = False) -> list[Path]:
    """A folder of ``n`` micrographs named ``mic_0000.mrc`` ... cycling over ``sources``.

    Hard links, not symlinks: selfpick drops repeats of one file reached through symlinks
    (it resolves them), while hard links are distinct paths to the same data -- no extra disk,
    and the same page-cache behaviour as repeated reads of one file.
    """
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    out = []
    for i in range(n):
        dst = folder / f"mic_{i:04d}.mrc"
        src = sources[i % len(sources)].resolve()
        if not copy:
            try:
                os.link(src, dst)
            except OSError:  # another file system, or links not allowed: copy
                copy = True
        if copy:
            shutil.copyfile(src, dst)
        out.append(dst)
    return out


def build_model(work: Path, diameter: float, epochs: int = 3) -> Path:
    """Train a small model with the DEFAULT architecture and automatic downsampling.

    Speed depends on the architecture and the model-scale image size (set by the particle
    diameter), not on how well the weights are trained; a few epochs give a realistic
    threshold and number of picks.
    """
    from selfpick.config import Config
    from selfpick.training.experiment import run_training

    data = work / "train_data"
    simulate_unique(data, 4, 1024, diameter, seed=123, snr=0.3)
    out = work / "model_experiment"
    cfg = Config()
    cfg.update({
        "image_dir": str(data / "micrographs"),
        "coords_file": str(data / "labels" / "coordinates.json"),
        "particle_diameter": float(diameter),
        "output_dir": str(out),
        # Architecture and preprocessing stay at their defaults; only the training is short.
        "crop_size": 128, "crops_per_epoch": 32, "initial_epochs": epochs,
        "self_training_iterations": 0, "val_fraction": 0.25, "device": "cpu", "seed": 0,
    })
    print("training a small model with the default architecture ...", flush=True)
    run_training(cfg, overwrite=True, progress=False)
    return out / "best_model.pt"


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


@contextlib.contextmanager
def workdir(path: Path | None, prefix: str) -> Iterator[Path]:
    """The benchmark's working folder: ``path`` (kept afterwards), or a temporary folder
    named ``prefix...`` that is removed at the end, also on errors."""
    work = path or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        if path is None:
            shutil.rmtree(work, ignore_errors=True)


def publish(name: str, payload: dict, markdown: Callable[[dict], str]) -> int:
    """Write ``bench/results/NAME.json`` and print the Markdown table; the exit status."""
    path = write_results(name, payload)
    print(markdown(payload))
    print(f"\nwrote {path}")
    return 0


def machine_line(p: dict) -> str:
    """One line for a results table: what ``p["machine"]`` was, how busy, and when."""
    m = p["machine"]
    return (f"machine: {m['platform']}, {m['cpu_count_logical']} CPU(s), {m['ram_gb']} GB RAM, "
            f"GPU: {', '.join(m['gpus']) or 'none'}; load average at start "
            f"{m['load_average_at_start']}; {p['date']}")


# ------------------------------------------------------------------------- measurements


def measure_floor(paths: list[Path], saved, repeats: int) -> dict:
    """read + downsample + normalise, nothing else (one warm-up, then ``repeats`` timings)."""
    from selfpick.io.micrographs import read_micrograph
    from selfpick.preprocess import preprocess

    px = saved.config.data.pixel_size
    reads, preps, totals = [], [], []
    for i in range(repeats + 1):
        path = paths[i % len(paths)]
        t0 = time.perf_counter()
        data, _ = read_micrograph(path, px)
        t1 = time.perf_counter()
        img, _ = preprocess(data, saved.downsample, saved.config.preprocess)
        t2 = time.perf_counter()
        del data, img
        if i == 0:
            continue  # warm-up: imports, FFT plans, page cache
        reads.append(t1 - t0)
        preps.append(t2 - t1)
        totals.append(t2 - t0)
    return {"read_s": median(reads), "preprocess_s": median(preps), "floor_s": median(totals),
            "floor_all_s": totals}


def measure_stages(path: Path, saved, device: str, repeats: int, out_dir: Path) -> dict:
    """One micrograph through the steps ``selfpick pick`` runs, each timed.

    Mirrors ``selfpick.picking.pick.pick`` for one micrograph with the default options
    (whole-image or automatic tiling, the model's threshold, STAR output, preprocessing on
    the GPU when picking on one: "preprocess" then includes the copy to the GPU).
    """
    import torch

    from selfpick.io import coords as coordio
    from selfpick.io.micrographs import micrograph_name, read_micrograph
    from selfpick.picking.inference import predict_probability
    from selfpick.picking.pick import _preprocess_on_device, picks_from_probability
    from selfpick.preprocess import preprocess, preprocess_tensor

    dev = torch.device(device)
    on_device = _preprocess_on_device("auto", dev, saved)
    model = saved.model.to(dev)
    times: dict[str, list[float]] = {k: [] for k in ("read", "preprocess", "network", "peaks",
                                                      "write")}
    n_picks = 0
    shape_model = None

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for i in range(repeats + 1):
        t = [time.perf_counter()]
        data, _ = read_micrograph(path, saved.config.data.pixel_size)
        t.append(time.perf_counter())
        if on_device:
            img, scale = preprocess_tensor(torch.from_numpy(data).to(dev), saved.downsample,
                                           saved.config.preprocess)
            sync()
        else:
            img, scale = preprocess(data, saved.downsample, saved.config.preprocess)
        t.append(time.perf_counter())
        # amp=True as in pick_image: bfloat16 on CUDA, ignored on the CPU.
        prob = predict_probability(model, img if on_device else torch.from_numpy(img), dev,
                                   amp=True)
        sync()
        t.append(time.perf_counter())
        xy, scores = picks_from_probability(saved, prob, scale, data.shape, saved.threshold)
        t.append(time.perf_counter())
        name = micrograph_name(path)
        table = coordio.make_picks(name, xy, scores, saved.particle_diameter)
        coordio.write_per_micrograph(table, out_dir, "star", box_size=saved.particle_diameter,
                                     suffix="_autopick", micrograph_paths={name: path})
        t.append(time.perf_counter())
        n_picks, shape_model = len(table), img.shape
        if i == 0:
            continue  # warm-up
        for k, (a, b) in zip(times, zip(t, t[1:])):
            times[k].append(b - a)
    out = {f"{k}_s": median(v) for k, v in times.items()}
    out["total_s"] = sum(out.values())
    out["n_picks"] = n_picks
    out["model_shape"] = list(shape_model)
    out["preprocess_on"] = device if on_device else "cpu"
    return out


def run_pick(model: Path, images: Path, out: Path, device: str, log: Path,
             extra: list[str]) -> dict:
    if out.exists():
        shutil.rmtree(out)
    env = dict(os.environ)
    cmd = [*selfpick_cmd(), "pick", "-q", "--model", str(model), "--images", str(images),
           "--output", str(out), "--device", device, *extra]
    res = run_measured(cmd, log, env)
    summary = json.loads((out / "pick_summary.json").read_text())
    res["loop_s"] = summary["seconds"]  # read..write of every micrograph, no start-up
    res["n_micrographs"] = summary["n_micrographs"]
    res["n_picks"] = summary["n_picks"]
    return res


def bench_device(device: str, model: Path, one: Path, folder: Path, n: int, repeats: int,
                 folder_repeats: int, work: Path, log: Path, extra: list[str]) -> dict:
    firsts = [run_pick(model, one, work / f"out_one_{device}", device, log, extra)
              for _ in range(repeats)]
    fulls = [run_pick(model, folder, work / f"out_folder_{device}", device, log, extra)
             for _ in range(folder_repeats)]
    wall1 = median([r["wall_s"] for r in firsts])
    wall_n = median([r["wall_s"] for r in fulls])
    return {
        "first_micrograph": {
            "wall_s": wall1,  # a new process: start-up + imports + model loading + 1 micrograph
            "loop_s": median([r["loop_s"] for r in firsts]),  # the micrograph alone
            "runs": firsts,
        },
        "folder": {
            "n_micrographs": n,
            "wall_s": wall_n,
            "per_micrograph_wall_s": wall_n / n,  # start-up amortised over the folder
            "per_micrograph_marginal_s": (wall_n - wall1) / max(1, n - 1),  # start-up excluded
            "per_micrograph_loop_s": median([r["loop_s"] for r in fulls]) / n,
            "micrographs_per_s": n / wall_n,
            "peak_tree_rss_mb": max(r["peak_tree_rss_mb"] for r in fulls),
            "peak_main_rss_mb": max(r["peak_main_rss_mb"] for r in fulls),
            "max_rss_mb": max(r["max_rss_mb"] for r in fulls),
            "n_picks": fulls[-1]["n_picks"],
            "runs": fulls,
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=4096, help="micrograph side in pixels")
    ap.add_argument("--diameter", type=float, default=108.0, help="particle diameter, pixels")
    ap.add_argument("--n-micrographs", type=int, default=50, help="micrographs in the folder")
    ap.add_argument("--unique", type=int, default=4,
                    help="distinct simulated micrographs the folder cycles through")
    ap.add_argument("--copy", action="store_true", help="copy files instead of hard-linking them")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed repeats of the floor, the stages and the 1-micrograph pick")
    ap.add_argument("--floor-repeats", type=int, default=10,
                    help="timed repeats of the floor, before and again after the pick runs")
    ap.add_argument("--folder-repeats", type=int, default=1,
                    help="repeats of the whole-folder pick (the longest part)")
    ap.add_argument("--model", type=Path, default=None,
                    help="model file to use (default: train a small default-architecture one)")
    ap.add_argument("--devices", default="auto",
                    help="comma-separated: cpu, cuda; auto = cpu, plus cuda when available")
    ap.add_argument("--pick-args", default="",
                    help="extra arguments for selfpick pick, e.g. '--workers 2'")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where data and outputs go (default: a temporary folder, removed)")
    ap.add_argument("--name", default="speed", help="results file bench/results/NAME.json")
    args = ap.parse_args(argv)

    import torch

    from selfpick.model.modelfile import load_model

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) \
        if args.devices == "auto" else [d.strip() for d in args.devices.split(",")]
    started = now()
    machine = machine_info()
    with workdir(args.workdir, "selfpick-speed-") as work:
        log = work / "commands.log"
        model = args.model or build_model(work, args.diameter)
        saved = load_model(model, "cpu")
        sources = simulate_unique(work / f"sim_{args.size}", args.unique, args.size,
                                  args.diameter)
        folder = work / "folder"
        paths = make_folder(folder, sources, args.n_micrographs, args.copy)
        one = work / "one"
        make_folder(one, sources[:1], 1, args.copy)

        print("floor ...", flush=True)
        floor_before = measure_floor(sources, saved, args.floor_repeats)
        results = {"devices": {}}
        runs = []
        for device in devices:
            print(f"stages on {device} ...", flush=True)
            stages = measure_stages(sources[0], saved, device, args.repeats,
                                    work / f"stage_out_{device}")
            print(f"selfpick pick on {device} ...", flush=True)
            picked = bench_device(device, model, one, folder, len(paths), args.repeats,
                                  args.folder_repeats, work, log, args.pick_args.split())
            picked["stages"] = stages
            runs.append((device, picked))
        # The floor again after the long pick runs: on a shared machine the load drifts, and
        # the ratios should compare like with like (median of both sets).
        print("floor again ...", flush=True)
        floor_after = measure_floor(sources, saved, args.floor_repeats)
        floor = {
            "read_s": median([floor_before["read_s"], floor_after["read_s"]]),
            "preprocess_s": median([floor_before["preprocess_s"], floor_after["preprocess_s"]]),
            "floor_s": median(floor_before["floor_all_s"] + floor_after["floor_all_s"]),
            "before": floor_before, "after": floor_after,
        }
        results["floor"] = floor
        for device, picked in runs:
            f = picked["folder"]
            stages = picked["stages"]
            picked["ratios"] = {
                # Steady state: what a long job pays per micrograph over the floor.
                "marginal_pick_over_floor": f["per_micrograph_marginal_s"] / floor["floor_s"],
                "loop_pick_over_floor": f["per_micrograph_loop_s"] / floor["floor_s"],
                # A one-off user: a new process for one micrograph.
                "first_micrograph_wall_over_floor":
                    picked["first_micrograph"]["wall_s"] / floor["floor_s"],
                "stages_total_over_floor": stages["total_s"] / floor["floor_s"],
            }
            results["devices"][device] = picked

    payload = {
        "benchmark": "speed",
        "date": started,
        "finished": now(),
        "machine": machine,
        "versions": versions(),
        "settings": {
            "size": args.size, "diameter": args.diameter, "n_micrographs": args.n_micrographs,
            "unique_micrographs": args.unique, "copies": args.copy, "repeats": args.repeats,
            "floor_repeats": args.floor_repeats,
            "folder_repeats": args.folder_repeats, "devices": devices,
            "pick_args": args.pick_args, "model": str(args.model) if args.model else
            "trained by the benchmark (default architecture)",
            "model_downsample": saved.downsample,
            "model_architecture": {"depth": saved.config.model.depth,
                                   "width": saved.config.model.width},
            "model_threshold": saved.threshold,
            "timing": "time.perf_counter; medians over repeats after one warm-up; files in "
                      "the page cache",
        },
        "results": results,
    }
    return publish(args.name, payload, markdown)


def markdown(p: dict) -> str:
    s, r = p["settings"], p["results"]
    fl = r["floor"]
    lines = [
        f"## Picking speed: {s['size']}x{s['size']} float32 MRC, particle {s['diameter']:g} px "
        f"(model x{s['model_downsample']:.2f} downsampling, U-Net depth "
        f"{s['model_architecture']['depth']} width {s['model_architecture']['width']})",
        "",
        machine_line(p),
        "",
        f"floor (read + downsample + normalise): **{fl['floor_s']:.3f} s** "
        f"(read {fl['read_s']:.3f} s, preprocess {fl['preprocess_s']:.3f} s; "
        f"{fl['before']['floor_s']:.3f} s before the pick runs, {fl['after']['floor_s']:.3f} s "
        "after)",
        "",
        "| device | stages: read / preprocess / network / peaks / write (s) | first micrograph: "
        "wall incl. start-up (s) | in-loop (s) | folder: N | s per micrograph (marginal) | "
        "s per micrograph (wall/N) | micrographs/s | peak RSS, process tree, sampled (MB) | "
        "max RSS, largest process, VmHWM (MB) | pick/floor (marginal) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dev, d in r["devices"].items():
        st, f1, f = d["stages"], d["first_micrograph"], d["folder"]
        lines.append(
            f"| {dev} | {st['read_s']:.3f} / {st['preprocess_s']:.3f} / {st['network_s']:.3f} / "
            f"{st['peaks_s']:.3f} / {st['write_s']:.3f} | {f1['wall_s']:.2f} | "
            f"{f1['loop_s']:.2f} | {f['n_micrographs']} | {f['per_micrograph_marginal_s']:.3f} | "
            f"{f['per_micrograph_wall_s']:.3f} | {f['micrographs_per_s']:.2f} | "
            f"{f['peak_tree_rss_mb']:.0f} | {f['max_rss_mb']:.0f} | "
            f"{d['ratios']['marginal_pick_over_floor']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
