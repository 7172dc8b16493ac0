"""``selfpick relion-pick``: the RELION External job contract, in a fake RELION project."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest
import starfile

from selfpick import cli
from selfpick.errors import InputError
from selfpick.io import coords as coordio
from selfpick.io.micrographs import micrograph_name
from selfpick.model.modelfile import load_model
from selfpick.picking import relion
from selfpick.picking.pick import pick_micrograph

JOB = "External/job012"
CTF_STAR = "CtfFind/job004/micrographs_ctf.star"


@pytest.fixture(scope="module")
def model_path(tiny_experiment) -> Path:
    return tiny_experiment.output_dir / "best_model.pt"


@pytest.fixture(scope="module")
def reference(model_path, tiny_data) -> dict[str, pd.DataFrame]:
    saved = load_model(model_path)
    return {micrograph_name(p): pick_micrograph(saved, p) for p in tiny_data.micrographs}


def _write_micrographs_star(path: Path, names: list[str]) -> None:
    """A RELION 3.1+/4/5 micrographs_ctf.star: optics table + micrographs table."""
    optics = pd.DataFrame({
        "rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
        "rlnMicrographOriginalPixelSize": [1.0], "rlnVoltage": [300.0],
        "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
        "rlnMicrographPixelSize": [1.0],
    })
    mics = pd.DataFrame({
        "rlnMicrographName": names, "rlnOpticsGroup": [1] * len(names),
        "rlnCtfImage": [n.replace(".mrc", ".ctf:mrc") for n in names],
        "rlnDefocusU": [15000.0] * len(names), "rlnDefocusV": [14800.0] * len(names),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    starfile.write({"optics": optics, "micrographs": mics}, path)


@pytest.fixture
def project(tmp_path, tiny_data, monkeypatch) -> tuple[Path, list[str]]:
    """A RELION project folder (the working directory) with motion-corrected micrographs."""
    root = tmp_path / "project"
    movies = root / "MotionCorr" / "job002" / "Movies"
    movies.mkdir(parents=True)
    names = []
    for p in sorted(tiny_data.micrographs):
        shutil.copy(p, movies / p.name)
        names.append(f"MotionCorr/job002/Movies/{p.name}")
    _write_micrographs_star(root / CTF_STAR, names)
    monkeypatch.chdir(root)
    return root, names


def _run(*args: str) -> int:
    return cli.main(["relion-pick", "-q", *args])


def _job_args(model: Path, job: str = JOB) -> list[str]:
    # As RELION's External job composes it: --o with a trailing slash, params, then --j.
    return ["--o", f"{job}/", "--in_mics", CTF_STAR, "--model", str(model)]


# ------------------------------------------------------------------------------ success


def test_external_job_writes_relion_outputs(project, model_path, reference, caplog):
    root, names = project
    caplog.set_level(logging.WARNING, logger="selfpick")
    code = _run(*_job_args(model_path), "--box_size", "64",  # a param selfpick lacks
                "--threshold",  # a param whose value field was left empty
                "--device", "cpu",  # as the reference (a GPU's bf16 moves picks ~0.1 px)
                "--j", "1")
    assert code == 0
    job = root / JOB
    assert (job / relion.SUCCESS).is_file() and (job / relion.SUCCESS).stat().st_size == 0
    assert not (job / relion.FAILURE).exists()
    assert "--box_size 64" in caplog.text  # ignored, but said so

    # The output node: RELION 4/5 string type label, name relative to the project.
    nodes = starfile.read(job / "RELION_OUTPUT_NODES.star", always_dict=True)
    assert list(nodes) == ["output_nodes"]
    assert nodes["output_nodes"].to_dict("records") == [{
        "rlnPipeLineNodeName": f"{JOB}/autopick.star",
        "rlnPipeLineNodeTypeLabel": "MicrographCoordsGroup.star.relion.autopick",
    }]
    # RELION 3.1's way to point Extract at the coordinates: the input STAR's name.
    assert (job / relion.COORDS_SUFFIX).read_text() == CTF_STAR + "\n"

    # The index: micrograph names exactly as in the input STAR, coordinate files relative
    # to the project, under the job folder in the micrograph's sub-folder (Movies/).
    index = starfile.read(job / "autopick.star", always_dict=True,
                          parse_as_string=["rlnMicrographName", "rlnMicrographCoordinates"])
    assert list(index) == ["coordinate_files"]
    rows = index["coordinate_files"]
    assert rows["rlnMicrographName"].tolist() == names
    expected = [f"{JOB}/Movies/{Path(n).stem}_autopick.star" for n in names]
    assert rows["rlnMicrographCoordinates"].tolist() == expected
    for rel in expected:
        assert (root / rel).is_file()

    # The coordinates are what the library picks, read back by RELION's layout...
    table = coordio.read_coordinates(job / "autopick.star", allow_empty=True)
    # (The job runs with --j 1 thread, the reference with the default: float rounding may
    # differ in the last bits, so a pick scoring within 1e-4 of the threshold may differ.)
    threshold = load_model(model_path).threshold
    for name, want in reference.items():
        got_all = table[table["micrograph"] == name]
        got = got_all[got_all["score"] >= threshold + 1e-4].sort_values(["x", "y"])
        want_sure = want[want["score"] >= threshold + 1e-4].sort_values(["x", "y"])
        np.testing.assert_allclose(got[["x", "y"]], want_sure[["x", "y"]], atol=1e-4)
        np.testing.assert_allclose(got["score"], want_sure["score"], atol=1e-5)
        assert abs(len(got_all) - len(want)) <= int((want["score"] < threshold + 1e-4).sum()
                                                    + (got_all["score"] < threshold + 1e-4).sum())
        # ...and by starfile: the per-micrograph file RELION's Extract opens.
        df = starfile.read(job / "Movies" / f"{name}_autopick.star", always_dict=True)[""]
        assert {"rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit"} <= set(df)
        assert len(df) == len(got_all)


def test_continuing_the_job_picks_only_what_is_missing(project, model_path):
    root, names = project
    assert _run(*_job_args(model_path)) == 0
    job = root / JOB
    done = job / "Movies" / f"{Path(names[0]).stem}_autopick.star"
    missing = job / "Movies" / f"{Path(names[1]).stem}_autopick.star"
    done.write_text(done.read_text() + "# untouched\n")
    missing.unlink()
    assert _run(*_job_args(model_path)) == 0
    assert done.read_text().endswith("# untouched\n")
    assert missing.is_file()
    assert (job / relion.SUCCESS).is_file()
    rows = starfile.read(job / "autopick.star", parse_as_string=["rlnMicrographName"])
    assert rows["rlnMicrographName"].tolist() == names


def test_same_names_in_two_subfolders_do_not_collide(tmp_path, tiny_data, model_path,
                                                     monkeypatch):
    # Two sessions imported as Movies/day1/ and Movies/day2/ may reuse micrograph names;
    # mirroring the sub-folder (as relion_autopick does) keeps their coordinates apart.
    root = tmp_path / "project"
    src = sorted(tiny_data.micrographs)
    names = []
    for day, p in (("day1", src[0]), ("day2", src[1])):
        folder = root / "MotionCorr" / "job002" / "Movies" / day
        folder.mkdir(parents=True)
        shutil.copy(p, folder / "mic.mrc")
        names.append(f"MotionCorr/job002/Movies/{day}/mic.mrc")
    _write_micrographs_star(root / CTF_STAR, names)
    monkeypatch.chdir(root)
    assert _run(*_job_args(model_path)) == 0
    rows = starfile.read(root / JOB / "autopick.star",
                         parse_as_string=["rlnMicrographName", "rlnMicrographCoordinates"])
    assert rows["rlnMicrographCoordinates"].tolist() == [
        f"{JOB}/Movies/day1/mic_autopick.star", f"{JOB}/Movies/day2/mic_autopick.star"]
    one, two = (starfile.read(root / r) for r in rows["rlnMicrographCoordinates"])
    assert not np.allclose(one["rlnCoordinateX"].to_numpy()[:3],
                           two["rlnCoordinateX"].to_numpy()[:3])  # different micrographs
    # Only the job's index; no stray per-folder index that RELION would not know about.
    assert sorted(p.relative_to(root / JOB).as_posix() for p in (root / JOB).rglob("*.star")
                  if p.name == "autopick.star") == ["autopick.star"]


# ------------------------------------------------------------------------------ failure


def _write_bad_star(root: Path) -> str:
    path = root / "Select" / "job005" / "bad.star"
    path.parent.mkdir(parents=True)
    starfile.write({"particles": pd.DataFrame({"rlnCoordinateX": [1.0], "rlnCoordinateY": [2.0]})},
                   path)
    return "Select/job005/bad.star"


def _write_star_with_missing_micrograph(root: Path) -> str:
    _write_micrographs_star(root / "CtfFind/job009/micrographs_ctf.star",
                            ["MotionCorr/job002/Movies/gone.mrc"])
    return "CtfFind/job009/micrographs_ctf.star"


FAILURES = {
    "missing model": (lambda root, model: ["--in_mics", CTF_STAR, "--model", "nowhere.pt"],
                      "nowhere.pt"),
    "no model param": (lambda root, model: ["--in_mics", CTF_STAR, "--j", "1"], "model"),
    "model not a model": (lambda root, model: ["--in_mics", CTF_STAR, "--model",
                                               str(root / CTF_STAR)], "micrographs_ctf.star"),
    "STAR without micrographs": (lambda root, model: ["--in_mics", _write_bad_star(root),
                                                      "--model", str(model)], "bad.star"),
    "missing STAR": (lambda root, model: ["--in_mics", "CtfFind/job099/none.star", "--model",
                                          str(model)], "none.star"),
    "missing micrograph": (lambda root, model: ["--in_mics",
                                                _write_star_with_missing_micrograph(root),
                                                "--model", str(model)], "gone.mrc"),
    "no input micrographs": (lambda root, model: ["--model", str(model)], "Input micrographs"),
    "bad threshold": (lambda root, model: ["--in_mics", CTF_STAR, "--model", str(model),
                                           "--threshold", "high"], "--threshold"),
    "threshold above 1": (lambda root, model: ["--in_mics", CTF_STAR, "--model", str(model),
                                               "--threshold", "1.5"], "--threshold 1.5"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_any_error_leaves_the_failure_marker_and_exits_2(case, project, model_path, capsys):
    root, _ = project
    job = root / JOB
    job.mkdir(parents=True)
    (job / relion.SUCCESS).touch()  # left by an earlier run: must not survive a failure
    make_args, named = FAILURES[case]
    code = _run("--o", f"{JOB}/", *make_args(root, model_path))
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines()
              if line.startswith("selfpick relion-pick: error:")]
    assert len(errors) == 1 and named in errors[0], err
    assert "Traceback" not in err
    assert (job / relion.FAILURE).is_file()
    assert not (job / relion.SUCCESS).exists()
    assert not (job / "autopick.star").exists()
    assert not (job / "RELION_OUTPUT_NODES.star").exists()


def test_abort_requested_from_the_gui(project, model_path):
    root, _ = project
    job = root / JOB
    job.mkdir(parents=True)
    (job / relion.ABORT_NOW).touch()
    assert _run(*_job_args(model_path)) == 2
    assert (job / relion.ABORTED).is_file()
    assert not (job / relion.SUCCESS).exists() and not (job / relion.FAILURE).exists()
    assert not (job / relion.ABORT_NOW).exists()  # acknowledged


def test_unexpected_errors_also_leave_the_failure_marker(tmp_path):
    # A bug (not a user error) keeps its traceback, but RELION must still learn the job ended.
    job = tmp_path / "External" / "job013"
    with pytest.raises(ZeroDivisionError):
        with relion.external_job(job):
            1 / 0
    assert (job / relion.FAILURE).is_file() and not (job / relion.SUCCESS).exists()


def test_missing_o_is_a_plain_error(capsys):
    assert _run("--in_mics", CTF_STAR, "--model", "m.pt") == 2
    assert "--o" in capsys.readouterr().err


# ------------------------------------------------------------------------------ pieces


def test_reads_relion_3_0_single_block_micrograph_stars(tmp_path):
    path = tmp_path / "micrographs.star"
    starfile.write(pd.DataFrame({"rlnMicrographName": ["Movies/a.mrc", "Movies/b.mrc",
                                                       "Movies/a.mrc"],
                                 "rlnDefocusU": [1.0, 2.0, 1.0]}), path)
    assert relion.read_micrographs_star(path) == ["Movies/a.mrc", "Movies/b.mrc"]


def test_prefers_the_micrographs_block_and_keeps_numeric_names_as_text(tmp_path):
    path = tmp_path / "micrographs_ctf.star"
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnMicrographPixelSize": [1.1]})
    mics = pd.DataFrame({"rlnMicrographName": ["0001.mrc", "0002.mrc"], "rlnOpticsGroup": [1, 1]})
    starfile.write({"optics": optics, "micrographs": mics}, path)
    assert relion.read_micrographs_star(path) == ["0001.mrc", "0002.mrc"]


def test_a_movies_star_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "movies.star"
    starfile.write({"optics": pd.DataFrame({"rlnOpticsGroup": [1]}),
                    "movies": pd.DataFrame({"rlnMicrographMovieName": ["Movies/a.tiff"],
                                            "rlnOpticsGroup": [1]})}, path)
    with pytest.raises(InputError, match="movies"):
        relion.read_micrographs_star(path)


@pytest.mark.parametrize("name,folder", [
    ("MotionCorr/job002/Movies/mic1.mrc", "Movies"),
    ("MotionCorr/job002/Movies/GridA/sq3/mic1.mrc", "Movies/GridA/sq3"),
    ("MotionCorr/job002/mic1.mrc", "."),
    ("Micrographs/mic1.mrc", "Micrographs"),  # imported, not made by a job
    ("mic1.mrc", "."),
    ("/data/session/mic1.mrc", "."),  # absolute: nothing to mirror safely
    ("../elsewhere/mic1.mrc", "."),
    ("job002/Movies/mic1.mrc", "job002/Movies"),  # "jobNNN" only counts below a job type
])
def test_output_subfolder_follows_relion(name, folder):
    assert relion.output_subfolder(name) == PurePosixPath(folder)


@pytest.mark.parametrize("gpu,device,expected", [
    (None, None, "auto"),
    ("0", None, "cuda:0"),
    ("1,2", None, "cuda:1"),  # RELION's "0,1" / "0:1" lists: one GPU per job here
    ("2:3", None, "cuda:2"),
    ("", None, "cuda"),  # GPU field left empty: the first GPU
    ("0", "cpu", "cpu"),  # an explicit device wins
])
def test_relion_gpu_field_maps_to_a_torch_device(gpu, device, expected):
    import argparse

    from selfpick.commands.relion_pick import _device

    assert _device(argparse.Namespace(gpu=gpu, device=device)) == expected


@pytest.mark.parametrize("text,value", [(None, False), ("yes", True), ("Yes", True),
                                        ("true", True), ("1", True), ("no", False),
                                        ("", False), ("0", False)])
def test_yes_no_params(text, value):
    from selfpick.commands.relion_pick import _flag

    assert _flag(text, "flip_y") is value


def test_unclear_yes_no_param_is_refused():
    from selfpick.commands.relion_pick import _flag
    from selfpick.errors import SelfpickError

    with pytest.raises(SelfpickError, match="--flip_y 'maybe'"):
        _flag("maybe", "flip_y")
