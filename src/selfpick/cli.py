"""``selfpick`` command line: one sub-command per module in :mod:`selfpick.commands`.

Each command module has a docstring (first line = one-line help, the rest = epilog with
examples), ``add_args(parser)`` and ``main(args)``; ``main`` calls a library function.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from selfpick import __version__
from selfpick.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, SelfpickError

# (command name, module under selfpick.commands), in the order --help lists them.
COMMANDS: list[tuple[str, str]] = [
    ("simulate", "simulate"),
    ("train", "train"),
    ("pick", "pick"),
    ("evaluate", "evaluate"),
    ("compare", "compare"),
    ("report", "report"),
    ("view", "view"),
    ("demo", "demo"),
    ("relion-pick", "relion_pick"),
]


def _available_commands() -> list[tuple[str, object]]:
    out = []
    for name, module in COMMANDS:
        try:
            mod = importlib.import_module(f"selfpick.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"selfpick.commands.{module}":
                continue  # not part of this build
            raise
        for attr in ("add_args", "main"):
            if not hasattr(mod, attr):
                raise RuntimeError(f"selfpick.commands.{module} has no {attr}()")
        out.append((name, mod))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfpick",
        description="Particle picking for cryo-EM: a U-Net trained on your picks, improved by "
        "iterative self-training, picking whole data sets into RELION/cryoSPARC/EMAN2 files.",
        epilog="Run 'selfpick <command> --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"selfpick {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, mod in _available_commands():
        doc = (mod.__doc__ or "").strip()
        # The first paragraph is the one-line help (it may wrap over several source lines).
        first, _, rest = doc.partition("\n\n")
        first = " ".join(first.split())
        p = sub.add_parser(name, help=first, description=first, epilog=rest.strip() or None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
        p.add_argument("-v", "--verbose", action="store_true", help="debug messages")
        mod.add_args(p)
        p.set_defaults(_main=mod.main)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each message (pytest, notebooks and
    callers that redirect stderr replace it after the handler is made)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Console messages on stderr; ``quiet`` keeps warnings only. Log files (training.log)
    are separate handlers and always get INFO."""
    console_level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger("selfpick")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for h in root.handlers:
        if getattr(h, "_selfpick_console", False):
            h.setLevel(console_level)
            return
    h = _StderrHandler()
    h.setFormatter(logging.Formatter("%(message)s"))
    h.setLevel(console_level)
    h._selfpick_console = True  # type: ignore[attr-defined]
    root.addHandler(h)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if argv is None:
        argv = sys.argv[1:]
    args = parser.parse_args(argv)
    # The command line as given (for config.json and logs), also when called from Python.
    args._argv = list(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USER_ERROR
    setup_logging(args.quiet, args.verbose)
    from selfpick.utils.runtime import tune_allocator

    tune_allocator()
    try:
        result = args._main(args)
    except SelfpickError as exc:
        # A file name with undecodable bytes (surrogate escapes) must not turn the message
        # into a UnicodeEncodeError on a strict stream: show those bytes as \udcXX escapes.
        text = str(exc).encode("utf-8", "backslashreplace").decode("utf-8")
        text = " ".join(part.strip() for part in text.splitlines())  # one line, always
        print(f"selfpick {args.command}: error: {text}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"selfpick {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
