"""Score a model, or another picker's coordinate files, against ground-truth coordinates.

Examples:
  selfpick evaluate --model exp1/best_model.pt --image-dir test/mics --coords-file test/truth/
  selfpick evaluate --picks topaz_picks.txt --image-dir test/mics --coords-file truth.star \\
      --particle-diameter 108
  selfpick evaluate --picks picks/autopick.star ... --threshold 0.3 --output metrics.json

Particle level: picks are matched one-to-one to true centres within --radius pixels (default:
half the particle diameter), highest score first; precision, recall and F1 at the threshold
(the model's own, or --threshold; for pick files every pick unless --threshold), the best F1
over all thresholds, and average precision. Pixel level too when a model is given.
"""

from __future__ import annotations

import argparse

from selfpick.io.coords import FORMATS


def add_args(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", "-m", help="a selfpick model file")
    what.add_argument("--picks", help="coordinate file or folder from any picker")
    parser.add_argument("--image-dir", "--images", required=True, dest="image_dir",
                        help="micrographs (folder, glob or list file)")
    parser.add_argument("--coords-file", "--truth", required=True, dest="coords_file",
                        help="ground-truth coordinates (file or folder, any supported format)")
    parser.add_argument("--coords-format", choices=FORMATS, default=None,
                        help="format of the ground truth (default: detected)")
    parser.add_argument("--picks-format", choices=FORMATS, default=None,
                        help="format of --picks (default: detected)")
    parser.add_argument("--radius", type=float, default=None, metavar="PX",
                        help="match radius in original pixels (default: half the diameter)")
    parser.add_argument("--particle-diameter", type=float, default=None, metavar="PX",
                        help="particle diameter, for the default radius of --picks")
    parser.add_argument("--threshold", "-t", type=float, default=None,
                        help="score threshold (default: the model's; every pick for --picks)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--output", "-o", default=None, metavar="JSON",
                        help="write all metrics (overall and per micrograph) to this file")


def main(args: argparse.Namespace) -> int:
    from selfpick.evaluation.evaluate import evaluate_model, evaluate_picks, metrics_table
    from selfpick.utils.atomic import atomic_write_json

    if args.model:
        result = evaluate_model(args.model, args.image_dir, args.coords_file, args.radius,
                                args.threshold, args.device, args.coords_format,
                                progress=not args.quiet)
    else:
        result = evaluate_picks(args.picks, args.image_dir, args.coords_file, args.radius,
                                args.threshold, args.particle_diameter, args.picks_format,
                                args.coords_format)
    print(metrics_table(result))
    if args.output:
        atomic_write_json(args.output, result)
        print(f"wrote {args.output}")
    return 0



