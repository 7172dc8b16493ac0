#!/usr/bin/env python
"""Cross-validation on the *training* micrographs of the real data sets, for choosing defaults.

The micrographs that ``bench/accuracy.py`` trains on are split into folds of 2 (by name
order, fold k = micrographs 2k and 2k+1): 5 folds of EMPIAR-10017's 10, 3 of EMPIAR-10028's 6.
For each fold, ``selfpick train`` runs on the others (with its own validation split, as a
user's run would), ``selfpick pick`` on the 2 held-out ones and ``selfpick evaluate`` against
their curated picks (match radius half a diameter). The test micrographs of
``bench/accuracy.py`` are never read.

Each configuration is a set of extra ``selfpick train`` flags; the table gives, per
configuration, mean ± sd over the folds of F1 at the model's own threshold, the best F1 over
thresholds and AP, and the training time. Two held-out micrographs hold ~1,300 particles, so a
single fold moves by a few hundredths between settings by chance; compare means over folds.

Usage:
  python bench/tune_cv.py --config default "" --config depth4 "--depth 4"
  python bench/tune_cv.py --dataset 10028 --config default "" --config long "--initial-epochs 160"
  python bench/tune_cv.py --folds 0 1 --config long "--initial-epochs 80"
  python bench/tune_cv.py --all-stages --config st "--self-train-complete-labels"

Writes bench/results/tune_cv.json (EMPIAR-10017) or tune_cv_10028.json (appending
configurations already there) and prints a Markdown table. Skips (exit 0) when the real data set is absent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import (RESULTS, evaluate, link_micrographs, pick_all, score_stages,  # noqa: E402
                      train, write_labels)
from realdata import DATASETS, RealDataset  # noqa: E402


def n_folds(ds: RealDataset) -> int:
    """Folds of two training micrographs each."""
    return ds.n_train // 2


def fold_folders(work: Path, fold: int, regime: str, seed: int,
                 ds: RealDataset) -> tuple[Path, Path, Path]:
    """Symlinked train/held-out micrograph folders and training labels for one fold."""
    names, _ = ds.split()
    held = names[2 * fold: 2 * fold + 2]
    train_names = [n for n in names if n not in held]
    base = work / f"fold{fold}"
    labels = base / f"labels_{regime}_{seed}"
    return (link_micrographs(base / "train_mics", train_names, ds),
            link_micrographs(base / "heldout_mics", held, ds),
            labels if labels.exists() else write_labels(labels, train_names, regime, seed, ds))


def one_fold(work: Path, name: str, fold: int, regime: str, seed: int,
             train_args: list[str], pick_args: list[str], all_stages: bool = False,
             ds: RealDataset = DATASETS["10017"]) -> dict:
    tr, te, lab = fold_folders(work, fold, regime, seed, ds)
    exp = work / f"fold{fold}" / f"exp_{name}_{regime}_{seed}"
    log_path = exp.with_suffix(".log")
    t_train = train(tr, lab, exp, seed, train_args, log_path, ds.diameter)
    metrics = json.loads((exp / "metrics.json").read_text())
    best = metrics["best_stage"]
    keys = ("threshold", "precision", "recall", "f1", "best_f1", "average_precision")
    row = {"fold": fold, "best_stage": best, "train_seconds": round(t_train, 1)}
    if all_stages:  # every stage's model on the held-out pair, each at its own threshold
        row["stages"] = {st: {k: v[k] for k in keys}
                         for st, v in score_stages(exp, te, log_path, "heldout",
                                                   pick_args, ds).items()}
        return {**row, **row["stages"][best]}
    thr = next(s["threshold"] for s in metrics["stages"] if s["stage"] == best)
    picks = exp / "heldout_picks"
    pick_all(exp / "best_model.pt", te, picks, log_path, pick_args)
    p = evaluate(picks / "autopick.star", te, thr, exp / "heldout_metrics.json", log_path, ds)
    return {**row, "threshold": thr, **{k: p[k] for k in keys[1:]}}


def summary(folds: list[dict]) -> dict:
    row = {}
    for k in ("precision", "recall", "f1", "best_f1", "average_precision", "train_seconds"):
        v = np.array([f[k] for f in folds], dtype=float)
        row[k] = [float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0]
    row["n_folds"] = len(folds)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", nargs=2, action="append", metavar=("NAME", "TRAIN_ARGS"),
                    required=True, help="a named set of extra selfpick train flags (repeatable)")
    ap.add_argument("--pick-args", default="", help="extra selfpick pick flags for every config")
    ap.add_argument("--dataset", default="10017", choices=list(DATASETS))
    ap.add_argument("--folds", type=int, nargs="+", default=None,
                    help="default: every fold (5 for 10017, 3 for 10028)")
    ap.add_argument("--regime", default="all", choices=["all", "30pct"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--output", default=None,
                    help="default: bench/results/tune_cv.json (10017), tune_cv_10028.json")
    ap.add_argument("--all-stages", action="store_true",
                    help="also score every stage's model on the held-out micrographs (to "
                         "compare self-training stages)")
    args = ap.parse_args()
    ds = DATASETS[args.dataset]
    if not ds.available():
        print(f"skipped: the real data set is not at {ds.folder}")
        return 0
    folds_to_run = args.folds if args.folds is not None else list(range(n_folds(ds)))
    if any(not 0 <= f < n_folds(ds) for f in folds_to_run):
        ap.error(f"{ds.key} has folds 0-{n_folds(ds) - 1}")
    if args.output is None:
        args.output = str(RESULTS / ("tune_cv.json" if ds.key == "10017"
                                     else f"tune_cv_{ds.key}.json"))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="selfpick_cv_"))
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.output)
    results = json.loads(out.read_text()) if out.exists() else {"benchmark": "tune_cv",
                                                                  "configs": {}}
    pick_args = shlex.split(args.pick_args)
    for name, train_args in args.config:
        t0 = time.perf_counter()
        folds = []
        for fold in folds_to_run:
            f = one_fold(work, name, fold, args.regime, args.seed, shlex.split(train_args),
                         pick_args, args.all_stages, ds)
            folds.append(f)
            print(f"{name} fold {fold}: F1 {f['f1']:.3f} (P {f['precision']:.3f} "
                  f"R {f['recall']:.3f}) best-F1 {f['best_f1']:.3f} "
                  f"AP {f['average_precision']:.3f} train {f['train_seconds']:.0f} s "
                  f"[{f['best_stage']}]", flush=True)
        results["configs"][name] = {
            "dataset": ds.key, "train_args": train_args, "pick_args": args.pick_args, "regime": args.regime,
            "seed": args.seed, "date": dt.datetime.now().isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - t0, 1), "folds": folds,
            "summary": summary(folds)}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")

    def ms(x):
        return f"{x[0]:.3f} ± {x[1]:.3f}"

    print("| config | train flags | F1 (own threshold) | best F1 | AP | train s | folds |")
    print("|---|---|---|---|---|---|---|")
    for name, c in results["configs"].items():
        s = c["summary"]
        print(f"| {name} | `{c['train_args']}` | {ms(s['f1'])} | {ms(s['best_f1'])} | "
              f"{ms(s['average_precision'])} | {s.get('train_seconds', [float('nan')])[0]:.0f} | "
              f"{s['n_folds']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
