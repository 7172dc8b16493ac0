"""`selfpick compare` and `selfpick report` run in-process through selfpick.cli.main."""

from __future__ import annotations

import json
import shutil

import pytest

from selfpick.cli import main


@pytest.fixture(scope="module")
def heldout_comparison(tiny_experiment, tiny_data, tmp_path_factory):
    """`selfpick compare` of the tiny experiment on all tiny micrographs (given explicitly)."""
    out = tmp_path_factory.mktemp("comparison")
    mics = tiny_data.output_dir / "micrographs"
    truth = tiny_data.output_dir / "labels" / "coordinates.json"
    rc = main(["compare", str(tiny_experiment.output_dir), "--image-dir", str(mics),
               "--coords-file", str(truth), "--output", str(out), "--device", "cpu", "-q"])
    assert rc == 0
    return out, mics, truth


def test_compare_writes_json_and_plot(heldout_comparison, tiny_experiment):
    out, _, _ = heldout_comparison
    result = json.loads((out / "comparison.json").read_text())
    stages = [s["stage"] for s in tiny_experiment.stages]
    assert [r["stage"] for r in result["rows"]] == stages  # one row per stage, in order
    assert [r["best"] for r in result["rows"]] == [s == tiny_experiment.best_stage
                                                  for s in stages]
    assert result["data"]["source"] == "given" and result["data"]["n_particles"] > 0
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_agrees_with_evaluate_model(heldout_comparison, tiny_experiment):
    from selfpick.evaluation.evaluate import evaluate_model

    out, mics, truth = heldout_comparison
    row = json.loads((out / "comparison.json").read_text())["rows"][-1]
    ref = evaluate_model(row["model"], mics, truth, device="cpu", progress=False)
    for key in ("precision", "recall", "f1", "best_f1", "average_precision", "tp", "fp", "fn",
                "n_true", "threshold"):
        assert row["particle"][key] == pytest.approx(ref["particle"][key]), key
    for key in ("precision", "recall", "f1", "iou", "roc_auc", "pr_auc"):
        assert row["pixel"][key] == pytest.approx(ref["pixel"][key]), key


def test_compare_two_experiments_on_the_validation_split(tiny_experiment, tmp_path, capsys):
    exp = tiny_experiment.output_dir
    other = tmp_path / "copy" / exp.name  # same folder name: labels must still differ
    shutil.copytree(exp, other, ignore=shutil.ignore_patterns("cache", "report"))
    rc = main(["compare", str(exp), str(other), "--output", str(tmp_path / "c"),
               "--device", "cpu", "-q"])
    assert rc == 0
    text = capsys.readouterr().out
    result = json.loads((tmp_path / "c" / "comparison.json").read_text())
    n = len(tiny_experiment.stages)
    assert len(result["rows"]) == 2 * n
    labels = [e["label"] for e in result["experiments"]]
    assert len(set(labels)) == 2
    assert result["data"]["source"] == "validation split"
    # Same models on the same micrographs: the same numbers.
    a, b = result["rows"][:n], result["rows"][n:]
    assert [r["particle"]["f1"] for r in a] == [r["particle"]["f1"] for r in b]
    assert "bestF1" in text and "*" in text


def test_compare_refuses_experiments_trained_on_different_data(tiny_experiment, tmp_path,
                                                              capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny_experiment.output_dir, other,
                    ignore=shutil.ignore_patterns("cache", "report"))
    cfg = json.loads((other / "config.json").read_text())
    cfg["config"]["data"]["image_dir"] = str(tmp_path / "elsewhere")
    (other / "config.json").write_text(json.dumps(cfg))
    rc = main(["compare", str(tiny_experiment.output_dir), str(other), "--output",
               str(tmp_path / "c"), "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "different data" in err and "--image-dir" in err and "Traceback" not in err
    assert not (tmp_path / "c" / "comparison.json").exists()


@pytest.mark.parametrize("command", ["report", "compare"])
def test_not_an_experiment_exits_2(tmp_path, capsys, command):
    rc = main([command, str(tmp_path), "--output", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "not a selfpick experiment" in err and str(tmp_path) in err
    assert "Traceback" not in err


def test_missing_experiment_folder_exits_2(tmp_path, capsys):
    rc = main(["report", str(tmp_path / "nope")])
    assert rc == 2
    assert "no such experiment folder" in capsys.readouterr().err


def test_report_cli(tiny_experiment, tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(["report", str(tiny_experiment.output_dir), "--output", str(out), "--device",
               "cpu", "-q"])
    assert rc == 0
    assert str(out / "report.html") in capsys.readouterr().out
    assert (out / "report.html").is_file() and (out / "progression.png").is_file()


def test_help_lists_examples(capsys):
    for command in ("report", "compare"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "Examples:" in text and f"selfpick {command}" in text
