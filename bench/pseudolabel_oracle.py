#!/usr/bin/env python
"""How much could self-training gain if its pseudo-particles were exactly the curators' picks?

A ceiling, not a method: it reads the curated picks of the *unlabelled* training micrographs,
which no real run has. For each draw of a few-picks budget (``bench/fewpicks.py``'s draws and
experiment folders), iteration 0 is kept as it is and the self-training student is trained
again, once, with one change: every pseudo-particle (a peak scored at or above the
pseudo-particle score) farther than the match radius from a curated pick becomes an ignored
disk, as an uncertain peak is, instead of a positive one. Everything else -- the score, the
unlabelled pixels, the positive-unlabelled prior, the student's epochs and threshold rule --
is the default. Its test result against the default student's says how much of the gap to
the all-labels ceiling cleaner pseudo-labels could close; what the teacher is sure of but the
curators did not keep (touching neighbours, carbon edges, particles left out) is the
difference (``bench/NOTES.md``).

Usage (draws already run by ``fewpicks.py --work DIR`` are reused; missing ones are run):
  python bench/pseudolabel_oracle.py --dataset 10017 --budget B2 --work DIR
Writes ``bench/results/pseudolabel_oracle.json`` (``--output``): per draw, test F1 at the
stage's own threshold, best F1 and AP of iteration 0, the default student and the oracle one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402
import fewpicks  # noqa: E402
from realdata import DATASETS  # noqa: E402

from selfpick.io.coords import read_coordinates  # noqa: E402

STUDENT = "iteration_1_selftrain"
SUPERVISED = "iteration_0_supervised"
# What the oracle did to the pseudo-particles, written by the training child into its
# experiment folder: {"kept": n, "demoted": m}.
COUNTS = "oracle_pseudo_particles.json"


def demote_uncurated(xy: np.ndarray, scores: np.ndarray, curated: np.ndarray, radius: float,
                     pos_score: float) -> tuple[np.ndarray, int, int]:
    """Peaks ``xy`` ``(N, 2)`` (model pixels) with ``scores`` ``(N,)``: every one scored at or
    above ``pos_score`` (a pseudo-particle) that lies farther than ``radius`` from all of the
    ``curated`` centres ``(M, 2)`` (model pixels) gets a score just below ``pos_score``, so
    pseudo-labelling paints it as an uncertain peak (an ignored disk). Returns the new scores
    and how many pseudo-particles were kept and demoted; the inputs are not changed."""
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    curated = np.asarray(curated, dtype=float).reshape(-1, 2)
    out = np.asarray(scores, dtype=float).copy()
    sure = out >= pos_score
    near = np.zeros(len(xy), dtype=bool)
    if len(curated) and len(xy):
        near = ((xy[:, None, :] - curated[None, :, :]) ** 2).sum(-1).min(1) <= radius ** 2
    demote = sure & ~near
    out[demote] = np.nextafter(pos_score, -np.inf)
    return out, int(np.count_nonzero(sure & near)), int(np.count_nonzero(demote))


def oracle_train(key: str, argv: list[str], counts_path: Path) -> int:
    """``selfpick train argv`` with the curated picks filtering the pseudo-particles (runs in
    a child process, so the patch never leaks into anything else); the numbers kept and
    demoted go to ``counts_path``."""
    import selfpick.training.experiment as experiment
    from selfpick.cli import main as selfpick_main

    ds = DATASETS[key]
    state: dict = {"names": [], "curated": {}, "radius": 0.0, "kept": 0, "dropped": 0}
    pseudo_labels, peak_labels = experiment._pseudo_labels, experiment.peak_pseudo_labels

    def with_names(k, cfg, ts, model, device, val, stage_dir, progress):
        pool = ts.subset("train") + ts.subset("unlabeled")  # the order _pseudo_labels uses
        state["names"] = [m.name for m in pool]
        state["curated"] = {m.name: m.scale.to_model(read_coordinates(
            ds.coordinates / f"{m.name}.csv")[["x", "y"]].to_numpy(float)) for m in pool}
        state["radius"] = ds.radius / ts.downsample  # the match radius, model pixels
        out = pseudo_labels(k, cfg, ts, model, device, val, stage_dir, progress)
        counts_path.write_text(json.dumps({"kept": state["kept"], "demoted": state["dropped"]}))
        return out

    def filtered(prob, xy, scores, gt, labelled, radius, pos_score, neg, tcfg):
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        scores, kept, dropped = demote_uncurated(
            xy, scores, state["curated"][state["names"].pop(0)], state["radius"], pos_score)
        state["kept"] += kept
        state["dropped"] += dropped
        return peak_labels(prob, xy, scores, gt, labelled, radius, pos_score, neg, tcfg)

    experiment._pseudo_labels, experiment.peak_pseudo_labels = with_names, filtered
    return selfpick_main(["train", *argv])


def one_draw(work: Path, key: str, budget: str, seed: int) -> dict:
    ds = DATASETS[key]
    exp = work / f"exp_{budget}_{seed}"
    if not (exp / SUPERVISED / "model.pt").is_file():
        fewpicks.one_run(work, ds, budget, seed, [])
    _, test = ds.split()
    te = accuracy.link_micrographs(work / "test_mics", test, ds)
    tr = work / "train_mics"
    log_path = work / f"log_{budget}_{seed}_oracle.txt"
    default = accuracy.score_stages(exp, te, log_path, "test", (), ds)
    orc = work / f"exp_{budget}_{seed}_oracle"
    if orc.exists():
        shutil.rmtree(orc)
    orc.mkdir()
    for name in ("cache", "config.json", "metrics.json", "training.log", SUPERVISED):
        src = exp / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, orc / name)
    argv = ["--image-dir", str(tr), "--coords-file", str(work / f"labels_{budget}_{seed}"),
            "--particle-diameter", f"{ds.diameter:g}", "--output-dir", str(orc),
            "--seed", str(seed), "--resume", "--self-training-iterations", "1", "-q"]
    t0 = time.perf_counter()
    with open(log_path, "a") as log:
        proc = subprocess.run([sys.executable, __file__, "--child", key, str(orc / COUNTS),
                               "--", *argv],
                              stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"oracle training failed ({proc.returncode}); see {log_path}")
    seconds = time.perf_counter() - t0
    oracle = accuracy.score_stages(orc, te, log_path, "test", (), ds, stages={STUDENT})
    counts = json.loads((orc / COUNTS).read_text())
    return {"dataset": key, "budget": budget, "seed": seed,
            "iteration_0": default[SUPERVISED], "student": default.get(STUDENT),
            "oracle_student": oracle[STUDENT], "oracle_pseudo_particles": counts,
            "oracle_student_seconds": round(seconds, 1)}


def summary(runs: list[dict]) -> dict:
    out = {}
    for stage in ("iteration_0", "student", "oracle_student"):
        rows = [r[stage] for r in runs if r.get(stage)]
        out[stage] = {k: [float(np.mean([x[k] for x in rows])),
                          float(np.std([x[k] for x in rows], ddof=1)) if len(rows) > 1 else 0.0]
                      for k in ("f1", "best_f1", "average_precision")}
    for stage in ("student", "oracle_student"):
        for k in ("best_f1", "average_precision"):
            g = [r[stage][k] - r["iteration_0"][k] for r in runs if r.get(stage)]
            out[stage][f"gain_{k}"] = [float(np.mean(g)),
                                       float(np.std(g, ddof=1)) if len(g) > 1 else 0.0]
    return out


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return oracle_train(sys.argv[2], sys.argv[5:], Path(sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="10017", choices=list(DATASETS),
                    help="real data set (its curated picks are the oracle)")
    ap.add_argument("--budget", default="B2", choices=("B1", "B2", "B3"),
                    help="few-picks budget, drawn as bench/fewpicks.py draws it")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="draws (each seed another random draw of picks)")
    ap.add_argument("--work", required=True,
                    help="a bench/fewpicks.py working folder (draws not there are run)")
    ap.add_argument("--output", default=str(accuracy.RESULTS / "pseudolabel_oracle.json"),
                    help="results JSON (default: bench/results/pseudolabel_oracle.json)")
    args = ap.parse_args()
    ds = DATASETS[args.dataset]
    if not ds.available():
        raise SystemExit(f"{args.dataset}: data not found ({ds.coordinates})")
    work = Path(args.work) / args.dataset
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        r = one_draw(work, args.dataset, args.budget, seed)
        runs.append(r)
        line = "; ".join(f"{s} {r[s]['f1']:.3f} / {r[s]['best_f1']:.3f} / "
                         f"{r[s]['average_precision']:.3f}"
                         for s in ("iteration_0", "student", "oracle_student") if r.get(s))
        c = r["oracle_pseudo_particles"]
        print(f"{args.dataset} {args.budget} draw {seed} (F1 / best F1 / AP): {line}; "
              f"pseudo-particles kept {c['kept']}, demoted {c['demoted']}", flush=True)
    out = Path(args.output)
    out.write_text(json.dumps({
        "benchmark": "pseudolabel_oracle", "dataset": ds.title, "budget": args.budget,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "runs": runs, "summary": summary(runs)}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
