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
    read_point_table,
    header_line,
    split_header,
)
from selfpick.utils.atomic import atomic_write_text

NAME = "csv"
EXTENSION = ".csv"
PER_MICROGRAPH = False

DIAMETER_NAMES = ("diameter", "diameter_px")


def read(path: str | os.PathLike) -> pd.DataFrame:
    return read_point_table(
        path, x="x", y="y", what="a selfpick CSV (micrograph,x,y,score)", score="score",
        diameters=DIAMETER_NAMES, name="micrograph",
    )


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
