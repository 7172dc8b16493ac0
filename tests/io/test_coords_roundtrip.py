"""Property tests: random picks -> write -> read gives the same centres in every format.

Tolerances follow what each format stores: JSON and CSV keep full float64 precision (exact);
STAR and CBOX 6 decimals (1e-6 px); Topaz 2 decimals (0.005 px); BOX and CryoPPP whole pixels
(0.5 px).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfpick.io.coords import (
    FORMATS,
    make_picks,
    match_coordinates,
    read_coordinates,
    write_coordinates,
    write_per_micrograph,
    write_relion_autopick,
)

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Centre tolerance (px) and whether the format keeps scores, with their tolerance.
COORD_TOL = {"json": 0.0, "csv": 0.0, "star": 1e-6, "cbox": 1e-6, "topaz": 0.005 + 1e-9, "box": 0.5, "cryoppp": 0.5}
SCORE_TOL = {"json": 0.0, "csv": 0.0, "star": 1e-6, "cbox": 1e-6, "topaz": None, "box": None, "cryoppp": None}
PER_MICROGRAPH = {"box", "cbox", "cryoppp"}

# Names as micrograph files have them: letters, digits, '_' and '-', some all digits ("001"),
# some spelling missing values ("NA", "nan") that must stay names.
names = st.one_of(
    st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,12}", fullmatch=True),
    st.from_regex(r"[0-9]{1,6}", fullmatch=True),
    st.sampled_from(["NA", "nan", "None", "mic_001", "Falcon_2012_06_12-14_57_34_0"]),
)
coord = st.floats(min_value=0.0, max_value=4096.0, exclude_max=True, allow_nan=False)
score = st.floats(min_value=-50.0, max_value=50.0, allow_nan=False)


@st.composite
def pick_tables(draw, max_micrographs: int = 4) -> pd.DataFrame:
    mic_names = draw(st.lists(names, min_size=1, max_size=max_micrographs, unique=True))
    with_scores = draw(st.booleans())
    tables = []
    for name in mic_names:
        n = draw(st.integers(min_value=1, max_value=15))
        xy = np.array(draw(st.lists(st.tuples(coord, coord), min_size=n, max_size=n)))
        scores = draw(st.lists(score, min_size=n, max_size=n)) if with_scores else None
        tables.append(make_picks(name, xy, scores))
    return pd.concat(tables, ignore_index=True)


def assert_same(original: pd.DataFrame, back: pd.DataFrame, fmt: str) -> None:
    assert sorted(back["micrograph"].unique()) == sorted(original["micrograph"].unique())
    for name, want in original.groupby("micrograph", sort=False):
        got = back[back["micrograph"] == name]
        assert len(got) == len(want), (fmt, name)
        tol = COORD_TOL[fmt]
        np.testing.assert_allclose(got["x"].to_numpy(), want["x"].to_numpy(), rtol=0, atol=tol)
        np.testing.assert_allclose(got["y"].to_numpy(), want["y"].to_numpy(), rtol=0, atol=tol)
        if fmt == "topaz":
            np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), rtol=1e-5, atol=1e-12)
        elif SCORE_TOL[fmt] is not None:
            np.testing.assert_allclose(
                got["score"].to_numpy(), want["score"].to_numpy(), rtol=0, atol=SCORE_TOL[fmt]
            )
        else:
            assert got["score"].isna().all()


def test_every_format_has_a_property_test():
    assert set(COORD_TOL) == set(FORMATS)


@SETTINGS
@given(picks=pick_tables(), fmt=st.sampled_from(sorted(set(FORMATS) - PER_MICROGRAPH)))
def test_combined_file_round_trip(picks, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"picks.{fmt}"
        write_coordinates(picks, path, fmt)
        back = read_coordinates(path, fmt)
    assert_same(picks, back, fmt)


@SETTINGS
@given(
    picks=pick_tables(),
    fmt=st.sampled_from(sorted(FORMATS)),
    box=st.one_of(st.integers(min_value=8, max_value=400).map(float), st.floats(min_value=8.0, max_value=400.0)),
)
def test_per_micrograph_folder_round_trip(picks, fmt, box):
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_per_micrograph(picks, Path(tmp) / "out", fmt, box_size=box)
        assert len(paths) == picks["micrograph"].nunique()
        back = read_coordinates(Path(tmp) / "out")  # format detected from the files
    assert_same(picks, back, fmt)


@SETTINGS
@given(picks=pick_tables())
def test_relion_autopick_round_trip_and_matching(picks):
    mics = {name: f"MotionCorr/job002/Movies/{name}.mrc" for name in picks["micrograph"].unique()}
    mics["never_picked"] = "MotionCorr/job002/Movies/never_picked.mrc"
    with tempfile.TemporaryDirectory() as tmp:
        index = write_relion_autopick(picks, Path(tmp) / "job", mics)
        back = read_coordinates(index)
        folder = read_coordinates(Path(tmp) / "job" , "star", allow_empty=True)
    assert_same(picks, back, "star")
    assert_same(picks, folder, "star")
    matched, report = match_coordinates(back, list(mics))
    assert report.micrographs_without_coords == ["never_picked"]
    assert report.unmatched_coord_names == []
    assert report.n_particles_matched == len(picks)


@SETTINGS
@given(picks=pick_tables(max_micrographs=3), suffix=st.sampled_from(["_autopick", "_picks", "_manualpick"]))
def test_suffixed_per_micrograph_files_match_their_micrographs(picks, suffix):
    names = list(picks["micrograph"].unique())
    with tempfile.TemporaryDirectory() as tmp:
        write_per_micrograph(picks, Path(tmp), "star", suffix=suffix)
        back = read_coordinates(Path(tmp))
    assert set(back["micrograph"]) == {n + suffix for n in names}
    matched, report = match_coordinates(back, names)
    assert list(matched) == names
    assert report.n_particles_matched == len(picks) and not report.unmatched_coord_names
    for name in names:
        np.testing.assert_allclose(
            matched[name]["x"].to_numpy(), picks.loc[picks["micrograph"] == name, "x"].to_numpy(), atol=1e-6
        )


@SETTINGS
@given(
    n=st.integers(0, 40),
    seed=st.integers(0, 2**16),
    magnitude=st.sampled_from([1e-3, 1.0, 4096.0, 1e7]),
    nan_scores=st.sampled_from(["none", "some", "all"]),
    with_score=st.booleans(),
)
def test_per_micrograph_star_text_is_what_starfile_writes(n, seed, magnitude, nan_scores,
                                                          with_score):
    """selfpick formats the per-micrograph STAR files itself (for speed); starfile's output
    for the same table is the reference, byte for byte."""
    from selfpick.io.formats import relion_star

    rng = np.random.default_rng(seed)
    score = rng.uniform(0, 1, n)
    if nan_scores == "some" and n:
        score[rng.integers(0, n)] = np.nan
    elif nan_scores == "all":
        score[:] = np.nan
    columns = [("rlnCoordinateX", rng.uniform(-magnitude, magnitude, n)),
               ("rlnCoordinateY", rng.uniform(0, magnitude, n))]
    if with_score:
        columns.append(("rlnAutopickFigureOfMerit", score))
    columns += [("rlnClassNumber", rng.integers(-3, 5, n)), ("rlnAnglePsi", np.full(n, -999.0))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ref.star"
        relion_star._write_star({"": pd.DataFrame(dict(columns))}, path)
        want = path.read_text(encoding="utf-8")
    assert relion_star.single_block_text(columns) == want
