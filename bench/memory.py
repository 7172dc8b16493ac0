#!/usr/bin/env python
"""Peak memory of `selfpick pick` over folders of 10 and 200 micrographs, 1024^2 and 4096^2.

Picking streams: one micrograph at a time per DataLoader worker, picks written as soon as they
are found. So the peak resident memory must not grow with the number of micrographs; the
acceptance figure is <= 1.5 GB for 200 micrographs of 4096^2, the same as for 10.

Each case runs ``selfpick pick`` as a user would (a new process) and samples the resident
memory of its whole process tree -- the main process plus DataLoader worker processes -- every
50 ms with psutil (see ``speed.run_measured``). The sum over processes counts shared pages
(the torch libraries) once per process, so with workers it is an upper bound.

The folders hold ``--unique`` simulated micrographs repeated under different names (hard
links: no extra disk). Model: ``--model``, or a small one trained with the default architecture
(as in bench/speed.py).

Usage:
  python bench/memory.py                                  # 10 and 200, 1024^2 and 4096^2
  python bench/memory.py --sizes 1024 --counts 10,200     # what fits in a few minutes
  python bench/memory.py --workers auto,2                 # also with 2 reader processes

Writes bench/results/memory.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import (build_model, machine_info, machine_line, make_folder, now,  # noqa: E402
                   publish, run_pick, simulate_unique, versions, workdir)

LIMIT_MB = 1.5 * 1024  # the acceptance limit (1.5 GB), for the table's verdict column


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1024,4096", help="micrograph sides, comma-separated")
    ap.add_argument("--counts", default="10,200", help="folder sizes, comma-separated")
    ap.add_argument("--diameter", type=float, default=108.0, help="particle diameter, pixels")
    ap.add_argument("--unique", type=int, default=4,
                    help="distinct simulated micrographs per size")
    ap.add_argument("--workers", default="auto",
                    help="comma-separated --workers values for selfpick pick (auto = its "
                    "default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where data and outputs go (default: a temporary folder, removed)")
    ap.add_argument("--name", default="memory", help="results file bench/results/NAME.json")
    args = ap.parse_args(argv)

    sizes = [int(x) for x in args.sizes.split(",")]
    counts = [int(x) for x in args.counts.split(",")]
    workers = [w.strip() for w in args.workers.split(",")]
    started = now()
    machine = machine_info()
    rows = []
    with workdir(args.workdir, "selfpick-memory-") as work:
        log = work / "commands.log"
        model = args.model or build_model(work, args.diameter)
        for size in sizes:
            sources = simulate_unique(work / f"sim_{size}", args.unique, size, args.diameter)
            for n in counts:
                folder = work / f"folder_{size}_{n}"
                make_folder(folder, sources, n)
                for w in workers:
                    extra = [] if w == "auto" else ["--workers", w]
                    print(f"{n} x {size}^2, workers {w} ...", flush=True)
                    res = run_pick(model, folder, work / "out", args.device, log, extra)
                    rows.append({"size": size, "n_micrographs": n, "workers": w,
                                 "picked": res.pop("n_micrographs"), **res,
                                 "per_micrograph_s": res["wall_s"] / n})
                shutil.rmtree(folder, ignore_errors=True)

    # Flatness: the peak with the most micrographs over the peak with the fewest, per size and
    # worker setting, from this run's own measurements.
    flat = []
    for size in sizes:
        for w in workers:
            sel = sorted((r for r in rows if r["size"] == size and r["workers"] == w),
                         key=lambda r: r["n_micrographs"])
            if len(sel) >= 2:
                flat.append({"size": size, "workers": w, "from_n": sel[0]["n_micrographs"],
                             "to_n": sel[-1]["n_micrographs"],
                             "peak_ratio": sel[-1]["peak_tree_rss_mb"] /
                             sel[0]["peak_tree_rss_mb"],
                             "max_rss_ratio": sel[-1]["max_rss_mb"] / sel[0]["max_rss_mb"]})
    payload = {
        "benchmark": "memory", "date": started, "finished": now(), "machine": machine,
        "versions": versions(),
        "settings": {"sizes": sizes, "counts": counts, "diameter": args.diameter,
                     "unique_micrographs": args.unique, "workers": workers,
                     "device": args.device, "limit_mb": LIMIT_MB,
                     "model": str(args.model) if args.model else
                     "trained by the benchmark (default architecture)",
                     "sampling": "every 50 ms: psutil RSS of the process tree, and each "
                                 "process's VmHWM (kernel high-water mark) from /proc"},
        "results": rows, "flatness": flat,
    }
    return publish(args.name, payload, markdown)


def markdown(p: dict) -> str:
    lines = [
        "## Peak memory of `selfpick pick` (process tree, RSS)",
        "",
        machine_line(p),
        "",
        "| micrograph | N | workers | peak RSS, tree, sampled (MB) | max RSS, largest process, "
        f"VmHWM (MB) | <= {p['settings']['limit_mb'] / 1024:.1f} GB | wall (s) | "
        "s per micrograph | picks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in p["results"]:
        peak = max(r["peak_tree_rss_mb"], r["max_rss_mb"])
        ok = "yes" if peak <= p["settings"]["limit_mb"] else "NO"
        lines.append(f"| {r['size']}^2 | {r['n_micrographs']} | {r['workers']} | "
                     f"{r['peak_tree_rss_mb']:.0f} | {r['max_rss_mb']:.0f} | {ok} | "
                     f"{r['wall_s']:.1f} | {r['per_micrograph_s']:.3f} | {r['n_picks']} |")
    if p["flatness"]:
        lines += ["", "| micrograph | workers | N | tree peak ratio | max RSS ratio |",
                  "|---|---|---|---|---|"]
        for f in p["flatness"]:
            lines.append(f"| {f['size']}^2 | {f['workers']} | {f['to_n']} vs {f['from_n']} | "
                         f"{f['peak_ratio']:.3f} | {f['max_rss_ratio']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
