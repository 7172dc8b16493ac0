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
    build_table,
    coordinate_names,
    empty_picks,
    file_stem_name,
    fmt_float,
    header_line,
    parse_floats,
    read_table,
    read_text,
    require_columns,
    split_header,
)
from selfpick.utils.atomic import atomic_write_text

NAME = "topaz"
EXTENSION = ".txt"
PER_MICROGRAPH = False

COORD_DECIMALS = 2


def read(path: str | os.PathLike) -> pd.DataFrame:
    text = read_text(path)
    if not text.strip():
        return empty_picks()
    df = read_table(path, text)
    require_columns(df, ["x_coord", "y_coord"], path, "a Topaz coordinate file")
    if df.empty:
        return empty_picks()
    label = "data row"
    x = parse_floats(df["x_coord"], "x_coord", path, required=True, row_label=label)
    y = parse_floats(df["y_coord"], "y_coord", path, required=True, row_label=label)
    score = (
        parse_floats(df["score"], "score", path, required=False, row_label=label)
        if "score" in df.columns
        else None
    )
    if "image_name" in df.columns:
        names = coordinate_names(df["image_name"])
    else:
        names = file_stem_name(path)
    return build_table(names, x, y, score)


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
