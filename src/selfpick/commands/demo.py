"""Run the whole pipeline on built-in simulated data (a minute or so on a 2-core CPU).

Simulates micrographs with partially labelled particles, trains a model (supervised, then
self-training), picks held-out micrographs, scores them against the complete truth and
writes a report -- all under --output (default: demo_output/).

Example:
  selfpick demo
  selfpick demo --output /tmp/demo --seed 3
"""

from __future__ import annotations

import argparse

from selfpick.demo import DemoSettings, run_demo


def add_args(parser: argparse.ArgumentParser) -> None:
    d = DemoSettings()
    parser.add_argument("--output", "-o", default="demo_output", help="folder for everything "
                        "the demo writes (replaced if it holds an earlier demo)")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed")
    parser.add_argument("--label-fraction", type=float, default=d.label_fraction,
                        help="share of the simulated particles given as labels")
    parser.add_argument("--iterations", type=int, default=d.iterations,
                        help="self-training iterations")


def main(args: argparse.Namespace) -> int:
    settings = DemoSettings(seed=args.seed, label_fraction=args.label_fraction,
                            iterations=args.iterations)
    summary = run_demo(args.output, settings, progress=not args.quiet)
    print("\nValidation metrics per stage (validation micrograph, labels as given):")
    print(summary["stages"])
    print(f"\nBest stage: {summary['best_stage']}")
    print("\nHeld-out micrographs, particle level against the complete truth:")
    print(summary["test_table"])
    secs = summary["seconds"]
    print(f"\nTime: {secs['total']:.0f} s (simulate {secs['simulate']:.0f}, train "
          f"{secs['train']:.0f}, pick {secs['pick']:.0f}, report {secs['report']:.0f})")
    if summary["report"]:
        print(f"Report: {summary['report']}")
    print(f"Everything is in {args.output}/")
    return 0
