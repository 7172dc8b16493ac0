"""Figure functions of selfpick.report.figures: valid 150-dpi PNGs and correct overlay colours."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from selfpick.report import figures


def _assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        dpi = im.info.get("dpi")
        assert im.size[0] > 100 and im.size[1] > 100
    assert dpi is not None and round(dpi[0]) == figures.DPI


def _stage(name, k, f1, roc=0.9):
    part = {"precision": f1 - 0.05, "recall": f1 + 0.05, "f1": f1, "best_f1": f1 + 0.01,
            "average_precision": f1 - 0.1, "match_radius": 12.0, "n_true": 40}
    pix = {"precision": 0.5, "recall": 0.6, "f1": 0.55, "iou": 0.4, "roc_auc": roc,
           "pr_auc": 0.5}
    return {"stage": name, "iteration": k, "threshold": 0.4,
            "validation": {"split": "val", "n_micrographs": 1, "particle": part, "pixel": pix}}


def test_classify_picks_constructed_case():
    truth = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 90.0]])
    picks = np.array([[11.0, 10.0],     # on truth 0: true positive
                      [12.0, 11.0],     # second pick on truth 0, lower score: false positive
                      [200.0, 200.0],   # nowhere near a particle: false positive
                      [52.0, 49.0]])    # on truth 1: true positive
    scores = np.array([0.9, 0.5, 0.8, 0.7])
    c = figures.classify_picks(picks, scores, truth, radius=5.0)
    assert c.tp.tolist() == [True, False, False, True]
    assert c.fp.tolist() == [False, True, True, False]
    assert c.missed.tolist() == [False, False, True]
    assert c.counts() == {"tp": 2, "fp": 2, "missed": 1}


def test_classify_picks_without_picks_or_truth():
    c = figures.classify_picks(np.zeros((0, 2)), None, np.array([[5.0, 5.0]]), 3.0)
    assert c.missed.tolist() == [True] and len(c.tp) == 0
    c = figures.classify_picks(np.array([[5.0, 5.0]]), None, np.zeros((0, 2)), 3.0)
    assert c.fp.tolist() == [True] and len(c.missed) == 0


def test_overlay_draws_each_class_in_its_colour_where_it_belongs(tmp_path, monkeypatch):
    from matplotlib.colors import to_hex
    from matplotlib.patches import Circle

    captured = {}
    real_save = figures.save_figure

    def capture(fig, path):
        captured["circles"] = [p for ax in fig.axes for p in ax.patches if isinstance(p, Circle)]
        captured["legend"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        real_save(fig, path)

    monkeypatch.setattr(figures, "save_figure", capture)
    image = np.random.default_rng(0).normal(size=(128, 160)).astype(np.float32)
    truth = np.array([[20.0, 30.0], [100.0, 60.0]])
    picks = np.array([[21.0, 31.0], [140.0, 110.0]])
    classes = figures.classify_picks(picks, np.array([0.9, 0.8]), truth, 6.0)
    out = tmp_path / "overlay.png"
    counts = figures.overlay_figure(out, image, picks, 12.0, truth, classes, title="t")
    _assert_png(out)
    assert counts == {"tp": 1, "fp": 1, "missed": 1}
    got = {(round(c.center[0]), round(c.center[1])): (to_hex(c.get_edgecolor()), c.radius)
           for c in captured["circles"]}
    assert got == {(21, 31): (figures.TP_COLOUR, 6.0),      # x = column, y = row, r = d / 2
                   (140, 110): (figures.FP_COLOUR, 6.0),
                   (100, 60): (figures.MISSED_COLOUR, 6.0)}
    assert any("(1)" in t and "true positive" in t for t in captured["legend"])


def test_overlay_without_truth_and_large_micrograph(tmp_path):
    image = np.random.default_rng(1).normal(size=(600, 2100)).astype(np.float32)
    disp, factor = figures.display_image(image, 60.0, max_width=1000)
    assert factor == 2 and disp.shape == (300, 1050)
    assert 0.0 <= disp.min() and disp.max() <= 1.0
    out = tmp_path / "o.png"
    counts = figures.overlay_figure(out, image, np.array([[100.0, 100.0]]), 60.0)
    assert counts == {"picks": 1}
    _assert_png(out)


def test_progression_figure(tmp_path):
    stages = [_stage("iteration_0_supervised", 0, 0.6),
              _stage("iteration_1_selftrain", 1, 0.7, roc=None)]  # undefined AUC: a gap
    stages[1]["validation"]["particle"]["corrected"] = {"f1": 0.8}
    out = tmp_path / "progression.png"
    figures.progression_figure(out, stages, best_stage="iteration_1_selftrain")
    _assert_png(out)


@pytest.mark.parametrize("good", [False, True])
def test_pr_curve_figure(tmp_path, good):
    rec = np.linspace(0.05, 0.99 if good else 0.7, 30)
    prec = np.linspace(1.0, 0.95 if good else 0.4, 30)
    series = [{"label": f"{k} stage", "precision": prec - 0.01 * k, "recall": rec,
               "ap": 0.5, "best": k == 1,
               "at": {"precision": float(prec[-3]), "recall": float(rec[-3]),
                      "threshold": 0.4}} for k in range(3)]
    series.append({"label": "empty", "precision": [], "recall": []})
    out = tmp_path / "pr.png"
    figures.pr_curve_figure(out, series)
    _assert_png(out)


def test_comparison_figure(tmp_path):
    rows = [{"experiment": e, "iteration": k, "stage": f"iteration_{k}_x", "f1": 0.5 + 0.1 * k,
             "ap": None if k == 2 else 0.4, "best": k == 1} for e in ("a", "b") for k in range(3)]
    out = tmp_path / "cmp.png"
    figures.comparison_figure(out, rows)
    _assert_png(out)


def test_failing_figure_leaves_no_file(tmp_path):
    out = tmp_path / "p.png"
    with pytest.raises(ValueError):
        figures.progression_figure(out, [])
    assert not out.exists()


def test_short_stage_label():
    assert figures.short_stage_label("iteration_0_supervised") == "0 supervised"
    assert figures.short_stage_label("iteration_12_selftrain") == "12 self-train"
    assert figures.short_stage_label("other") == "other"
