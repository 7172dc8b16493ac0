"""The picking threshold a model stores: between two validation scores, never on one."""

from __future__ import annotations

import numpy as np
import pytest

from selfpick.training.validate import _between


def test_threshold_lies_midway_to_the_next_lower_score():
    scores = np.array([0.9, 0.7, 0.4, 0.2])  # distinct scores, descending
    assert _between(scores, 1) == 0.55
    # the same picks are kept as with the chosen score itself
    for k in range(len(scores)):
        t = _between(scores, k)
        assert ((scores >= t) == (scores >= scores[k])).all()


def test_threshold_below_the_last_score_is_just_below_it():
    scores = np.array([0.9, 0.7], dtype=np.float64)
    t = _between(scores, 1)
    assert t < 0.7 and np.float32(t) < np.float32(0.7) and t > 0.6999


def test_completeness_estimate_holds_with_sparse_labels():
    """5-10 % labels: the estimate uses the top half of the estimated particles, not the top
    n_labelled / 2 picks, so it is unbiased and several times less noisy than the old one."""
    from selfpick.evaluation.metrics import ParticleCurve
    from selfpick.training.validate import estimate_completeness

    rng = np.random.default_rng(0)
    for c_true in (0.05, 0.1, 0.3):
        errs_new, errs_old = [], []
        for _ in range(200):
            n_real, n_false = 650, 400
            labelled = rng.random(n_real) < c_true
            # the model ranks real particles first (with a little mixing at the tail)
            is_tp = np.r_[labelled, np.zeros(n_false, bool)]
            order = np.argsort(np.arange(len(is_tp)) + rng.normal(0, 60, len(is_tp)))
            is_tp = is_tp[order]
            curve = ParticleCurve(np.linspace(1, 0, len(is_tp)), is_tp, int(labelled.sum()))
            errs_new.append(estimate_completeness(curve) - c_true)
            k = max(1, curve.n_true // 2)
            errs_old.append(is_tp[:k].mean() - c_true)
        errs_new, errs_old = np.array(errs_new), np.array(errs_old)
        assert abs(errs_new.mean()) < 0.15 * c_true
        assert errs_new.std() < 0.6 * errs_old.std()


def test_completeness_estimate_unchanged_for_complete_labels():
    from selfpick.evaluation.metrics import ParticleCurve
    from selfpick.training.validate import estimate_completeness

    is_tp = np.r_[np.ones(100, bool), np.zeros(50, bool)]
    assert estimate_completeness(ParticleCurve(np.linspace(1, 0, 150), is_tp, 100)) == 1.0
    # nothing picked or nothing labelled: "complete" (nothing to correct)
    assert estimate_completeness(ParticleCurve(np.zeros(0), np.zeros(0, bool), 10)) == 1.0
    # more labels than confident picks: every pick is used, no endless loop
    assert estimate_completeness(ParticleCurve(np.linspace(1, 0, 4), np.array([1, 0, 0, 0], bool),
                                               40)) == 0.25


def test_threshold_uncertainty_is_the_run_of_thresholds_within_one_standard_error():
    from selfpick.training.validate import threshold_curve, threshold_uncertainty

    thresholds = np.linspace(0.9, 0.1, 9)
    f1 = np.array([0.2, 0.5, 0.78, 0.8, 0.79, 0.6, 0.77, 0.79, 0.3])
    u = threshold_uncertainty(f1, thresholds, 3, n_true=100)
    assert u["f1_standard_error"] == pytest.approx(0.04, abs=0.001)
    # 0.78, 0.8, 0.79 are within 0.04 of 0.8; 0.6 breaks the run, so 0.77/0.79 beyond it
    # do not count
    assert u["range"] == [thresholds[4], thresholds[2]]
    # more labels, a narrower range
    assert threshold_uncertainty(f1, thresholds, 3, n_true=10_000)["range"] == \
        [thresholds[3], thresholds[3]]
    # a perfect F1 on 25 particles still has an uncertainty
    assert threshold_uncertainty(np.ones(3), thresholds[:3], 0, 25)["f1_standard_error"] > 0.02
    c = threshold_curve(f1, f1, f1, thresholds, 3, points=3)
    assert thresholds[3] in c["threshold"] and len(c["threshold"]) == len(c["f1"]) == 4


def test_few_validation_particles_pick_in_the_middle_of_the_uncertain_range():
    """On a flat curve measured on a handful of particles the maximum sits at a random end;
    below FEW_VALIDATION_PARTICLES the threshold moves to the middle of the range, while the
    F1 stages are ranked by stays the maximum."""
    from selfpick.training.validate import (FEW_VALIDATION_PARTICLES, choose_threshold,
                                            middle_of_range)

    thresholds = np.linspace(0.95, 0.05, 10)  # descending
    # flat from 0.95 down to 0.35, maximum at the top end
    f1 = np.array([0.80, 0.78, 0.79, 0.77, 0.78, 0.76, 0.77, 0.50, 0.30, 0.20])
    k, kt, u, rule = choose_threshold(f1, thresholds, n_true=12)
    assert k == 0 and u["range"] == [thresholds[6], thresholds[0]]
    mid = (thresholds[6] + thresholds[0]) / 2
    assert kt == middle_of_range(thresholds, u["range"]) == 3
    assert thresholds[kt] >= mid > thresholds[kt + 1]
    assert "middle" in rule and str(FEW_VALIDATION_PARTICLES) in rule
    # enough particles: the maximum itself
    k, kt, u, rule = choose_threshold(f1, thresholds, n_true=FEW_VALIDATION_PARTICLES)
    assert k == kt == 0 and rule == "max F1"
    # a range of one threshold stays where it is
    assert middle_of_range(thresholds, [thresholds[4], thresholds[4]]) == 4
    # a fresh student's polarised scores: the maximum, however few the particles
    k, kt, u, rule = choose_threshold(f1, thresholds, n_true=12, polarised=True)
    assert k == kt == 0 and u["range"] == [thresholds[6], thresholds[0]]
    assert rule.startswith("max F1") and "fresh self-training student" in rule


def test_f1_standard_error_is_binomial_and_never_zero_on_few_particles():
    from selfpick.training.validate import f1_standard_error

    assert f1_standard_error(0.9, 0) == 0.0
    assert f1_standard_error(1.0, 11) == pytest.approx(0.080, abs=0.001)
    # many particles: the plain binomial error, sqrt(0.9 * 0.1 / 10000) = 0.003
    assert f1_standard_error(0.9, 10_000) == pytest.approx(0.003, abs=0.0002)
    assert f1_standard_error(1.0, 11) > f1_standard_error(1.0, 100) > 0


def test_completeness_standard_error_matches_the_spread_of_the_estimate():
    """45 labelled particles of ~430 (a simulated draw's strips): the reported binomial error
    is the spread the estimate really has over draws of which particles were picked."""
    from selfpick.evaluation.metrics import ParticleCurve
    from selfpick.training.validate import completeness_standard_error, estimate_completeness

    rng = np.random.default_rng(1)
    est, se = [], []
    for _ in range(300):
        labelled = rng.random(430) < 0.105
        is_tp = np.r_[labelled, np.zeros(300, bool)]
        curve = ParticleCurve(np.linspace(1, 0, len(is_tp)), is_tp, int(labelled.sum()))
        c = estimate_completeness(curve)
        est.append(c)
        se.append(completeness_standard_error(curve, c))
    assert 0.67 < np.mean(se) / np.std(est) < 1.5
    assert completeness_standard_error(ParticleCurve(np.zeros(0), np.zeros(0, bool), 5), 1.0) == 0


def test_completeness_sensitivity_brackets_the_threshold_and_rises_with_completeness():
    """Higher completeness -> lower corrected precision -> a higher threshold; the chosen
    threshold lies within the reported span, which is only reported."""
    from selfpick.evaluation.metrics import ParticleCurve
    from selfpick.training.validate import (choose_threshold, completeness_sensitivity,
                                            corrected_curve, estimate_completeness, _between)

    rng = np.random.default_rng(2)
    # a polarised student: 430 particles crowd near 1, 300 background peaks low; 10 % of the
    # particles labelled, by chance more of them among the highest-scored (as in the
    # simulated draw whose completeness read 0.14 for 0.105)
    labelled = np.r_[rng.random(200) < 0.14, rng.random(230) < 0.07]
    scores = np.r_[np.sort(1 - rng.random(430) * 0.01)[::-1], np.sort(rng.random(300) * 0.3)[::-1]]
    curve = ParticleCurve(scores, np.r_[labelled, np.zeros(300, bool)], int(labelled.sum()))
    c = estimate_completeness(curve)
    _, _, f1, thresholds = corrected_curve(curve, c)
    chosen = _between(thresholds, choose_threshold(f1, thresholds, curve.n_true,
                                                   polarised=True)[1])
    s = completeness_sensitivity(curve, c, thresholds, polarised=True)
    low, high = s["thresholds"]
    assert low <= chosen <= high
    assert c > 1.3 * labelled.mean() and low < chosen  # read high: a lower c picks lower
    assert s["estimate"] == round(c, 4) and 0 < s["standard_error"] < c
    # a completeness read too high (the simulated draw: 0.14 for 0.105) moves the threshold up
    f1_high = corrected_curve(curve, 1.4 * c)[2]
    assert _between(thresholds, choose_threshold(f1_high, thresholds, curve.n_true,
                                                 polarised=True)[1]) >= chosen


def test_threshold_averaged_over_the_completeness_error_is_not_pushed_into_the_particles():
    """A completeness read high (more labelled particles than average at the top of the
    ranking, by chance) puts the point estimate's F1 maximum among the particles; averaged
    over the estimate's error the maximum falls below them. With the completeness exact,
    both agree."""
    from selfpick.evaluation.metrics import ParticleCurve
    from selfpick.training.validate import (completeness_standard_error, corrected_curve,
                                            estimate_completeness, expected_corrected_f1)

    rng = np.random.default_rng(2)
    labelled = np.r_[rng.random(200) < 0.14, rng.random(230) < 0.05]
    scores = np.r_[np.linspace(1.0, 0.9, 430), np.linspace(0.3, 0.0, 300)]
    curve = ParticleCurve(scores, np.r_[labelled, np.zeros(300, bool)], int(labelled.sum()))
    c = estimate_completeness(curve)
    se = completeness_standard_error(curve, c)
    point = corrected_curve(curve, c)[2]
    averaged = expected_corrected_f1(curve, c, se)
    assert averaged.shape == point.shape and np.all(averaged <= 1)
    assert c > 1.3 * labelled.mean()
    assert np.argmax(point) < 200 < np.argmax(averaged) < 430  # lower, still above background
    np.testing.assert_array_equal(expected_corrected_f1(curve, c, 0.0), point)

