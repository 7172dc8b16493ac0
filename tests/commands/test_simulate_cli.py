"""`selfpick simulate` run in-process through selfpick.cli.main."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from selfpick.cli import main

SMALL = ["--n-micrographs", "2", "--size", "256", "--diameter", "24", "--seed", "3"]


def test_simulate_writes_the_layout(tmp_path, caplog):
    from selfpick.io.coords import read_coordinates
    from selfpick.io.micrographs import read_micrograph

    out = tmp_path / "sim"
    with caplog.at_level(logging.INFO, logger="selfpick"):
        rc = main(["simulate", "--output", str(out), *SMALL, "--label-fraction", "0.5",
                   "--pixel-size", "1.7"])
    assert rc == 0
    assert "Simulated 2 micrographs" in caplog.text

    names = ["sim_000", "sim_001"]
    for n in names:
        data, px = read_micrograph(out / "micrographs" / f"{n}.mrc")
        assert data.shape == (256, 256) and data.dtype == np.float32
        assert px == pytest.approx(1.7)
    assert (out / "preview.png").is_file()
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["config"]["pixel_size"] == pytest.approx(1.7)
    assert meta["config"]["label_fraction"] == pytest.approx(0.5)

    for part in ("truth", "labels"):
        js = read_coordinates(out / part / "coordinates.json")
        star = read_coordinates(out / part / "particles.star")
        csv = read_coordinates(out / part / "csv")
        assert sorted(set(js.micrograph)) == names
        assert len(js) == len(star) == len(csv) > 0
        assert (csv.diameter == 24).all()  # CryoPPP CSV carries the diameter
    truth = read_coordinates(out / "truth" / "coordinates.json")
    labels = read_coordinates(out / "labels" / "coordinates.json")
    for n, m in zip(names, meta["micrographs"]):
        n_t = int((truth.micrograph == n).sum())
        n_l = int((labels.micrograph == n).sum())
        assert n_t == m["n_particles"] and n_l == m["n_labels"] == max(1, round(0.5 * n_t))
    # Truth lies inside the micrograph, at least a radius from the edges.
    xy = truth[["x", "y"]].to_numpy()
    assert (xy >= 12).all() and (xy <= 255 - 12).all()


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--label-fraction" in text and "examples:" in text and "selfpick simulate" in text


def test_non_empty_output_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "sim"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    rc = main(["simulate", "--output", str(out), *SMALL])
    assert rc == 2
    err = capsys.readouterr().err
    assert "selfpick simulate: error:" in err and str(out) in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["sim"]  # no staging folder left

    assert main(["simulate", "--output", str(out), *SMALL, "--overwrite", "-q"]) == 0
    assert (out / "keep.txt").read_text() == "precious"
    assert len(list((out / "micrographs").iterdir())) == 2


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--size", "80", "--diameter", "24"], "--size"),
        (["--label-fraction", "0"], "--label-fraction"),
        (["--label-fraction", "1.2"], "--label-fraction"),
        (["--n-micrographs", "0"], "--n-micrographs"),
        (["--snr", "-1"], "--snr"),
    ],
)
def test_bad_flags_exit_2_without_output(tmp_path, capsys, flags, words):
    out = tmp_path / "sim"
    rc = main(["simulate", "--output", str(out), *SMALL, *flags])
    assert rc == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_preset_and_explicit_flags_override_it(tmp_path, caplog):
    from selfpick.simulate import SIMULATED_PANEL

    out = tmp_path / "rings"
    with caplog.at_level(logging.INFO, logger="selfpick"):
        rc = main(["simulate", "--output", str(out), "--preset", "shell", "-n", "1",
                   "--size", "256", "--diameter", "60", "--seed", "2"])
    assert rc == 0
    assert "preset shell" in caplog.text
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["preset"] == "shell"
    cfg = meta["config"]
    assert cfg["shape"] == "shell" and cfg["diameter"] == 60  # flag beats preset (80)
    assert cfg["snr"] == pytest.approx(SIMULATED_PANEL["shell"]["snr"])  # preset kept
    assert cfg["pixel_size"] == pytest.approx(SIMULATED_PANEL["shell"]["pixel_size"])
    assert cfg["size"] == 256 and cfg["seed"] == 2


def test_raw16_and_png_flags_write_those_files(tmp_path):
    import mrcfile
    from PIL import Image

    out = tmp_path / "raw"
    assert main(["simulate", "--output", str(out), "--preset", "raw16", *SMALL, "--dose",
                 "45", "-q"]) == 0
    with mrcfile.open(out / "micrographs" / "sim_000.mrc", permissive=True) as mrc:
        assert int(mrc.header.mode) == 6 and mrc.data.dtype == np.uint16
        assert np.asarray(mrc.data).mean() == pytest.approx(45, rel=0.05)
    out = tmp_path / "png"
    assert main(["simulate", "--output", str(out), *SMALL, "--format", "png", "--shape",
                 "elongated", "--coverage", "0.1", "-q"]) == 0
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["config"]["shape"] == "elongated" and meta["config"]["coverage"] == 0.1
    assert meta["preset"] is None
    with Image.open(out / "micrographs" / "sim_001.png") as im:
        assert im.mode == "L"


def test_help_lists_the_presets(capsys):
    from selfpick.simulate import SIMULATED_PANEL

    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--preset" in text
    for name in SIMULATED_PANEL:
        assert f"{name}:" in text


def test_unknown_preset_and_bad_combinations_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--output", str(tmp_path / "a"), "--preset", "fibrils"])
    assert exc.value.code == 2
    assert "fibrils" in capsys.readouterr().err
    rc = main(["simulate", "--output", str(tmp_path / "b"), *SMALL, "--format", "png",
               "--pixel-type", "int16"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--format png" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
