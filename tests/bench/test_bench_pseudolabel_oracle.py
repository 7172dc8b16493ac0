"""bench/pseudolabel_oracle.py: which pseudo-particles the curated picks demote, the
summary over draws, and that the package functions it wraps still take what it passes."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import pseudolabel_oracle as oracle  # noqa: E402

from selfpick.config import TargetConfig  # noqa: E402
from selfpick.targets import IGNORE, NEGATIVE, POSITIVE  # noqa: E402
from selfpick.training import experiment  # noqa: E402
from selfpick.training.pseudolabels import peak_pseudo_labels  # noqa: E402


def test_only_pseudo_particles_far_from_every_curated_pick_are_demoted():
    xy = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 20.0], [30.0, 80.0]])
    scores = np.array([0.99, 0.97, 0.40, 0.98])
    curated = np.array([[12.0, 11.0], [90.0, 21.0]])
    out, kept, demoted = oracle.demote_uncurated(xy, scores, curated, radius=4.0, pos_score=0.9)
    assert (kept, demoted) == (1, 2)
    assert out[0] == 0.99  # near a curated pick: stays a pseudo-particle
    assert out[2] == 0.40  # below the pseudo-particle score: untouched, curated or not
    assert 0.89 < out[1] < 0.9 and 0.89 < out[3] < 0.9  # just below the score
    assert scores[1] == 0.97  # the input is not changed


def test_no_curated_picks_demotes_every_pseudo_particle():
    out, kept, demoted = oracle.demote_uncurated(np.array([[5.0, 5.0]]), np.array([0.95]),
                                                 np.zeros((0, 2)), 3.0, 0.9)
    assert (kept, demoted) == (0, 1) and out[0] < 0.9


def test_a_demoted_peak_is_painted_as_an_ignored_disk_not_a_particle():
    prob = np.zeros((40, 40), dtype=np.float32)
    xy = np.array([[10.0, 10.0], [30.0, 30.0]])
    scores, _, _ = oracle.demote_uncurated(xy, np.array([0.99, 0.99]), np.array([[10.0, 10.0]]),
                                           2.0, 0.9)
    gt = np.zeros((40, 40), dtype=np.int8)
    pl = peak_pseudo_labels(prob, xy, scores, gt, False, 4.0, 0.9, None, TargetConfig())
    assert pl[10, 10] == POSITIVE
    assert pl[30, 30] == IGNORE
    assert pl[0, 39] == NEGATIVE


def test_the_wrapped_package_functions_take_the_arguments_the_oracle_passes():
    # The oracle replaces these two by wrappers with the same positional arguments; a change
    # of their signatures must break this test rather than the measurement.
    assert list(inspect.signature(experiment._pseudo_labels).parameters) == [
        "k", "cfg", "ts", "model", "device", "val", "stage_dir", "progress"]
    assert list(inspect.signature(experiment.peak_pseudo_labels).parameters) == [
        "prob", "peaks_xy", "peak_scores", "gt_target", "labelled", "radius", "pos_score",
        "neg", "tcfg"]


def _stage(f1, best, ap):
    return {"f1": f1, "best_f1": best, "average_precision": ap}


def test_summary_gains_are_per_draw_differences_from_iteration_0():
    runs = [{"iteration_0": _stage(0.7, 0.80, 0.70), "student": _stage(0.8, 0.81, 0.75),
             "oracle_student": _stage(0.8, 0.84, 0.80)},
            {"iteration_0": _stage(0.8, 0.80, 0.80), "student": _stage(0.8, 0.83, 0.81),
             "oracle_student": _stage(0.8, 0.86, 0.84)}]
    s = oracle.summary(runs)
    assert s["student"]["gain_best_f1"][0] == pytest.approx(0.02)
    assert s["oracle_student"]["gain_average_precision"][0] == pytest.approx(0.07)
    assert s["oracle_student"]["gain_best_f1"][1] == pytest.approx(np.std([0.04, 0.06], ddof=1))
    assert s["iteration_0"]["f1"][0] == pytest.approx(0.75)
