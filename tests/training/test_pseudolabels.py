"""Threshold schedule and pseudo-labels (pixel and peaks modes); ground truth always wins."""

from __future__ import annotations

import numpy as np
import pytest

from selfpick.config import Config, SelfTrainConfig, TargetConfig
from selfpick.targets import IGNORE, NEGATIVE, POSITIVE, make_target
from selfpick.training.pseudolabels import (BACKGROUND_FRACTION, PseudoLabelStats,
                                            score_for_half_the_particles,
                                            calibrated_background, estimated_particles,
                                            hidden_particles,
                                            estimated_precision, label_shares, listing_floor,
                                            merge_with_ground_truth, peak_pseudo_labels,
                                            pixel_pseudo_labels, score_for_precision,
                                            threshold_schedule, unlabelled_share)


def _st(**kw) -> SelfTrainConfig:
    cfg = Config()
    cfg.update(kw)
    return cfg.selftrain


def _dist(shape, cx, cy):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(xx - cx, yy - cy)


# ---------------------------------------------------------------- schedule


def test_default_schedule_is_the_original_scripts():
    st = _st()
    got = [threshold_schedule(k, st) for k in (1, 2, 3)]
    assert got == [pytest.approx((0.95, 0.05)), pytest.approx((0.93, 0.07)),
                   pytest.approx((0.91, 0.09))]


def test_schedule_follows_the_spec_formula_and_clamps():
    st = _st()
    for k in range(1, 30):
        pos, neg = threshold_schedule(k, st)
        assert pos == pytest.approx(max(0.80, 0.95 - 0.02 * (k - 1)))
        assert neg == pytest.approx(min(0.20, 0.05 + 0.02 * (k - 1)))
    assert threshold_schedule(100, st) == pytest.approx((0.80, 0.20))


def test_schedule_with_custom_start_step_and_limits():
    st = _st(positive_threshold=0.9, negative_threshold=0.1, threshold_step=0.05,
             positive_threshold_min=0.75, negative_threshold_max=0.2)
    assert [threshold_schedule(k, st) for k in (1, 2, 3, 4)] == [
        pytest.approx((0.9, 0.1)), pytest.approx((0.85, 0.15)), pytest.approx((0.8, 0.2)),
        pytest.approx((0.75, 0.2))]


def test_constant_schedule():
    st = _st(threshold_schedule="constant", positive_threshold=0.9, negative_threshold=0.1)
    assert {threshold_schedule(k, st) for k in range(1, 6)} == {(0.9, 0.1)}


def test_iterations_are_numbered_from_one():
    with pytest.raises(ValueError):
        threshold_schedule(0, SelfTrainConfig())


# ---------------------------------------------------------------- merging


def test_ground_truth_wins():
    gt = make_target((30, 30), np.array([[10, 10]]), 6.0)  # disk r=3, ring to r=6
    pseudo = np.zeros((30, 30), dtype=np.int8)  # the model says: nothing anywhere ...
    pseudo[20:, 20:] = POSITIVE  # ... except a new particle here
    before = pseudo.copy()
    out = merge_with_ground_truth(pseudo, gt, labelled=True)
    np.testing.assert_array_equal(out[gt == POSITIVE], POSITIVE)
    np.testing.assert_array_equal(out[gt == IGNORE], IGNORE)
    keep = gt == NEGATIVE
    np.testing.assert_array_equal(out[keep], pseudo[keep])
    np.testing.assert_array_equal(pseudo, before)  # input untouched
    # The other way round: a confident pseudo-positive inside a labelled ring stays ignored.
    out2 = merge_with_ground_truth(np.ones((30, 30), dtype=np.int8), gt, labelled=True)
    np.testing.assert_array_equal(out2 == IGNORE, gt == IGNORE)


def test_unlabelled_micrographs_keep_their_pseudo_labels():
    gt = np.full((8, 8), IGNORE, dtype=np.int8)  # what make_target gives an unlabelled one
    pseudo = np.zeros((8, 8), dtype=np.int8)
    pseudo[2, 2] = POSITIVE
    np.testing.assert_array_equal(merge_with_ground_truth(pseudo, gt, labelled=False), pseudo)


# ---------------------------------------------------------------- pixel mode


def test_pixel_mode_thresholds_inclusively():
    prob = np.array([[0.99, 0.95, 0.94, 0.5], [0.06, 0.05, 0.0, 1.0]], dtype=np.float32)
    gt = np.zeros(prob.shape, dtype=np.int8)
    pl = pixel_pseudo_labels(prob, gt, labelled=False, pos=0.95, neg=0.05)
    np.testing.assert_array_equal(pl, [[1, 1, -1, -1], [-1, 0, 0, 1]])
    assert pl.dtype == np.int8


def test_pixel_mode_with_ground_truth():
    shape = (30, 30)
    gt = make_target(shape, np.array([[10, 10]]), 6.0)
    prob = np.full(shape, 0.01, dtype=np.float32)  # model misses the labelled particle ...
    prob[_dist(shape, 10, 10) <= 6] = 0.01
    prob[_dist(shape, 22, 22) <= 2] = 0.99  # ... and finds an unlabelled one
    prob[0, :] = 0.5  # uncertain
    pl = pixel_pseudo_labels(prob, gt, labelled=True, pos=0.95, neg=0.05)
    np.testing.assert_array_equal(pl[gt == POSITIVE], POSITIVE)
    np.testing.assert_array_equal(pl[gt == IGNORE], IGNORE)
    assert np.all(pl[_dist(shape, 22, 22) <= 2] == POSITIVE)
    assert np.all(pl[0, 17:] == IGNORE)
    assert pl[25, 5] == NEGATIVE


def test_pixel_mode_unlabelled_micrograph():
    prob = np.zeros((10, 10), dtype=np.float32)
    prob[4:6, 4:6] = 0.97
    gt = make_target(prob.shape, np.zeros((0, 2)), 3.0, labelled=False)
    pl = pixel_pseudo_labels(prob, gt, labelled=False, pos=0.95, neg=0.05)
    assert np.count_nonzero(pl == POSITIVE) == 4
    assert np.count_nonzero(pl == NEGATIVE) == 96


# ---------------------------------------------------------------- peaks mode


def test_peaks_mode_confident_peaks_become_particles_uncertain_ones_are_ignored():
    shape, r = (48, 64), 6.0  # particle radius 6 model px
    tcfg = TargetConfig(positive_radius=0.5, ignore_radius=1.0)
    prob = np.full(shape, 0.01, dtype=np.float32)
    prob[:, 56:] = 0.3  # a band the model is unsure about
    peaks = np.array([[15.0, 20.0], [40.0, 24.0]])
    scores = np.array([0.9, 0.3])
    gt = np.full(shape, IGNORE, dtype=np.int8)
    pl = peak_pseudo_labels(prob, peaks, scores, gt, labelled=False, radius=r, pos_score=0.5,
                            neg=0.05, tcfg=tcfg)
    sure, unsure = _dist(shape, 15, 20), _dist(shape, 40, 24)
    np.testing.assert_array_equal(pl[sure <= 3], POSITIVE)  # disk: 0.5 * radius
    np.testing.assert_array_equal(pl[(sure > 3) & (sure <= 6)], IGNORE)  # ring
    # The uncertain peak is never called background although its pixels have p <= neg.
    np.testing.assert_array_equal(pl[unsure <= 6], IGNORE)
    assert not np.any(pl[unsure <= 6] == POSITIVE)
    far = (sure > 6) & (unsure > 6)
    np.testing.assert_array_equal(pl[far & (prob <= 0.05)], NEGATIVE)
    np.testing.assert_array_equal(pl[far & (prob > 0.05)], IGNORE)


def test_peaks_mode_without_background_leaves_every_other_pixel_unlabelled():
    # unpicked_pixels='unlabelled': 0 means "unlabelled" for the PU loss, so pixels the model
    # scores low are not background; uncertain peaks stay ignored
    shape, r = (48, 64), 6.0
    tcfg = TargetConfig(positive_radius=0.5, ignore_radius=1.0)
    prob = np.full(shape, 0.01, dtype=np.float32)
    prob[:, 56:] = 0.3
    peaks = np.array([[15.0, 20.0], [40.0, 24.0]])
    gt = np.full(shape, IGNORE, dtype=np.int8)
    pl = peak_pseudo_labels(prob, peaks, np.array([0.9, 0.3]), gt, labelled=False, radius=r,
                            pos_score=0.5, neg=None, tcfg=tcfg)
    sure = _dist(shape, 15, 20)
    np.testing.assert_array_equal(pl[sure <= 3], POSITIVE)
    np.testing.assert_array_equal(pl[(sure > 3) & (sure <= 6)], IGNORE)
    unsure = _dist(shape, 40, 24)
    np.testing.assert_array_equal(pl[unsure <= 6], IGNORE)  # taught neither way
    np.testing.assert_array_equal(pl[(sure > 6) & (unsure > 6)], NEGATIVE)  # band included

    # labelled micrograph: ground truth still wins
    gt = make_target(shape, np.array([[50.0, 10.0]]), r, 0.5, 1.0)
    pl = peak_pseudo_labels(prob, peaks, np.array([0.9, 0.3]), gt, labelled=True, radius=r,
                            pos_score=0.5, neg=None, tcfg=tcfg)
    np.testing.assert_array_equal(pl[gt == POSITIVE], POSITIVE)
    np.testing.assert_array_equal(pl[gt == IGNORE], IGNORE)


def test_pixel_mode_without_background():
    prob = np.array([[0.0, 0.04, 0.5, 0.97]], dtype=np.float32)
    gt = np.zeros_like(prob, dtype=np.int8)
    pl = pixel_pseudo_labels(prob, gt, labelled=False, pos=0.95, neg=0.05, unlabelled=True)
    np.testing.assert_array_equal(pl, [[NEGATIVE, NEGATIVE, NEGATIVE, POSITIVE]])


def test_estimated_particles_from_picks_precision_and_recall():
    assert estimated_particles(100, 0.8, 0.5) == pytest.approx(160.0)
    assert estimated_particles(0, 0.8, 0.5) == 0.0
    assert estimated_particles(10, 0.0, 0.5) == 0.0
    # a recall of 0 measured on a handful of labels must not give infinity
    assert np.isfinite(estimated_particles(10, 0.9, 0.0))


def test_unlabelled_share_is_the_missing_particles_pixels():
    # 100 known particles with 2,000 disk pixels; 200 more in the 40,000 unlabelled pixels
    # take 4,000 of them
    assert unlabelled_share(2000, 40000, 100, 200) == pytest.approx(0.1)
    assert unlabelled_share(2000, 40000, 100, 0) == 0.0  # none missing
    assert unlabelled_share(2000, 40000, 0, 300) == 0.0  # nothing to size a disk by
    assert unlabelled_share(2000, 1000, 100, 10 ** 6) == 0.5  # capped like the PU prior


def test_hidden_particles_are_those_the_model_does_not_pick():
    # 1,000 particles, the model picks 80 % of them at its threshold: 200 lie outside its
    # peaks, if at least that many carry no label or pseudo-label
    assert hidden_particles(1000, 300, 0.8) == pytest.approx(200)
    assert hidden_particles(1000, 900, 0.8) == pytest.approx(100)
    assert hidden_particles(1000, 1200, 0.8) == 0.0


def test_peaks_mode_a_confident_peak_next_to_an_uncertain_one_stays_positive():
    shape, r = (40, 40), 6.0
    prob = np.zeros(shape, dtype=np.float32)
    peaks = np.array([[20.0, 20.0], [24.0, 20.0]])  # uncertain one inside the sure one's ring
    pl = peak_pseudo_labels(prob, peaks, np.array([0.9, 0.2]), np.zeros(shape, np.int8), False,
                            r, 0.5, 0.05, TargetConfig())
    np.testing.assert_array_equal(pl[_dist(shape, 20, 20) <= 3], POSITIVE)


def test_peaks_mode_ground_truth_wins():
    shape, r = (40, 40), 6.0
    gt = make_target(shape, np.array([[10.0, 10.0]]), r)
    prob = np.zeros(shape, dtype=np.float32)
    # A confident peak shifted onto the labelled particle's ring, and nothing at the label.
    pl = peak_pseudo_labels(prob, np.array([[14.0, 10.0]]), np.array([0.99]), gt, True, r, 0.5,
                            0.05, TargetConfig())
    np.testing.assert_array_equal(pl[gt == POSITIVE], POSITIVE)
    np.testing.assert_array_equal(pl[gt == IGNORE], IGNORE)


def test_peaks_mode_without_peaks():
    prob = np.full((16, 16), 0.02, dtype=np.float32)
    prob[0, 0] = 0.5
    pl = peak_pseudo_labels(prob, np.zeros((0, 2)), np.zeros(0), np.zeros((16, 16), np.int8),
                            False, 4.0, 0.5, 0.05, TargetConfig())
    assert pl[0, 0] == IGNORE and np.count_nonzero(pl == NEGATIVE) == 255


# ---------------------------------------------------------------- calibration helpers


def test_background_follows_an_under_confident_models_threshold():
    # A calibrated model (picks at 0.4) keeps the schedule's 0.05 ...
    assert calibrated_background(0.05, 0.4) == 0.05
    # ... one that picks at 0.012 only calls pixels below half of that background.
    assert calibrated_background(0.05, 0.012) == pytest.approx(BACKGROUND_FRACTION * 0.012)
    assert calibrated_background(0.05, 0.0) == 0.0
    # A particle such a model scores 0.01 is not painted background with that level.
    prob = np.full((32, 32), 0.001, dtype=np.float32)
    prob[_dist((32, 32), 16, 16) <= 4] = 0.01
    neg = calibrated_background(0.05, 0.012)
    pl = peak_pseudo_labels(prob, np.zeros((0, 2)), np.zeros(0), np.zeros((32, 32), np.int8),
                            False, 4.0, 0.5, neg, TargetConfig())
    assert np.all(pl[_dist((32, 32), 16, 16) <= 4] == IGNORE)
    assert np.count_nonzero(pl == NEGATIVE) == np.count_nonzero(prob <= neg)


def test_listing_floor_reaches_down_to_the_background_level():
    assert listing_floor(None, None) == 0.02  # pixel mode: the usual floor
    assert listing_floor(0.9, 0.05) == 0.02  # a calibrated model
    assert listing_floor(0.04, 0.05) == pytest.approx(0.01)  # a quarter of the pos. score
    # An under-confident model: every peak above its background level is listed ...
    assert listing_floor(0.871, 0.004) == pytest.approx(0.004)
    # ... but never below the scoring floor, and an unreachable score changes nothing.
    assert listing_floor(0.871, 0.0) == pytest.approx(0.001)
    assert listing_floor(float("inf"), 0.05) == 0.02


def test_estimated_precision_of_pseudo_particles():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    local = np.array([1.0, 0.9, 0.5, 0.2])
    assert estimated_precision(scores, local, 0.75) == pytest.approx(0.95)
    assert estimated_precision(scores, local, 0.0) == pytest.approx(0.65)
    assert estimated_precision(scores, local, 0.95) is None  # no validation pick that high
    assert estimated_precision(scores, local, float("inf")) is None
    assert estimated_precision(scores, local, None) is None


def test_score_for_precision():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    precision = np.array([1.0, 1.0, 0.96, 0.9, 0.8])
    assert score_for_precision(scores, precision, 0.95) == 0.7
    assert score_for_precision(scores, precision, 1.0) == 0.8
    assert score_for_precision(scores, precision, 0.5) == 0.5
    assert score_for_precision(scores, np.array([0.5, 0.4, 0.3, 0.2, 0.1]), 0.95) is None
    assert score_for_precision(np.zeros(0), np.zeros(0), 0.9) is None
    # The first drop below the target ends the range, even if precision recovers later:
    # past that point the picks are no longer reliably particles.
    assert score_for_precision(scores, np.array([1.0, 0.9, 1.0, 1.0, 1.0]), 0.95) == 0.9


def test_local_precision_follows_the_picks_not_the_running_total():
    from selfpick.training.validate import local_precision

    # 100 true picks then 100 false ones: the cumulative precision at rank 150 is still 0.67,
    # the local one is 0.
    is_tp = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    lp = local_precision(is_tp, completeness=1.0)
    assert lp[:80].min() == 1.0 and lp[120:].max() == 0.0
    # With half the particles labelled, the labelled share among real particles is 0.5 and
    # the corrected local precision is back to 1.
    half = np.r_[np.tile([True, False], 100), np.zeros(100, bool)]
    lp = local_precision(half, completeness=0.5)
    assert lp[20:160].min() > 0.9 and lp[-20:].max() == 0.0


def test_label_shares_and_stats_description():
    maps = [np.array([[1, 0], [-1, -1]], np.int8), np.array([[0, 0, 0, 1]], np.int8)]
    n, sp, sn, si = label_shares(maps)
    assert (n, sp, sn, si) == (8, 0.25, 0.5, 0.25)
    assert label_shares([]) == (0, 0.0, 0.0, 0.0)
    stats = PseudoLabelStats("peaks", 0.95, 0.05, 0.42, 2, n, sp, sn, si, 7)
    text = stats.describe()
    assert "7 pseudo-particles" in text and "25.0% positive" in text and "0.420" in text
    assert stats.as_dict()["n_pseudo_particles"] == 7
    assert "estimated precision" not in text and "background below" not in text
    stats = PseudoLabelStats("peaks", 0.95, 0.05, 0.42, 2, n, sp, sn, si, 7, 0.004, 0.93)
    text = stats.describe()
    assert "background below 0.0040" in text and "estimated precision 93%" in text
    assert stats.as_dict()["estimated_precision"] == 0.93
    assert "positive-unlabelled" not in text and "50.0% background" in text
    stats = PseudoLabelStats("peaks", 0.95, 0.05, 0.42, 2, n, sp, sn, si, 7, None, 0.93, 0.062)
    text = stats.describe()
    assert "50.0% unlabelled" in text and "6.2% of the unlabelled pixels" in text
    assert stats.as_dict()["unlabelled_prior"] == 0.062
    # how many labelled validation particles the estimate rests on, and whether that is few
    stats = PseudoLabelStats("peaks", 0.95, 0.05, 0.42, 2, n, sp, sn, si, 7, None, 1.0, 0.062, 8)
    assert "8 labelled validation particles; a rough figure" in stats.describe()
    stats = PseudoLabelStats("peaks", 0.95, 0.05, 0.42, 2, n, sp, sn, si, 7, None, 1.0, 0.062, 65)
    assert "65 labelled validation particles)" in stats.describe()
    assert stats.as_dict()["validation_particles"] == 65


def test_pseudo_particles_reach_half_the_estimated_particles():
    # two micrographs, 10 peaks each; 12 real particles estimated, so 6 should be taken
    pool = [np.linspace(0.95, 0.05, 10), np.linspace(0.9, 0.0, 10)]
    # the precision rule asked for 0.92: only 1 peak; the 6th best peak scores 0.70
    assert score_for_half_the_particles(pool, 12, 0.92, 0.1) == pytest.approx(0.7)
    # never below the picking threshold
    assert score_for_half_the_particles(pool, 12, 0.92, 0.8) == pytest.approx(0.8)
    # enough peaks already reach the asked-for score: unchanged, never raised
    assert score_for_half_the_particles(pool, 4, 0.7, 0.1) == pytest.approx(0.7)
    # no estimate, or no score asked for: unchanged
    assert score_for_half_the_particles(pool, 0, 0.92, 0.1) == pytest.approx(0.92)
    assert score_for_half_the_particles(pool, 12, float("inf"), 0.1) == float("inf")
    # more particles estimated than peaks: the weakest peak, floored by the threshold
    assert score_for_half_the_particles(pool, 100, 0.92, 0.01) == pytest.approx(0.01)
    assert score_for_half_the_particles([], 10, 0.92, 0.1) == pytest.approx(0.92)
