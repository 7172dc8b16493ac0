#!/usr/bin/env python
"""Does self-training earn its place? Iteration 0 vs the best self-training stage.

Trains with 30 % of the particles labelled (a seeded random subset per micrograph, as a
hurried hand-picker gives) and scores held-out micrographs against their COMPLETE truth:

- simulated: ``selfpick simulate`` data, 10 training micrographs with 30 % labels and 4
  held-out micrographs, at the simulator's default SNR (0.08) and at a harder one (0.03,
  "simulated-hard");
- real: EMPIAR-10017 (10 training / 5 held-out micrographs, as in bench/accuracy.py), skipped
  when ../shared/data/real is absent.

Three seeds each; reports mean ± sd of the held-out particle F1 at each model's own threshold
for iteration 0, for the stage the experiment itself chose as best (by validation) and for the
last stage, and the gain. For scale, the same split is also trained with ALL particles
labelled (iteration 0 only): what self-training from 30 % could at best recover is roughly
the room between the two (``--no-ceiling`` skips it). Writes bench/results/selftraining.json
and a Markdown table.

Usage:
  python bench/selftraining.py [--seeds 0 1 2] [--datasets simulated real]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402  (the real-data runner is shared)

RESULTS = accuracy.RESULTS
SIM_DIAMETER = 40
SIM_TRAIN, SIM_TEST = 10, 4
SNR = {"simulated": None, "simulated-hard": 0.03}  # None: the simulator's default


def simulated_run(work: Path, seed: int, train_args: list[str], name: str = "simulated",
                  ceiling: bool = True) -> dict:
    """One seed on simulated data: labels 30 %, truth complete, 4 held-out micrographs."""
    tag = f"{name}_{seed}"
    data = work / f"sim_{tag}"
    log_path = work / f"log_{tag}.txt"
    snr = [] if SNR[name] is None else ["--snr", str(SNR[name])]
    if not (data / "simulation.json").exists():
        accuracy.run(accuracy.selfpick() + [
            "simulate", "--output", str(data), "--n-micrographs", str(SIM_TRAIN + SIM_TEST),
            "--diameter", str(SIM_DIAMETER), "--label-fraction", "0.3", "--seed", str(100 + seed),
            *snr, "--overwrite", "-q"], log_path)
    mics = sorted((data / "micrographs").glob("*.mrc"))
    train, test = mics[:SIM_TRAIN], mics[SIM_TRAIN:]
    lists = {}
    for key, subset in (("train", train), ("test", test)):
        lists[key] = work / f"sim_{tag}_{key}.txt"
        lists[key].write_text("\n".join(str(p) for p in subset) + "\n")
    truth = data / "truth" / "coordinates.json"

    def train_and_score(exp: Path, labels: Path, extra: list[str]) -> dict:
        if exp.exists():
            shutil.rmtree(exp)
        t = accuracy.run(accuracy.selfpick() + [
            "train", "--image-dir", str(lists["train"]), "--coords-file", str(labels),
            "--particle-diameter", str(SIM_DIAMETER), "--output-dir", str(exp),
            "--seed", str(seed), "-q", *extra, *train_args], log_path)
        return score_stages(exp, lists["test"], truth, SIM_DIAMETER / 2, log_path, t)

    out = train_and_score(work / f"exp_{tag}", data / "labels" / "coordinates.json", [])
    if ceiling:
        out["all_labels"] = train_and_score(work / f"exp_{tag}_all_labels", truth,
                                            ["--self-training-iterations", "0"])["iteration_0"]
    return out


def score_stages(exp: Path, test_list: Path, truth: Path, radius: float, log_path: Path,
                 train_seconds: float) -> dict:
    metrics = json.loads((exp / "metrics.json").read_text())
    out = {"train_seconds": round(train_seconds, 1), "best_stage": metrics["best_stage"],
           "stages": {}}
    for s in metrics["stages"]:
        stage = s["stage"]
        picks = exp / f"test_picks_{stage}"
        accuracy.run(accuracy.selfpick() + ["pick", "--model", str(exp / stage / "model.pt"),
                                            "--images", str(test_list), "--output", str(picks),
                                            "--threshold", "0", "-q"], log_path)
        res = exp / f"test_metrics_{stage}.json"
        accuracy.run(accuracy.selfpick() + [
            "evaluate", "--picks", str(picks / "autopick.star"), "--image-dir", str(test_list),
            "--coords-file", str(truth), "--radius", str(radius), "--threshold",
            str(s["threshold"]), "--output", str(res), "-q"], log_path)
        p = json.loads(res.read_text())["particle"]
        out["stages"][stage] = {k: p[k] for k in ("precision", "recall", "f1", "best_f1",
                                                  "average_precision")}
        out["stages"][stage]["pseudo_labels"] = s.get("pseudo_labels")
    out["iteration_0"] = out["stages"]["iteration_0_supervised"]
    out["best"] = out["stages"][out["best_stage"]]
    out["last"] = out["stages"][metrics["stages"][-1]["stage"]]
    out["gain_f1"] = out["best"]["f1"] - out["iteration_0"]["f1"]
    return out


def _ms(values) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f}"


def table(results: dict) -> str:
    lines = ["| data (30 % labels) | seeds | iteration 0 F1 | chosen stage F1 | gain | gain / sd "
             "| last stage F1 | all labels, iteration 0 F1 (ceiling) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        f0 = np.array([r["iteration_0"]["f1"] for r in runs])
        fb = np.array([r["best"]["f1"] for r in runs])
        gain = fb - f0
        sd = gain.std(ddof=1) if len(gain) > 1 else float("nan")
        ratio = gain.mean() / sd if sd and sd > 0 else float("inf")
        last = [r["last"]["f1"] for r in runs if "last" in r]
        full = [r["all_labels"]["f1"] for r in runs if "all_labels" in r]
        lines.append(f"| {name} | {len(runs)} | {_ms(f0)} | {_ms(fb)} | "
                     f"{gain.mean():+.3f} ± {sd:.3f} | {ratio:.1f} | "
                     f"{_ms(last) if last else '—'} | {_ms(full) if full else '—'} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="+", default=["simulated", "simulated-hard", "real"],
                    choices=["simulated", "simulated-hard", "real"])
    ap.add_argument("--train-args", default="", help="extra selfpick train flags (tuning only)")
    ap.add_argument("--from-accuracy", default=None, metavar="JSON",
                    help="take the real-data runs from this bench/accuracy.py result (its 30 %% "
                    "regime) instead of training them again")
    ap.add_argument("--no-ceiling", action="store_true",
                    help="skip the all-labels runs that show how much room there is")
    ap.add_argument("--work", default=None)
    ap.add_argument("--output", default=str(RESULTS / "selftraining.json"))
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="selfpick_st_"))
    work.mkdir(parents=True, exist_ok=True)
    train_args = shlex.split(args.train_args)
    t0 = time.perf_counter()
    results: dict[str, list] = {}
    for name in args.datasets:
        if name == "real" and not accuracy.DATA.is_dir():
            print(f"real data skipped: not at {accuracy.DATA}")
            continue
        if name == "real" and args.from_accuracy:
            acc = accuracy.load_results(Path(args.from_accuracy))["datasets"]["10017"]
            everything = {r["seed"]: r for r in acc["runs"] if r["regime"] == "all"}
            for full in (r for r in acc["runs"] if r["regime"] == "30pct"):
                r = {k: full[k] for k in ("train_seconds", "best_stage", "stages", "iteration_0",
                                          "best", "seed")}
                r["last"] = list(full["stages"].values())[-1]
                r["gain_f1"] = r["best"]["f1"] - r["iteration_0"]["f1"]
                if not args.no_ceiling and full["seed"] in everything:
                    r["all_labels"] = everything[full["seed"]]["iteration_0"]
                results.setdefault(name, []).append(r)
            print(f"real: {len(results.get(name, []))} runs taken from {args.from_accuracy}")
            continue
        for seed in args.seeds:
            if name.startswith("simulated"):
                r = simulated_run(work, seed, train_args, name, ceiling=not args.no_ceiling)
            else:
                full = accuracy.one_run(work, "30pct", seed, train_args)
                r = {"train_seconds": full["train_seconds"], "best_stage": full["best_stage"],
                     "stages": full["stages"], "iteration_0": full["iteration_0"],
                     "best": full["best"], "last": list(full["stages"].values())[-1]}
                r["gain_f1"] = r["best"]["f1"] - r["iteration_0"]["f1"]
                if not args.no_ceiling:
                    r["all_labels"] = accuracy.one_run(
                        work, "all", seed,
                        [*train_args, "--self-training-iterations", "0"])["iteration_0"]
            r["seed"] = seed
            results.setdefault(name, []).append(r)
            ceil = f"; all labels {r['all_labels']['f1']:.3f}" if "all_labels" in r else ""
            print(f"{name} seed {seed}: iteration 0 F1 {r['iteration_0']['f1']:.3f} -> "
                  f"{r['best_stage']} F1 {r['best']['f1']:.3f} ({r['gain_f1']:+.3f}); last stage "
                  f"{r['last']['f1']:.3f}{ceil}; train {r['train_seconds']:.0f} s", flush=True)
    md = table(results)
    doc = {"benchmark": "selftraining", "label_fraction": 0.3,
           "date": dt.datetime.now().isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
           "train_args": train_args, "total_seconds": round(time.perf_counter() - t0, 1),
           "table": md, "results": results}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(md)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
