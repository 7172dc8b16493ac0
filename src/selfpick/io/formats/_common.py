"""The pick table and the parsing helpers every format module shares.

A pick table is a :class:`pandas.DataFrame` with exactly the columns :data:`PICK_COLUMNS`:

``micrograph``
    The name coordinates are matched by: the micrograph file name without its image extension
    (``mic01`` for ``Movies/mic01.mrc``). Readers normalise names with :func:`coordinate_name`.
``x``, ``y``
    The particle **centre** in pixels of the original micrograph (float64); ``x`` is the column
    and ``y`` the row of the array as read, origin at ``data[0, 0]``.
``score``
    The picker's confidence (float64), NaN when the format carries none.
``diameter``
    The particle diameter in original pixels (float64), NaN when unknown.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from selfpick.errors import InputError
from selfpick.io.micrographs import MICROGRAPH_EXTENSIONS

PICK_COLUMNS: list[str] = ["micrograph", "x", "y", "score", "diameter"]

# A centre may sit up to half a pixel outside the pixel grid (the edge of the outermost pixel).
EDGE_SLACK_PX = 0.5

# Tokens that mean "no value" in the optional numeric columns of text formats.
MISSING_TOKENS = frozenset({"", "nan", "NaN", "NAN", "NA", "<NA>", "N/A", "None", "null"})


def empty_picks() -> pd.DataFrame:
    """An empty pick table with the right columns and dtypes."""
    return pd.DataFrame(
        {
            "micrograph": pd.Series([], dtype=str),
            "x": pd.Series([], dtype=np.float64),
            "y": pd.Series([], dtype=np.float64),
            "score": pd.Series([], dtype=np.float64),
            "diameter": pd.Series([], dtype=np.float64),
        }
    )


def coordinate_name(raw: Any) -> str:
    """Normalise a micrograph name found in a coordinate file.

    Drops any folder part (``MotionCorr/job002/Movies/mic01.mrc`` -> ``mic01.mrc``) and a known
    image extension (``.mrc``, ``.tif``, ``.png``, ...; case-insensitive). Other dots are kept:
    ``grid1.sq2`` stays ``grid1.sq2``, because such a name is more likely part of the micrograph
    name than an extension.
    """
    name = str(raw).strip()
    name = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    lower = name.lower()
    for ext in MICROGRAPH_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def coordinate_names(values: Iterable[Any]) -> list[str]:
    """:func:`coordinate_name` for a whole column (each distinct name normalised once)."""
    raw = pd.Series(_as_object_array(values)).astype(str)
    mapping = {v: coordinate_name(v) for v in pd.unique(raw)}
    return raw.map(mapping).tolist()


def file_stem_name(path: str | os.PathLike) -> str:
    """Micrograph name for a per-micrograph coordinate file: its stem, image extension removed.

    ``mic01.box`` -> ``mic01``; ``mic01.mrc.box`` -> ``mic01``; ``mic01_autopick.star`` ->
    ``mic01_autopick`` (the suffix is resolved later, when names are matched).
    """
    return coordinate_name(Path(path).stem)


def build_table(
    micrograph: Any,
    x: Any,
    y: Any,
    score: Any = None,
    diameter: Any = None,
) -> pd.DataFrame:
    """Assemble a pick table from columns (scalars broadcast); no validation."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} values but y has {len(y)}")

    def column(value: Any) -> np.ndarray:
        if value is None:
            return np.full(n, np.nan)
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
        if arr.size == 1 and n != 1:
            return np.full(n, arr[0])
        if len(arr) != n:
            raise ValueError(f"expected {n} values, got {len(arr)}")
        return arr

    if isinstance(micrograph, str) or np.ndim(micrograph) == 0:
        names = [str(micrograph)] * n
    else:
        names = [str(m) for m in micrograph]
        if len(names) != n:
            raise ValueError(f"expected {n} micrograph names, got {len(names)}")
    if n == 0:
        return empty_picks()
    return pd.DataFrame(
        {
            "micrograph": pd.Series(names, dtype=str),
            "x": x,
            "y": y,
            "score": column(score),
            "diameter": column(diameter),
        }
    )


def parse_floats(
    values: Iterable[Any],
    column: str,
    path: str | os.PathLike,
    *,
    required: bool,
    row_label: str = "line",
    first_row: int = 1,
) -> np.ndarray:
    """Convert one column of text (or numbers) to float64 with a message a user can act on.

    ``required`` columns may not hold missing or non-finite values (coordinates); optional ones
    (score, diameter) turn missing tokens into NaN. ``first_row`` is the number, in the file, of
    the first value, so the message points at the right line.
    """
    arr = _as_object_array(values)
    fast = _parse_floats_fast(arr, required)
    if fast is not None:
        return fast
    items = arr.tolist()
    # Slow path, only reached when something is wrong or missing: find the first bad value.
    out = np.empty(len(items), dtype=np.float64)
    for i, item in enumerate(items):
        if isinstance(item, (bool, np.bool_)):
            raise InputError(
                f"{row_label} {first_row + i}: {column} is {item!r}, not a number", path
            )
        if isinstance(item, (int, float, np.integer, np.floating)):
            val = float(item)
        elif item is None or (isinstance(item, str) and item.strip() in MISSING_TOKENS):
            if required:
                raise InputError(f"{row_label} {first_row + i}: {column} is missing", path)
            val = np.nan
        else:
            text = str(item).strip()
            try:
                val = float(text)
            except ValueError:
                raise InputError(
                    f"{row_label} {first_row + i}: {column} is {text[:40]!r}, not a number", path
                ) from None
        if required and not np.isfinite(val):
            raise InputError(
                f"{row_label} {first_row + i}: {column} is {val}, not a finite number", path
            )
        out[i] = val
    return out


def _as_object_array(values: Iterable[Any]) -> np.ndarray:
    if isinstance(values, (pd.Series, pd.Index)):
        return values.to_numpy(dtype=object)
    if isinstance(values, np.ndarray):
        return values.astype(object).reshape(-1)
    out = np.empty(len(values) if hasattr(values, "__len__") else 0, dtype=object)
    items = list(values)
    if len(out) != len(items):
        out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _parse_floats_fast(arr: np.ndarray, required: bool) -> np.ndarray | None:
    """Vectorised conversion of a clean column; None when some value needs a closer look."""
    if arr.size == 0:
        return np.empty(0, dtype=np.float64)
    try:
        # float() on each object: exact decimal parsing, and str/int/float alike.
        out = arr.astype(np.float64)
    except (ValueError, TypeError):
        return None
    if required and not np.isfinite(out).all():
        return None
    return out


def check_centres(picks: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """Reject centres that cannot lie on any micrograph: negative beyond the half-pixel edge.

    The far edges depend on the image size and are checked by ``check_in_bounds`` once the
    micrograph is known.
    """
    if picks.empty:
        return picks
    bad = (picks["x"].to_numpy() < -EDGE_SLACK_PX) | (picks["y"].to_numpy() < -EDGE_SLACK_PX)
    if bad.any():
        first = picks[bad].iloc[0]
        raise InputError(
            f"{int(bad.sum())} particle centre(s) have negative coordinates, the first at "
            f"x={first['x']:g}, y={first['y']:g} (micrograph {first['micrograph']!r}); "
            "coordinates must be particle centres in pixels, origin at the first pixel",
            path,
        )
    return picks


def read_text(path: str | os.PathLike) -> str:
    """The whole file as text; undecodable bytes mean the file is not a coordinate file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path) from exc
    if b"\x00" in raw[:4096]:
        raise InputError("is a binary file, not a coordinate text file", path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def fmt_float(value: float, decimals: int) -> str:
    """Fixed-point text with trailing zeros removed ("12.5", "3"), "nan" for missing."""
    if not np.isfinite(value):
        return "nan"
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def one_micrograph(picks: pd.DataFrame, fmt: str) -> str | None:
    """The single micrograph of a table written to a per-micrograph file (None when empty)."""
    names = pd.unique(picks["micrograph"])
    if len(names) > 1:
        raise ValueError(
            f"the {fmt} format holds one micrograph per file, but the table has {len(names)} "
            "(use write_per_micrograph)"
        )
    return str(names[0]) if len(names) else None


def box_widths(picks: pd.DataFrame, box_size: float | None, fmt: str) -> np.ndarray:
    """Box width per pick (px) for corner-based formats: ``box_size``, else the diameter column."""
    if box_size is not None:
        if not np.isfinite(box_size) or box_size <= 0:
            raise ValueError(f"box_size must be a positive number of pixels, got {box_size}")
        return np.full(len(picks), float(box_size))
    diam = picks["diameter"].to_numpy(dtype=np.float64)
    if len(diam) and not (np.isfinite(diam) & (diam > 0)).all():
        raise ValueError(
            f"the {fmt} format stores box corners, so it needs a box size: pass box_size "
            "(pixels) or fill the diameter column"
        )
    return diam


def header_line(text: str) -> str:
    """The first non-blank, non-comment line of a text file ("" if none)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        s = text[start:end].strip()
        if s and not s.startswith("#"):
            return s
        start = end + 1
    return ""


def split_header(line: str) -> list[str]:
    """Column names of a header line separated by commas, tabs or runs of spaces."""
    if "," in line:
        parts = line.split(",")
    elif "\t" in line:
        parts = line.split("\t")
    else:
        parts = line.split()
    return [p.strip().strip('"').strip() for p in parts]


def read_table(path: str | os.PathLike, text: str | None = None) -> pd.DataFrame:
    """A delimited text table with a header, every cell as a string (names stay names).

    The separator is the one the header uses: comma, tab, else whitespace. Blank and ``#``
    lines are skipped. Column names are stripped of spaces and quotes.
    """
    import io

    text = read_text(path) if text is None else text
    head = header_line(text)
    if "," in head:
        sep: str = ","
    elif "\t" in head:
        sep = "\t"
    else:
        sep = r"\s+"
    try:
        with warnings.catch_warnings():
            # pandas only warns when a row has more values than the header has names, and
            # then drops them; here that is a malformed file.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(
                io.StringIO(text),
                sep=sep,
                dtype=str,
                keep_default_na=False,
                skip_blank_lines=True,
                index_col=False,
                engine="c" if sep != r"\s+" else "python",
            )
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except pd.errors.ParserWarning:
        raise InputError(
            f"a row has more values than the header has column names ({len(split_header(head))})",
            path,
        ) from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(f"cannot read as a table ({str(exc).strip()})", path) from exc
    df.columns = [str(c).strip().strip('"').strip() for c in df.columns]
    # Lines starting with '#' are comments in every format read here; drop them after parsing
    # (pandas' comment= would also cut a '#' inside a micrograph name).
    if len(df) and len(df.columns):
        first = df.iloc[:, 0].astype(str).str.lstrip()
        df = df[~first.str.startswith("#")]
    return df.reset_index(drop=True)


def require_columns(
    df: pd.DataFrame, needed: list[str], path: str | os.PathLike, what: str
) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        found = ", ".join(repr(c) for c in df.columns) or "none"
        raise InputError(
            f"missing column(s) {', '.join(repr(c) for c in missing)} for {what}; "
            f"columns found: {found}",
            path,
        )


def write_star_file(blocks: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """``starfile.write`` to ``path`` (a temporary file), without the time-stamped comment.

    The "# Created by the starfile Python package ... at HH:MM:SS" line would make the same
    picks give different files; RELION and starfile do not need it. (``starfile.to_string``
    and one write: no file written, read back and written again.)
    """
    import starfile

    text = starfile.to_string(blocks, **kwargs)
    first, sep, rest = text.partition("\n")
    if first.startswith("# Created by the starfile"):
        text = "# Written by selfpick" + sep + rest
    Path(path).write_text(text, encoding="utf-8")


def read_point_table(
    path: str | os.PathLike,
    *,
    x: str,
    y: str,
    what: str,
    score: str | None = None,
    diameters: Sequence[str] = (),
    name: str | None = None,
) -> pd.DataFrame:
    """Read a delimited table of centres into a pick table.

    ``x`` and ``y`` are required columns; ``score``, the first of ``diameters`` present and
    ``name`` (the micrograph column; else the file's stem) are used when the file has them.
    ``what`` names the format in the error for missing columns.
    """
    text = read_text(path)
    if not text.strip():
        return empty_picks()
    df = read_table(path, text)
    require_columns(df, [x, y], path, what)
    if df.empty:
        return empty_picks()

    def column(col: str, required: bool) -> np.ndarray:
        return parse_floats(df[col], col, path, required=required, row_label="data row")

    scores = column(score, False) if score and score in df.columns else None
    dcol = next((c for c in diameters if c in df.columns), None)
    diam = column(dcol, False) if dcol else None
    names = coordinate_names(df[name]) if name and name in df.columns else file_stem_name(path)
    return build_table(names, column(x, True), column(y, True), scores, diam)

