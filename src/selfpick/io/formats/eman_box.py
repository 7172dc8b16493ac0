"""EMAN / crYOLO / Topaz ``.box`` files: one micrograph per file.

Each line is ``x_corner y_corner width height`` separated by spaces or tabs, in original pixels,
where the corner is the box's lowest column and row (EMAN's "lower-left" in MRC display, the
array's ``data[y_corner, x_corner]``). Old crYOLO files add a 5th column, the confidence, which
is read as the score; further columns are ignored. Lines starting with ``#`` (Helicon filament
markers, comments) are skipped.

Conversions (no y-flip: MRC box files use the array's axes):
- read:  centre = corner + size / 2 (exact, fractional for odd sizes);
- write: corner = round(centre - width / 2) with an integer ``width``, so a centre read back
  from a written file is within 0.5 px of the original.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from selfpick.errors import InputError
from selfpick.io.formats._common import (
    box_widths,
    build_table,
    empty_picks,
    file_stem_name,
    one_micrograph,
    parse_floats,
    read_text,
)
from selfpick.utils.atomic import atomic_write_text

NAME = "box"
EXTENSION = ".box"
PER_MICROGRAPH = True


def parse_rows(path: str | os.PathLike) -> tuple[list[int], list[list[str]]]:
    """Non-comment lines split on whitespace, with their 1-based line numbers."""
    numbers: list[int] = []
    rows: list[list[str]] = []
    for i, line in enumerate(read_text(path).splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        numbers.append(i)
        rows.append(s.split())
    return numbers, rows


def read(path: str | os.PathLike) -> pd.DataFrame:
    numbers, rows = parse_rows(path)
    if not rows:
        return empty_picks()
    for n, r in zip(numbers, rows):
        if len(r) < 4:
            raise InputError(
                f"line {n} has {len(r)} value(s); a .box line needs 4: "
                "x_corner y_corner width height",
                path,
            )
    return from_corners(
        path,
        numbers,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] if len(r) > 4 else "nan" for r in rows],
        name=file_stem_name(path),
    )


def from_corners(
    path: str | os.PathLike,
    line_numbers: list[int] | None,
    xc: list,
    yc: list,
    w: list,
    h: list,
    score: list | None,
    *,
    name: str,
    est_size: np.ndarray | None = None,
    row_label: str = "line",
) -> pd.DataFrame:
    """Corner + size columns (text or numbers) -> centre table; shared with ``.cbox``.

    The diameter column is ``est_size`` where known, else the mean box side: box files state a
    box, and crYOLO and CryoPPP draw it at the particle size.
    """

    def col(values: list, label: str, required: bool) -> np.ndarray:
        if line_numbers is None:
            return parse_floats(values, label, path, required=required, row_label=row_label)
        # Line numbers may jump over comments; parse row by row only if something is wrong.
        try:
            return parse_floats(values, label, path, required=required, row_label=row_label)
        except InputError:
            for n, v in zip(line_numbers, values):
                parse_floats([v], label, path, required=required, row_label=row_label, first_row=n)
            raise

    x0 = col(xc, "x_corner", True)
    y0 = col(yc, "y_corner", True)
    width = col(w, "width", True)
    height = col(h, "height", True)
    bad = (width <= 0) | (height <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        where = f"line {line_numbers[i]}" if line_numbers else f"{row_label} {i + 1}"
        raise InputError(
            f"{where}: box width and height must be positive, got {width[i]:g} x {height[i]:g}",
            path,
        )
    scores = col(score, "score", False) if score is not None else None
    size = (width + height) / 2.0
    if est_size is not None:
        size = np.where(np.isfinite(est_size) & (est_size > 0), est_size, size)
    return build_table(name, x0 + width / 2.0, y0 + height / 2.0, scores, size)


def corners(picks: pd.DataFrame, box_size: float | None, fmt: str) -> tuple[np.ndarray, ...]:
    """Integer box size and corner per pick: corner = round(centre - size / 2), halves up."""
    width = np.rint(box_widths(picks, box_size, fmt)).astype(np.int64)
    width = np.maximum(width, 1)
    x0 = np.floor(picks["x"].to_numpy(dtype=np.float64) - width / 2.0 + 0.5).astype(np.int64)
    y0 = np.floor(picks["y"].to_numpy(dtype=np.float64) - width / 2.0 + 0.5).astype(np.int64)
    return x0, y0, width


def write(picks: pd.DataFrame, path: str | os.PathLike, *, box_size: float | None = None) -> None:
    """Tab-separated integers ``x_corner y_corner size size``; no score column (EMAN has none).

    ``box_size`` (px) is the box written for every pick; without it each pick's diameter is used.
    """
    one_micrograph(picks, NAME)
    x0, y0, width = corners(picks, box_size, NAME)
    lines = [f"{a}\t{b}\t{w}\t{w}\n" for a, b, w in zip(x0, y0, width)]
    atomic_write_text(path, "".join(lines))


def sniff(head: str) -> bool:
    """Lines of at least 4 numbers, nothing else."""
    seen = 0
    for line in head.splitlines()[:20]:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        if len(parts) < 4:
            return False
        try:
            [float(p) for p in parts]
        except ValueError:
            return False
        seen += 1
    return seen > 0
