"""Browse a pick run: one static HTML page with every micrograph, its picks and a threshold slider.

Examples:
  # the folder selfpick pick wrote, and the micrographs it picked
  selfpick view picks/ --images 'Micrographs/*.mrc' --output picks_browser/
  # then open picks_browser/index.html in a web browser (no server needed)

  # with ground truth: true positives green, false positives red, missed particles orange
  selfpick view picks/ --images mics/ --truth truth/particles.star --output browser/

  # another picker's files (any format selfpick reads), particle diameter in pixels
  selfpick view cryolo/CBOX/ --images mics/ --particle-diameter 180 --output browser/

The page shows a strip of thumbnails with each micrograph's pick count, one micrograph large
with its picks as circles (coloured by score, or by match to the ground truth), and a slider
that hides picks below a score threshold and updates every count at once. It also writes the
'selfpick pick ... --threshold T' command line for the threshold you settle on. Pick with
--threshold 0 first to be able to browse every candidate. Keys: left/right (or p/n) previous
and next micrograph, up/down threshold +-0.01, c circles on/off.

Written to --output: index.html, img/ and thumbs/ (JPEGs), data/ (picks per micrograph),
browser.json. An earlier picks browser in --output is replaced; any other non-empty folder
is refused.
"""

from __future__ import annotations

import argparse

from selfpick.commands.pick import score_threshold
from selfpick.io.coords import FORMATS


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of pixels")
    return value


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("picks", metavar="PICKS",
                        help="the folder selfpick pick wrote (or any pick file or folder: "
                        "STAR, box, cbox, CSV, Topaz, JSON)")
    parser.add_argument("--images", "-i", required=True, nargs="+", metavar="PATH",
                        help="the micrographs: folder(s), glob(s), list file(s) or files")
    parser.add_argument("--output", "-o", required=True, metavar="DIR",
                        help="folder for the page (index.html and its images)")
    parser.add_argument("--truth", "--coords-file", dest="truth", default=None, metavar="FILE",
                        help="ground-truth coordinates (any supported format): picks are then "
                        "shown as true/false positives and unpicked particles as missed")
    parser.add_argument("--picks-format", choices=FORMATS, default=None,
                        help="format of PICKS (default: detected)")
    parser.add_argument("--truth-format", choices=FORMATS, default=None,
                        help="format of --truth (default: detected)")
    parser.add_argument("--particle-diameter", type=_positive, default=None, metavar="PX",
                        help="particle diameter in pixels of the micrographs (default: from "
                        "the picks, the truth or the pick run's model)")
    parser.add_argument("--radius", type=_positive, default=None, metavar="PX",
                        help="match radius for --truth (default: half the particle "
                        "diameter, as selfpick evaluate)")
    parser.add_argument("--threshold", "-t", type=score_threshold, default=None, metavar="T",
                        help="where the slider starts, 0-1 (default: the pick run's "
                        "threshold, else the model's)")
    parser.add_argument("--model", "-m", default=None, metavar="FILE",
                        help="model file for the page's command line (default: the one the "
                        "pick run recorded in pick_summary.json)")
    parser.add_argument("--display-size", type=int, default=1024, metavar="PX",
                        help="longest side of the large view's images (default: 1024)")


def main(args: argparse.Namespace) -> int:
    from selfpick.report.browser import write_browser

    summary = write_browser(args.picks, args.images, args.output, truth=args.truth,
                            picks_format=args.picks_format, truth_format=args.truth_format,
                            particle_diameter=args.particle_diameter, radius=args.radius,
                            threshold=args.threshold, model=args.model,
                            display_size=args.display_size, progress=not args.quiet)
    print(summary.describe())
    print(f"wrote {summary.index}")
    return 0
