"""CryoPPP ground-truth CSV.

Per micrograph: header ``X-Coordinate,Y-Coordinate,Diameter``, one particle centre per row, in
integer pixels of the original micrograph (x = column, y = row; ``Diameter`` in px, optional on
read). The file stem is the micrograph name.

The full CryoPPP table (``*_particles_selected.csv``) adds a ``Micrographs Filename`` column
that names the micrograph of each row; it is read too.

CryoPPP coordinates come from cryoSPARC; whether they need a y-flip against a raw MRC depends on
how the micrographs were made (see ``flip_y``). Nothing is flipped here.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from selfpick.io.formats._common import (
    read_point_table,
    fmt_float,
    header_line,
    one_micrograph,
    split_header,
)
from selfpick.utils.atomic import atomic_write_text

NAME = "cryoppp"
EXTENSION = ".csv"
PER_MICROGRAPH = True

X, Y, DIAMETER, MIC = "X-Coordinate", "Y-Coordinate", "Diameter", "Micrographs Filename"


def read(path: str | os.PathLike) -> pd.DataFrame:
    return read_point_table(
        path, x=X, y=Y, what="a CryoPPP CSV", diameters=(DIAMETER,), name=MIC,
    )


def write(picks: pd.DataFrame, path: str | os.PathLike, *, box_size: float | None = None) -> None:
    """Centres rounded to whole pixels (halves up), as CryoPPP stores them.

    The ``Diameter`` column is written when ``box_size`` is given (used for every row) or some
    pick has a diameter; unknown diameters are left empty.
    """
    one_micrograph(picks, NAME)
    x = np.floor(picks["x"].to_numpy(dtype=np.float64) + 0.5).astype(np.int64)
    y = np.floor(picks["y"].to_numpy(dtype=np.float64) + 0.5).astype(np.int64)
    if box_size is not None:
        diameter = np.full(len(picks), float(box_size))
    else:
        diameter = picks["diameter"].to_numpy(dtype=np.float64)
    with_diameter = box_size is not None or bool(np.isfinite(diameter).any())
    lines = [f"{X},{Y},{DIAMETER}\n" if with_diameter else f"{X},{Y}\n"]
    if with_diameter:
        lines += [
            f"{a},{b},{fmt_float(d, 3) if np.isfinite(d) else ''}\n"
            for a, b, d in zip(x, y, diameter)
        ]
    else:
        lines += [f"{a},{b}\n" for a, b in zip(x, y)]
    atomic_write_text(path, "".join(lines))


def sniff(head: str) -> bool:
    cols = split_header(header_line(head))
    return X in cols and Y in cols
