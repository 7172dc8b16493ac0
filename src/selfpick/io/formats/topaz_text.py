"""Topaz particle coordinates: tab-separated text with a header.

Header ``image_name	x_coord	y_coord	score``; ``image_name`` is the micrograph name without an
extension (an image extension, if present, is removed). Coordinates are centres in pixels of
the images given to Topaz, which are often downsampled: selfpick reads and writes original
pixels, so rescale Topaz's own files (``topaz extract -x``) before use. ``score`` (Topaz's
log-likelihood ratio) is optional on read.

Topaz writes integer coordinates; selfpick writes up to 2 decimals, which Topaz and RELION's
Topaz reader parse as numbers. RELION's reader finds columns by the tokens ``x_coord``,
``y_coord`` and ``score``, so that header is always written.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from selfpick.io.formats._common import (
    read_point_table,
    fmt_float,
    header_line,
    split_header,
)
from selfpick.utils.atomic import atomic_write_text

NAME = "topaz"
EXTENSION = ".txt"
PER_MICROGRAPH = False

COORD_DECIMALS = 2


def read(path: str | os.PathLike) -> pd.DataFrame:
    return read_point_table(
        path, x="x_coord", y="y_coord", what="a Topaz coordinate file", score="score",
        name="image_name",
    )


def write(picks: pd.DataFrame, path: str | os.PathLike, *, box_size: float | None = None) -> None:
    """Coordinates with up to 2 decimals (0.005 px), scores with 6 significant digits."""
    lines = ["image_name\tx_coord\ty_coord\tscore\n"]
    for name, x, y, s in zip(
        picks["micrograph"].astype(str),
        picks["x"].to_numpy(dtype=np.float64),
        picks["y"].to_numpy(dtype=np.float64),
        picks["score"].to_numpy(dtype=np.float64),
    ):
        score = f"{s:.6g}" if np.isfinite(s) else "nan"
        lines.append(
            f"{name}\t{fmt_float(x, COORD_DECIMALS)}\t{fmt_float(y, COORD_DECIMALS)}\t{score}\n"
        )
    atomic_write_text(path, "".join(lines))


def sniff(head: str) -> bool:
    cols = split_header(header_line(head))
    return "x_coord" in cols and "y_coord" in cols
