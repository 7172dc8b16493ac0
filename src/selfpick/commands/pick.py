"""Pick particles in micrographs with a trained model.

Examples:
  # RELION: per-micrograph _autopick.star files + autopick.star index
  selfpick pick --model exp1/best_model.pt --images 'MotionCorr/job003/Movies/*.mrc' \\
      --output picks/

  # keep every candidate with its score, choose the threshold later
  selfpick pick --model exp1/best_model.pt --images mics/ --output picks/ --threshold 0

  # one CSV for everything; EMAN2/crYOLO box files; Topaz text
  selfpick pick ... --format csv      (picks.csv: micrograph,x,y,score,diameter)
  selfpick pick ... --format box      (lower-left corners, box = particle diameter)
  selfpick pick ... --format topaz    (picks.txt, tab-separated)

  # split a data set over 8 machines / a SLURM job array
  selfpick pick ... --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT

The preprocessing, particle size and threshold come from the model file: no flags to
remember. Coordinates are particle centres in pixels of the micrographs as given, x = column,
y = row of the image array (RELION's convention). Use --flip-y only for a program whose
origin is at the other end of the y axis (some cryoSPARC imports): check an overlay first.
"""

from __future__ import annotations

import argparse

from selfpick.config import TTA_CHOICES
from selfpick.io.coords import FORMATS


def score_threshold(text: str) -> float:
    """argparse type of a score threshold: a number from 0 to 1 (scores are probabilities)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r}: scores lie between 0 and 1; give a "
                                         "threshold from 0 (keep every candidate) to 1")
    return value


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", required=True, help="model file (best_model.pt)")
    parser.add_argument("--images", "-i", required=True, nargs="+", metavar="PATH",
                        help="micrograph folder(s), glob(s), list file(s) or files")
    parser.add_argument("--output", "-o", required=True, metavar="DIR",
                        help="output folder (created if needed)")
    parser.add_argument("--format", "-f", default="star", choices=FORMATS,
                        help="coordinate format (default: star, RELION's autopick layout)")
    parser.add_argument("--threshold", "-t", type=score_threshold, default=None, metavar="T",
                        help="score threshold from 0 to 1 (default: the model's, chosen on "
                        "validation); 0 keeps every candidate")
    parser.add_argument("--per-micrograph", action="store_true", default=None,
                        help="one file per micrograph also for csv/topaz/json")
    parser.add_argument("--single-file", action="store_true",
                        help="one combined file (star with rlnMicrographName, csv, topaz, json)")
    parser.add_argument("--edge-margin", type=float, default=None, metavar="PX",
                        help="drop picks closer than this to a micrograph edge, original "
                        "pixels (default: the model's, learned in training from how close to "
                        "the edges the labelled particles lie; 0 keeps every pick)")
    parser.add_argument("--min-distance", type=float, default=None, metavar="F",
                        help="minimum distance between picks as a fraction of the particle "
                        "diameter (default: the model's, 0.5)")
    parser.add_argument("--box-size", type=float, default=None, metavar="PX",
                        help="box size for .box/.cbox (default: the particle diameter)")
    parser.add_argument("--flip-y", action="store_true",
                        help="write y as (height - 1 - y) for programs with a bottom-left origin")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N",
                        help="micrographs of the same size per network pass; may raise GPU "
                        "throughput for small micrographs (4096^2 ones gained nothing on an "
                        "H200), no gain on a CPU (default: 1)")
    parser.add_argument("--workers", type=int, default=-1,
                        help="processes reading and downsampling micrographs ahead of the "
                        "network (threads that only read, when downsampling runs on the GPU); "
                        "0 = a reader thread in this process, with the network on the other "
                        "cores (default: 0 on machines with 2 cores or fewer, else "
                        "min(4, cores - 1))")
    parser.add_argument("--preprocess-on", choices=("auto", "cpu", "device"), default="auto",
                        help="where micrographs are downsampled and normalised: 'device' = "
                        "with torch on the picking device, 'cpu' = with NumPy/SciPy; auto = "
                        "the GPU when picking on one (the same result up to float rounding; "
                        "the CPUs then only read files), else the CPU (default: auto)")
    parser.add_argument("--tta", type=int, choices=TTA_CHOICES, default=None,
                        help="test-time augmentation: views of each micrograph (flips, "
                        "transposes) whose network outputs are averaged; more views rank "
                        "particles better and cost that many times the network time "
                        "(default: the model's, with which its threshold was chosen: 8 "
                        "unless it was trained with another --tta, 1 for models saved "
                        "before the setting existed)")
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="tile size in model pixels (default: automatic; 0 = whole image)")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="pick only every N-th micrograph starting at I (0-based)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="skip micrographs whose output file exists (continue a job)")


def main(args: argparse.Namespace) -> int:
    from selfpick.picking.pick import PickOptions, parse_shard, pick

    opts = PickOptions(fmt=args.format, threshold=args.threshold,
                       per_micrograph=args.per_micrograph, single_file=args.single_file,
                       edge_margin=args.edge_margin, min_distance=args.min_distance,
                       flip_y=args.flip_y, box_size=args.box_size, device=args.device,
                       batch_size=args.batch_size, workers=args.workers, tile=args.tile,
                       tta=args.tta,
                       preprocess_on=args.preprocess_on,
                       shard=parse_shard(args.shard), skip_existing=args.skip_existing)
    summary = pick(args.model, args.images, args.output, opts, progress=not args.quiet)
    print(summary.describe())
    for path in summary.outputs:
        print(f"wrote {path}")
    return 0
