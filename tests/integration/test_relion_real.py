"""RELION in the loop: RELION 3.1's own programs read what selfpick writes.

Every check here runs a real RELION program (``relion_preprocess``, ``relion_pipeliner``,
``relion_star_printtable``) on selfpick's files and reads back what RELION wrote. Which
coordinates come from where, plainly:

- **Simulated micrographs, picked by ``selfpick pick``** (the command-line entry point, with
  the tiny model the session fixture trains in a few seconds): RELION extracts every pick, at
  exactly the micrograph pixels selfpick means (no flip, no half-pixel shift), and the average
  of the picked particles is centred in RELION's boxes; ``--format box`` files give the same
  particles. The model is plumbing-grade and the
  particles simulated, but the picks are a model's picks and the path is the one users run.
- **Real micrographs (EMPIAR-10028 80S ribosome, PNG converted to MRC) with the curated
  coordinates**, written by selfpick's own per-micrograph STAR writer
  (``coords.write_per_micrograph``, the call ``selfpick pick`` makes for every micrograph):
  RELION's boxes are centred on real particles. These are *not* a model's picks -- a model that
  picks real particles takes minutes of CPU to train; ``test_relion_2d.py`` (``make
  relion-2d``) trains one and classifies its picks.
- **``selfpick relion-pick`` run by RELION 3.1's pipeliner as an External job**, and 3.1's
  Extract job (composed by the pipeliner from the same code as the GUI's) reading its
  coordinates.
- **The ``autopick.star`` index** (``data_coordinate_files``) is read with RELION's STAR parser
  (``relion_star_printtable``). RELION 3.1 has no program that follows such an index: its
  Extract finds coordinate files by ``--coord_dir`` + micrograph name + ``--coord_suffix``
  (tested above). Where the installed ``relion_preprocess`` has ``--coord_list`` (RELION 4+),
  extraction through the index is run as well.

RELION 3.1.3 (Debian) keeps a particle whose box crosses the micrograph edge (it repeats the
edge pixels) and stops with an error only for a box completely outside; the expected counts
below follow that rule (``relion_helpers.expected_extracted``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from relion_helpers import (
    NO_RELION,
    RELION_PREPROCESS,
    RIBOSOME,
    centre_offset,
    expected_extracted,
    extract,
    image_to_mrc,
    read_particles,
    relion_version,
    relion_window,
    require,
    require_real,
    run,
    write_micrographs_star,
)
from selfpick import cli
from selfpick.io import coords as coordio

pytestmark = [pytest.mark.relion, pytest.mark.skipif(RELION_PREPROCESS is None, reason=NO_RELION)]

DIAMETER = 24.0  # conftest.TINY_DIAMETER: the simulated particles
SIM_BOX = 48  # twice the diameter, as one would extract for 2D classification
RIBOSOME_PIXEL = 5.36  # Å, EMPIAR-10028 binned 4x (README of the data folder)
RIBOSOME_DIAMETER = 56.0
RIBOSOME_BOX = 128


def _chdir(path: Path):
    """A working-directory switch that also works on Python 3.10 (no contextlib.chdir)."""
    import contextlib

    @contextlib.contextmanager
    def switch():
        before = os.getcwd()
        os.chdir(path)
        try:
            yield
        finally:
            os.chdir(before)

    return switch()


def _read_autopick_files(folder: Path) -> dict[str, pd.DataFrame]:
    """selfpick's per-micrograph ``<name>_autopick.star`` files in ``folder``, by name."""
    out = {}
    for path in sorted(folder.glob("*_autopick.star")):
        block = starfile.read(path, always_dict=True)[""]
        out[path.name[: -len("_autopick.star")]] = block.reset_index(drop=True)
    return out


def _micrograph(path: Path) -> np.ndarray:
    import mrcfile

    with mrcfile.open(path, permissive=True) as mrc:
        return np.asarray(mrc.data, dtype=np.float32)


@pytest.fixture(scope="module")
def picked(tiny_experiment, tiny_data, tmp_path_factory) -> Path:
    """A project folder: ``Micrographs/*.mrc`` (simulated), ``mics.star`` and the output of
    ``selfpick pick --images Micrographs/ --output picks/Micrographs/`` run in it."""
    project = tmp_path_factory.mktemp("relion_pick") / "project"
    (project / "Micrographs").mkdir(parents=True)
    names = []
    for src in sorted(tiny_data.micrographs):
        shutil.copy(src, project / "Micrographs" / src.name)
        names.append(f"Micrographs/{src.name}")
    write_micrographs_star(project / "mics.star", names, pixel_size=2.0)
    model = tiny_experiment.output_dir / "best_model.pt"
    with _chdir(project):
        code = cli.main(["pick", "-q", "--model", str(model), "--images", "Micrographs/",
                         "--output", "picks/Micrographs/", "--device", "cpu"])
    assert code == 0
    picks = _read_autopick_files(project / "picks" / "Micrographs")
    assert len(picks) == len(names) and sum(map(len, picks.values())) > 0
    return project


# ------------------------------------------------------------------------ selfpick pick


def test_relion_extracts_every_pick_at_the_pixels_selfpick_means(picked):
    # No normalisation or contrast inversion: RELION's boxes are then the micrograph pixels
    # themselves, and can be compared with the micrograph exactly.
    star = extract(picked, "mics.star", "picks/", "Extract/raw/", SIM_BOX, norm=False,
                   invert=False)
    parts, images = read_particles(star, picked)
    picks = _read_autopick_files(picked / "picks" / "Micrographs")

    n_edge = n_exact = 0
    for name, table in picks.items():
        mic = _micrograph(picked / "Micrographs" / f"{name}.mrc")
        xy = table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(dtype=np.float64)
        mine = parts["rlnMicrographName"] == f"Micrographs/{name}.mrc"
        # Every pick whose box is not completely outside: all of them (picks lie inside).
        assert int(mine.sum()) == expected_extracted(xy, mic.shape, SIM_BOX) == len(table)
        got = parts.loc[mine, ["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(dtype=np.float64)
        np.testing.assert_allclose(got, xy, atol=1e-5)  # same picks, same order
        np.testing.assert_allclose(parts.loc[mine, "rlnAutopickFigureOfMerit"],
                                   table["rlnAutopickFigureOfMerit"], atol=1e-5)
        for (x, y), image in zip(xy, images[mine.to_numpy()]):
            window = relion_window(mic.shape, x, y, SIM_BOX)
            if window is None:
                n_edge += 1  # crosses the edge: kept, padded with edge pixels by RELION
                continue
            # x is the column, y the row, the pick is pixel box//2 of RELION's box.
            np.testing.assert_array_equal(image, mic[window])
            n_exact += 1
    assert n_exact > 0
    assert len(parts) == sum(map(len, picks.values()))
    print(f"RELION extracted {len(parts)} picks of {len(picks)} micrographs; {n_exact} boxes "
          f"identical to the micrograph pixels, {n_edge} crossing an edge (kept)")


def test_relion_reads_selfpick_box_files(picked, tiny_experiment):
    # --format box (EMAN2 corners): RELION takes corner + size // 2 as the centre, so the
    # centres agree with the STAR picks to the rounding of the corner (half a pixel).
    model = tiny_experiment.output_dir / "best_model.pt"
    with _chdir(picked):
        assert cli.main(["pick", "-q", "--model", str(model), "--images", "Micrographs/",
                         "--output", "boxes/Micrographs/", "--format", "box",
                         "--device", "cpu"]) == 0
    star = extract(picked, "mics.star", "boxes/", "Extract/box/", SIM_BOX, norm=False,
                   invert=False, suffix=".box")
    parts, images = read_particles(star, picked)
    picks = _read_autopick_files(picked / "picks" / "Micrographs")
    assert len(parts) == len(images) == sum(map(len, picks.values()))
    for name, table in picks.items():
        mine = parts[parts["rlnMicrographName"] == f"Micrographs/{name}.mrc"]
        got = mine[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(np.float64)
        want = table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(np.float64)
        np.testing.assert_allclose(got, want, atol=0.5 + 1e-6)


def _shifted_copy(project: Path, src: str, dst: str, dx: float) -> None:
    """Rewrite selfpick's picks moved by ``dx`` pixels in x, with selfpick's own writer."""
    tables = []
    for name, table in _read_autopick_files(project / src).items():
        xy = table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(dtype=np.float64)
        xy = xy + np.array([dx, 0.0])
        tables.append(coordio.make_picks(name, xy, table["rlnAutopickFigureOfMerit"]))
    coordio.write_per_micrograph(pd.concat(tables, ignore_index=True), project / dst, "star",
                                 suffix="_autopick")


def _assert_centred(centred: np.ndarray, shifted: np.ndarray, shift: float) -> None:
    """The average of the picks sits at the box centre; the same picks moved by ``shift`` in
    x put it ``shift`` to the left -- so the measure can tell, and the picks are centred."""
    off_c, off_s = float(np.hypot(*centred)), float(np.hypot(*shifted))
    assert off_s > shift / 2, f"shifted picks look centred too ({shifted}): measure is blind"
    assert shifted[0] < -shift / 2 and abs(shifted[1]) < shift / 2, shifted
    assert off_c < off_s / 2, f"picks {centred} px off centre, shifted ones {shifted}"
    assert off_c <= shift / 2, centred


def test_picked_particles_are_centred_in_relion_boxes(picked):
    # As RELION 3.1's Extract job runs it: normalised, contrast inverted.
    shift = DIAMETER / 4
    _shifted_copy(picked, "picks/Micrographs", "shifted/Micrographs", shift)
    offsets = {}
    for coords in ("picks", "shifted"):
        star = extract(picked, "mics.star", f"{coords}/", f"Extract/{coords}/", SIM_BOX)
        parts, images = read_particles(star, picked)
        assert len(images) > 20
        offsets[coords] = centre_offset(images.mean(axis=0))
    print(f"average of {len(images)} picks: {offsets['picks']} px from the box centre; "
          f"moved {shift:g} px: {offsets['shifted']}")
    _assert_centred(offsets["picks"], offsets["shifted"], shift)


@pytest.mark.realdata
def test_curated_real_particles_are_centred_in_relion_boxes(tmp_path):
    data = require_real(RIBOSOME)
    names = sorted(p.stem for p in (data / "micrographs").glob("*.png"))[:3]
    project = tmp_path / "project"
    tables, shapes = [], {}
    for name in names:
        image = image_to_mrc(data / "micrographs" / f"{name}.png",
                             project / "Micrographs" / f"{name}.mrc", RIBOSOME_PIXEL)
        shapes[name] = image.shape
        table = coordio.read_coordinates(data / "coordinates" / f"{name}.csv")
        table["micrograph"] = name
        tables.append(table)
    truth = pd.concat(tables, ignore_index=True)
    write_micrographs_star(project / "mics.star", [f"Micrographs/{n}.mrc" for n in names],
                           RIBOSOME_PIXEL)
    shift = RIBOSOME_DIAMETER / 4
    moved = truth.assign(x=truth["x"] + shift)
    offsets = {}
    for coords, table in (("picks", truth), ("shifted", moved)):
        coordio.write_per_micrograph(table, project / coords / "Micrographs", "star",
                                     suffix="_autopick")
        star = extract(project, "mics.star", f"{coords}/", f"Extract/{coords}/", RIBOSOME_BOX)
        parts, images = read_particles(star, project)
        for name in names:
            mine = table[table["micrograph"] == name]
            want = expected_extracted(mine[["x", "y"]].to_numpy(), shapes[name], RIBOSOME_BOX)
            got = int((parts["rlnMicrographName"] == f"Micrographs/{name}.mrc").sum())
            assert got == want == len(mine), (name, got, want, len(mine))
        offsets[coords] = centre_offset(images.mean(axis=0))
    print(f"{len(truth)} curated ribosomes: {offsets['picks']} px from the box centre; moved "
          f"{shift:g} px: {offsets['shifted']}")
    _assert_centred(offsets["picks"], offsets["shifted"], shift)
    assert float(np.hypot(*offsets["picks"])) <= 2.0  # curated centres are within ~1 px


# ------------------------------------------------------------------------ the index


def _printtable(star: Path, block: str, *labels: str) -> list[list[str]]:
    out = run([require("relion_star_printtable"), star, block, *labels], star.parent)
    return [line.split() for line in out.splitlines() if line.strip()]


def test_autopick_index_is_read_by_relion(picked):
    folder = picked / "picks" / "Micrographs"
    index = folder / "autopick.star"
    rows = _printtable(index, "data_coordinate_files", "rlnMicrographName",
                       "rlnMicrographCoordinates")
    picks = _read_autopick_files(folder)
    assert [Path(r[0]).stem for r in rows] == sorted(picks)
    total = 0
    for mic_name, coord_file in rows:
        assert (picked / mic_name).is_file()  # paths relative to where pick ran
        coords = _printtable(picked / coord_file, "data_", "rlnCoordinateX", "rlnCoordinateY",
                             "rlnAutopickFigureOfMerit")
        assert len(coords) == len(picks[Path(mic_name).stem])
        total += len(coords)
    help_text = subprocess.run([RELION_PREPROCESS], capture_output=True, text=True).stdout
    if "--coord_list" in help_text:  # RELION 4+: extraction straight from the index
        out = run([RELION_PREPROCESS, "--i", "mics.star", "--coord_list", index.relative_to(
            picked), "--part_star", "Extract/list/particles.star", "--part_dir",
            "Extract/list/", "--extract", "--extract_size", str(SIM_BOX)], picked)
        parts, _ = read_particles(picked / "Extract/list/particles.star", picked)
        assert len(parts) == total, out


# ------------------------------------------------------------------------ External job


JOB = "External/job012/"
EXTRACT = "Extract/job013/"
CTF_STAR = "CtfFind/job004/micrographs_ctf.star"
# RELION 3.1 process status in default_pipeline.star (pipeliner.h)
FINISHED, FAILED = 2, 3


def _selfpick_executable() -> str:
    exe = shutil.which("selfpick") or str(Path(sys.executable).with_name("selfpick"))
    if not Path(exe).is_file():
        pytest.skip("the selfpick command is not installed next to this Python (pip install -e .)")
    return exe


@pytest.fixture
def relion_project(tmp_path, tiny_data) -> Path:
    """A RELION 3.1 project: motion-corrected micrographs, a CtfFind STAR, an empty pipeline
    whose next job is number 12."""
    root = tmp_path / "project"
    movies = root / "MotionCorr" / "job002" / "Movies"
    movies.mkdir(parents=True)
    names = []
    for src in sorted(tiny_data.micrographs):
        shutil.copy(src, movies / src.name)
        names.append(f"MotionCorr/job002/Movies/{src.name}")
    write_micrographs_star(root / CTF_STAR, names, pixel_size=2.0, ctf=True)
    (root / "default_pipeline.star").write_text(
        "# version 30001\n\ndata_pipeline_general\n\n_rlnPipeLineJobCounter 12\n\n")
    return root


def _pipeliner(project: Path, *args: str) -> str:
    version = relion_version("relion_pipeliner")
    if not version.startswith("3."):
        # RELION 4 changed the job options and the pipeline's node types (strings, not
        # numbers); these tests are written against 3.1's.
        pytest.skip(f"the pipeliner tests are written for RELION 3.1 (found {version!r})")
    return run([require("relion_pipeliner"), *args], project, timeout=300)


def _add_and_run(project: Path, job_type: str, options: dict[str, str], job: str) -> str:
    """Add a job the way the GUI's fields fill it (``label == value``) and run it."""
    # Labels are the GUI's, with their trailing space where RELION has one.
    spec = ";".join(f"{label} == {value}" for label, value in options.items())
    _pipeliner(project, "--addJob", job_type, "--addJobOptions", spec)
    _pipeliner(project, "--RunJobs", job, "--sec_wait_after", "0")
    return (project / job / "note.txt").read_text()


def _status(project: Path, job: str) -> tuple[int, dict[str, int]]:
    """The job's process status and the pipeline's nodes (name -> type) after a run."""
    pipe = starfile.read(project / "default_pipeline.star", always_dict=True)
    procs = pipe["pipeline_processes"]
    status = int(procs.loc[procs["rlnPipeLineProcessName"] == job, "rlnPipeLineProcessStatus"]
                 .iloc[0])
    nodes = pipe.get("pipeline_nodes")
    types = {} if nodes is None else dict(zip(nodes["rlnPipeLineNodeName"],
                                              nodes["rlnPipeLineNodeType"].astype(int)))
    return status, types


def _external_options(model: str) -> dict[str, str]:
    return {
        "External executable:": f"{_selfpick_executable()} relion-pick",
        "Input micrographs: ": CTF_STAR,
        "Param1 - label:": "model", "Param1 - value:": model,
        "Param2 - label:": "device", "Param2 - value:": "cpu",
    }


def test_relion_runs_relion_pick_as_an_external_job_and_extracts_its_picks(
        relion_project, tiny_experiment):
    project = relion_project
    model = str(tiny_experiment.output_dir / "best_model.pt")
    note = _add_and_run(project, "External", _external_options(model), JOB)
    assert f"relion-pick --o {JOB} --in_mics {CTF_STAR} --model {model}" in note
    status, nodes = _status(project, JOB)
    assert status == FINISHED and (project / JOB / "RELION_JOB_EXIT_SUCCESS").is_file()
    # RELION 3.1 registers the announced node by name; its type column is RELION 4/5's
    # string label, which 3.1 does not know (it records type 0): docs/relion.md.
    assert f"{JOB}autopick.star" in nodes

    index = starfile.read(project / JOB / "autopick.star",
                          parse_as_string=["rlnMicrographName", "rlnMicrographCoordinates"])
    n_picks = {m: len(starfile.read(project / c, always_dict=True)[""])
               for m, c in zip(index["rlnMicrographName"], index["rlnMicrographCoordinates"])}
    assert sum(n_picks.values()) > 0

    # RELION 3.1's Extract job takes coordinates as a coords_suffix_<suffix>.star file naming
    # the micrographs STAR (what its AutoPick job writes); relion-pick writes one.
    assert (project / JOB / "coords_suffix_autopick.star").read_text().strip() == CTF_STAR
    note = _add_and_run(project, "Extract", {
        "micrograph STAR file: ": CTF_STAR,
        "Input coordinates: ": f"{JOB}coords_suffix_autopick.star",
        "Particle box size (pix):": str(SIM_BOX),
    }, EXTRACT)
    assert f"--coord_dir {JOB} --coord_suffix _autopick.star" in note
    status, nodes = _status(project, EXTRACT)
    assert status == FINISHED and nodes.get(f"{EXTRACT}particles.star") == 3  # particles
    parts, images = read_particles(project / EXTRACT / "particles.star", project)
    got = parts["rlnMicrographName"].value_counts().to_dict()
    assert got == {m: n for m, n in n_picks.items() if n}
    assert images.shape == (sum(n_picks.values()), SIM_BOX, SIM_BOX)
    # The CTF of each micrograph reached its particles.
    assert np.allclose(parts["rlnDefocusU"], 15000.0)


def test_relion_sees_a_failed_relion_pick(relion_project, tmp_path):
    project = relion_project
    _add_and_run(project, "External", _external_options(str(tmp_path / "missing.pt")), JOB)
    status, _ = _status(project, JOB)
    assert status == FAILED
    assert (project / JOB / "RELION_JOB_EXIT_FAILURE").is_file()
    assert "missing.pt" in (project / JOB / "run.err").read_text()
