"""selfpick's plain table: ``micrograph,x,y,score[,diameter]``.

Centres in original pixels (x = column, y = row), full float precision; ``score`` empty when
unknown; ``diameter`` (px) written only when some pick has one. On read, ``micrograph`` is
optional (the file stem is used), ``score``/``diameter`` (or ``diameter_px``) are optional, and
the separator may be a comma or a tab.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd

from selfpick.io.formats._common import (
    build_table,
    coordinate_names,
    empty_picks,
    file_stem_name,
    header_line,
    parse_floats,
    read_table,
    read_text,
    require_columns,
    split_header,
)
from selfpick.utils.atomic import atomic_write_text

NAME = "csv"
EXTENSION = ".csv"
PER_MICROGRAPH = False

DIAMETER_NAMES = ("diameter", "diameter_px")


def read(path: str | os.PathLike) -> pd.DataFrame:
    text = read_text(path)
    if not text.strip():
        return empty_picks()
    df = read_table(path, text)
    require_columns(df, ["x", "y"], path, "a selfpick CSV (micrograph,x,y,score)")
    if df.empty:
        return empty_picks()
    label = "data row"
    x = parse_floats(df["x"], "x", path, required=True, row_label=label)
    y = parse_floats(df["y"], "y", path, required=True, row_label=label)
    score = (
        parse_floats(df["score"], "score", path, required=False, row_label=label)
        if "score" in df.columns
        else None
    )
    dcol = next((c for c in DIAMETER_NAMES if c in df.columns), None)
    diameter = (
        parse_floats(df[dcol], dcol, path, required=False, row_label=label) if dcol else None
    )
    if "micrograph" in df.columns:
        names = coordinate_names(df["micrograph"])
    else:
        names = file_stem_name(path)
    return build_table(names, x, y, score, diameter)


def write(picks: pd.DataFrame, path: str | os.PathLike, *, box_size: float | None = None) -> None:
    out = pd.DataFrame(
        {
            "micrograph": picks["micrograph"].astype(str).to_numpy(dtype=object),
            "x": picks["x"].to_numpy(dtype=np.float64),
            "y": picks["y"].to_numpy(dtype=np.float64),
            "score": picks["score"].to_numpy(dtype=np.float64),
        }
    )
    diameter = picks["diameter"].to_numpy(dtype=np.float64)
    if np.isfinite(diameter).any():
        out["diameter"] = diameter
    buf = io.StringIO()
    # Python's repr of a float64 reads back to the same number, so nothing is lost.
    out.to_csv(buf, index=False, na_rep="", lineterminator="\n")
    atomic_write_text(path, buf.getvalue())


def sniff(head: str) -> bool:
    cols = split_header(header_line(head))
    return "x" in cols and "y" in cols
