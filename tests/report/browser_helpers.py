"""Helpers of the picks-browser tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def page_data(output: Path) -> dict:
    """The data the page holds inline (window.SP_DATA)."""
    page = (output / "index.html").read_text(encoding="utf-8")
    start = page.index("window.SP_DATA = ") + len("window.SP_DATA = ")
    end = page.index(";</script>", start)
    return json.loads(page[start:end])


def expected_count(scores, t: float) -> int:
    return int(np.count_nonzero(np.asarray(scores) >= t))
