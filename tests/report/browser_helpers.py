"""Helpers and fixtures of the picks-browser tests: synthetic picks on the tiny simulated
micrographs (no model needed), and a large run of 1,000 micrographs x 500 picks."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selfpick.io import coords as coordio
from selfpick.io.formats import relion_star


def page_data(output: Path) -> dict:
    """The data the page holds inline (window.SP_DATA)."""
    page = (output / "index.html").read_text(encoding="utf-8")
    start = page.index("window.SP_DATA = ") + len("window.SP_DATA = ")
    end = page.index(";</script>", start)
    return json.loads(page[start:end])


def expected_count(scores, t: float) -> int:
    return int(np.count_nonzero(np.asarray(scores) >= t))


# ---------------------------------------------------------------- fixtures
# (imported by the browser test modules; a conftest.py here would shadow tests/conftest.py
# for the modules that import tiny_config from it)

LARGE_MICROGRAPHS = 1000
LARGE_PICKS = 500
LARGE_SIZE = 128


@dataclass
class SyntheticRun:
    folder: Path  # what selfpick pick would have written
    images: Path
    truth: Path
    diameter: float
    picks: pd.DataFrame  # every pick written (micrograph = micrograph name)
    truth_xy: dict[str, np.ndarray]


def synthetic_picks(sim, seed: int = 0) -> pd.DataFrame:
    """Picks as a decent picker makes them: most true particles found, with high scores and a
    few pixels off; some missed; false positives with lower scores; two picks on one particle
    now and then."""
    rng = np.random.default_rng(seed)
    tables = []
    size = 256
    for name, truth in sorted(sim.truth.items()):
        found = truth[rng.random(len(truth)) < 0.85]
        xy = [found + rng.normal(0, 1.5, found.shape)]
        scores = [rng.uniform(0.35, 1.0, len(found))]
        n_fp = max(3, len(truth) // 3)
        xy.append(rng.uniform(12, size - 12, (n_fp, 2)))
        scores.append(rng.uniform(0.0, 0.7, n_fp))
        twins = found[:2] + 3.0
        xy.append(twins)
        scores.append(rng.uniform(0.1, 0.4, len(twins)))
        xy = np.clip(np.concatenate(xy), 0, size - 1)
        tables.append(coordio.make_picks(name, xy, np.round(np.concatenate(scores), 6)))
    return pd.concat(tables, ignore_index=True)


def write_pick_run(picks: pd.DataFrame, folder: Path, mic_paths: dict[str, Path],
                   summary: dict | None = None) -> Path:
    """The layout of ``selfpick pick``: <mic>_autopick.star files, autopick.star, summary."""
    folder.mkdir(parents=True, exist_ok=True)
    coordio.write_per_micrograph(picks, folder, "star", suffix="_autopick",
                                 micrograph_paths=mic_paths)
    rows = [(str(p), str(folder / f"{n}_autopick.star")) for n, p in mic_paths.items()]
    relion_star.write_index(rows, folder / "autopick.star")
    if summary is not None:
        (folder / "pick_summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture(scope="module")
def synthetic_run(tiny_data, tmp_path_factory) -> SyntheticRun:
    from selfpick.io.micrographs import micrograph_name

    picks = synthetic_picks(tiny_data)
    mic_paths = {micrograph_name(p): p for p in tiny_data.micrographs}
    folder = write_pick_run(picks, tmp_path_factory.mktemp("run") / "picks", mic_paths,
                            {"model": "models/best_model.pt", "threshold": 0.0,
                             "format": "star", "flip_y": False})
    return SyntheticRun(folder=folder, images=tiny_data.output_dir / "micrographs",
                        truth=tiny_data.output_dir / "truth" / "csv",  # CryoPPP: with Diameter
                        diameter=float(tiny_data.diameter), picks=picks,
                        truth_xy=tiny_data.truth)


@dataclass
class LargeBrowser:
    output: Path
    picks: pd.DataFrame
    names: list[str]
    seconds: float


@pytest.fixture(scope="session")
def large_browser(tmp_path_factory) -> LargeBrowser:
    """The picks browser of 1,000 small micrographs with 500 scored picks each."""
    from selfpick.report.browser import write_browser

    root = tmp_path_factory.mktemp("large")
    mics = root / "mics"
    mics.mkdir()
    rng = np.random.default_rng(3)
    names = [f"mic_{i:04d}" for i in range(LARGE_MICROGRAPHS)]
    base = rng.normal(0, 1, (LARGE_SIZE, LARGE_SIZE)).astype(np.float32)
    for i, name in enumerate(names):
        np.save(mics / f"{name}.npy", np.roll(base, i, axis=1))
    n = LARGE_MICROGRAPHS * LARGE_PICKS
    picks = pd.DataFrame({
        "micrograph": np.repeat(names, LARGE_PICKS),
        "x": rng.uniform(0, LARGE_SIZE - 1, n),
        "y": rng.uniform(0, LARGE_SIZE - 1, n),
        "score": rng.uniform(0, 1, n),
        "diameter": 12.0,
    })
    t0 = time.perf_counter()
    summary = write_browser(picks, mics, root / "browser", progress=False)
    seconds = time.perf_counter() - t0
    return LargeBrowser(output=summary.output, picks=picks, names=names, seconds=seconds)
