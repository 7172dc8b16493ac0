"""The original training script's ``coordinates.json``: ``{"<micrograph>": [[x, y], ...]}``.

Keys are micrograph names with or without an image extension (``image1.png`` or ``image1``).
Values are lists of ``[x, y]`` or ``[x, y, score]`` centres in original pixels (x = column,
y = row). A micrograph with an empty list is listed but has no particles.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd

from selfpick.errors import InputError
from selfpick.io.formats._common import (
    build_table,
    coordinate_name,
    empty_picks,
    read_text,
)
from selfpick.utils.atomic import atomic_write_text

NAME = "json"
EXTENSION = ".json"
PER_MICROGRAPH = False

_EXPECTED = 'expected {"micrograph name": [[x, y], ...], ...}'


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read(path: str | os.PathLike) -> pd.DataFrame:
    text = read_text(path)
    if not text.strip():
        return empty_picks()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", path
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"{_EXPECTED}; the file holds a JSON {type(data).__name__}", path)
    names: list[str] = []
    xs: list[float] = []
    ys: list[float] = []
    scores: list[float] = []
    for key, rows in data.items():
        if not isinstance(rows, list):
            raise InputError(
                f"{_EXPECTED}; the entry for {key!r} is a {type(rows).__name__}, not a list", path
            )
        name = coordinate_name(key)
        for i, row in enumerate(rows):
            if (
                not isinstance(row, list)
                or len(row) not in (2, 3)
                or not all(_number(v) for v in row)
            ):
                raise InputError(
                    f"{_EXPECTED}; particle {i + 1} of {key!r} is {json.dumps(row)[:60]}, "
                    "not [x, y] or [x, y, score] numbers",
                    path,
                )
            if not (math.isfinite(row[0]) and math.isfinite(row[1])):
                raise InputError(f"particle {i + 1} of {key!r} has a non-finite coordinate", path)
            names.append(name)
            xs.append(float(row[0]))
            ys.append(float(row[1]))
            scores.append(float(row[2]) if len(row) == 3 else math.nan)
    return build_table(names, xs, ys, scores)


def write(
    picks: pd.DataFrame,
    path: str | os.PathLike,
    *,
    box_size: float | None = None,
    names: list[str] | tuple[str, ...] = (),
) -> None:
    """Names are written as they are in the table; ``[x, y, score]`` where a score is known.

    ``names`` adds an empty entry for micrographs without picks (the key still tells a reader
    that the micrograph was looked at).
    """
    out: dict[str, list[list[float]]] = {str(n): [] for n in names}
    for name, x, y, s in zip(
        picks["micrograph"].astype(str), picks["x"], picks["y"], picks["score"]
    ):
        row = [float(x), float(y)]
        if np.isfinite(s):
            row.append(float(s))
        out.setdefault(name, []).append(row)
    atomic_write_text(path, _dump(out))


def _dump(out: dict[str, list[list[float]]]) -> str:
    # One particle per line keeps big files diffable and readable without being huge.
    parts = []
    for name, rows in out.items():
        body = ",\n".join("    " + json.dumps(r) for r in rows)
        parts.append(f"  {json.dumps(name)}: [" + ("\n" + body + "\n  ]" if rows else "]"))
    return "{\n" + ",\n".join(parts) + "\n}\n" if parts else "{}\n"


def sniff(head: str) -> bool:
    return head.lstrip().startswith("{")
