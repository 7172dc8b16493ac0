"""Pick particles as a RELION External job (run from RELION's GUI or scheduler).

In RELION 4/5, make a new job of type "External":
  Input tab:
    External executable:  selfpick relion-pick
                          (or the full path: /path/to/venv/bin/selfpick relion-pick)
    Input micrographs:    CtfFind/job004/micrographs_ctf.star
                          (or MotionCorr/job002/corrected_micrographs.star)
  Params tab (label = value):
    model      = /path/to/exp1/best_model.pt      (required)
    threshold  = 0.4       (optional; default: the model's threshold)
    gpu        = 0         (optional; or device = cpu / cuda:1)
    flip_y     = no        (optional; yes writes y as height - 1 - y)
  Running tab: "Number of threads" is passed as --j (CPU threads / reader processes).

RELION then runs, from the project folder:
  selfpick relion-pick --o External/job012/ --in_mics CtfFind/job004/micrographs_ctf.star \\
      --model /path/best_model.pt --threshold 0.4 --j 4

and the job writes External/job012/Movies/<micrograph>_autopick.star (RELION's layout: the
micrograph's sub-folder after its jobNNN/ is kept), External/job012/autopick.star (the
coordinate index: give it to Extract as "Input coordinates", or open it in Manual picking)
and RELION_OUTPUT_NODES.star, then RELION_JOB_EXIT_SUCCESS -- or RELION_JOB_EXIT_FAILURE with
the reason in run.err. Running the job again (Continue) picks only micrographs without
coordinates. Unknown --label value pairs are ignored with a warning.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("selfpick")

_TRUE = ("1", "yes", "y", "true", "on")
_FALSE = ("0", "no", "n", "false", "off", "")
# Inputs an External job may pass that picking does not use.
_UNUSED_INPUTS = ("in_movies", "in_parts", "in_coords", "in_3dref", "in_mask")


def add_args(parser: argparse.ArgumentParser) -> None:
    # RELION passes every Param as "--label value" and a label left without value as a bare
    # "--label"; argparse must neither stop on an unknown label nor on a missing value (it
    # would exit before a failure marker is written and RELION would wait for ever). So every
    # option takes an optional string, checked in main(), and labels are never abbreviated.
    parser.allow_abbrev = False
    opt = dict(nargs="?", default=None, const="")
    parser.add_argument("--o", metavar="JOBDIR", **opt,
                        help="RELION job folder, relative to the project folder (RELION sets it)")
    parser.add_argument("--in_mics", metavar="STAR", **opt,
                        help="micrographs STAR (micrographs_ctf.star, corrected_micrographs.star)")
    parser.add_argument("--model", metavar="FILE", **opt,
                        help="selfpick model file (best_model.pt); required")
    parser.add_argument("--threshold", metavar="T", **opt,
                        help="score threshold from 0 to 1 (default: the model's); 0 keeps every "
                        "candidate")
    parser.add_argument("--device", metavar="DEV", **opt,
                        help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--gpu", metavar="IDS", **opt,
                        help="RELION-style GPU id(s), e.g. 0 or 1: picks on cuda:<first id>; "
                        "empty = the first GPU")
    parser.add_argument("--flip_y", metavar="YES/NO", nargs="?", default=None, const="yes",
                        help="write y as (height - 1 - y) (only for a bottom-left-origin program)")
    parser.add_argument("--j", metavar="N", **opt, help="threads (RELION's 'Number of threads')")
    parser.add_argument("--pipeline_control", metavar="DIR", **opt, help=argparse.SUPPRESS)
    for name in _UNUSED_INPUTS:
        parser.add_argument(f"--{name}", **opt, help=argparse.SUPPRESS)
    parser.set_defaults(relion_unknown=[])
    _tolerate_unknown(parser)


def _tolerate_unknown(parser: argparse.ArgumentParser) -> None:
    """Make the sub-parser keep unknown arguments in ``relion_unknown`` instead of failing.

    ``selfpick.cli`` calls ``parse_args`` on the main parser, which rejects whatever a
    sub-parser leaves unparsed. The sub-parser's ``parse_known_args`` (what the sub-command
    action calls) is wrapped on this one instance so that it leaves nothing.
    """
    original = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = original(args, namespace)
        ns.relion_unknown = list(getattr(ns, "relion_unknown", []) or []) + list(extras)
        return ns, []

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _flag(value: str | None, name: str) -> bool:
    from selfpick.errors import SelfpickError

    if value is None:
        return False
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise SelfpickError(f"--{name} {value!r}: expected yes or no")


def _number(value: str | None, name: str, kind=float):
    from selfpick.errors import SelfpickError

    if value is None or not value.strip():
        return None
    try:
        return kind(value.strip())
    except ValueError:
        raise SelfpickError(f"--{name} {value!r}: expected a number") from None


def _device(args: argparse.Namespace) -> str:
    from selfpick.errors import SelfpickError

    if args.device is not None and args.device.strip():
        return args.device.strip()
    if args.gpu is None:
        return "auto"
    ids = [g for g in args.gpu.replace(":", ",").split(",") if g.strip()]
    if not ids:
        return "cuda"
    first = ids[0].strip()
    if not first.isdigit():
        raise SelfpickError(f"--gpu {args.gpu!r}: expected GPU numbers such as 0 or 0,1")
    if len(ids) > 1:
        log.warning("--gpu %s: selfpick picks on one GPU per job; using GPU %s", args.gpu, first)
    return f"cuda:{first}"


def main(args: argparse.Namespace) -> int:
    from selfpick.errors import SelfpickError
    from selfpick.picking import relion

    if not args.o:
        raise SelfpickError("--o (the RELION job folder) is required; RELION sets it when it "
                            "runs the job")
    with relion.external_job(args.o):
        if args.relion_unknown:
            log.warning("ignored argument(s) selfpick relion-pick does not know: %s",
                        " ".join(args.relion_unknown))
        for name in _UNUSED_INPUTS:
            if getattr(args, name):
                log.warning("--%s %s is not used for picking (ignored)", name,
                            getattr(args, name))
        if not args.in_mics:
            raise SelfpickError("no input micrographs: set 'Input micrographs' on the External "
                                "job's Input tab (a micrographs_ctf.star or "
                                "corrected_micrographs.star)")
        if not args.model:
            raise SelfpickError("no model: add a parameter with label 'model' and the path of "
                                "a selfpick model file (best_model.pt) as its value")
        threads = _number(args.j, "j", int)
        result = relion.relion_pick(
            args.o, args.in_mics, args.model,
            threshold=_number(args.threshold, "threshold"), device=_device(args),
            flip_y=_flag(args.flip_y, "flip_y"), threads=threads,
            progress=not args.quiet,
        )
        print(result.describe())
        print(f"wrote {result.index} ({len(result.rows)} micrographs) and {result.nodes}")
    return 0
