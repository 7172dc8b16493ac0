"""Write an experiment's report: metrics per stage, progression, PR curves, pick overlays, HTML.

Examples:
  selfpick report experiments/run1
  selfpick report experiments/run1 --image-dir test/mics --coords-file test/truth.star
  selfpick report experiments/run1 --image-dir test/mics --coords-file test/truth.star \\
      --picks picks/autopick.star --output run1_report

Writes EXPERIMENT/report/ (or --output): report.html (one self-contained page, images
embedded), progression.png, pr_curves.png, overlay_<micrograph>.png and each stage's 4-panel
figure. The metrics table and progression are the validation figures recorded in training;
the precision-recall curves and overlays run every stage model on --image-dir/--coords-file
(held-out data) or, without them, on the experiment's validation micrographs.
"""

from __future__ import annotations

import argparse

from selfpick.io.coords import FORMATS


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", metavar="EXPERIMENT_DIR",
                        help="the experiment folder written by selfpick train")
    parser.add_argument("--image-dir", "--images", dest="image_dir", default=None,
                        help="micrographs to evaluate and draw (default: the experiment's "
                        "validation split)")
    parser.add_argument("--coords-file", "--truth", dest="coords_file", default=None,
                        help="ground-truth coordinates of --image-dir (any supported format)")
    parser.add_argument("--coords-format", choices=FORMATS, default=None,
                        help="format of --coords-file (default: detected)")
    parser.add_argument("--picks", default=None, metavar="FILE",
                        help="a pick file or folder to draw and score instead of the best "
                        "model's own picks (e.g. selfpick pick output)")
    parser.add_argument("--picks-format", choices=FORMATS, default=None,
                        help="format of --picks (default: detected)")
    parser.add_argument("--output", "-o", default=None, metavar="DIR",
                        help="report folder (default: EXPERIMENT_DIR/report)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")


def main(args: argparse.Namespace) -> int:
    from selfpick.report.html import build_report

    path = build_report(args.experiment, image_dir=args.image_dir,
                        coords_file=args.coords_file, picks=args.picks, output=args.output,
                        device=args.device, coords_format=args.coords_format,
                        picks_format=args.picks_format, progress=not args.quiet)
    print(f"wrote {path}")
    return 0
