"""``selfpick view``: the picks browser's files and data, and clear refusals of bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from browser_helpers import (expected_count, large_browser, page_data,  # noqa: F401
                             synthetic_run)  # fixtures
from selfpick import cli
from selfpick.evaluation.evaluate import evaluate_picks
from selfpick.io import coords as coordio
from selfpick.report.browser import QUANTA, STEPS, quantize, read_pick_run, write_browser


def _view(picks, images, output, *extra) -> int:
    return cli.main(["view", "-q", str(picks), "--images", str(images), "--output", str(output),
                     *[str(e) for e in extra]])


@pytest.fixture(scope="module")
def truth_browser(synthetic_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("view") / "browser"
    assert _view(synthetic_run.folder, synthetic_run.images, out, "--truth",
                 synthetic_run.truth) == 0
    return out


# ------------------------------------------------------------------------------ data


def test_quantized_scores_keep_the_threshold_rule():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.uniform(0, 1, 5000), np.arange(101) / 100,
                             np.nextafter(np.arange(1, 101) / 100, 0), [0.0, 1.0]])
    q = quantize(scores)
    assert q.min() >= 0 and q.max() <= QUANTA
    for k in range(STEPS + 1):
        t = k / STEPS  # what the slider shows and the command line passes on
        assert np.count_nonzero(q >= k * QUANTA // STEPS) == np.count_nonzero(scores >= t), k


def test_the_page_and_its_files(truth_browser, synthetic_run):
    out = truth_browser
    names = sorted(synthetic_run.truth_xy)
    assert sorted(p.name for p in out.iterdir()) == ["browser.json", "data", "img", "index.html",
                                                     "thumbs"]
    assert len(list(out.glob("*.html"))) == 1
    for sub, ext in (("img", ".jpg"), ("thumbs", ".jpg"), ("data", ".js")):
        files = sorted((out / sub).iterdir())
        assert [f.suffix for f in files] == [ext] * len(names), sub
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # Nothing from the network: a page opened from disk on a cluster without internet.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert "fetch(" not in page  # file:// pages cannot fetch; data comes in <script> files
    assert 'type="range"' in page and 'loading = "lazy"' in page
    data = page_data(out)
    assert data["names"] == names
    assert data["hasTruth"] and data["diameter"] == synthetic_run.diameter
    assert data["radius"] == synthetic_run.diameter / 2
    marker = json.loads((out / "browser.json").read_text())
    assert marker["n_picks"] == len(synthetic_run.picks)


def test_counts_at_every_step_are_the_picks_at_or_above_the_threshold(truth_browser,
                                                                      synthetic_run):
    data = page_data(truth_browser)
    picks = synthetic_run.picks
    for i, name in enumerate(data["names"]):
        scores = picks.loc[picks.micrograph == name, "score"].to_numpy()
        assert data["n"][i] == len(scores)
        assert data["cnt"][i] == [expected_count(scores, k / STEPS) for k in range(STEPS + 1)]


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.55, 0.9])
def test_truth_counts_agree_with_selfpick_evaluate(truth_browser, synthetic_run, threshold):
    data = page_data(truth_browser)
    k = round(threshold * STEPS)
    result = evaluate_picks(synthetic_run.folder / "autopick.star", synthetic_run.images,
                            synthetic_run.truth, threshold=threshold)["particle"]
    per_mic = {m["name"]: m for m in result["per_micrograph"]}
    tp = sum(t[k] for t in data["tp"])
    n_pred = sum(c[k] for c in data["cnt"])
    assert (tp, n_pred, sum(data["nt"]) - tp) == (result["tp"], result["n_pred"], result["fn"])
    for i, name in enumerate(data["names"]):
        assert data["tp"][i][k] == per_mic[name]["tp"], name
        assert data["cnt"][i][k] == per_mic[name]["n_pred"], name


def test_per_micrograph_pick_data(truth_browser, synthetic_run):
    data = page_data(truth_browser)
    text = (truth_browser / "data" / "000001.js").read_text()
    m = re.fullmatch(r"SP_LOAD\(1,(.*)\);\n", text, re.S)
    assert m, text[:80]
    d = json.loads(m.group(1))
    name = data["names"][1]
    assert len(d["x"]) == len(d["y"]) == len(d["q"]) == len(d["m"]) == data["n"][1]
    assert d["q"] == sorted(d["q"], reverse=True)  # best first: the page stops at the threshold
    truth = synthetic_run.truth_xy[name]
    assert len(d["tx"]) == len(d["tq"]) == len(truth)
    # A truth is found at a step exactly when the pick matched to it is shown there.
    for k in (0, 40, 80):
        tp_shown = sum(1 for q, hit in zip(d["q"], d["m"]) if hit and q >= k * 10)
        found = sum(1 for q in d["tq"] if q >= k * 10)
        assert tp_shown == found == data["tp"][1][k]


def test_the_command_line_comes_from_the_pick_run(truth_browser, synthetic_run):
    data = page_data(truth_browser)
    cmd = data["command"]
    assert cmd["model"] == "models/best_model.pt"  # recorded in pick_summary.json
    assert cmd["images"] == str(synthetic_run.images)
    assert cmd["output"] == str(synthetic_run.folder)
    assert data["runThreshold"] == 0.0 and data["start"] == 0


def test_reads_a_real_pick_run(tiny_experiment, tiny_data, tmp_path):
    picks = tmp_path / "picks"
    model = tiny_experiment.output_dir / "best_model.pt"
    assert cli.main(["pick", "-q", "--model", str(model), "--images",
                     str(tiny_data.output_dir / "micrographs"), "--output", str(picks),
                     "--threshold", "0", "--device", "cpu", "--workers", "0"]) == 0
    run = read_pick_run(picks)
    assert run.model == str(model) and run.threshold == 0.0 and run.fmt == "star"
    out = tmp_path / "browser"
    # No --particle-diameter: selfpick's STAR files do not hold it, the model file does.
    assert _view(picks, tiny_data.output_dir / "micrographs", out) == 0
    data = page_data(out)
    assert data["diameter"] == pytest.approx(tiny_data.diameter)
    assert sum(data["n"]) == len(run.table)
    assert data["command"]["model"] == str(model)


def test_other_formats_and_picks_without_scores(synthetic_run, tmp_path):
    box = tmp_path / "boxes"
    coordio.write_per_micrograph(synthetic_run.picks, box, "box",
                                 box_size=synthetic_run.diameter)
    out = tmp_path / "browser"
    assert _view(box, synthetic_run.images, out) == 0
    data = page_data(out)
    assert not data["hasScores"] and not data["hasTruth"]
    assert data["diameter"] == synthetic_run.diameter  # the box size
    assert all(c[0] == c[-1] for c in data["cnt"])  # the slider changes nothing
    assert any("no scores" in n for n in data["notes"])


def test_topaz_scores_outside_0_1_get_their_own_slider_range(synthetic_run, tmp_path):
    picks = synthetic_run.picks.copy()
    picks["score"] = picks["score"] * 12 - 6  # log-odds, as Topaz writes
    out = write_browser(picks, synthetic_run.images, tmp_path / "b",
                        particle_diameter=synthetic_run.diameter, progress=False).output
    data = page_data(out)
    assert (data["lo"], data["hi"]) == (-6.0, 6.0)
    assert not data["command"]["selfpickScores"]
    for i, name in enumerate(data["names"]):
        scores = picks.loc[picks.micrograph == name, "score"].to_numpy()
        for k in (0, 25, 50, 99, 100):
            assert data["cnt"][i][k] == expected_count(scores, -6 + k * 12 / STEPS)


def test_an_earlier_browser_is_replaced(synthetic_run, tmp_path):
    out = tmp_path / "browser"
    size = ("--particle-diameter", synthetic_run.diameter)
    assert _view(synthetic_run.folder, synthetic_run.images, out, *size) == 0
    (out / "img" / "stale.jpg").write_bytes(b"old")
    assert _view(synthetic_run.folder, synthetic_run.images, out, *size, "--threshold",
                 "0.5") == 0
    assert not (out / "img" / "stale.jpg").exists()
    assert page_data(out)["start"] == 50
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_only_the_picked_micrographs_are_shown(synthetic_run, tmp_path):
    names = sorted(synthetic_run.truth_xy)
    picked = synthetic_run.picks[synthetic_run.picks.micrograph.isin(names[:2])]
    folder = tmp_path / "picks"
    coordio.write_per_micrograph(picked, folder, "star", suffix="_autopick")
    out = tmp_path / "browser"
    assert _view(folder, synthetic_run.images, out, "--particle-diameter", 24) == 0
    assert page_data(out)["names"] == names[:2]


def test_a_moved_pick_run_is_read_from_its_files(synthetic_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(synthetic_run.folder, moved)
    names = sorted(synthetic_run.truth_xy)
    from selfpick.io.formats import relion_star

    # The index names files where the run used to be.
    relion_star.write_index([(f"Movies/{n}.mrc", f"Gone/job009/{n}_autopick.star")
                             for n in names], moved / "autopick.star")
    run = read_pick_run(moved)
    assert len(run.table) == len(synthetic_run.picks)
    assert sorted(set(run.table.micrograph)) == [f"{n}_autopick" for n in names]


def test_an_unreadable_micrograph_is_left_out_and_said(synthetic_run, tmp_path, capsys):
    mics = tmp_path / "mics"
    shutil.copytree(synthetic_run.images, mics)
    names = sorted(synthetic_run.truth_xy)
    (mics / f"{names[1]}.mrc").write_bytes(b"not an MRC file at all" * 10)
    out = tmp_path / "browser"
    assert _view(synthetic_run.folder, mics, out, "--particle-diameter", 24) == 0
    data = page_data(out)
    assert data["names"] == names[:1] + names[2:]
    assert any(names[1] in n for n in data["notes"])
    assert names[1] in capsys.readouterr().err
    for f in mics.iterdir():
        f.write_bytes(b"broken")
    out2 = tmp_path / "browser2"
    _assert_refused(_view(synthetic_run.folder, mics, out2, "--particle-diameter", 24),
                    capsys, out2, "none of the micrographs could be read")


# ------------------------------------------------------------------------------ large


def test_a_thousand_micrographs_of_500_picks(large_browser):
    out = large_browser.output
    page = (out / "index.html").stat().st_size
    data_bytes = sum(f.stat().st_size for f in (out / "data").iterdir())
    print(f"\n1000 x 500 picks: {large_browser.seconds:.1f} s, index.html {page / 1e6:.2f} MB, "
          f"pick data {data_bytes / 1e6:.1f} MB in {len(list((out / 'data').iterdir()))} files")
    # The page holds counts, not picks: it stays small enough to open at once.
    assert page < 2_000_000
    assert data_bytes < 20_000_000
    assert len(list((out / "thumbs").iterdir())) == 1000
    data = page_data(out)
    assert len(data["names"]) == 1000 and sum(data["n"]) == 500_000
    scores = large_browser.picks["score"].to_numpy()
    assert sum(c[50] for c in data["cnt"]) == expected_count(scores, 0.5)


# ------------------------------------------------------------------------------ refusals


def _assert_refused(code: int, capsys, out: Path, *contains: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("selfpick view: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    for text in contains:
        assert text in errors[0], errors[0]
    assert not out.exists(), "a refused run wrote its output folder"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    return errors[0]


def test_empty_folder_is_refused(synthetic_run, tmp_path, capsys):
    empty = tmp_path / "picks"
    empty.mkdir()
    out = tmp_path / "browser"
    _assert_refused(_view(empty, synthetic_run.images, out), capsys, out, str(empty),
                    "no pick files")


def test_folder_with_only_run_files_is_refused(synthetic_run, tmp_path, capsys):
    folder = tmp_path / "picks"
    folder.mkdir()
    (folder / "pick_summary.json").write_text('{"n_picks": 0}')
    out = tmp_path / "browser"
    _assert_refused(_view(folder, synthetic_run.images, out), capsys, out, "no pick files")


def test_pick_files_without_any_pick_are_refused(synthetic_run, tmp_path, capsys):
    folder = tmp_path / "picks"
    coordio.write_per_micrograph(coordio.empty_picks(), folder, "star", suffix="_autopick",
                                 micrograph_paths={n: n for n in synthetic_run.truth_xy})
    out = tmp_path / "browser"
    _assert_refused(_view(folder, synthetic_run.images, out), capsys, out, "no picks",
                    "--threshold 0")


def test_picks_of_micrographs_that_are_not_given_are_refused(synthetic_run, tmp_path, capsys):
    names = sorted(synthetic_run.truth_xy)
    few = tmp_path / "few"
    few.mkdir()
    shutil.copy(synthetic_run.images / f"{names[0]}.mrc", few)
    out = tmp_path / "browser"
    line = _assert_refused(_view(synthetic_run.folder, few, out), capsys, out,
                           f"{len(names) - 1} micrograph(s)", "--images")
    assert all(n in line for n in names[1:]) and f"{names[0]}," not in line


@pytest.mark.parametrize("which", ["picks", "images", "truth", "model"])
def test_paths_that_do_not_exist(which, synthetic_run, tmp_path, capsys):
    missing = tmp_path / "nowhere" / f"{which}.star"
    args = {"picks": synthetic_run.folder, "images": synthetic_run.images}
    extra = []
    if which in ("picks", "images"):
        args[which] = missing
    else:
        extra = [f"--{which}", missing]
    out = tmp_path / "browser"
    _assert_refused(_view(args["picks"], args["images"], out, *extra), capsys, out,
                    str(missing))


def test_unknown_particle_diameter_is_refused(synthetic_run, tmp_path, capsys):
    folder = tmp_path / "picks"
    coordio.write_per_micrograph(synthetic_run.picks, folder, "star", suffix="_autopick")
    out = tmp_path / "browser"
    _assert_refused(_view(folder, synthetic_run.images, out), capsys, out,
                    "--particle-diameter")


def test_a_folder_that_is_not_a_browser_is_kept(synthetic_run, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code = _view(synthetic_run.folder, synthetic_run.images, out, "--particle-diameter", 24)
    err = capsys.readouterr().err
    assert code == 2 and "not empty" in err and str(out) in err
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "high"])
def test_a_threshold_outside_0_1_is_refused(value, synthetic_run, tmp_path, capsys):
    out = tmp_path / "browser"
    with pytest.raises(SystemExit) as exc:
        _view(synthetic_run.folder, synthetic_run.images, out, "--threshold", value)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--threshold" in err and value in err and "Traceback" not in err
    assert not out.exists()
