"""Particle coordinates: reading, writing and matching them to micrographs.

Conventions (the same everywhere in selfpick):

- A pick is a particle **centre** in **pixels of the original micrograph**; ``x`` is the column
  and ``y`` the row of the 2-D array as read (origin ``data[0, 0]``). Formats that store box
  corners (``.box``, ``.cbox``) are converted on read and write. Nothing is ever flipped unless
  the caller asks for it with :func:`flip_y`.
- A pick table is a :class:`pandas.DataFrame` with exactly the columns :data:`PICK_COLUMNS`:
  ``micrograph`` (str, the micrograph name: file name without folder and image extension),
  ``x``, ``y`` (float64, px), ``score`` (float64, NaN when the format has none) and ``diameter``
  (float64, px, NaN when unknown).

Formats (:data:`FORMATS`):

============ =============================================================== =================
name         layout                                                          micrographs/file
============ =============================================================== =================
``json``     ``{"<micrograph>": [[x, y] or [x, y, score], ...]}``             many
``star``     RELION STAR, ``rlnCoordinateX/Y`` (+ ``rlnMicrographName``)      many (or one)
``cryoppp``  CSV ``X-Coordinate,Y-Coordinate,Diameter``                      one
``box``      EMAN/crYOLO ``x_corner y_corner w h``                           one
``cbox``     crYOLO STAR with ``data_cryolo`` (corners, ``_Confidence``)      one
``topaz``    TSV ``image_name x_coord y_coord score``                        many
``csv``      ``micrograph,x,y,score[,diameter]``                             many
============ =============================================================== =================

Every problem a user can cause raises :class:`selfpick.errors.InputError` naming the file.
Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from selfpick.errors import InputError
from selfpick.io.formats import MODULES, relion_star
from selfpick.io.formats import json_dict
from selfpick.io.formats._common import (
    EDGE_SLACK_PX,
    PICK_COLUMNS,
    build_table,
    check_centres,
    coordinate_name,
    empty_picks,
    header_line,
    split_header,
)

__all__ = [
    "PICK_COLUMNS",
    "FORMATS",
    "FORMAT_EXTENSIONS",
    "MatchReport",
    "check_in_bounds",
    "coordinate_name",
    "detect_format",
    "empty_picks",
    "flip_y",
    "make_picks",
    "match_coordinates",
    "read_coordinates",
    "write_coordinates",
    "write_per_micrograph",
    "write_relion_autopick",
]

FORMATS = ("json", "star", "cryoppp", "box", "cbox", "topaz", "csv")

#: File extension written for each format.
FORMAT_EXTENSIONS: dict[str, str] = {name: MODULES[name].EXTENSION for name in FORMATS}

# Extensions a coordinate file may have; other files in a coordinate folder are ignored
# (RELION keeps coordinate files next to the micrographs).
_COORD_EXTENSIONS = (
    ".json", ".star", ".box", ".cbox", ".csv", ".txt", ".tsv", ".tab", ".coord", ".coords",
)  # fmt: skip
_TEXT_TABLE_EXTENSIONS = (".txt", ".tsv", ".tab", ".coord", ".coords")
_SNIFF_BYTES = 65536
# Sniffing order for unusual extensions: most specific signature first.
_SNIFF_ORDER = ("cbox", "star", "json", "topaz", "cryoppp", "csv", "box")


def _format_list() -> str:
    return ", ".join(FORMATS)


# --------------------------------------------------------------------------------------------
# Building tables


def make_picks(
    micrograph: str,
    xy: np.ndarray,
    scores: np.ndarray | Sequence[float] | None = None,
    diameter: float | np.ndarray | None = None,
) -> pd.DataFrame:
    """A pick table for one micrograph.

    Parameters
    ----------
    micrograph:
        Micrograph name (file name without image extension).
    xy:
        ``(N, 2)`` particle centres ``[x, y]`` in original pixels (x = column, y = row).
    scores:
        ``N`` scores, or None (NaN).
    diameter:
        Particle diameter in original pixels, one value or ``N`` values, or None (NaN).
    """
    arr = np.asarray(xy, dtype=np.float64)
    if arr.size == 0:
        arr = arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"xy must have shape (N, 2), got {arr.shape}")
    return build_table(str(micrograph), arr[:, 0], arr[:, 1], scores, diameter)


def _normalise_table(picks: pd.DataFrame) -> pd.DataFrame:
    """Exactly PICK_COLUMNS, float64 numbers, a fresh index; raises ValueError for bad tables."""
    missing = [c for c in PICK_COLUMNS if c not in picks.columns]
    if missing:
        raise ValueError(f"pick table lacks column(s) {missing}; expected {PICK_COLUMNS}")
    if picks.empty:
        return empty_picks()
    out = pd.DataFrame(
        {
            "micrograph": picks["micrograph"].astype(str).to_numpy(),
            "x": picks["x"].to_numpy(dtype=np.float64),
            "y": picks["y"].to_numpy(dtype=np.float64),
            "score": picks["score"].to_numpy(dtype=np.float64),
            "diameter": picks["diameter"].to_numpy(dtype=np.float64),
        }
    )
    out["micrograph"] = out["micrograph"].astype(str)
    return out


def _checked_for_writing(picks: pd.DataFrame) -> pd.DataFrame:
    picks = _normalise_table(picks)
    if not (np.isfinite(picks["x"].to_numpy()).all() and np.isfinite(picks["y"].to_numpy()).all()):
        raise ValueError("pick table has NaN or infinite coordinates")
    return picks


# --------------------------------------------------------------------------------------------
# Format detection


def _head(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path) from exc
    if b"\x00" in raw:
        return ""
    try:
        return raw.decode("utf-8-sig", errors="replace")
    except UnicodeDecodeError:  # pragma: no cover - errors="replace" does not raise
        return ""


def _unknown_format(path: Path, detail: str = "") -> InputError:
    extra = f" ({detail})" if detail else ""
    return InputError(
        f"unknown coordinate format{extra}; use --coords-format with one of {_format_list()}",
        path,
    )


def _detect_file(path: Path) -> str:
    ext = path.suffix.lower()
    if ext == ".json":
        return "json"
    if ext == ".box":
        return "box"
    if ext == ".cbox":
        return "cbox"
    head = _head(path)
    if ext == ".star":
        # crYOLO also writes its CBOX content to files named .star now and then.
        return "cbox" if MODULES["cbox"].sniff(head) else "star"
    if ext == ".csv":
        if MODULES["cryoppp"].sniff(head):
            return "cryoppp"
        if MODULES["csv"].sniff(head):
            return "csv"
        if not head.strip():
            return "csv"
        cols = split_header(header_line(head))
        raise InputError(
            "CSV without coordinate columns: expected X-Coordinate,Y-Coordinate (CryoPPP) or "
            f"micrograph,x,y (selfpick); columns found: {', '.join(repr(c) for c in cols)}",
            path,
        )
    if ext in _TEXT_TABLE_EXTENSIONS:
        for name in ("topaz", "cryoppp", "csv", "box"):
            if MODULES[name].sniff(head):
                return name
        if not head.strip():
            return "topaz"
        raise _unknown_format(path, "no image_name/x_coord/y_coord header and not box lines")
    for name in _SNIFF_ORDER:
        if head and MODULES[name].sniff(head):
            return name
    raise _unknown_format(path, f"extension {ext or '(none)'!r} and content not recognised")


def _coordinate_files(folder: Path) -> list[Path]:
    files = sorted(
        f
        for f in folder.iterdir()
        if not f.name.startswith(".") and f.is_file() and f.suffix.lower() in _COORD_EXTENSIONS
    )
    if not files:
        raise InputError(
            "no coordinate files in this folder (looked for " + ", ".join(_COORD_EXTENSIONS) + ")",
            folder,
        )
    return files


def detect_format(path: str | os.PathLike) -> str:
    """The coordinate format of a file, or of the files in a folder (one of :data:`FORMATS`).

    The extension decides first (``.json``, ``.star``, ``.box``, ``.cbox``); ``.csv`` is CryoPPP
    when the header has ``X-Coordinate`` and plain CSV when it has ``x``/``y``; ``.txt``, ``.tsv``
    and ``.tab`` are Topaz when the header has ``x_coord``. Other extensions are recognised by
    content. A folder's format is that of its coordinate files (hidden files and files with
    other extensions ignored); a folder mixing formats is an error, except that a folder with a
    RELION picking index (``autopick.star``) is ``star``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_dir():
        files = _coordinate_files(path)
        if any(f.suffix.lower() == ".star" and relion_star.is_index(f) for f in files):
            return "star"
        found: dict[str, list[Path]] = {}
        for f in files:
            found.setdefault(_detect_file(f), []).append(f)
        if len(found) > 1:
            parts = [f"{k} ({len(v)} file(s), e.g. {v[0].name})" for k, v in sorted(found.items())]
            raise InputError(
                "the folder mixes coordinate formats: " + "; ".join(parts)
                + "; keep one format per folder",
                path,
            )
        return next(iter(found))
    return _detect_file(path)


# --------------------------------------------------------------------------------------------
# Reading


def _check_fmt(fmt: str | None, path: Path) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown coordinate format {fmt!r}; use one of {_format_list()}", path)


def _read_file(path: Path, fmt: str | None, allow_empty: bool) -> pd.DataFrame:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path) from exc
    if size == 0 or (size < _SNIFF_BYTES and not path.read_bytes().strip()):
        if allow_empty:
            return empty_picks()
        raise InputError("the file is empty: no particle coordinates in this file", path)
    fmt = fmt or _detect_file(path)
    try:
        table = MODULES[fmt].read(path)
    except InputError:
        raise
    except (ValueError, KeyError, IndexError, UnicodeError) as exc:
        # A parser library gave up on the file; its words are the most precise hint.
        raise InputError(
            f"cannot read as {fmt} coordinates ({type(exc).__name__}: {exc})", path
        ) from exc
    table = check_centres(_normalise_table(table), path)
    if table.empty and not allow_empty:
        raise InputError(f"no particle coordinates in this file (read as {fmt})", path)
    return table


def read_coordinates(
    path: str | os.PathLike,
    fmt: str | None = None,
    *,
    box_size: float | None = None,
    allow_empty: bool = False,
) -> pd.DataFrame:
    """Read particle centres from a coordinate file or a folder of per-micrograph files.

    Parameters
    ----------
    path:
        A file, or a folder of coordinate files all in one format (hidden files and files with
        non-coordinate extensions are ignored). A per-micrograph file's micrograph name is its
        file stem, suffixes such as ``_autopick`` included; :func:`match_coordinates` handles
        them. A RELION picking index (``autopick.star``, block ``data_coordinate_files``) is
        followed to its files; a folder holding one (a RELION job folder) is read through it.
    fmt:
        One of :data:`FORMATS`; detected from the file(s) when None (:func:`detect_format`).
    box_size:
        Particle diameter in original pixels, recorded in the ``diameter`` column where the
        file gives none. Files that state a size keep theirs (CryoPPP ``Diameter``, the box
        size of ``.box``/``.cbox``, crYOLO's ``_EstWidth``).
    allow_empty:
        False (ground truth): a file without any particle is an error; in a folder, every file
        must hold particles (the error names the first that does not). True (picks of another
        program, where a micrograph may have none): empty files give an empty table.

    Returns
    -------
    A pick table (:data:`PICK_COLUMNS`), centres in original pixels, unflipped.

    Raises
    ------
    InputError
        Missing file, empty file, unknown format, missing columns, non-numeric or non-finite
        values, centres with negative coordinates (beyond half a pixel). Coordinates beyond the
        far image edges are caught by :func:`check_in_bounds`, which knows the image size.
    """
    path = Path(path)
    _check_fmt(fmt, path)
    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_dir():
        files = _coordinate_files(path)
        if fmt in (None, "star"):
            indexes = [f for f in files if f.suffix.lower() == ".star" and relion_star.is_index(f)]
            if len(indexes) > 1:
                raise InputError(
                    "the folder holds several RELION coordinate indexes ("
                    + ", ".join(f.name for f in indexes) + "); give the one to use",
                    path,
                )
            if indexes:
                # A RELION job folder: the index says which coordinate files belong together.
                return read_coordinates(
                    indexes[0], "star", box_size=box_size, allow_empty=allow_empty
                )
        if fmt is None:
            fmt = detect_format(path)
        tables = [t for t in (_read_file(f, fmt, allow_empty) for f in files) if len(t)]
        table = pd.concat(tables, ignore_index=True) if tables else empty_picks()
        table = _normalise_table(table)
    else:
        table = _read_file(path, fmt, allow_empty)
    if box_size is not None and len(table):
        d = table["diameter"].to_numpy()
        table["diameter"] = np.where(np.isfinite(d), d, float(box_size))
    return table


# --------------------------------------------------------------------------------------------
# Writing


def _module_for_writing(fmt: str):
    if fmt not in FORMATS:
        raise ValueError(f"unknown coordinate format {fmt!r}; use one of {_format_list()}")
    return MODULES[fmt]


def write_coordinates(
    picks: pd.DataFrame,
    path: str | os.PathLike,
    fmt: str,
    *,
    box_size: float | None = None,
) -> None:
    """Write one coordinate file, atomically.

    ``json``, ``star`` (block ``data_particles`` with ``rlnMicrographName``), ``topaz`` and
    ``csv`` hold any number of micrographs. ``box``, ``cbox`` and ``cryoppp`` hold one: a table
    with several micrographs raises ValueError (use :func:`write_per_micrograph`, which also
    writes STAR in RELION's per-micrograph layout).

    ``box_size`` (px) is the box written by ``box`` and ``cbox`` (which store corners); without
    it each pick's diameter is used, and a pick without one raises ValueError. ``cryoppp``
    writes it as the ``Diameter`` column.
    """
    module = _module_for_writing(fmt)
    picks = _checked_for_writing(picks)
    module.write(picks, Path(path), box_size=box_size)


def _file_stem(name: str) -> str:
    stem = coordinate_name(name)
    if not stem or stem in (".", ".."):
        raise ValueError(f"micrograph name {name!r} cannot be used as a file name")
    return stem


def write_per_micrograph(
    picks: pd.DataFrame,
    out_dir: str | os.PathLike,
    fmt: str,
    *,
    suffix: str = "",
    box_size: float | None = None,
    micrograph_paths: Mapping[str, str | os.PathLike] | None = None,
) -> list[Path]:
    """Write one file per micrograph, ``out_dir/<name><suffix><ext>``; returns the paths.

    Micrographs in ``micrograph_paths`` (name -> path; only the names are used) without picks
    get a valid file with no particles, so a reader can tell "picked, found nothing" from
    "not processed". ``star`` files use RELION's per-micrograph picking layout (block ``data_``,
    no micrograph names). Extensions: see :data:`FORMAT_EXTENSIONS`.
    """
    module = _module_for_writing(fmt)
    picks = _checked_for_writing(picks)
    out_dir = Path(out_dir)
    names: list[str] = [str(n) for n in (micrograph_paths or {})]
    known = set(names)
    for n in pd.unique(picks["micrograph"]):
        if n not in known:
            names.append(str(n))
            known.add(str(n))
    groups = {str(k): g for k, g in picks.groupby("micrograph", sort=False)}
    targets: dict[Path, str] = {}
    for name in names:
        target = out_dir / f"{_file_stem(name)}{suffix}{module.EXTENSION}"
        if target in targets:
            raise ValueError(
                f"micrographs {targets[target]!r} and {name!r} would both be written to {target}"
            )
        targets[target] = name
    written = []
    for target, name in targets.items():
        sub = groups.get(name, empty_picks()).reset_index(drop=True)
        if fmt == "star":
            relion_star.write_single(sub, target)
        elif fmt == "json":
            json_dict.write(sub, target, names=[name])
        else:
            module.write(sub, target, box_size=box_size)
        written.append(target)
    return written


def write_relion_autopick(
    picks: pd.DataFrame,
    out_dir: str | os.PathLike,
    micrograph_paths: Mapping[str, str | os.PathLike],
    suffix: str = "autopick",
) -> Path:
    """Write picks the way RELION 4/5 picking jobs do; returns the index path.

    - ``out_dir/<name>_<suffix>.star`` per micrograph in ``micrograph_paths`` (name -> the
      micrograph path as listed in RELION's micrographs STAR): block ``data_``, columns
      ``rlnCoordinateX rlnCoordinateY rlnAutopickFigureOfMerit rlnClassNumber`` (0)
      ``rlnAnglePsi`` (-999); micrographs without picks get a file with no rows.
    - ``out_dir/<suffix>.star``: block ``data_coordinate_files`` with ``rlnMicrographName`` (the
      path as given) and ``rlnMicrographCoordinates`` (``str(out_dir / file)``; give ``out_dir``
      relative to the RELION project folder, e.g. ``External/job012``, so RELION finds them).

    Picks of a micrograph missing from ``micrograph_paths`` raise ValueError: RELION could not
    place them.
    """
    picks = _checked_for_writing(picks)
    out_dir = Path(out_dir)
    extra = sorted(set(picks["micrograph"]) - {str(k) for k in micrograph_paths})
    if extra:
        raise ValueError(
            f"{len(extra)} micrograph(s) with picks are not in micrograph_paths: "
            + _name_list(extra)
        )
    groups = {str(k): g for k, g in picks.groupby("micrograph", sort=False)}
    rows: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for name, mic_path in micrograph_paths.items():
        target = out_dir / f"{_file_stem(str(name))}_{suffix}.star"
        if target in seen:
            raise ValueError(f"two micrographs would both be written to {target}")
        seen.add(target)
        sub = groups.get(str(name), empty_picks()).reset_index(drop=True)
        relion_star.write_single(sub, target)
        rows.append((str(mic_path), str(target)))
    index = out_dir / f"{suffix}.star"
    relion_star.write_index(rows, index)
    return index


# --------------------------------------------------------------------------------------------
# Geometry


def flip_y(picks: pd.DataFrame, heights: Mapping[str, int]) -> pd.DataFrame:
    """Mirror rows: ``y -> H - 1 - y`` with ``H`` the micrograph height in pixels (ny).

    Only for coordinates made in a frame with the origin at the other end of the y axis
    (cryoSPARC exports, CryoPPP against a raw MRC, EMAN2 TIFF boxes): selfpick never flips
    on its own. ``heights`` maps micrograph name -> ny; call it after :func:`match_coordinates`
    so the names agree. Returns a new table.
    """
    picks = _normalise_table(picks)
    missing = sorted(set(picks["micrograph"]) - {str(k) for k in heights})
    if missing:
        raise ValueError(f"no height given for micrograph(s): {_name_list(missing)}")
    height = {str(k): float(v) for k, v in heights.items()}
    h = picks["micrograph"].map(height).to_numpy(dtype=np.float64)
    out = picks.copy()
    out["y"] = h - 1.0 - out["y"].to_numpy()
    return out


def check_in_bounds(
    picks_one_micrograph: pd.DataFrame,
    shape: tuple[int, int],
    source: str | os.PathLike | None,
) -> None:
    """Raise :class:`InputError` (naming ``source``) if a centre lies outside the image.

    ``shape`` is ``(ny, nx)`` in original pixels. Valid centres satisfy
    ``-0.5 <= x <= nx - 0.5`` and ``-0.5 <= y <= ny - 0.5``: anywhere on the pixel grid,
    its outer edges included. The message gives the micrograph, how many particles are outside
    and the first of them.
    """
    if picks_one_micrograph.empty:
        return
    ny, nx = int(shape[0]), int(shape[1])
    x = picks_one_micrograph["x"].to_numpy(dtype=np.float64)
    y = picks_one_micrograph["y"].to_numpy(dtype=np.float64)
    bad = ~(
        (x >= -EDGE_SLACK_PX)
        & (y >= -EDGE_SLACK_PX)
        & (x <= nx - 1 + EDGE_SLACK_PX)
        & (y <= ny - 1 + EDGE_SLACK_PX)
    )
    if not bad.any():
        return
    names = pd.unique(picks_one_micrograph["micrograph"].astype(str))
    mic = ", ".join(repr(n) for n in names[:3]) + (" ..." if len(names) > 3 else "")
    i = int(np.argmax(bad))
    hint = ""
    if np.nanmax(x) > nx * 1.5 or np.nanmax(y) > ny * 1.5:
        hint = (
            "; the coordinates reach beyond the image by a large factor: are they in pixels of "
            "a different (unbinned or rescaled) image, or in Å?"
        )
    elif (x < -EDGE_SLACK_PX).any() or (y < -EDGE_SLACK_PX).any():
        hint = "; negative coordinates: are these box corners or a shifted origin?"
    raise InputError(
        f"{int(bad.sum())} of {len(x)} particles of micrograph {mic} lie outside the "
        f"{nx} x {ny} px image, the first at x={x[i]:g}, y={y[i]:g}{hint}",
        source,
    )


# --------------------------------------------------------------------------------------------
# Matching names


def _name_list(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(str(n) for n in names[:limit])
    if len(names) > limit:
        shown += f" and {len(names) - limit} more"
    return shown


@dataclass
class MatchReport:
    """How the names in a coordinate table matched the micrographs.

    ``matched_names`` maps each coordinate name that matched by a rule other than equality to
    its micrograph (``"mic01_autopick" -> "mic01"``), for the log.
    """

    n_micrographs: int
    n_with_coords: int
    micrographs_without_coords: list[str]
    unmatched_coord_names: list[str]
    n_particles_matched: int
    n_particles_unmatched: int
    matched_names: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One paragraph for a person: what matched and, by name, what did not."""
        parts = [
            f"Coordinates matched {self.n_with_coords} of {self.n_micrographs} micrograph(s) "
            f"({self.n_particles_matched:,} particles)."
        ]
        if self.micrographs_without_coords:
            missing = self.micrographs_without_coords
            parts.append(
                f"{len(missing)} micrograph(s) have no coordinates: {_name_list(missing)}."
            )
        if self.unmatched_coord_names:
            n = len(self.unmatched_coord_names)
            parts.append(
                f"{n} name(s) in the coordinates match no micrograph "
                f"({self.n_particles_unmatched:,} particles not used): "
                f"{_name_list(self.unmatched_coord_names)}."
            )
        if self.n_with_coords == 0 and self.unmatched_coord_names and self.n_micrographs:
            parts.append(
                "Names are matched by file name without folder and image extension "
                "(a coordinate name may add a suffix such as _autopick); check that the "
                "coordinates belong to these micrographs."
            )
        return " ".join(parts)


_SUFFIX_SEPARATORS = "_."


def _suffix_match(candidate: str, by_norm: dict[str, str | None]) -> str | None:
    """Longest micrograph name that ``candidate`` extends by ``_<word>`` or ``.<word>``.

    A suffix whose first part is only digits (``mic_001_2``) is not taken as a suffix: such a
    name is more likely another micrograph of a numbered series than a tagged copy of this one.
    """
    for i in range(len(candidate) - 1, 0, -1):
        if candidate[i] not in _SUFFIX_SEPARATORS:
            continue
        prefix = candidate[:i]
        mic = by_norm.get(prefix)
        if mic is None:
            continue
        first = re.split(r"[_.]", candidate[i + 1 :], maxsplit=1)[0]
        if first.isdigit():
            continue
        return mic
    return None


def _resolve_name(
    name: str, mic_set: set[str], by_norm: dict[str, str | None]
) -> str | None:
    if name in mic_set:
        return name
    norm = coordinate_name(name)
    if norm in mic_set:
        return norm
    if by_norm.get(norm) is not None:
        return by_norm[norm]
    for candidate in dict.fromkeys((norm, name)):
        mic = _suffix_match(candidate, by_norm)
        if mic is not None:
            return mic
    return None


def match_coordinates(
    picks: pd.DataFrame, micrograph_names: Sequence[str]
) -> tuple[dict[str, pd.DataFrame], MatchReport]:
    """Assign the picks to micrographs by name.

    ``micrograph_names`` are the micrographs' names (``micrograph_name(path)``: file name
    without image extension). A coordinate name ``c`` matches, in this order:

    1. the micrograph named exactly ``c``;
    2. the micrograph named ``c`` without its folder and image extension (JSON keys such as
       ``image1.png``, RELION ``rlnMicrographName`` paths such as
       ``MotionCorr/job002/Movies/mic01.mrc``);
    3. the micrograph whose name ``c`` extends with a suffix starting with ``_`` or ``.``
       (``mic01_autopick``, ``mic01_manualpick``, ``mic01.picks``), the longest such name when
       several fit; a suffix whose first part is only digits (``mic01_2``) does not count, as it
       more likely names another micrograph.

    Returns
    -------
    matched:
        micrograph name -> its picks (``micrograph`` column set to the micrograph name), for
        micrographs with at least one pick, in the order of ``micrograph_names``.
    report:
        counts and names of micrographs without coordinates and of coordinate names matching no
        micrograph; nothing is dropped without being listed there.

    Raises
    ------
    InputError
        Two different coordinate names match the same micrograph (``mic01`` and
        ``mic01_autopick``): merging them would double its picks.
    """
    picks = _normalise_table(picks)
    mics = [str(m) for m in micrograph_names]
    mic_set = set(mics)
    # Normalised name -> micrograph; None when two micrographs normalise alike, so that only
    # their exact names can reach them.
    by_norm: dict[str, str | None] = {}
    for m in mics:
        key = coordinate_name(m)
        by_norm[key] = None if by_norm.get(key, m) != m else m
    for m in mics:
        by_norm[m] = m

    groups = {str(k): g for k, g in picks.groupby("micrograph", sort=False)}
    resolved: dict[str, str] = {}
    unmatched: list[str] = []
    n_unmatched = 0
    for cname, g in groups.items():
        mic = _resolve_name(cname, mic_set, by_norm)
        if mic is None:
            unmatched.append(cname)
            n_unmatched += len(g)
        else:
            resolved[cname] = mic
    sources: dict[str, list[str]] = {}
    for cname, mic in resolved.items():
        sources.setdefault(mic, []).append(cname)
    clashes = {m: s for m, s in sources.items() if len(s) > 1}
    if clashes:
        mic, names = next(iter(clashes.items()))
        raise InputError(
            f"coordinates for micrograph {mic!r} come under several names "
            f"({', '.join(repr(n) for n in names)})"
            + (f", and {len(clashes) - 1} more micrograph(s) likewise" if len(clashes) > 1 else "")
            + "; keep one coordinate set per micrograph"
        )
    matched: dict[str, pd.DataFrame] = {}
    n_matched = 0
    for m in mics:
        if m not in sources:
            continue
        sub = groups[sources[m][0]].copy()
        sub["micrograph"] = m
        matched[m] = sub.reset_index(drop=True)
        n_matched += len(sub)
    report = MatchReport(
        n_micrographs=len(mics),
        n_with_coords=len(matched),
        micrographs_without_coords=[m for m in mics if m not in matched],
        unmatched_coord_names=unmatched,
        n_particles_matched=n_matched,
        n_particles_unmatched=n_unmatched,
        matched_names={c: m for c, m in resolved.items() if c != m},
    )
    return matched, report
