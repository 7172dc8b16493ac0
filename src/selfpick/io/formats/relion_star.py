"""RELION STAR coordinates.

Reading accepts
- a combined file: any data block with ``rlnCoordinateX``/``rlnCoordinateY`` and
  ``rlnMicrographName`` (``data_particles``, Topaz's ``data_images``...); ``data_optics`` and other
  blocks without coordinates are skipped;
- a per-micrograph file (RELION's ``<mic>_autopick.star``, block ``data_``): the micrograph
  name is the file stem;
- a RELION 4/5 picking index (block ``data_coordinate_files``, columns ``rlnMicrographName`` and
  ``rlnMicrographCoordinates``): the listed per-micrograph files are read.

Coordinates are centres in original pixels (x = column, y = row, no flip: RELION's own
convention). ``rlnAutopickFigureOfMerit`` is the score.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selfpick.errors import InputError
from selfpick.io.formats._common import (
    build_table,
    coordinate_name,
    coordinate_names,
    empty_picks,
    file_stem_name,
    parse_floats,
    read_text,
    write_star_file,
)
from selfpick.utils.atomic import atomic_path

NAME = "star"
EXTENSION = ".star"
PER_MICROGRAPH = False

X, Y = "rlnCoordinateX", "rlnCoordinateY"
FOM = "rlnAutopickFigureOfMerit"
MIC = "rlnMicrographName"
COORDS_FILE = "rlnMicrographCoordinates"
DIAMETER = "rlnDiameter"

# RELION writes these dummies in picking output "to avoid problems in JoinStar".
CLASS_NUMBER_DUMMY = 0
ANGLE_PSI_DUMMY = -999.0

# RELION-facing files spell a missing number "nan"; starfile's default "<NA>" is not a number
# to RELION's parser.
NA_REP = "nan"
FLOAT_FORMAT = "%.6f"


def read_blocks(path: str | os.PathLike) -> dict[str, Any]:
    """All data blocks of a STAR file (``{"": ...}`` for ``data_``), strings kept as strings."""
    import starfile

    try:
        blocks = starfile.read(
            path, always_dict=True, parse_as_string=[MIC, COORDS_FILE]
        )
    except Exception as exc:  # the parser's own words are the best hint at what is broken
        raise InputError(f"cannot read as a STAR file ({exc})", path) from exc
    return dict(blocks)


def _as_frame(block: Any) -> pd.DataFrame | None:
    if isinstance(block, pd.DataFrame):
        return block
    if isinstance(block, dict):
        # A block of one particle may be written as key-value pairs instead of a loop.
        return pd.DataFrame({k: [v] for k, v in block.items()})
    return None


def read(path: str | os.PathLike, *, _depth: int = 0) -> pd.DataFrame:
    blocks = read_blocks(path)
    if not blocks:
        if not read_text(path).strip():
            return empty_picks()
        raise InputError("not a STAR file: no data_ block with a table was found", path)
    frames = {name: _as_frame(b) for name, b in blocks.items()}
    frames = {k: v for k, v in frames.items() if v is not None}
    coord_blocks = {k: v for k, v in frames.items() if X in v.columns and Y in v.columns}
    if not coord_blocks:
        index = {k: v for k, v in frames.items() if COORDS_FILE in v.columns}
        if index and _depth == 0:
            return _read_index(path, next(iter(index.values())))
        listing = ", ".join(f"data_{k}" for k in blocks) or "none"
        raise InputError(
            f"no coordinate columns: no data block has both {X} and {Y} (blocks: {listing})",
            path,
        )
    tables = []
    for block_name, df in coord_blocks.items():
        label = f"data_{block_name} row"
        x = parse_floats(df[X], X, path, required=True, row_label=label)
        y = parse_floats(df[Y], Y, path, required=True, row_label=label)
        score = (
            parse_floats(df[FOM], FOM, path, required=False, row_label=label)
            if FOM in df.columns
            else None
        )
        diameter = (
            parse_floats(df[DIAMETER], DIAMETER, path, required=False, row_label=label)
            if DIAMETER in df.columns
            else None
        )
        if MIC in df.columns:
            names = coordinate_names(df[MIC])
        else:
            names = file_stem_name(path)
        tables.append(build_table(names, x, y, score, diameter))
    return pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]


def _read_index(path: str | os.PathLike, index: pd.DataFrame) -> pd.DataFrame:
    """Follow a RELION picking index to its per-micrograph coordinate files."""
    base = Path(path).resolve().parent
    # RELION writes these paths relative to its project folder, which is usually two levels
    # above the job folder holding the index (AutoPick/job010/autopick.star); try upwards.
    roots = [Path.cwd(), base, *base.parents]
    tables = []
    for i, row in index.reset_index(drop=True).iterrows():
        listed = str(row[COORDS_FILE]).strip()
        target = Path(listed)
        found = target if target.is_absolute() and target.is_file() else None
        if found is None and not target.is_absolute():
            found = next((r / target for r in roots if (r / target).is_file()), None)
        if found is None:
            raise InputError(
                f"row {i + 1} lists the coordinate file {listed!r}, which does not exist "
                "(looked relative to the current folder and to the folders above this index)",
                path,
            )
        table = read(found, _depth=1)
        if MIC in index.columns:
            table["micrograph"] = coordinate_name(row[MIC])
        tables.append(table)
    if not tables:
        return empty_picks()
    return pd.concat(tables, ignore_index=True)


def _write_star(blocks: dict[str, pd.DataFrame], path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        write_star_file(blocks, tmp, float_format=FLOAT_FORMAT, na_rep=NA_REP)


def write(picks: pd.DataFrame, path: str | os.PathLike, *, box_size: float | None = None) -> None:
    """One file for many micrographs: block ``data_particles`` with ``rlnMicrographName``.

    No ``data_optics`` block: this is a coordinate file, not a particle file for refinement.
    """
    df = pd.DataFrame(
        {
            MIC: picks["micrograph"].astype(str).to_numpy(dtype=object),
            X: picks["x"].to_numpy(dtype=np.float64),
            Y: picks["y"].to_numpy(dtype=np.float64),
        }
    )
    if np.isfinite(picks["score"].to_numpy(dtype=np.float64)).any():
        df[FOM] = picks["score"].to_numpy(dtype=np.float64)
    _write_star({"particles": df}, path)


def write_single(picks: pd.DataFrame, path: str | os.PathLike) -> None:
    """One micrograph, the layout ``relion_autopick`` writes: block ``data_`` without names.

    Columns rlnCoordinateX rlnCoordinateY [rlnAutopickFigureOfMerit] rlnClassNumber (0)
    rlnAnglePsi (-999). The figure of merit is left out only when picks exist and none has a
    score.
    """
    n = len(picks)
    score = picks["score"].to_numpy(dtype=np.float64)
    columns = [(X, picks["x"].to_numpy(dtype=np.float64)),
               (Y, picks["y"].to_numpy(dtype=np.float64))]
    # An empty file keeps the column too: relion_preprocess --minimum_pick_fom wants it.
    if n == 0 or np.isfinite(score).any():
        columns.append((FOM, score))
    columns += [("rlnClassNumber", np.full(n, CLASS_NUMBER_DUMMY, dtype=np.int64)),
                ("rlnAnglePsi", np.full(n, ANGLE_PSI_DUMMY))]
    with atomic_path(path) as tmp:
        _write_text(tmp, single_block_text(columns))


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def single_block_text(columns: list[tuple[str, np.ndarray]]) -> str:
    """The text :func:`_write_star` writes for one unnamed loop block of numeric columns
    (``{"": DataFrame(dict(columns))}``), byte for byte, formatted here instead of by
    starfile.

    ``selfpick pick`` writes one such file per micrograph. starfile formats each row through
    pandas in Python while holding the GIL, about 10 ms for 500 picks: on a GPU that held
    picking to 28 micrographs/s where writing nothing per micrograph gave 41/s (H100,
    ``bench/NOTES.md``). Here one %-format of the whole table does it in about 1 ms. The
    tests hold this text to starfile's output.
    """
    header = "".join(f"_{name} #{i}\n" for i, name in enumerate((c[0] for c in columns), 1))
    n = len(columns[0][1]) if columns else 0
    rows = ""
    if n:
        for name, values in columns:
            if values.dtype.kind not in "fiu":
                raise TypeError(f"column {name}: numbers only, not {values.dtype}")
        row = "\t".join(FLOAT_FORMAT if v.dtype.kind == "f" else "%d" for _, v in columns) + "\n"
        cells = [value for values in zip(*(v.tolist() for _, v in columns)) for value in values]
        rows = (row * n) % tuple(cells)
    return f"# Written by selfpick\n\n\ndata_\n\nloop_\n{header}{rows}\n\n"


def write_index(rows: list[tuple[str, str]], path: str | os.PathLike) -> None:
    """RELION 4/5 picking index: block ``data_coordinate_files``, one row per micrograph."""
    df = pd.DataFrame(
        {
            MIC: pd.Series([r[0] for r in rows], dtype=object),
            COORDS_FILE: pd.Series([r[1] for r in rows], dtype=object),
        }
    )
    _write_star({"coordinate_files": df}, path)


def is_index(path: str | os.PathLike) -> bool:
    """True for a RELION picking index (coordinate-file list), from a look at the file's start."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536).decode("utf-8", errors="replace")
    except OSError:
        return False
    return COORDS_FILE in head and X not in head


def sniff(head: str) -> bool:
    for line in head.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        return s.startswith("data_")
    return False
