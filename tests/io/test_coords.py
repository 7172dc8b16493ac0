"""Coordinate readers and writers: hand-made files, conversions, matching and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from selfpick.errors import InputError
from selfpick.io.coords import (
    FORMAT_EXTENSIONS,
    FORMATS,
    PICK_COLUMNS,
    MatchReport,
    check_in_bounds,
    detect_format,
    empty_picks,
    flip_y,
    make_picks,
    match_coordinates,
    read_coordinates,
    write_coordinates,
    write_per_micrograph,
    write_relion_autopick,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def picks_of(*items: tuple[str, list[tuple[float, float]], list[float] | None]) -> pd.DataFrame:
    return pd.concat(
        [make_picks(name, np.array(xy, dtype=float).reshape(-1, 2), scores) for name, xy, scores in items],
        ignore_index=True,
    )


# ---------------------------------------------------------------------------------------------
# The table


def test_empty_and_make_picks_have_the_table_layout():
    e = empty_picks()
    assert list(e.columns) == PICK_COLUMNS and len(e) == 0
    p = make_picks("mic01", np.array([[1.5, 2.0], [3.0, 4.0]]), [0.1, 0.2], 108)
    assert list(p.columns) == PICK_COLUMNS
    assert p["x"].tolist() == [1.5, 3.0] and p["y"].tolist() == [2.0, 4.0]
    assert p["diameter"].tolist() == [108.0, 108.0]
    for c in ("x", "y", "score", "diameter"):
        assert p[c].dtype == np.float64
    assert make_picks("m", np.zeros((0, 2))).empty
    assert make_picks("m", np.array([[1.0, 2.0]]))["score"].isna().all()
    with pytest.raises(ValueError):
        make_picks("m", np.zeros((3, 3)))


# ---------------------------------------------------------------------------------------------
# Corner formats: hand numbers


def test_box_corner_centre_conversion_by_hand(tmp_path):
    p = make_picks("mic01", np.array([[100.0, 50.0]]))
    out = tmp_path / "mic01.box"
    write_coordinates(p, out, "box", box_size=64)
    assert out.read_text().split() == ["68", "18", "64", "64"]
    back = read_coordinates(out)
    assert (back["x"][0], back["y"][0]) == (100.0, 50.0)
    assert back["micrograph"][0] == "mic01"
    assert back["diameter"][0] == 64.0

    # Read: centre = corner + size/2, fractional for odd sizes; floats and a 5th column accepted.
    f = write(tmp_path / "b" / "m2.box", "# helicon marker\n68 18 65 65 0.75\n\n10.5\t20.5\t64\t64\n")
    t = read_coordinates(f)
    assert t["x"].tolist() == [100.5, 42.5]
    assert t["y"].tolist() == [50.5, 52.5]
    assert t["score"].tolist()[0] == 0.75 and np.isnan(t["score"][1])


def test_box_write_uses_diameter_when_no_box_size(tmp_path):
    p = make_picks("m", np.array([[100.0, 50.0]]), diameter=100)
    write_coordinates(p, tmp_path / "m.box", "box")
    assert (tmp_path / "m.box").read_text().split() == ["50", "0", "100", "100"]
    with pytest.raises(ValueError, match="box size"):
        write_coordinates(make_picks("m", np.array([[1.0, 2.0]])), tmp_path / "x.box", "box")


def test_box_odd_size_rounds_corner_within_half_pixel(tmp_path):
    p = make_picks("m", np.array([[100.0, 50.0], [100.2, 50.7]]))
    write_coordinates(p, tmp_path / "m.box", "box", box_size=65)
    back = read_coordinates(tmp_path / "m.box")
    assert np.all(np.abs(back["x"].to_numpy() - p["x"].to_numpy()) <= 0.5)
    assert np.all(np.abs(back["y"].to_numpy() - p["y"].to_numpy()) <= 0.5)


def test_cbox_corner_centre_conversion_by_hand(tmp_path):
    p = make_picks("mic01", np.array([[100.0, 50.0]]), [0.8], diameter=60)
    out = tmp_path / "mic01.cbox"
    write_coordinates(p, out, "cbox", box_size=64)
    blocks = starfile.read(out, always_dict=True)
    assert list(blocks) == ["global", "cryolo", "cryolo_include"]
    assert str(blocks["global"]["cbox_format_version"]) == "1.0"
    row = blocks["cryolo"].iloc[0]
    assert list(blocks["cryolo"].columns) == [
        "CoordinateX", "CoordinateY", "CoordinateZ", "Width", "Height", "Depth",
        "EstWidth", "EstHeight", "Confidence", "NumBoxes", "Angle",
    ]  # fmt: skip
    assert (row["CoordinateX"], row["CoordinateY"]) == (68.0, 18.0)
    assert (row["Width"], row["Height"]) == (64.0, 64.0)
    assert np.isnan(row["CoordinateZ"]) and np.isnan(row["Depth"])
    assert row["Confidence"] == 0.8
    back = read_coordinates(out)
    assert (back["x"][0], back["y"][0], back["score"][0]) == (100.0, 50.0, 0.8)
    assert back["diameter"][0] == 60.0  # _EstWidth: crYOLO's size estimate


def test_cbox_hand_written_and_old_layout(tmp_path):
    text = (
        "data_global\n\n_cbox_format_version 1.0\n\n"
        "data_cryolo\n\nloop_\n_CoordinateX #1\n_CoordinateY #2\n_CoordinateZ #3\n_Width #4\n"
        "_Height #5\n_Depth #6\n_EstWidth #7\n_EstHeight #8\n_Confidence #9\n_NumBoxes #10\n"
        "_Angle #11\n"
        "1234.0 567.0 <NA> 220.0 220.0 <NA> 205 205 0.85 <NA> <NA>\n"
        "10 20 nan 100 100 nan nan nan 0.5 nan nan\n\n"
        "data_cryolo_include\n\nloop_\n_slice_index #1\n"
    )
    t = read_coordinates(write(tmp_path / "a.cbox", text))
    assert t["x"].tolist() == [1344.0, 60.0] and t["y"].tolist() == [677.0, 70.0]
    assert t["score"].tolist() == [0.85, 0.5]
    assert t["diameter"].tolist() == [205.0, 100.0]  # estimate, else the box
    old = read_coordinates(write(tmp_path / "old.cbox", "10 20 100 100 0.9\n"))
    assert (old["x"][0], old["y"][0], old["score"][0]) == (60.0, 70.0, 0.9)


# ---------------------------------------------------------------------------------------------
# RELION


def test_relion_autopick_output_layout(tmp_path):
    picks = picks_of(("mic01", [(100.0, 50.0), (10.25, 3000.5)], [0.9, 0.1]), ("mic02", [(1, 2)], [0.5]))
    mics = {
        "mic01": "MotionCorr/job002/Movies/mic01.mrc",
        "mic02": "MotionCorr/job002/Movies/mic02.mrc",
        "mic03": "MotionCorr/job002/Movies/mic03.mrc",
    }
    out = tmp_path / "External" / "job012"
    index = write_relion_autopick(picks, out, mics)
    assert index == out / "autopick.star"

    blocks = starfile.read(index, always_dict=True, parse_as_string=["rlnMicrographName"])
    assert list(blocks) == ["coordinate_files"]
    idx = blocks["coordinate_files"]
    assert list(idx.columns) == ["rlnMicrographName", "rlnMicrographCoordinates"]
    assert idx["rlnMicrographName"].tolist() == list(mics.values())
    assert idx["rlnMicrographCoordinates"].tolist() == [
        str(out / f"{n}_autopick.star") for n in mics
    ]

    one = starfile.read(out / "mic01_autopick.star", always_dict=True)
    assert list(one) == [""]
    df = one[""]
    assert list(df.columns) == [
        "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnClassNumber", "rlnAnglePsi",
    ]  # fmt: skip
    assert df["rlnCoordinateX"].tolist() == [100.0, 10.25]
    assert df["rlnCoordinateY"].tolist() == [50.0, 3000.5]
    assert df["rlnAutopickFigureOfMerit"].tolist() == [0.9, 0.1]
    assert df["rlnClassNumber"].tolist() == [0, 0]
    assert df["rlnAnglePsi"].tolist() == [-999.0, -999.0]

    empty = starfile.read(out / "mic03_autopick.star", always_dict=True)[""]
    assert len(empty) == 0 and "rlnAutopickFigureOfMerit" in empty.columns

    # Read back through the index (micrograph paths -> names), and through the job folder.
    for source in (index, out):
        back = read_coordinates(source)
        assert back["micrograph"].tolist() == ["mic01", "mic01", "mic02"]
        assert back["x"].tolist() == [100.0, 10.25, 1.0]
        assert back["score"].tolist() == [0.9, 0.1, 0.5]


def test_relion_autopick_refuses_picks_without_micrograph_path(tmp_path):
    picks = picks_of(("mic09", [(1, 2)], None))
    with pytest.raises(ValueError, match="mic09"):
        write_relion_autopick(picks, tmp_path, {"mic01": "a/mic01.mrc"})


def test_star_combined_file_with_optics_and_paths(tmp_path):
    text = (
        "# version 30001\n\ndata_optics\n\nloop_\n_rlnOpticsGroupName #1\n_rlnOpticsGroup #2\n"
        "opticsGroup1 1\n\n"
        "data_particles\n\nloop_\n_rlnMicrographName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
        "_rlnAutopickFigureOfMerit #4\n_rlnOpticsGroup #5\n"
        "MotionCorr/job002/Movies/mic01.mrc 100.5 200.25 1.5 1\n"
        "MotionCorr/job002/Movies/001.mrc 300 400 -2 1\n"
    )
    t = read_coordinates(write(tmp_path / "particles.star", text))
    assert t["micrograph"].tolist() == ["mic01", "001"]
    assert t["x"].tolist() == [100.5, 300.0] and t["y"].tolist() == [200.25, 400.0]
    assert t["score"].tolist() == [1.5, -2.0]


def test_star_per_micrograph_file_name_is_stem_and_key_value_block(tmp_path):
    f = write(tmp_path / "mic07_manualpick.star", "data_\n\n_rlnCoordinateX 10\n_rlnCoordinateY 20\n")
    t = read_coordinates(f)
    assert t["micrograph"].tolist() == ["mic07_manualpick"]
    assert (t["x"][0], t["y"][0]) == (10.0, 20.0) and np.isnan(t["score"][0])


def test_star_write_combined_has_names_and_fom(tmp_path):
    picks = picks_of(("a", [(1, 2)], [0.5]), ("b", [(3, 4)], [0.25]))
    write_coordinates(picks, tmp_path / "all.star", "star")
    blocks = starfile.read(tmp_path / "all.star", always_dict=True)
    assert list(blocks) == ["particles"]
    assert list(blocks["particles"].columns) == [
        "rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit",
    ]  # fmt: skip
    no_scores = picks.assign(score=np.nan)
    write_coordinates(no_scores, tmp_path / "ns.star", "star")
    assert "rlnAutopickFigureOfMerit" not in starfile.read(tmp_path / "ns.star").columns


# ---------------------------------------------------------------------------------------------
# JSON, CryoPPP, Topaz, CSV


def test_json_keys_with_and_without_extension(tmp_path):
    data = {"image1.png": [[10, 20], [30.5, 40.5]], "image2": [[1, 2, 0.5]], "image3.mrc": []}
    t = read_coordinates(write(tmp_path / "coordinates.json", json.dumps(data)))
    assert t["micrograph"].tolist() == ["image1", "image1", "image2"]
    assert t["x"].tolist() == [10.0, 30.5, 1.0]
    assert np.isnan(t["score"][0]) and t["score"][2] == 0.5
    out = tmp_path / "w.json"
    write_coordinates(make_picks("image1.png", np.array([[1.0, 2.0]])), out, "json")
    assert json.loads(out.read_text()) == {"image1.png": [[1.0, 2.0]]}


def test_cryoppp_per_micrograph_and_full_table(tmp_path):
    f = write(tmp_path / "mic5.csv", "X-Coordinate,Y-Coordinate,Diameter\n657,131,108\n2174,142,108\n")
    assert detect_format(f) == "cryoppp"
    t = read_coordinates(f)
    assert t["micrograph"].tolist() == ["mic5", "mic5"]
    assert t["x"].tolist() == [657.0, 2174.0] and t["diameter"].tolist() == [108.0, 108.0]
    assert t["score"].isna().all()
    full = write(
        tmp_path / "x_particles_selected.csv",
        "Particles Filename,Micrographs Filename,X-Coordinate,Y-Coordinate,Angle-Psi\n"
        "p.mrcs,a.mrc,10,20,0\np.mrcs,b.mrc,30,40,0\n",
    )
    t = read_coordinates(full)
    assert t["micrograph"].tolist() == ["a", "b"] and t["diameter"].isna().all()
    no_diam = read_coordinates(write(tmp_path / "nd.csv", "X-Coordinate,Y-Coordinate\n1,2\n"), box_size=90)
    assert no_diam["diameter"].tolist() == [90.0]


def test_topaz_variants(tmp_path):
    f = write(tmp_path / "picks.txt", "image_name\tx_coord\ty_coord\tscore\nmic1.mrc\t10\t20\t-1.5\nmic2\t30\t40\t2\n")
    assert detect_format(f) == "topaz"
    t = read_coordinates(f)
    assert t["micrograph"].tolist() == ["mic1", "mic2"] and t["score"].tolist() == [-1.5, 2.0]
    spaces = read_coordinates(write(tmp_path / "s.tab", "image_name x_coord y_coord\nm 1 2\n"))
    assert spaces["score"].isna().all() and spaces["x"].tolist() == [1.0]
    out = tmp_path / "w.txt"
    write_coordinates(picks_of(("m", [(1.234, 5.0)], [0.5])), out, "topaz")
    assert out.read_text().splitlines() == ["image_name\tx_coord\ty_coord\tscore", "m\t1.23\t5\t0.5"]


def test_csv_plain_and_tab_separated(tmp_path):
    f = write(tmp_path / "t.csv", "micrograph,x,y,score\nNA,1.5,2.5,\n007,3,4,0.25\n")
    assert detect_format(f) == "csv"
    t = read_coordinates(f)
    assert t["micrograph"].tolist() == ["NA", "007"]  # names stay names
    assert np.isnan(t["score"][0]) and t["score"][1] == 0.25
    tsv = write(tmp_path / "all.tsv", "micrograph\tx\ty\tdiameter_px\tsource\nm.jpg\t657\t131\t108\tx\n")
    t = read_coordinates(tsv)
    assert t["micrograph"].tolist() == ["m"] and t["diameter"].tolist() == [108.0]


# ---------------------------------------------------------------------------------------------
# Detection and folders


def test_detect_format_by_extension_and_content(tmp_path):
    assert detect_format(write(tmp_path / "a.json", "{}")) == "json"
    assert detect_format(write(tmp_path / "a.box", "1 2 3 4\n")) == "box"
    assert detect_format(write(tmp_path / "a.cbox", "data_global\n")) == "cbox"
    assert detect_format(write(tmp_path / "a.star", "data_\n")) == "star"
    assert detect_format(write(tmp_path / "b.star", "data_global\n_cbox_format_version 1.0\ndata_cryolo\n")) == "cbox"
    assert detect_format(write(tmp_path / "a.txt", "1 2 3 4\n")) == "box"
    # Unusual extensions: by content.
    assert detect_format(write(tmp_path / "c.dat", "image_name\tx_coord\ty_coord\n")) == "topaz"
    assert detect_format(write(tmp_path / "d.dat", '{"m": [[1, 2]]}')) == "json"
    assert detect_format(write(tmp_path / "e.dat", "# c\ndata_\nloop_\n")) == "star"
    assert detect_format(write(tmp_path / "f.dat", "X-Coordinate,Y-Coordinate\n1,2\n")) == "cryoppp"
    assert detect_format(write(tmp_path / "g.dat", "micrograph,x,y\nm,1,2\n")) == "csv"
    assert detect_format(write(tmp_path / "h.coords", "10 20 64 64\n")) == "box"


def test_folder_reading_ignores_other_files_and_rejects_mixtures(tmp_path):
    d = tmp_path / "coords"
    write(d / "mic1.box", "0 0 10 10\n")
    write(d / "mic2.box", "10 10 10 10\n")
    write(d / ".mic3.box.tmp", "garbage")
    write(d / ".hidden.box", "garbage")
    write(d / "mic1.mrc", "not read")
    assert detect_format(d) == "box"
    t = read_coordinates(d)
    assert t["micrograph"].tolist() == ["mic1", "mic2"] and t["x"].tolist() == [5.0, 15.0]
    write(d / "mic3.star", "data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n1 2\n")
    with pytest.raises(InputError, match="mixes coordinate formats") as exc:
        read_coordinates(d)
    assert str(d) in str(exc.value)


def test_allow_empty(tmp_path):
    d = tmp_path / "picks"
    write(d / "mic1.box", "0 0 10 10\n")
    write(d / "mic2.box", "")
    with pytest.raises(InputError, match="no particle coordinates") as exc:
        read_coordinates(d)
    assert "mic2.box" in str(exc.value)
    t = read_coordinates(d, allow_empty=True)
    assert t["micrograph"].tolist() == ["mic1"]
    header_only = write(tmp_path / "h.csv", "X-Coordinate,Y-Coordinate,Diameter\n")
    assert read_coordinates(header_only, allow_empty=True).empty
    with pytest.raises(InputError, match="no particle coordinates"):
        read_coordinates(header_only)


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_per_micrograph_writes_empty_valid_files(tmp_path, fmt):
    picks = picks_of(("mic1", [(100, 50)], [0.5]))
    paths = write_per_micrograph(
        picks, tmp_path / fmt, fmt, suffix="_picks", box_size=64,
        micrograph_paths={"mic1": "x/mic1.mrc", "mic2": "x/mic2.mrc"},
    )  # fmt: skip
    ext = FORMAT_EXTENSIONS[fmt]
    assert paths == [tmp_path / fmt / f"mic1_picks{ext}", tmp_path / fmt / f"mic2_picks{ext}"]
    assert read_coordinates(paths[1], fmt, allow_empty=True).empty
    one = read_coordinates(paths[0], fmt)
    assert one["micrograph"].str.startswith("mic1").all() and len(one) == 1
    assert abs(one["x"][0] - 100) <= 0.5
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in (tmp_path / fmt).iterdir()) == sorted(p.name for p in paths)


@pytest.mark.parametrize("fmt", ["box", "cbox", "cryoppp"])
def test_per_micrograph_formats_refuse_several_micrographs(tmp_path, fmt):
    picks = picks_of(("a", [(1, 2)], None), ("b", [(3, 4)], None))
    with pytest.raises(ValueError, match="one micrograph"):
        write_coordinates(picks, tmp_path / f"x{FORMAT_EXTENSIONS[fmt]}", fmt, box_size=10)


def test_write_rejects_unknown_format_and_bad_tables(tmp_path):
    with pytest.raises(ValueError, match="unknown coordinate format"):
        write_coordinates(empty_picks(), tmp_path / "x", "xml")
    with pytest.raises(ValueError, match="lacks column"):
        write_coordinates(pd.DataFrame({"x": [1.0]}), tmp_path / "x.csv", "csv")
    with pytest.raises(ValueError, match="NaN"):
        write_coordinates(make_picks("m", np.array([[np.nan, 1.0]])), tmp_path / "x.csv", "csv")


# ---------------------------------------------------------------------------------------------
# Bad input: every problem is an InputError naming the file


BAD_FILES = {
    "empty.csv": "",
    "blank.json": "  \n\n",
    "no_columns.csv": "a,b,c\n1,2,3\n",
    "missing_y.csv": "micrograph,x\nm,1\n",
    "no_coords.star": "data_optics\nloop_\n_rlnOpticsGroup #1\n1\n",
    "garbage.star": "this is not\na star file\n",
    "garbage.json": "{not json",
    "list.json": "[[1, 2]]",
    "bad_row.json": '{"m": [[1]]}',
    "bool.json": '{"m": [[true, 2]]}',
    "garbage.box": "hello world this is text\n",
    "short.box": "1 2 3\n",
    "zero_box.box": "1 2 0 0\n",
    "non_numeric.csv": "X-Coordinate,Y-Coordinate\n12,abc\n",
    "non_numeric.star": "data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n10 abc\n",
    "nan.txt": "image_name\tx_coord\ty_coord\nm\tnan\t2\n",
    "missing_value.csv": "micrograph,x,y\nm,,2\n",
    "negative.csv": "micrograph,x,y\nm,10,-5\n",
    "negative.box": "-100 10 64 64\n",
    "unknown.xyz": "lorem ipsum\n",
    "ragged.csv": "micrograph,x,y\nm,1,2,3,4\n",
    "binary.dat": "\x00\x01\x02 binary",
    "cbox_no_width.cbox": "data_cryolo\nloop_\n_CoordinateX #1\n_CoordinateY #2\n1 2\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_input_raises_input_error_naming_the_file(tmp_path, name):
    path = write(tmp_path / name, BAD_FILES[name])
    with pytest.raises(InputError) as exc:
        read_coordinates(path)
    assert str(path) in str(exc.value)
    assert exc.value.path == path
    assert exc.value.message and "\n" not in exc.value.message


def test_bad_input_messages_say_what_is_wrong(tmp_path):
    def message(name: str) -> str:
        with pytest.raises(InputError) as exc:
            read_coordinates(write(tmp_path / name, BAD_FILES[name]))
        return exc.value.message

    assert "empty" in message("empty.csv")
    assert "columns found" in message("no_columns.csv")
    assert "micrograph,x,y" in message("missing_y.csv")
    with pytest.raises(InputError, match="missing column.*'y'"):
        read_coordinates(tmp_path / "missing_y.csv", "csv")
    assert "rlnCoordinateX" in message("no_coords.star")
    assert "'abc'" in message("non_numeric.csv") and "Y-Coordinate" in message("non_numeric.csv")
    assert "negative" in message("negative.csv")
    assert "--coords-format" in message("unknown.xyz")
    assert "line 1" in message("short.box")


def test_missing_path_and_unknown_format_name(tmp_path):
    with pytest.raises(InputError, match="no such file") as exc:
        read_coordinates(tmp_path / "nope.star")
    assert "nope.star" in str(exc.value)
    f = write(tmp_path / "a.csv", "micrograph,x,y\nm,1,2\n")
    with pytest.raises(InputError, match="unknown coordinate format 'xml'"):
        read_coordinates(f, "xml")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(InputError, match="no coordinate files"):
        read_coordinates(tmp_path / "emptydir")


def test_box_corners_may_be_negative_when_centres_are_not(tmp_path):
    t = read_coordinates(write(tmp_path / "m.box", "-20 -30 64 64\n"))
    assert (t["x"][0], t["y"][0]) == (12.0, 2.0)


# ---------------------------------------------------------------------------------------------
# Bounds and flips


def test_check_in_bounds():
    ok = make_picks("m", np.array([[0.0, 0.0], [99.0, 49.0], [-0.5, 49.5]]))
    check_in_bounds(ok, (50, 100), "m.mrc")
    check_in_bounds(empty_picks(), (50, 100), "m.mrc")
    bad = make_picks("mic7", np.array([[10.0, 10.0], [100.0, 10.0], [10.0, 50.0]]))
    with pytest.raises(InputError) as exc:
        check_in_bounds(bad, (50, 100), "coords/mic7.star")
    msg = str(exc.value)
    assert msg.startswith("coords/mic7.star: ")
    assert "mic7" in msg and "2 of 3" in msg and "x=100, y=10" in msg and "100 x 50" in msg
    far = make_picks("m", np.array([[8000.0, 10.0]]))
    with pytest.raises(InputError, match="unbinned"):
        check_in_bounds(far, (50, 100), None)


def test_flip_y_is_explicit_and_invertible():
    p = picks_of(("a", [(1, 0), (2, 9)], None), ("b", [(3, 4)], None))
    f = flip_y(p, {"a": 10, "b": 100})
    assert f["y"].tolist() == [9.0, 0.0, 95.0]
    assert p["y"].tolist() == [0.0, 9.0, 4.0]  # input untouched
    assert flip_y(f, {"a": 10, "b": 100})["y"].tolist() == p["y"].tolist()
    with pytest.raises(ValueError, match="b"):
        flip_y(p, {"a": 10})


# ---------------------------------------------------------------------------------------------
# Matching


def test_match_exact_extension_suffix_and_path():
    p = picks_of(
        ("mic01", [(1, 1)], None),
        ("mic02.png", [(2, 2), (2, 3)], None),
        ("mic03_autopick", [(3, 3)], None),
        ("MotionCorr/job002/Movies/mic04.mrc", [(4, 4)], None),
        ("mic05.box", [(5, 5)], None),
        ("mic06_manualpick", [(6, 6)], None),
    )
    mics = ["mic01", "mic02", "mic03", "mic04", "mic05", "mic06", "mic06_manualpick", "mic07"]
    matched, report = match_coordinates(p, mics)
    assert list(matched) == ["mic01", "mic02", "mic03", "mic04", "mic05", "mic06_manualpick"]
    assert matched["mic02"]["micrograph"].tolist() == ["mic02", "mic02"]
    assert matched["mic04"]["x"].tolist() == [4.0]
    assert report.micrographs_without_coords == ["mic06", "mic07"]
    assert report.unmatched_coord_names == []
    assert report.n_with_coords == 6 and report.n_micrographs == 8
    assert report.n_particles_matched == 7 and report.n_particles_unmatched == 0
    assert report.matched_names["mic03_autopick"] == "mic03"


def test_match_prefers_longest_micrograph_name_and_skips_numeric_suffix():
    p = picks_of(("grid_1_sq_2_autopick", [(1, 1)], None), ("mic_001_2", [(1, 1)], None))
    matched, report = match_coordinates(p, ["grid_1", "grid_1_sq_2", "mic_001"])
    assert list(matched) == ["grid_1_sq_2"]
    assert report.unmatched_coord_names == ["mic_001_2"]


def test_match_reports_unmatched_both_ways():
    p = picks_of(("a", [(1, 1)], None), ("zz1", [(1, 1), (2, 2)], None), ("zz2", [(1, 1)], None))
    matched, report = match_coordinates(p, ["a", "b"])
    assert list(matched) == ["a"]
    assert report.micrographs_without_coords == ["b"]
    assert report.unmatched_coord_names == ["zz1", "zz2"]
    assert report.n_particles_unmatched == 3
    text = report.summary()
    assert "1 of 2" in text and "zz1" in text and "b" in text and "3 particles not used" in text


def test_match_refuses_two_names_for_one_micrograph():
    p = picks_of(("mic01", [(1, 1)], None), ("mic01_autopick", [(2, 2)], None))
    with pytest.raises(InputError, match="several names"):
        match_coordinates(p, ["mic01"])


def test_summary_lists_five_names_then_counts():
    r = MatchReport(20, 0, [f"m{i}" for i in range(20)], [f"c{i}" for i in range(8)], 0, 8)
    text = r.summary()
    assert "m0, m1, m2, m3, m4 and 15 more" in text
    assert "c4 and 3 more" in text
    assert "\n" not in text
    assert "matched by file name" in text
