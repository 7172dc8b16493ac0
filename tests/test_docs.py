"""The README and docs/ say what the code does: commands that run, flags that exist, links
that lead somewhere.

The quick start is run for real (``test_quick_start_runs``, slow). The rule for what is run:
every fenced ```` ```bash ```` block under the README heading that starts with "Quick start",
up to the next level-2 heading. In those blocks, lines continued with a trailing backslash
are joined, blank lines and ``#`` comments are dropped, and ``make ...`` lines are skipped (CI
runs ``make test`` itself). Every other line must be a ``selfpick`` command; it is split as
the shell would split it (quotes, inline comments) and run as a subprocess in a temporary
folder laid out like a user's project (:data:`LAYOUT`). Nothing in a command is rewritten:
the only change is :data:`SMALL_TRAINING`, appended to ``selfpick train`` so that training
takes seconds (argparse lets the last occurrence of a flag win). A wrong flag, a wrong path or
a wrong order of steps makes a command exit non-zero and the test fail; an emptied or renamed
quick start fails :func:`test_quick_start_has_the_five_steps`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))

# Docs that are linked from the README while someone else writes them; a missing one is
# tolerated until it lands. Remove its entry once the file is in the repository.
PENDING_DOCS: set[str] = set()

# What the README's quick-start placeholders are in the test folder: 6 micrographs made with
# `selfpick simulate` (768 x 768 px, particles of 180 px, the README's --particle-diameter)
# into sim/, linked as a user's project would hold them (see _make_layout):
#   Micrographs/  sim_000.mrc ... sim_004.mrc
#   picks/        partial hand picks (60 % of the particles, CryoPPP CSV) of sim_000-sim_003;
#                 sim_004 has none, as an unpicked micrograph of a user's data set
#   Test/         sim_005.mrc, never in Micrographs/
#   test_picks/   its complete picks (the simulation's truth)
LAYOUT = ("Micrographs/", "picks/", "Test/", "test_picks/")
SIM_SIZE, SIM_DIAMETER = 768, 180

# Appended to `selfpick train`: a tiny U-Net, one epoch per stage, one self-training
# iteration (as tests/conftest.py's tiny_config), so the quick start runs in seconds.
SMALL_TRAINING = ["--depth", "2", "--width", "8", "--crop-size", "64", "--crops-per-epoch", "16",
                  "--batch-size", "4", "--initial-epochs", "1", "--retrain-epochs", "1",
                  "--self-training-iterations", "1"]

QUICK_START_STEPS = ("train", "report", "evaluate", "pick", "view")


# --------------------------------------------------------------------------------------------
# Reading markdown


def _blocks_and_headings(text: str):
    """(kind, value) in document order: ("heading", (level, title)) for ATX headings outside
    code fences, ("code", (language, body)) for fenced blocks."""
    out, fence, lang, body = [], None, "", []
    for line in text.splitlines():
        stripped = line.strip()
        if fence is None:
            m = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if m:
                fence, lang, body = m.group(1), m.group(2).lower(), []
                continue
            h = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
            if h:
                out.append(("heading", (len(h.group(1)), h.group(2))))
        elif stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
            out.append(("code", (lang, "\n".join(body))))
            fence = None
        else:
            body.append(line)
    return out


def quick_start_blocks(text: str) -> list[str]:
    """The bash blocks under the level-2 heading starting with "Quick start"."""
    blocks, inside = [], False
    for kind, value in _blocks_and_headings(text):
        if kind == "heading" and value[0] <= 2:
            inside = value[0] == 2 and value[1].lower().startswith("quick start")
        elif kind == "code" and inside and value[0] in ("bash", "sh", "shell", "console"):
            blocks.append(value[1])
    return blocks


def command_lines(block: str) -> list[str]:
    """Logical command lines of a shell block: continuations joined, comments and blanks
    dropped (inline comments stay; shlex removes them)."""
    lines, current = [], ""
    for raw in block.splitlines():
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        line, current = current.strip(), ""
        if line and not line.startswith("#"):
            lines.append(line)
    if current.strip():
        lines.append(current.strip())
    return lines


def quick_start_commands(text: str) -> list[list[str]]:
    """argv of every command the quick start asks the reader to run (``make`` lines skipped)."""
    out = []
    for block in quick_start_blocks(text):
        for line in command_lines(block):
            argv = shlex.split(line, comments=True)
            if argv and argv[0] != "make":
                out.append(argv)
    return out


def github_slug(title: str) -> str:
    """The anchor GitHub gives a heading: the text as rendered, lower case, punctuation other
    than hyphens and underscores removed, spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # links -> their text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for kind, value in _blocks_and_headings(path.read_text(encoding="utf-8")):
        if kind != "heading":
            continue
        slug = github_slug(value[1])
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(text: str) -> list[str]:
    """Targets of inline links and images outside code blocks and inline code."""
    # Drop fenced blocks, then inline code spans, then collect [text](target).
    body, fence = [], None
    for line in text.splitlines():
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if m and fence is None:
            fence = m.group(1)
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        body.append(line)
    prose = re.sub(r"`[^`\n]*`", "", "\n".join(body))
    return re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)


# --------------------------------------------------------------------------------------------
# Fast checks


def test_install_block_comes_first_with_make_demo_and_make_test():
    first = next(v for k, v in _blocks_and_headings(README.read_text(encoding="utf-8"))
                 if k == "code")
    assert first[0] == "bash", "the README's first code block is the install block (```bash)"
    commands = [shlex.split(line, comments=True) for line in command_lines(first[1])]
    assert commands[:2] == [["make", "demo"], ["make", "test"]], (
        "the README's first commands must stay `make demo` and `make test` (CI runs make test)")


def test_quick_start_has_the_five_steps():
    commands = quick_start_commands(README.read_text(encoding="utf-8"))
    assert len(commands) >= len(QUICK_START_STEPS), (
        f"found {len(commands)} command(s) under the README's 'Quick start' heading "
        f"(```bash blocks); expected at least {len(QUICK_START_STEPS)}: {commands}")
    for argv in commands:
        assert argv[0] == "selfpick", (
            f"the quick start runs selfpick commands only (test_docs runs each): {argv}")
    steps = [argv[1] for argv in commands]
    for step in QUICK_START_STEPS:
        assert step in steps, f"the quick start has no `selfpick {step}` step: {steps}"


def test_quick_start_commands_parse(capsys):
    """Every quick-start command is accepted by selfpick's own parser (flags, choices)."""
    from selfpick.cli import build_parser

    for argv in quick_start_commands(README.read_text(encoding="utf-8")):
        try:
            build_parser().parse_args(argv[1:])
        except SystemExit as exc:
            pytest.fail(f"README quick start: `{shlex.join(argv)}` is refused by the parser "
                        f"(exit {exc.code}): {capsys.readouterr().err.strip()}")


def _option_strings() -> set[str]:
    import argparse

    from selfpick.cli import build_parser

    parser = build_parser()
    options = {s for a in parser._actions for s in a.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options.update(s for a in sub._actions for s in a.option_strings)
    return options


def test_flags_in_the_readme_exist():
    """Every --flag the README names is an option of some selfpick command."""
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9]*(?:-[a-z0-9]+)*)", text))
    unknown = sorted(named - _option_strings())
    assert not unknown, f"README.md names flags that no selfpick command has: {unknown}"


def test_commands_table_lists_every_command():
    from selfpick.cli import COMMANDS

    text = README.read_text(encoding="utf-8")
    table = re.findall(r"^\|\s*`selfpick ([a-z][a-z-]*)`\s*\|", text, flags=re.M)
    registered = [name for name, _ in COMMANDS]
    assert sorted(table) == sorted(registered), (
        f"README's commands table {table} vs selfpick.cli.COMMANDS {registered}")


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_to_files_and_headings(doc):
    broken = []
    for target in links(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I):
            continue  # http:, https:, mailto:
        path_part, _, fragment = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        rel = os.path.relpath(dest, REPO)
        if not dest.exists():
            if rel not in PENDING_DOCS:
                broken.append(f"{target}: no file {rel}")
            continue
        if fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {rel}")
    assert not broken, f"broken links in {doc.relative_to(REPO)}: {broken}"


def test_quick_start_rule_reads_a_sample():
    """The block rule on a made-up README: only the Quick start section, make lines skipped,
    continuations joined, comments and quotes handled as the shell does."""
    sample = "\n".join([
        "## Install", "```bash", "selfpick simulate --output x", "```",
        "## Quick start", "text", "```bash", "make demo",
        "# a comment", "selfpick train --image-dir 'A B/' \\", "    --output-dir e  # note",
        "```", "```python", "selfpick.nothing()", "```",
        "### Still quick start", "```bash", "selfpick report e", "```",
        "## Next", "```bash", "selfpick pick", "```",
    ])
    assert quick_start_commands(sample) == [
        ["selfpick", "train", "--image-dir", "A B/", "--output-dir", "e"],
        ["selfpick", "report", "e"],
    ]
    assert github_slug("Self-training: what it does and when") == \
        "self-training-what-it-does-and-when"
    assert github_slug("Speed and memory (`bench/speed.py`)") == "speed-and-memory-benchspeedpy"


# --------------------------------------------------------------------------------------------
# The quick start, run


def _selfpick() -> list[str]:
    script = Path(sys.executable).with_name("selfpick")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "selfpick"]


def _run(argv: list[str], cwd: Path, what: str) -> None:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        pytest.fail(f"{what} exited with {proc.returncode}:\n  {shlex.join(argv)}\n{tail}")


def _make_layout(root: Path) -> None:
    """The user's project of the quick start (:data:`LAYOUT`), made with `selfpick simulate`
    (in this process: one start-up of torch fewer than a subprocess)."""
    from selfpick.cli import main

    sim = root / "sim"
    assert main(["simulate", "--output", str(sim), "-n", "6", "--size", str(SIM_SIZE),
                 "--diameter", str(SIM_DIAMETER), "--label-fraction", "0.6", "--seed", "1",
                 "--quiet"]) == 0
    links = {
        "Micrographs": [sim / "micrographs" / f"sim_{i:03d}.mrc" for i in range(5)],
        "picks": [sim / "labels" / "csv" / f"sim_{i:03d}.csv" for i in range(4)],
        "Test": [sim / "micrographs" / "sim_005.mrc"],
        "test_picks": [sim / "truth" / "csv" / "sim_005.csv"],
    }
    assert sorted(f"{name}/" for name in links) == sorted(LAYOUT)
    for folder, files in links.items():
        (root / folder).mkdir()
        for f in files:
            assert f.is_file(), f"test set-up: selfpick simulate wrote no {f}"
            if f.suffix == ".csv":
                assert len(f.read_text().splitlines()) > 1, f"test set-up: {f} holds no pick"
            (root / folder / f.name).symlink_to(f)


@pytest.mark.slow
def test_quick_start_runs(tmp_path):
    commands = quick_start_commands(README.read_text(encoding="utf-8"))
    assert len(commands) >= len(QUICK_START_STEPS)
    _make_layout(tmp_path)
    for argv in commands:
        extra = SMALL_TRAINING if argv[1] == "train" else []
        _run([*_selfpick(), *argv[1:], *extra], tmp_path,
             f"README quick start `{shlex.join(argv)}` (placeholders: {', '.join(LAYOUT)})")
