"""Compare every stage model of one or more experiments on the same labelled micrographs.

Examples:
  selfpick compare experiments/run1
  selfpick compare experiments/run1 experiments/run2 --output comparison_runs
  selfpick compare experiments/* --image-dir test/mics --coords-file test/truth.star

Each iteration_*/model.pt is evaluated exactly as 'selfpick evaluate --model' does: particle
precision/recall/F1 at the model's own threshold, the best F1 over thresholds and average
precision against the ground-truth centres, and pixel F1/ROC-AUC. Without --image-dir the
micrographs are the first experiment's validation split (the experiments must then have been
trained on the same data). Prints a table and writes comparison.json and comparison.png to
--output (default: ./comparison).
"""

from __future__ import annotations

import argparse

from selfpick.io.coords import FORMATS


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiments", nargs="+", metavar="EXPERIMENT_DIR",
                        help="experiment folders written by selfpick train")
    parser.add_argument("--image-dir", "--images", dest="image_dir", default=None,
                        help="micrographs to evaluate on (default: the first experiment's "
                        "validation split)")
    parser.add_argument("--coords-file", "--truth", dest="coords_file", default=None,
                        help="ground-truth coordinates of --image-dir (any supported format)")
    parser.add_argument("--coords-format", choices=FORMATS, default=None,
                        help="format of --coords-file (default: detected)")
    parser.add_argument("--output", "-o", default="comparison", metavar="DIR",
                        help="folder for comparison.json and comparison.png "
                        "(default: ./comparison)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")


def main(args: argparse.Namespace) -> int:
    from selfpick.report.compare import compare_experiments, comparison_table, write_comparison

    result = compare_experiments(args.experiments, image_dir=args.image_dir,
                                 coords_file=args.coords_file, device=args.device,
                                 coords_format=args.coords_format, progress=not args.quiet)
    print(comparison_table(result))
    written = write_comparison(result, args.output)
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0
