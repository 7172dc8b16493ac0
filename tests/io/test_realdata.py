"""Real micrographs with curated CryoPPP coordinates (``../shared/data/real``; skipped if absent).

Checks that the CryoPPP CSVs read as centres inside their 4k JPEGs, with the particle counts of
``coordinates_provenance.tsv``, and that the combined table agrees with the per-file one.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from selfpick.io.coords import (
    check_in_bounds,
    detect_format,
    match_coordinates,
    read_coordinates,
)
from selfpick.io.micrographs import list_micrographs, micrograph_name, read_micrograph

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"

pytestmark = pytest.mark.realdata


def datasets() -> list[Path]:
    if not REAL.is_dir():
        return []
    return sorted(p.parent for p in REAL.glob("*/coordinates_provenance.tsv"))


@pytest.fixture(params=datasets() or [None], ids=lambda p: p.name if p else "none")
def dataset(request) -> Path:
    if request.param is None:
        pytest.skip(f"real data not found under {REAL}")
    return request.param


def provenance_counts(folder: Path) -> dict[str, int]:
    with open(folder / "coordinates_provenance.tsv", newline="") as fh:
        return {row["micrograph"]: int(row["n_particles"]) for row in csv.DictReader(fh, delimiter="\t")}


def test_real_coordinates_lie_inside_their_micrographs(dataset):
    coords_dir = dataset / "coordinates"
    assert detect_format(coords_dir) == "cryoppp"
    picks = read_coordinates(coords_dir)
    mic_paths = list_micrographs(dataset / "micrographs")
    names = [micrograph_name(p) for p in mic_paths]

    matched, report = match_coordinates(picks, names)
    assert report.unmatched_coord_names == [], report.summary()
    assert report.micrographs_without_coords == [], report.summary()

    expected = provenance_counts(dataset)
    assert {n: len(t) for n, t in matched.items()} == expected
    assert report.n_particles_matched == sum(expected.values())

    for path in mic_paths:
        data, _ = read_micrograph(path)
        table = matched[micrograph_name(path)]
        check_in_bounds(table, data.shape, path)
        # The curated centres are whole pixels with a known diameter.
        assert np.all(table["x"] == np.round(table["x"]))
        assert np.isfinite(table["diameter"]).all()


def test_real_combined_table_agrees_with_per_micrograph_files(dataset):
    combined_path = dataset / "coordinates_all.tsv"
    if not combined_path.is_file():
        pytest.skip("no coordinates_all.tsv")
    per_file = read_coordinates(dataset / "coordinates")
    combined = read_coordinates(combined_path)
    key = ["micrograph", "x", "y"]
    a = per_file.sort_values(key).reset_index(drop=True)
    b = combined.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key])
    assert np.array_equal(a["diameter"].to_numpy(), b["diameter"].to_numpy())
