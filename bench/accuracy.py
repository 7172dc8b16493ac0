#!/usr/bin/env python
"""Accuracy on real micrographs, held-out particle-level F1: EMPIAR-10017 (β-galactosidase)
and EMPIAR-10028 (80S ribosome), one table per data set.

What a user would run, with default settings: ``selfpick train`` (only the data, the diameter
and the output folder given) on the micrographs that sort first (10017: 10, 10028: 6),
``selfpick pick`` on the ones that sort last (5 and 4; never seen in training, validation or
pseudo-labelling), ``selfpick evaluate`` with a match radius of half a diameter (54 / 28 px).
Two label regimes -- all curated picks, and a seeded 30 % of them per micrograph -- and
three seeds each.

Picking keeps every candidate (``--threshold 0``) so that one pick file gives the F1 at the
model's own threshold, the best F1 over thresholds (an oracle) and AP.

With ``--datasets panel`` (or ``sim-NAME``) the same runs on the simulated "proteins" of
``selfpick simulate --preset`` (shells, rods, small particles, raw 16-bit counts, crowded and
sparse fields, carbon edges): 8 training / 4 test micrographs each, scored against exact truth.

Usage:
  python bench/accuracy.py                      # both data sets (over an hour on 2 cores)
  python bench/accuracy.py --datasets panel --regimes all --seeds 0
  python bench/accuracy.py --datasets 10028 --regimes all
  python bench/accuracy.py --seeds 0 --regimes all --train-args "--initial-epochs 10"

Writes bench/results/accuracy.json (one entry per data set; data sets, regimes and seeds not
run keep their earlier runs) and prints a Markdown table per data set; ``--update-docs`` also
rewrites the README's accuracy table. Skips (exit 0) a data set that is
absent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realdata import DATASETS, RealDataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# EMPIAR-10017, the default data set of the helpers below (bench/tune_cv.py and
# bench/selftraining.py were written for it).
BETAGAL = DATASETS["10017"]
DATA = BETAGAL.folder
DIAMETER = BETAGAL.diameter
RADIUS = BETAGAL.radius
N_TRAIN = BETAGAL.n_train


def run(cmd: list[str], log_path: Path) -> float:
    """Run a selfpick command, teeing output to ``log_path``; returns wall seconds."""
    t0 = time.perf_counter()
    with open(log_path, "a") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {shlex.join(cmd)}; see {log_path}")
    return time.perf_counter() - t0


def selfpick() -> list[str]:
    exe = Path(sys.executable).with_name("selfpick")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "selfpick"]


def link_micrographs(folder: Path, names: list[str], ds: RealDataset = BETAGAL) -> Path:
    """A folder of symlinks to the data set's micrographs ``names`` (made once)."""
    if not folder.exists():
        folder.mkdir(parents=True)
        for n in names:
            (folder / f"{n}{ds.ext}").symlink_to(ds.micrograph(n))
    return folder


def write_labels(folder: Path, names: list[str], regime: str, seed: int,
                 ds: RealDataset = BETAGAL) -> Path:
    """Curated picks of ``names``: all of them, or a seeded 30 % per micrograph ("30pct")."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for n in names:
        df = pd.read_csv(ds.coordinates / f"{n}.csv")
        if regime == "30pct":
            k = max(1, int(round(0.3 * len(df))))
            df = df.iloc[np.sort(rng.choice(len(df), size=k, replace=False))]
        df.to_csv(folder / f"{n}.csv", index=False)
    return folder


def prepare(work: Path, regime: str, seed: int,
            ds: RealDataset = BETAGAL) -> tuple[Path, Path, Path]:
    """Folders of symlinked micrographs (train/test) and the training labels for a regime."""
    train, test = ds.split()
    return (link_micrographs(work / "train_mics", train, ds),
            link_micrographs(work / "test_mics", test, ds),
            write_labels(work / f"labels_{regime}_{seed}", train, regime, seed, ds))


def train(mics: Path, labels: Path, exp: Path, seed: int, train_args: list[str],
          log_path: Path, diameter: float = DIAMETER) -> float:
    """``selfpick train`` with default settings plus ``train_args``; returns wall seconds."""
    if exp.exists():
        shutil.rmtree(exp)
    return run(selfpick() + ["train", "--image-dir", str(mics), "--coords-file", str(labels),
                             "--particle-diameter", f"{diameter:g}", "--output-dir", str(exp),
                             "--seed", str(seed), "-q", *train_args], log_path)


def pick_all(model: Path, mics: Path, out: Path, log_path: Path,
             pick_args: list[str] = ()) -> float:
    """``selfpick pick`` keeping every candidate (``--threshold 0``), RELION STAR files."""
    return run(selfpick() + ["pick", "--model", str(model), "--images", str(mics), "--output",
                             str(out), "--threshold", "0", "--format", "star", "-q", *pick_args],
               log_path)


def evaluate(picks: Path, test_mics: Path, threshold: float | None, out: Path,
             log_path: Path, ds: RealDataset = BETAGAL) -> dict:
    cmd = selfpick() + ["evaluate", "--picks", str(picks), "--image-dir", str(test_mics),
                        "--coords-file", str(ds.coordinates), "--radius", f"{ds.radius:g}",
                        "--output", str(out), "-q"]
    if threshold is not None:
        cmd += ["--threshold", str(threshold)]
    run(cmd, log_path)
    return json.loads(out.read_text())["particle"]


def score_stages(exp: Path, mics: Path, log_path: Path, prefix: str,
                 pick_args: list[str] = (), ds: RealDataset = BETAGAL,
                 stages: set[str] | None = None) -> dict[str, dict]:
    """Every stage's model of experiment ``exp`` (or those named in ``stages``) picked on
    ``mics`` and scored at its own threshold: ``{stage: {threshold, precision, recall, f1,
    best_f1, average_precision, pick_seconds_per_micrograph, validation_f1}}``. Picks and
    metrics go to ``exp/{prefix}_picks_{stage}`` and ``exp/{prefix}_metrics_{stage}.json``."""
    n_mics = len(list(mics.glob(f"*{ds.ext}")))
    out = {}
    for s in json.loads((exp / "metrics.json").read_text())["stages"]:
        stage, thr = s["stage"], s["threshold"]
        if stages is not None and stage not in stages:
            continue
        picks = exp / f"{prefix}_picks_{stage}"
        t_pick = pick_all(exp / stage / "model.pt", mics, picks, log_path, pick_args)
        p = evaluate(picks / "autopick.star", mics, thr, exp / f"{prefix}_metrics_{stage}.json",
                     log_path, ds)
        out[stage] = {
            "threshold": thr, "precision": p["precision"], "recall": p["recall"], "f1": p["f1"],
            "best_f1": p["best_f1"], "average_precision": p["average_precision"],
            "pick_seconds_per_micrograph": round(t_pick / max(1, n_mics), 2),
            "validation_f1": s["validation"]["particle"]["f1"],
        }
    return out


def one_run(work: Path, regime: str, seed: int, train_args: list[str],
            ds: RealDataset = BETAGAL) -> dict:
    tr, te, lab = prepare(work, regime, seed, ds)
    exp = work / f"exp_{regime}_{seed}"
    log_path = work / f"log_{regime}_{seed}.txt"
    t_train = train(tr, lab, exp, seed, train_args, log_path, ds.diameter)
    metrics = json.loads((exp / "metrics.json").read_text())
    out: dict = {"dataset": ds.key, "regime": regime, "seed": seed,
                 "train_seconds": round(t_train, 1), "best_stage": metrics["best_stage"],
                 "final_stage": metrics["final_stage"],
                 "stages": score_stages(exp, te, log_path, "test", (), ds)}
    # Pixel-level metrics of the best model on the test micrographs, for comparison with the
    # original notes (which reported only pixel-level figures).
    pix_json = exp / "test_metrics_best_model_full.json"
    run(selfpick() + ["evaluate", "--model", str(exp / "best_model.pt"), "--image-dir", str(te),
                      "--coords-file", str(ds.coordinates), "--radius", f"{ds.radius:g}",
                      "--output", str(pix_json), "-q"], log_path)
    out["best_pixel"] = json.loads(pix_json.read_text())["pixel"]
    out["best"] = out["stages"][metrics["best_stage"]]
    out["iteration_0"] = out["stages"]["iteration_0_supervised"]
    return out


def summarise(runs: list[dict]) -> dict:
    table = {}
    for regime in sorted({r["regime"] for r in runs}):
        rs = [r for r in runs if r["regime"] == regime]
        row = {}
        for which in ("best", "iteration_0"):
            for k in ("precision", "recall", "f1", "best_f1", "average_precision"):
                v = np.array([r[which][k] for r in rs], dtype=float)
                row[f"{which}_{k}"] = [float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0]
        for k in ("precision", "recall", "f1", "roc_auc"):
            v = np.array([r["best_pixel"][k] or np.nan for r in rs], dtype=float)
            row[f"pixel_{k}"] = [float(np.nanmean(v)), float(np.nanstd(v, ddof=1)) if len(v) > 1
                                 else 0.0]
        t = np.array([r["train_seconds"] for r in rs])
        row["train_seconds"] = [float(t.mean()), float(t.max())]
        row["n_seeds"] = len(rs)
        table[regime] = row
    return table


def markdown(table: dict) -> str:
    def ms(x):
        return f"{x[0]:.3f} ± {x[1]:.3f}"

    lines = ["| labels | model | precision | recall | F1 (own threshold) | best F1 (oracle) | AP |",
             "|---|---|---|---|---|---|---|"]
    for regime, row in table.items():
        for which, label in (("iteration_0", "supervised (iteration 0)"),
                             ("best", "best stage (self-training)")):
            lines.append(f"| {regime} | {label} | {ms(row[which + '_precision'])} | "
                         f"{ms(row[which + '_recall'])} | {ms(row[which + '_f1'])} | "
                         f"{ms(row[which + '_best_f1'])} | "
                         f"{ms(row[which + '_average_precision'])} |")
    lines.append("")
    lines.append("| labels | pixel precision | pixel recall | pixel F1 | pixel ROC-AUC | "
                 "train time mean / max (s) |")
    lines.append("|---|---|---|---|---|---|")
    for regime, row in table.items():
        lines.append(f"| {regime} | {ms(row['pixel_precision'])} | {ms(row['pixel_recall'])} | "
                     f"{ms(row['pixel_f1'])} | {ms(row['pixel_roc_auc'])} | "
                     f"{row['train_seconds'][0]:.0f} / {row['train_seconds'][1]:.0f} |")
    return "\n".join(lines)


# Other pickers on the same split, as measured when the issues were filed (Topaz 0.3.20 on
# one CPU, scored with selfpick evaluate the same way); not re-run by this script.
REFERENCES = {
    "10017": [("Topaz 0.3.20 trained on the same labels", 0.847, None, 0.908),
              ("Topaz 0.3.20 pretrained (resnet16_u64)", 0.729, None, 0.718),
              ("label ceiling: selfpick trained on all 15 micrographs, test ones included",
               0.899, 0.900, 0.936)],
    "10028": [("Topaz 0.3.20 trained on the same 6 micrographs", 0.863, 0.876, 0.877),
              ("Topaz 0.3.20 pretrained (resnet16_u64)", 0.790, 0.827, 0.722),
              ("label ceiling: selfpick 0.5.0 trained on all 10 micrographs, test ones "
               "included", 0.881, 0.882, 0.897),
              ("label ceiling: selfpick 0.6.0 trained on all 10 micrographs, test ones "
               "included (3 seeds, 2026-12-01)", 0.889, 0.896, 0.928)],
}


def reference_rows(key: str) -> str:
    rows = ["| reference | F1 (own threshold) | best F1 (oracle) | AP |", "|---|---|---|---|"]
    for label, f1, best, ap in REFERENCES.get(key, []):
        fmt = (lambda x: "–" if x is None else f"{x:.3f}")
        rows.append(f"| {label} | {fmt(f1)} | {fmt(best)} | {fmt(ap)} |")
    return "\n".join(rows)


def load_results(path: Path) -> dict:
    """Earlier results, one entry per data set (a file from before the second data set holds
    EMPIAR-10017's entry at its top level)."""
    if not path.is_file():
        return {"benchmark": "accuracy", "datasets": {}}
    old = json.loads(path.read_text())
    if "datasets" in old:
        return old
    return {"benchmark": "accuracy", "datasets": {"10017": old}}


def merge_runs(old: dict | None, runs: list[dict], header: dict) -> dict:
    """A data set's entry with ``runs`` replacing the earlier runs of the same label regime
    and seed; the others are kept (each run carries the date it was made, older ones the
    date of the entry they came from), so re-running one regime does not drop another."""
    new = {(r["regime"], r["seed"]) for r in runs}
    kept = []
    for r in (old or {}).get("runs", []):
        if (r["regime"], r["seed"]) not in new:
            kept.append({**r, "date": r.get("date", old.get("date"))})
    entry = {**header, "runs": kept + runs}
    entry["summary"] = summarise(entry["runs"])
    return entry


README = REPO / "README.md"
README_START, README_END = "<!-- accuracy table: start -->", "<!-- accuracy table: end -->"
# What a regime is called in the README.
REGIME_LABEL = {"all": "all curated picks", "30pct": "30 % of them, every micrograph"}


def readme_table(results: dict) -> str:
    """The README's accuracy table: per real data set and label regime the chosen stage's F1
    at its own threshold, best F1 and AP (mean ± sd over seeds), the training time, then the
    other pickers measured on the same split (``REFERENCES``). Simulated presets are left to
    docs/benchmarks.md."""
    def ms(x):
        return f"{x[0]:.3f} ± {x[1]:.3f}" if x[1] else f"{x[0]:.3f}"

    def num(x):
        return "–" if x is None else f"{x:.3f}"

    lines = ["| data set (test micrographs) | labels / picker | F1 (own threshold) | best F1 "
             "| AP | train s (mean) |", "|---|---|---|---|---|---|"]
    for key, entry in results["datasets"].items():
        if key not in DATASETS:
            continue
        name = DATASETS[key].title.split(" (")[0]
        for regime in ("all", "30pct"):
            row = entry["summary"].get(regime)
            if row is None:
                continue
            dates = sorted({r.get("date", entry["date"])[:10] for r in entry["runs"]
                            if r["regime"] == regime})
            lines.append(
                f"| {name} | selfpick, {REGIME_LABEL[regime]} ({row['n_seeds']} seeds, "
                f"{', '.join(dates)}) | **{ms(row['best_f1'])}** | {ms(row['best_best_f1'])} | "
                f"**{ms(row['best_average_precision'])}** | {row['train_seconds'][0]:.0f} |")
        for label, f1, best, ap in REFERENCES.get(key, []):
            lines.append(f"| {name} | {label} | {num(f1)} | {num(best)} | {num(ap)} | |")
    return "\n".join(lines)


def replace_marked_block(path: Path, start: str, end: str, body: str) -> None:
    """Replace what lies between the marker lines ``start`` and ``end`` of ``path`` with
    ``body`` (everything else in the file is left as it is)."""
    text = path.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no '{start}' ... '{end}' block to update")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{body.strip()}\n{end}{tail}")


def update_readme(path: Path, results: dict) -> None:
    """Replace what lies between the accuracy markers of ``path`` with ``readme_table``."""
    replace_marked_block(path, README_START, README_END, readme_table(results))


# The simulated "proteins" of selfpick.simulate.SIMULATED_PANEL (exact truth, so no label
# ceiling): 8 training and 4 test micrographs each. png8 is left out (the same micrographs as
# globular, only stored as 8-bit PNG).
PANEL = ("globular", "shell", "elongated", "small", "raw16", "crowded", "sparse", "carbon",
         "faint")
PANEL_TRAIN, PANEL_TEST = 8, 4


def panel_dataset(work: Path, preset: str) -> RealDataset:
    """One preset of the simulated panel laid out like the real data sets."""
    from selfpick.simulate import simulate_preset

    root = work / "data"
    data = root / "simulated"
    if not (data / "simulation.json").exists():
        simulate_preset(preset, data, n_micrographs=PANEL_TRAIN + PANEL_TEST, seed=2026,
                        overwrite=True)
    meta = json.loads((data / "simulation.json").read_text())
    diameter = float(meta.get("config", meta).get("diameter"))
    for link, target in (("micrographs", data / "micrographs"),
                         ("coordinates", data / "truth" / "csv")):
        if not (root / link).exists():
            (root / link).symlink_to(target)
    ext = next(iter(sorted((data / "micrographs").iterdir()))).suffix
    return RealDataset(f"sim-{preset}", f"simulated panel: {preset} ({diameter:g} px "
                       f"particles, {PANEL_TRAIN} train / {PANEL_TEST} test, exact truth)",
                       root, ext, diameter, PANEL_TRAIN)


def datasets(keys: list[str], work_root: Path):
    """``(key, work folder, RealDataset)`` for each of ``keys`` (a real data set, ``sim-NAME``
    or ``panel`` = every preset), simulating the simulated ones; real ones that are absent
    are skipped with a message."""
    expanded = []
    for key in keys:
        expanded += [f"sim-{p}" for p in PANEL] if key == "panel" else [key]
    for key in expanded:
        work = work_root / key
        work.mkdir(parents=True, exist_ok=True)
        ds = panel_dataset(work, key[4:]) if key.startswith("sim-") else DATASETS[key]
        if not ds.available():
            print(f"skipped {key}: the real data set is not at {ds.folder}")
            continue
        yield key, work, ds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choices = [*DATASETS, *(f"sim-{p}" for p in PANEL), "panel"]
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=choices,
                    help="real data sets, simulated panel presets (sim-NAME), or 'panel' "
                         "for every preset (default: the real data sets)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--regimes", nargs="+", default=["all", "30pct"], choices=["all", "30pct"])
    ap.add_argument("--train-args", default="", help="extra selfpick train flags (tuning only)")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--output", default=str(RESULTS / "accuracy.json"))
    ap.add_argument("--update-docs", action="store_true",
                    help=f"also replace the table between the accuracy markers of {README}")
    args = ap.parse_args()
    work_root = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="selfpick_acc_"))
    train_args = shlex.split(args.train_args)
    out = Path(args.output)
    results = load_results(out)
    for key, work, ds in datasets(args.datasets, work_root):
        t0 = time.perf_counter()
        now = dt.datetime.now().isoformat(timespec="seconds")
        runs = []
        for regime in args.regimes:
            for seed in args.seeds:
                r = one_run(work, regime, seed, train_args, ds)
                r["date"] = now
                runs.append(r)
                b = r["best"]
                print(f"{key} {regime} seed {seed}: best {r['best_stage']} F1 {b['f1']:.3f} "
                      f"(P {b['precision']:.3f} R {b['recall']:.3f}) best-F1 "
                      f"{b['best_f1']:.3f} AP {b['average_precision']:.3f}; iteration 0 F1 "
                      f"{r['iteration_0']['f1']:.3f}; train {r['train_seconds']:.0f} s",
                      flush=True)
        entry = merge_runs(results["datasets"].get(key), runs, {
            "benchmark": "accuracy", "dataset": ds.title,
            "match_radius_px": ds.radius, "date": now,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "python": platform.python_version()},
            "train_args": train_args, "total_seconds": round(time.perf_counter() - t0, 1)})
        results["datasets"][key] = entry
        print(f"\n### {ds.title}\n")
        print(markdown(entry["summary"]))
        print()
        print(reference_rows(key))
        print(f"{key}: {entry['total_seconds']:.0f} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    if args.update_docs:
        update_readme(README, results)
        print(f"updated the accuracy table in {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
