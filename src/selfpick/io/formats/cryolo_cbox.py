"""crYOLO ``.cbox`` files: one micrograph per file, a STAR file with three blocks.

- ``data_global``: ``_cbox_format_version 1.0``;
- ``data_cryolo``: loop ``_CoordinateX _CoordinateY _CoordinateZ _Width _Height _Depth
  _EstWidth _EstHeight _Confidence _NumBoxes _Angle``; X/Y are the box corner (lowest column and
  row, as in ``.box``), Z and Depth are NaN for 2-D micrographs;
- ``data_cryolo_include``: loop ``_slice_index`` (empty for 2-D).

centre = corner + size / 2; ``_Confidence`` is the score; ``_EstWidth``/``_EstHeight`` (crYOLO's
estimate of the particle size) become the diameter when present. Older crYOLO versions wrote
``.cbox`` files in the ``.box`` layout with the confidence as a 5th column; those are read too.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from selfpick.errors import InputError
from selfpick.io.formats import eman_box
from selfpick.io.formats._common import (
    box_widths,
    empty_picks,
    file_stem_name,
    one_micrograph,
    parse_floats,
    read_text,
    write_star_file,
)
from selfpick.utils.atomic import atomic_path

NAME = "cbox"
EXTENSION = ".cbox"
PER_MICROGRAPH = True

COLUMNS = [
    "CoordinateX", "CoordinateY", "CoordinateZ", "Width", "Height", "Depth",
    "EstWidth", "EstHeight", "Confidence", "NumBoxes", "Angle",
]  # fmt: skip


def read(path: str | os.PathLike) -> pd.DataFrame:
    text = read_text(path)
    if not text.strip():
        return empty_picks()
    if not any(line.strip().startswith("data_") for line in text.splitlines()):
        # The pre-STAR crYOLO layout: box lines with a confidence column.
        return eman_box.read(path)
    from selfpick.io.formats.relion_star import read_blocks

    blocks = read_blocks(path)
    frames = [b for b in blocks.values() if isinstance(b, pd.DataFrame)]
    table = next(
        (f for f in frames if "CoordinateX" in f.columns and "CoordinateY" in f.columns), None
    )
    if table is None:
        listing = ", ".join(f"data_{k}" for k in blocks) or "none"
        raise InputError(
            "no coordinate columns: no data block has _CoordinateX and _CoordinateY "
            f"(blocks: {listing})",
            path,
        )
    for needed in ("Width", "Height"):
        if needed not in table.columns:
            raise InputError(
                f"the cryolo block has no _{needed} column, so box corners cannot be turned "
                "into centres",
                path,
            )
    if table.empty:
        return empty_picks()
    label = "data_cryolo row"
    est = None
    if "EstWidth" in table.columns and "EstHeight" in table.columns:
        ew = parse_floats(table["EstWidth"], "_EstWidth", path, required=False, row_label=label)
        eh = parse_floats(table["EstHeight"], "_EstHeight", path, required=False, row_label=label)
        est = (ew + eh) / 2.0
    return eman_box.from_corners(
        path,
        None,
        list(table["CoordinateX"]),
        list(table["CoordinateY"]),
        list(table["Width"]),
        list(table["Height"]),
        list(table["Confidence"]) if "Confidence" in table.columns else None,
        name=file_stem_name(path),
        est_size=est,
        row_label=label,
    )


def write(picks: pd.DataFrame, path: str | os.PathLike, *, box_size: float | None = None) -> None:
    """Corners are written as floats (crYOLO does too), so centres round-trip to 1e-6 px.

    ``box_size`` (px) sets ``_Width``/``_Height``, else each pick's diameter does; the diameter,
    when known, is written as ``_EstWidth``/``_EstHeight``.
    """

    one_micrograph(picks, NAME)
    n = len(picks)
    width = box_widths(picks, box_size, NAME) if n else np.empty(0)
    x = picks["x"].to_numpy(dtype=np.float64)
    y = picks["y"].to_numpy(dtype=np.float64)
    diameter = picks["diameter"].to_numpy(dtype=np.float64)
    nan = np.full(n, np.nan)
    df = pd.DataFrame(
        {
            "CoordinateX": x - width / 2.0,
            "CoordinateY": y - width / 2.0,
            "CoordinateZ": nan,
            "Width": width,
            "Height": width,
            "Depth": nan,
            "EstWidth": diameter,
            "EstHeight": diameter,
            "Confidence": picks["score"].to_numpy(dtype=np.float64),
            "NumBoxes": nan,
            "Angle": nan,
        }
    )
    include = pd.DataFrame({"slice_index": pd.Series([], dtype=np.int64)})
    with atomic_path(path) as tmp:
        # Missing values (Z, Depth, ...) are written as starfile's "<NA>", which pandas-based
        # STAR readers take as NaN.
        write_star_file(
            {"global": {"cbox_format_version": "1.0"}, "cryolo": df, "cryolo_include": include},
            tmp,
            float_format="%.6f",
        )


def sniff(head: str) -> bool:
    return "data_cryolo" in head or "_cbox_format_version" in head
