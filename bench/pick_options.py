#!/usr/bin/env python
"""Picking throughput of `selfpick pick` over one folder with several sets of options.

Where ``bench/speed.py`` measures the default options against the floor, this compares option
sets on the same micrographs in one run -- DataLoader workers or reading threads, batches of
micrographs, preprocessing on the CPU or on the GPU -- to choose defaults for a kind of
machine. Each set runs as a user runs it (a new process); reported per set: wall time
(start-up included), the in-loop time ``pick_summary.json`` reports (first read to last
written file), micrographs per second for both, peak memory of the process tree, and the
number of picks (the same for every set, or the options changed the result).

Usage:
  python bench/pick_options.py --device cuda --n-micrographs 300 \\
      --options "" "--preprocess-on cpu" "--workers 8" "--batch-size 4"
  python bench/pick_options.py --device cpu --size 1024 --n-micrographs 20 --options "" "--workers 1"

Writes bench/results/NAME.json (default pick_options.json) and prints a Markdown table.
Without --model it trains a small default-architecture model first (as bench/speed.py does).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import (build_model, machine_info, machine_line, make_folder, now,  # noqa: E402
                   publish, run_pick, simulate_unique, versions, workdir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (the pick --device)")
    ap.add_argument("--options", nargs="+", default=[""],
                    help="option sets for selfpick pick, one quoted string each ('' = defaults)")
    ap.add_argument("--size", type=int, default=4096, help="micrograph side in pixels")
    ap.add_argument("--diameter", type=float, default=108.0, help="particle diameter, pixels")
    ap.add_argument("--n-micrographs", type=int, default=100, help="micrographs in the folder")
    ap.add_argument("--unique", type=int, default=4,
                    help="distinct simulated micrographs the folder cycles through (hard links)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each option set")
    ap.add_argument("--model", type=Path, default=None,
                    help="model file (default: train a small default-architecture one)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where data and outputs go (default: a temporary folder, removed); "
                    "bench/speed.py's --workdir can be reused: its simulated micrographs are")
    ap.add_argument("--name", default="pick_options", help="results file bench/results/NAME.json")
    args = ap.parse_args(argv)

    started = now()
    machine = machine_info()
    rows = []
    with workdir(args.workdir, "selfpick-pickopts-") as work:
        log = work / "pick_options.log"
        model = args.model or build_model(work, args.diameter)
        sources = simulate_unique(work / f"sim_{args.size}", args.unique, args.size,
                                  args.diameter)
        folder = work / "options_folder"
        make_folder(folder, sources, args.n_micrographs)
        for text in args.options:
            runs = []
            for r in range(args.repeats):
                print(f"selfpick pick {text or '(defaults)'}  [{r + 1}/{args.repeats}] ...",
                      flush=True)
                runs.append(run_pick(model, folder, work / "options_out", args.device, log,
                                     shlex.split(text)))
            best = min(runs, key=lambda x: x["wall_s"])
            n = best["n_micrographs"]
            rows.append({
                "options": text, "n_micrographs": n, "n_picks": best["n_picks"],
                "wall_s": best["wall_s"], "loop_s": best["loop_s"],
                "micrographs_per_s_wall": n / best["wall_s"],
                "micrographs_per_s_loop": n / best["loop_s"],
                "peak_tree_rss_mb": best["peak_tree_rss_mb"], "max_rss_mb": best["max_rss_mb"],
                "runs": runs,
            })
    payload = {
        "benchmark": "pick_options", "date": started, "finished": now(), "machine": machine,
        "versions": versions(),
        "settings": {"device": args.device, "size": args.size, "diameter": args.diameter,
                     "n_micrographs": args.n_micrographs, "unique_micrographs": args.unique,
                     "repeats": args.repeats, "model": str(args.model) if args.model else
                     "trained by the benchmark (default architecture)",
                     "timing": "wall: time.perf_counter around the process; loop: "
                               "pick_summary.json seconds; best of the repeats"},
        "results": rows,
    }
    return publish(args.name, payload, markdown)


def markdown(p: dict) -> str:
    s = p["settings"]
    lines = [
        f"## selfpick pick option sets: {s['n_micrographs']} micrographs of "
        f"{s['size']}x{s['size']}, device {s['device']}",
        "",
        machine_line(p),
        "",
        "| options | wall (s) | micrographs/s (wall, start-up incl.) | in-loop (s) | "
        "micrographs/s (in-loop) | peak RSS, tree (MB) | picks |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in p["results"]:
        lines.append(f"| `{r['options'] or '(defaults)'}` | {r['wall_s']:.2f} | "
                     f"{r['micrographs_per_s_wall']:.2f} | {r['loop_s']:.2f} | "
                     f"{r['micrographs_per_s_loop']:.2f} | {r['peak_tree_rss_mb']:.0f} | "
                     f"{r['n_picks']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
