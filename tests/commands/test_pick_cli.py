"""``selfpick pick`` on the command line: shards, resuming, and clear refusals of bad input."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import starfile
import torch

from selfpick import cli
from selfpick.io.micrographs import micrograph_name


@pytest.fixture(scope="module")
def model_path(tiny_experiment) -> Path:
    return tiny_experiment.output_dir / "best_model.pt"


def _pick(model, images, output, *extra) -> int:
    return cli.main(["pick", "-q", "--model", str(model), "--images", str(images),
                     "--output", str(output), "--device", "cpu", "--workers", "0", *extra])


def _index_names(path: Path) -> list[str]:
    table = starfile.read(path, always_dict=True, parse_as_string=["rlnMicrographName"])
    return [micrograph_name(p) for p in table["coordinate_files"]["rlnMicrographName"]]


# ------------------------------------------------------------------------------ shards


def test_two_shards_pick_every_micrograph_exactly_once(model_path, tiny_data, tmp_path):
    mics = tiny_data.output_dir / "micrographs"
    out = tmp_path / "picks"
    assert _pick(model_path, mics, out, "--shard", "0/2") == 0
    assert _pick(model_path, mics, out, "--shard", "1/2") == 0
    names = {micrograph_name(p) for p in tiny_data.micrographs}
    first = _index_names(out / "autopick_shard0of2.star")
    second = _index_names(out / "autopick_shard1of2.star")
    assert not set(first) & set(second)  # disjoint
    assert set(first) | set(second) == names  # complete
    assert len(first) == len(second) == 2
    written = {p.name[: -len("_autopick.star")] for p in out.glob("*_autopick.star")}
    assert written == names
    for i, share in ((0, first), (1, second)):
        summary = json.loads((out / f"pick_summary_shard{i}of2.json").read_text())
        assert summary["shard"] == [i, 2] and summary["n_micrographs"] == len(share)


# ------------------------------------------------------------------------------ resuming


def test_skip_existing_picks_only_what_is_missing(model_path, tiny_data, tmp_path):
    mics = tiny_data.output_dir / "micrographs"
    out = tmp_path / "picks"
    assert _pick(model_path, mics, out) == 0
    names = sorted(micrograph_name(p) for p in tiny_data.micrographs)
    deleted = out / f"{names[0]}_autopick.star"
    kept = out / f"{names[1]}_autopick.star"
    deleted.unlink()
    kept.write_text("# left by the first run\n")  # a skipped file is not even opened
    assert _pick(model_path, mics, out, "--skip-existing") == 0
    summary = json.loads((out / "pick_summary.json").read_text())
    assert summary["n_skipped"] == len(names) - 1
    assert summary["n_micrographs"] == 1
    assert deleted.is_file()
    assert kept.read_text() == "# left by the first run\n"
    # The index still lists every micrograph, skipped ones included.
    assert sorted(_index_names(out / "autopick.star")) == names


# ------------------------------------------------------------------------------ refusals


def _assert_refused(code: int, capsys, *, names: Path | str, contains: str = "") -> str:
    """Exit code 2, exactly one error line (naming ``names``), no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("selfpick pick: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    assert str(names) in errors[0], errors[0]
    if contains:
        assert contains in errors[0], errors[0]
    return errors[0]


def _nothing_written(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


def test_pattern_matching_no_micrograph(model_path, tmp_path, capsys):
    pattern = tmp_path / "Movies" / "*.mrc"
    out = tmp_path / "picks"
    code = _pick(model_path, pattern, out)
    _assert_refused(code, capsys, names=pattern, contains="no micrographs match")
    assert _nothing_written(out)


def test_folder_without_micrographs(model_path, tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here\n")
    out = tmp_path / "picks"
    _assert_refused(_pick(model_path, folder, out), capsys, names=folder)
    assert _nothing_written(out)


class _RunsCodeWhenUnpickled:
    """A pickle that would create a folder if it were ever unpickled with the full unpickler."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _text_model(path: Path, _marker: Path) -> None:
    path.write_text("hello\n")


def _prose_model(path: Path, _marker: Path) -> None:
    path.write_text("this is not a model\n")


def _json_model(path: Path, _marker: Path) -> None:
    path.write_text('{"format": "selfpick-model"}\n')


def _empty_model(path: Path, _marker: Path) -> None:
    path.write_bytes(b"")


def _plain_dict_model(path: Path, _marker: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(3)}, "threshold": 0.5}, path)


def _hostile_torch_model(path: Path, marker: Path) -> None:
    torch.save({"format": "selfpick-model", "format_version": 1,
                "payload": _RunsCodeWhenUnpickled(marker)}, path)


def _hostile_pickle_model(path: Path, marker: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump(_RunsCodeWhenUnpickled(marker), fh)


BAD_MODELS = {
    "text": (_text_model, ""),
    "prose": (_prose_model, ""),
    "json": (_json_model, ""),
    "empty": (_empty_model, "empty"),
    "plain-dict": (_plain_dict_model, "not a selfpick model"),
    "hostile-torch-save": (_hostile_torch_model, "refused to load"),
    "hostile-pickle": (_hostile_pickle_model, "refused to load"),
}


# torch warns that a raw pickle uses a newer protocol than it writes itself: expected here.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", list(BAD_MODELS))
def test_files_that_are_not_selfpick_models_are_refused(kind, tiny_data, tmp_path, capsys):
    make, expected = BAD_MODELS[kind]
    model = tmp_path / "model.pt"
    marker = tmp_path / "code_ran"
    make(model, marker)
    out = tmp_path / "picks"
    _assert_refused(_pick(model, tiny_data.micrographs[0], out), capsys, names=model,
                    contains=expected)
    assert not marker.exists(), "loading the model file ran code from it"
    assert _nothing_written(out)


def test_missing_model_file(tiny_data, tmp_path, capsys):
    model = tmp_path / "nowhere" / "best_model.pt"
    out = tmp_path / "picks"
    _assert_refused(_pick(model, tiny_data.micrographs[0], out), capsys, names=model,
                    contains="not found")
    assert _nothing_written(out)


def test_model_of_an_incompatible_format_version(model_path, tiny_data, tmp_path, capsys):
    payload = torch.load(model_path, map_location="cpu", weights_only=True)
    payload["format_version"] = 99
    payload["selfpick_version"] = "9.0.0"
    model = tmp_path / "future_model.pt"
    torch.save(payload, model)
    out = tmp_path / "picks"
    line = _assert_refused(_pick(model, tiny_data.micrographs[0], out), capsys, names=model)
    assert "99" in line and "format" in line  # says which version, and that it is the issue
    assert _nothing_written(out)


def test_output_under_a_file_cannot_be_written(model_path, tiny_data, tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder should be\n")
    out = blocker / "picks"
    _assert_refused(_pick(model_path, tiny_data.micrographs[0], out), capsys, names=out)
    assert blocker.read_text() == "a file where a folder should be\n"


def test_output_in_a_read_only_folder(model_path, tiny_data, tmp_path, capsys):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as a user (root) whom permissions do not stop")
        out = parent / "picks"
        _assert_refused(_pick(model_path, tiny_data.micrographs[0], out), capsys, names=out,
                        contains="permission denied")
        assert not out.exists()
    finally:
        parent.chmod(0o755)


def test_bad_options_are_refused_before_any_work(model_path, tiny_data, tmp_path, capsys):
    out = tmp_path / "picks"
    code = _pick(model_path, tiny_data.micrographs[0], out, "--shard", "2/2")
    err = capsys.readouterr().err
    assert code == 2 and "--shard" in err and "Traceback" not in err
    code = _pick(model_path, tiny_data.micrographs[0], out, "--format", "box", "--single-file")
    err = capsys.readouterr().err
    assert code == 2 and "--single-file" in err
    assert _nothing_written(out)


@pytest.mark.parametrize("value", ["1.5", "-0.2", "nan", "inf"])
def test_a_threshold_outside_0_1_is_refused(value, model_path, tiny_data, tmp_path, capsys):
    # Scores are probabilities: --threshold 1.5 used to run and write empty pick files.
    out = tmp_path / "picks"
    with pytest.raises(SystemExit) as exc:
        _pick(model_path, tiny_data.micrographs[0], out, "--threshold", value)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "--threshold" in lines[0] and value in lines[0], err
    assert "between 0 and 1" in lines[0] and "Traceback" not in err
    assert _nothing_written(out)


@pytest.mark.parametrize("value", [1.5, -0.2, float("nan")])
def test_the_library_refuses_a_threshold_outside_0_1(value, model_path, tiny_data, tmp_path):
    from selfpick.errors import SelfpickError
    from selfpick.picking.pick import PickOptions, pick

    out = tmp_path / "picks"
    with pytest.raises(SelfpickError, match="--threshold"):
        pick(model_path, tiny_data.micrographs[0], out, PickOptions(threshold=value),
             progress=False)
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "1", "0.35"])
def test_thresholds_from_0_to_1_are_taken(value):
    from selfpick.commands.pick import score_threshold

    assert score_threshold(value) == float(value)
