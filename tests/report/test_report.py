"""build_report on the tiny experiment: a complete, self-contained report.html."""

from __future__ import annotations

import logging
import re
import shutil

import pytest

from selfpick.errors import InputError
from selfpick.report.html import build_report


@pytest.fixture(scope="module")
def default_report(tiny_experiment, tmp_path_factory):
    """The report of the tiny experiment on its own validation split."""
    out = tmp_path_factory.mktemp("report")
    path = build_report(tiny_experiment.output_dir, output=out, device="cpu")
    return path, path.read_text(encoding="utf-8")


def _stage_names(tiny_experiment):
    return [s["stage"] for s in tiny_experiment.stages]


def test_report_writes_every_figure(default_report, tiny_experiment):
    path, _ = default_report
    out = path.parent
    assert path.name == "report.html"
    for name in ("progression.png", "pr_curves.png"):
        assert (out / name).stat().st_size > 1000
    assert len(list(out.glob("overlay_*.png"))) == 1  # the tiny experiment validates on one
    for stage in _stage_names(tiny_experiment):
        assert (out / f"{stage}_visualization.png").is_file()


def test_report_html_is_self_contained(default_report, tiny_experiment):
    _, page = default_report
    assert page.startswith("<!DOCTYPE html>")
    # No external resource of any kind: everything the page shows is inside it.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page, re.I)
    assert "<link" not in page.lower() and "<script" not in page.lower()
    assert "@import" not in page and "url(" not in page
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(images) >= 3 + len(_stage_names(tiny_experiment))
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "Figure unavailable" not in page


def test_report_html_has_the_metrics_table(default_report, tiny_experiment):
    _, page = default_report
    table = page[page.index('<table class="metrics">'):]
    table = table[: table.index("</table>")]
    for stage in _stage_names(tiny_experiment):
        assert f">{stage}" in table
    assert "Particle level" in table and "Pixel level" in table
    assert "val split" in table
    best = tiny_experiment.best_stage
    assert re.search(rf'<tr class="best"><td class="stage">{best}<span class="badge">best',
                     table)
    assert page.count('<tr class="best">') >= 1
    assert "Partial picks and pseudo-labels" in page
    assert "pseudo-particles added" in page
    assert "<th>student</th>" in page


def test_failing_figure_is_logged_and_the_report_completes(tiny_experiment, tmp_path,
                                                          monkeypatch, caplog):
    import selfpick.report.figures as figures

    def broken(*args, **kwargs):
        raise RuntimeError("simulated plotting failure")

    monkeypatch.setattr(figures, "progression_figure", broken)
    with caplog.at_level(logging.WARNING, logger="selfpick"):
        path = build_report(tiny_experiment.output_dir, output=tmp_path, device="cpu")
    page = path.read_text(encoding="utf-8")
    assert "simulated plotting failure" in caplog.text
    assert "Figure unavailable" in page and "simulated plotting failure" in page
    assert not (tmp_path / "progression.png").exists()
    assert (tmp_path / "pr_curves.png").is_file()
    assert page.count("data:image/png;base64,") >= 2


def test_report_on_heldout_data_with_a_pick_file(tiny_experiment, tiny_data, tmp_path):
    mics = tiny_data.output_dir / "micrographs"
    truth = tiny_data.output_dir / "labels" / "coordinates.json"
    # The truth itself as the "pick file": every pick is a true positive.
    path = build_report(tiny_experiment.output_dir, image_dir=mics, coords_file=truth,
                        picks=truth, output=tmp_path, device="cpu")
    page = path.read_text(encoding="utf-8")
    assert "Every stage on the held-out micrographs" in page
    assert "Pick file against the ground truth" in page
    assert re.search(r"Precision 1\.000, recall 1\.000, F1 1\.000", page)
    assert len(list(tmp_path.glob("overlay_*.png"))) == 3  # at most three micrographs


def test_report_refuses_a_folder_that_is_not_an_experiment(tmp_path):
    with pytest.raises(InputError, match="not a selfpick experiment"):
        build_report(tmp_path)


def test_report_without_the_training_data(tiny_experiment, tmp_path):
    """Micrographs moved away: the report still shows the recorded metrics and says why not more."""
    import json

    exp = tmp_path / "exp"
    shutil.copytree(tiny_experiment.output_dir, exp, ignore=shutil.ignore_patterns("cache"))
    cfg = json.loads((exp / "config.json").read_text())
    cfg["config"]["data"]["image_dir"] = str(tmp_path / "gone")
    (exp / "config.json").write_text(json.dumps(cfg))
    page = build_report(exp, device="cpu").read_text(encoding="utf-8")
    assert "curves and overlays are unavailable" in page
    assert "Figure unavailable" in page
    assert (exp / "report" / "progression.png").is_file()


def test_report_draws_unlabelled_micrographs_with_the_best_model(tiny_experiment, tiny_data,
                                                                 tmp_path):
    """--image-dir without --coords-file: picks are drawn, not judged; curves stay on val."""
    mics = tiny_data.output_dir / "micrographs"
    page = build_report(tiny_experiment.output_dir, image_dir=mics, output=tmp_path,
                        device="cpu").read_text(encoding="utf-8")
    assert len(list(tmp_path.glob("overlay_*.png"))) == 3
    assert "No ground truth for this micrograph" in page
    assert "picks of the best model" in page
    assert (tmp_path / "pr_curves.png").is_file()


def test_report_coords_without_images_is_a_user_error(tiny_experiment, tmp_path):
    from selfpick.errors import SelfpickError

    with pytest.raises(SelfpickError, match="--coords-file needs --image-dir"):
        build_report(tiny_experiment.output_dir, coords_file=tmp_path / "x.json",
                     output=tmp_path)


def test_report_says_why_self_training_was_skipped(tiny_experiment, tmp_path):
    import json

    exp = tmp_path / "exp"
    shutil.copytree(tiny_experiment.output_dir, exp, ignore=shutil.ignore_patterns("cache"))
    root = json.loads((exp / "metrics.json").read_text())
    root["self_training_skipped"] = "labels look complete (estimated completeness 0.97 >= 0.8)"
    (exp / "metrics.json").write_text(json.dumps(root))
    page = build_report(exp, device="cpu").read_text(encoding="utf-8")
    assert "no self-training: labels look complete (estimated completeness 0.97" in page


def test_metrics_table_gives_the_completeness_error_and_each_stages_threshold_rule():
    """Partial labels: the completeness column carries its standard error where validation
    recorded one, and the note says which rule chose each stage's threshold."""
    from selfpick.report.html import _metrics_table

    def particle(c, se, rule):
        p = {"precision": 0.5, "recall": 0.9, "f1": 0.64, "best_f1": 0.7,
             "average_precision": 0.6, "tp": 9, "fp": 9, "fn": 1, "match_radius": 10.0,
             "label_completeness": c, "corrected": {"f1": 0.9},
             "threshold_rule": f"chosen on this split: {rule}"}
        if se is not None:
            p["threshold_uncertainty"] = {"completeness": {"estimate": c, "standard_error": se}}
        return p

    rows = [("iteration_0_supervised", particle(0.126, 0.025, "max F1 (averaged)"), {}, 0.5),
            ("iteration_1_selftrain", particle(0.3, None, "max F1 (fresh student)"), {}, 0.9)]
    html = _metrics_table(rows, "iteration_1_selftrain", "val split")
    assert "<td>0.13 ± 0.03</td>" in html
    assert "<td>0.30</td>" in html  # an older experiment without the error: the estimate alone
    assert "iteration_0_supervised: max F1 (averaged)" in html
    assert "iteration_1_selftrain: max F1 (fresh student)" in html
