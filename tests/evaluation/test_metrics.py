"""Tests for particle-level curves/metrics and pixel-level metrics."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from selfpick.evaluation.matching import match_picks
from selfpick.evaluation.metrics import (
    ParticleCurve,
    particle_curve,
    particle_metrics,
    pixel_metrics,
    precision_recall_f1,
)


def assert_json_safe(d: dict) -> None:
    json.dumps(d, allow_nan=False)  # raises on NaN/inf and on numpy types


# ---------------------------------------------------------------- hand-computed example
#
# Four truths on a line, radius 10:   T0 (0,0)   T1 (100,0)   T2 (200,0)   T3 (300,0)
# Five picks (given to the function in a shuffled order):
#   a (1,0)    score 0.9 -> T0, d=1                      TP
#   b (100,3)  score 0.8 -> T1, d=3                      TP
#   c (2,0)    score 0.7 -> T0 already taken by a        FP (duplicate, lower score)
#   d (205,0)  score 0.6 -> T2, d=5                      TP
#   e (300,20) score 0.5 -> T3 is 20 away (> 10)         FP
# T3 is never found.
#
# Rank:            a    b    c    d    e
# TP?              1    1    0    1    0
# cum TP           1    2    2    3    3
# precision@k      1/1  2/2  2/3  3/4  3/5
# recall@k         1/4  2/4  2/4  3/4  3/4
# F1 = 2tp/(k+4)   2/5  4/6  4/7  6/8  6/9  -> best 0.75 at k=4, threshold 0.6
# AP = (P@1 + P@2 + P@4) / n_true = (1 + 1 + 3/4) / 4 = 2.75 / 4 = 0.6875
TRUTH = np.array([[0, 0], [100, 0], [200, 0], [300, 0]], dtype=float)
PICKS = {
    "a": ((1, 0), 0.9),
    "b": ((100, 3), 0.8),
    "c": ((2, 0), 0.7),
    "d": ((205, 0), 0.6),
    "e": ((300, 20), 0.5),
}
SHUFFLED = ["c", "e", "a", "d", "b"]
PRED = np.array([PICKS[k][0] for k in SHUFFLED], dtype=float)
SCORES = np.array([PICKS[k][1] for k in SHUFFLED])


def test_hand_example_matching_in_input_order():
    res = match_picks(PRED, SCORES, TRUTH, radius=10)
    #                        c      e      a     d     b
    assert res.is_tp.tolist() == [False, False, True, True, True]
    assert res.matched_truth.tolist() == [-1, -1, 0, 2, 1]
    np.testing.assert_allclose(res.distance, [np.nan, np.nan, 1, 5, 3])


def test_hand_example_curve():
    curve = particle_curve([(PRED, SCORES, TRUTH)], radius=10)
    assert curve.scores.tolist() == [0.9, 0.8, 0.7, 0.6, 0.5]
    assert curve.is_tp.tolist() == [True, True, False, True, False]
    assert curve.n_true == 4
    assert curve.average_precision() == pytest.approx(0.6875)

    all_picks = curve.at_threshold(None)
    # tp 3, fp 2 (c, e), fn 1 (T3); P = 3/5, R = 3/4, F1 = 6/9
    assert (all_picks["tp"], all_picks["fp"], all_picks["fn"]) == (3, 2, 1)
    assert all_picks["precision"] == pytest.approx(0.6)
    assert all_picks["recall"] == pytest.approx(0.75)
    assert all_picks["f1"] == pytest.approx(2 / 3)

    at07 = curve.at_threshold(0.7)  # keeps a, b, c: tp 2, fp 1, fn 2
    assert (at07["n_pred"], at07["tp"], at07["fp"], at07["fn"]) == (3, 2, 1, 2)
    assert at07["precision"] == pytest.approx(2 / 3)
    assert at07["recall"] == pytest.approx(0.5)
    assert at07["f1"] == pytest.approx(4 / 7)
    # Thresholds between scores keep the same picks as the next score up.
    assert curve.at_threshold(0.65)["n_pred"] == 3
    assert curve.at_threshold(0.95)["n_pred"] == 0

    best = curve.best()
    assert best["threshold"] == 0.6
    assert (best["n_pred"], best["tp"], best["fp"], best["fn"]) == (4, 3, 1, 1)
    assert best["precision"] == best["recall"] == best["f1"] == pytest.approx(0.75)

    precision, recall, thresholds = curve.pr_curve()
    assert thresholds.tolist() == [0.9, 0.8, 0.7, 0.6, 0.5]
    np.testing.assert_allclose(precision, [1, 1, 2 / 3, 3 / 4, 3 / 5])
    np.testing.assert_allclose(recall, [1 / 4, 2 / 4, 2 / 4, 3 / 4, 3 / 4])


def test_hand_example_metrics_dict():
    m = particle_metrics([("mic_001", PRED, SCORES, TRUTH)], radius=10, threshold=0.7)
    assert_json_safe(m)
    assert m["level"] == "particle"
    assert m["match_radius"] == 10.0
    assert m["threshold"] == 0.7 and m["threshold_rule"] == "score >= threshold"
    assert m["n_micrographs"] == 1
    assert (m["n_true"], m["n_pred"], m["tp"], m["fp"], m["fn"]) == (4, 3, 2, 1, 2)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["best_f1"] == pytest.approx(0.75)
    assert m["best_threshold"] == 0.6
    assert m["best_precision"] == pytest.approx(0.75)
    assert m["best_recall"] == pytest.approx(0.75)
    assert m["average_precision"] == pytest.approx(0.6875)
    (row,) = m["per_micrograph"]
    assert row == {
        "name": "mic_001",
        "n_true": 4,
        "n_pred": 3,
        "tp": 2,
        "fp": 1,
        "fn": 2,
        "precision": pytest.approx(2 / 3),
        "recall": 0.5,
        "f1": pytest.approx(4 / 7),
    }

    all_picks = particle_metrics([(PRED, SCORES, TRUTH)], radius=10)
    assert all_picks["threshold"] is None and all_picks["threshold_rule"] == "all picks"
    assert all_picks["n_pred"] == 5 and all_picks["tp"] == 3
    assert "per_micrograph" not in all_picks  # unnamed items: no per-micrograph rows


# ---------------------------------------------------------------- pooling


def test_pooling_never_matches_across_micrographs():
    # Micrograph A's pick sits exactly on B's particle position, and vice versa.
    a = ("A", [[10.0, 10.0]], [0.9], [[500.0, 500.0]])
    b = ("B", [[500.0, 500.0]], [0.8], [[10.0, 10.0]])
    m = particle_metrics([a, b], radius=20)
    assert (m["n_micrographs"], m["n_true"], m["n_pred"], m["tp"]) == (2, 2, 2, 0)
    assert m["average_precision"] == 0.0

    # With the truths on their own micrographs both picks are TPs.
    c = ("A", [[10.0, 10.0]], [0.9], [[10.0, 10.0]])
    d = ("B", [[500.0, 500.0]], [0.8], [[500.0, 500.0]])
    m = particle_metrics([c, d], radius=20, threshold=0.85)
    assert m["tp"] == 1 and m["n_pred"] == 1 and m["fn"] == 1  # threshold pooled over both
    assert [r["n_pred"] for r in m["per_micrograph"]] == [1, 0]
    assert [r["tp"] for r in m["per_micrograph"]] == [1, 0]
    assert m["per_micrograph"][1]["precision"] == 0.0  # no picks, one truth


def test_pooled_curve_interleaves_scores_across_micrographs():
    items = [
        ([[0, 0], [50, 50]], [0.9, 0.3], [[0, 0]]),  # TP 0.9, FP 0.3
        ([[0, 0], [50, 50]], [0.6, 0.8], [[0, 0]]),  # TP 0.6, FP 0.8
    ]
    curve = particle_curve(items, radius=5)
    assert curve.scores.tolist() == [0.9, 0.8, 0.6, 0.3]
    assert curve.is_tp.tolist() == [True, False, True, False]
    assert curve.n_true == 2
    # AP = (1/1 + 2/3) / 2
    assert curve.average_precision() == pytest.approx((1 + 2 / 3) / 2)


def test_threshold_prefix_equals_rematching():
    # Matching is greedy by score, so keeping the picks with score >= t and matching only them
    # gives the same TPs as the curve says. This check uses many ties and crowded particles.
    rng = np.random.default_rng(3)
    items = []
    for _ in range(4):
        truth = rng.uniform(0, 60, size=(25, 2))
        pred = np.vstack([truth[:18] + rng.normal(0, 2, (18, 2)), rng.uniform(0, 60, size=(12, 2))])
        scores = rng.integers(0, 8, size=30) / 8.0
        items.append((pred, scores, truth))
    curve = particle_curve(items, radius=4)
    for t in np.unique(curve.scores).tolist() + [-1.0, 2.0]:
        tp = sum(match_picks(p[s >= t], s[s >= t], tr, 4).n_tp for p, s, tr in items)
        assert curve.at_threshold(t)["tp"] == tp


# ---------------------------------------------------------------- best threshold and AP


@pytest.mark.parametrize("seed", range(5))
def test_best_threshold_is_a_pick_score_and_reproduces_best_f1(seed):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 200, size=(40, 2))
    pred = np.vstack([truth[:30] + rng.normal(0, 3, (30, 2)), rng.uniform(0, 200, size=(30, 2))])
    scores = np.round(rng.random(60), 2)  # rounding creates score ties
    curve = particle_curve([(pred, scores, truth)], radius=6)
    best = curve.best()
    assert best["threshold"] in scores.tolist()
    again = curve.at_threshold(best["threshold"])
    assert again == best
    f1_everywhere = [curve.at_threshold(t)["f1"] for t in np.unique(scores)]
    assert best["f1"] == max(f1_everywhere)
    m = particle_metrics([(pred, scores, truth)], radius=6, threshold=best["threshold"])
    assert m["f1"] == m["best_f1"]


@pytest.mark.parametrize("seed", range(5))
def test_ap_is_sklearn_ap_scaled_by_reachable_recall(seed):
    # sklearn's AP only counts the labelled picks, so its recall denominator is the number of
    # TPs. Ours divides by all truths (Topaz-style), including those no pick found. Both use
    # one point per distinct score, so AP_ours = AP_sklearn * (TPs / n_true), ties included.
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 300, size=(50, 2))
    pred = np.vstack([truth[:35] + rng.normal(0, 3, (35, 2)), rng.uniform(0, 300, size=(25, 2))])
    scores = np.round(rng.random(60), 1)
    curve = particle_curve([(pred, scores, truth)], radius=6)
    n_tp = int(curve.is_tp.sum())
    expected = average_precision_score(curve.is_tp, curve.scores) * n_tp / 50
    assert curve.average_precision() == pytest.approx(expected)


def test_ap_is_tie_order_independent():
    # Two tied picks, one TP and one FP: the AP must not depend on their input order.
    truth = [[0.0, 0.0]]
    ap1 = particle_curve([([[0, 0], [50, 50]], [0.5, 0.5], truth)], 5).average_precision()
    ap2 = particle_curve([([[50, 50], [0, 0]], [0.5, 0.5], truth)], 5).average_precision()
    assert ap1 == ap2 == 0.5  # precision 1/2 at the single level, recall 1


def test_perfect_picker():
    truth = np.array([[10.0, 10.0], [40.0, 40.0], [70.0, 10.0]])
    m = particle_metrics([(truth + 1, [0.9, 0.8, 0.7], truth)], radius=5)
    assert m["precision"] == m["recall"] == m["f1"] == m["best_f1"] == m["average_precision"] == 1.0
    assert m["best_threshold"] == 0.7


# ---------------------------------------------------------------- empty cases


def test_empty_cases_follow_the_conventions():
    truth = [[0.0, 0.0], [30.0, 30.0]]
    picks = [[5.0, 5.0], [90.0, 90.0]]

    no_picks = particle_metrics([(np.empty((0, 2)), np.empty(0), truth)], radius=3)
    assert (no_picks["n_pred"], no_picks["tp"], no_picks["fn"]) == (0, 0, 2)
    assert (no_picks["precision"], no_picks["recall"], no_picks["f1"]) == (0.0, 0.0, 0.0)
    assert no_picks["best_threshold"] is None and no_picks["best_f1"] == 0.0
    assert no_picks["average_precision"] == 0.0

    no_truth = particle_metrics([(picks, [0.4, 0.6], [])], radius=3)
    assert (no_truth["n_pred"], no_truth["fp"], no_truth["n_true"]) == (2, 2, 0)
    assert (no_truth["precision"], no_truth["recall"], no_truth["f1"]) == (0.0, 1.0, 0.0)
    assert no_truth["average_precision"] == 0.0  # AP with n_true == 0 is 0.0 by convention
    assert no_truth["best_threshold"] == 0.6  # a real pick score; F1 is 0 everywhere

    neither = particle_metrics([([], [], [])], radius=3)
    assert (neither["precision"], neither["recall"], neither["f1"]) == (1.0, 1.0, 1.0)
    assert neither["best_f1"] == 1.0 and neither["best_threshold"] is None
    assert neither["average_precision"] == 0.0

    nothing = particle_metrics([], radius=3)
    assert nothing["n_micrographs"] == 0 and nothing["f1"] == 1.0

    above_all = particle_metrics([(picks, [0.4, 0.6], truth)], radius=3, threshold=0.9)
    assert above_all["n_pred"] == 0 and above_all["precision"] == 0.0

    for d in (no_picks, no_truth, neither, nothing, above_all):
        assert_json_safe(d)


def test_precision_recall_f1_conventions_table():
    # (tp, n_pred, n_true) -> (precision, recall, f1)
    assert precision_recall_f1(0, 0, 0) == (1.0, 1.0, 1.0)
    assert precision_recall_f1(0, 0, 5) == (0.0, 0.0, 0.0)
    assert precision_recall_f1(0, 5, 0) == (0.0, 1.0, 0.0)
    assert precision_recall_f1(2, 4, 8) == (0.5, 0.25, pytest.approx(2 * 0.5 * 0.25 / 0.75))


def test_empty_curve_methods():
    curve = ParticleCurve(np.empty(0), np.empty(0, dtype=bool), 3)
    p, r, t = curve.pr_curve()
    assert len(p) == len(r) == len(t) == 0
    assert curve.average_precision() == 0.0
    assert curve.at_threshold(0.5)["n_pred"] == 0


def test_unscored_picks_and_item_validation():
    m = particle_metrics([(np.array([[0.0, 0.0], [9.0, 9.0]]), None, [[0.0, 0.0]])], radius=2)
    assert (m["n_pred"], m["tp"], m["best_threshold"]) == (2, 1, 1.0)
    with pytest.raises(ValueError, match="tuple of 2"):
        particle_metrics([([[0, 0]], [[0, 0]])], radius=2)
    with pytest.raises(ValueError, match="descending"):
        ParticleCurve(np.array([0.1, 0.5]), np.array([True, False]), 2)
    with pytest.raises(ValueError, match="NaN"):
        particle_metrics([([[0, 0]], [0.5], [[0, 0]])], radius=2, threshold=float("nan"))


# ---------------------------------------------------------------- pixel level


def test_pixel_metrics_tiny_map_with_ignored_pixels():
    prob = np.array(
        [
            [0.9, 0.8, 0.2],
            [0.6, 0.1, 0.7],
            [0.99, 0.01, 0.4],
        ]
    )
    target = np.array(
        [
            [1, 1, 1],
            [0, 0, -1],
            [-1, -1, 0],
        ]
    )
    # Valid pixels (target != -1), predicted positive when prob >= 0.5:
    #   0.9/1 TP, 0.8/1 TP, 0.2/1 FN, 0.6/0 FP, 0.1/0 TN, 0.4/0 TN
    # The ignored 0.7, 0.99 and 0.01 would change every count if they were used.
    m = pixel_metrics(prob, target, threshold=0.5)
    assert_json_safe(m)
    assert m["level"] == "pixel" and m["threshold"] == 0.5
    assert (m["n_pixels"], m["n_positive"], m["n_ignored"]) == (6, 3, 3)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["iou"] == pytest.approx(2 / 4)  # tp / (tp + fp + fn)
    # ROC-AUC over the 3 x 3 (positive, negative) pairs: positives 0.9, 0.8, 0.2 and
    # negatives 0.6, 0.1, 0.4. 0.9 and 0.8 beat all three negatives; 0.2 beats only 0.1.
    # So AUC = 7/9.
    assert m["roc_auc"] == pytest.approx(7 / 9)
    # Ranking 0.9+ 0.8+ 0.6- 0.4- 0.2+ 0.1-: AP = (1/3)(1 + 1 + 3/5) = 13/15.
    assert m["pr_auc"] == pytest.approx(13 / 15)
    # The best F1 is at threshold 0.8 (P 1, R 2/3, F1 0.8); at 0.2 it is 2*3/(5+3) = 0.75.
    assert m["best_f1"] == pytest.approx(0.8)
    assert m["best_threshold"] == 0.8
    assert m["auc_n_pixels"] == 6


def test_auc_uses_probabilities_not_binarised_predictions():
    # The original script computed roc_auc_score(target, prob > 0.5), which is balanced
    # accuracy. Here the binarised predictions [0, 1, 0, 1] give 0.5, while the
    # probabilities rank 3 of the 4 (positive, negative) pairs correctly: 0.75.
    target = np.array([0, 0, 1, 1])
    prob = np.array([0.1, 0.6, 0.4, 0.9])
    m = pixel_metrics(prob, target)
    binarised_auc = roc_auc_score(target, prob >= 0.5)
    assert binarised_auc == pytest.approx(0.5)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["roc_auc"] != pytest.approx(binarised_auc)
    # Best F1: at 0.4, P 2/3 and R 1 give F1 0.8. That beats 0.5 at 0.5 and 2/3 at 0.9 or 0.1.
    assert m["best_f1"] == pytest.approx(0.8) and m["best_threshold"] == 0.4


def test_single_class_gives_null_auc_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any sklearn/numpy warning fails the test
        only_neg = pixel_metrics(np.array([0.1, 0.7, 0.3]), np.array([0, 0, -1]))
        only_pos = pixel_metrics(np.array([0.1, 0.7]), np.array([1, 1]))
        all_ignored = pixel_metrics(np.array([0.1, 0.7]), np.array([-1, -1]))
    assert only_neg["roc_auc"] is None and only_neg["pr_auc"] is None
    assert only_neg["best_f1"] is None and only_neg["best_threshold"] is None
    assert (only_neg["fp"], only_neg["precision"], only_neg["recall"]) == (1, 0.0, 1.0)
    assert only_pos["roc_auc"] is None and only_pos["pr_auc"] == 1.0
    assert only_pos["recall"] == 0.5
    assert all_ignored["n_pixels"] == 0 and all_ignored["f1"] == 1.0 and all_ignored["iou"] == 1.0
    assert all_ignored["auc_n_pixels"] == 0
    for d in (only_neg, only_pos, all_ignored):
        assert_json_safe(d)


def test_list_of_maps_equals_pooled_pixels():
    rng = np.random.default_rng(1)
    probs = [rng.random((8, 9)), rng.random((5, 5)), rng.random(7)]
    targets = [rng.integers(-1, 2, size=p.shape) for p in probs]
    as_list = pixel_metrics(probs, targets)
    pooled = pixel_metrics(
        np.concatenate([p.ravel() for p in probs]), np.concatenate([t.ravel() for t in targets])
    )
    assert as_list == pooled


def test_subsampling_is_seeded_and_only_affects_threshold_free_figures():
    rng = np.random.default_rng(2)
    target = rng.integers(0, 2, size=(3, 200, 200))
    target[:, :10] = -1
    prob = np.clip(0.3 * target + 0.7 * rng.random(target.shape), 0, 1)
    maps_p, maps_t = list(prob), list(target)
    full = pixel_metrics(maps_p, maps_t, max_pixels=None)
    sub = pixel_metrics(maps_p, maps_t, max_pixels=5000, seed=4)
    again = pixel_metrics(maps_p, maps_t, max_pixels=5000, seed=4)
    assert sub == again
    assert full["auc_n_pixels"] == full["n_pixels"] == 3 * 190 * 200
    assert sub["auc_n_pixels"] == 5000
    exact = ("n_pixels", "n_positive", "tp", "fp", "fn", "tn", "precision", "recall", "f1", "iou")
    for key in exact:
        assert sub[key] == full[key]
    assert sub["roc_auc"] == pytest.approx(full["roc_auc"], abs=0.02)
    assert sub["pr_auc"] == pytest.approx(full["pr_auc"], abs=0.03)


def test_pixel_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        pixel_metrics(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="target values"):
        pixel_metrics(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        pixel_metrics(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="maps"):
        pixel_metrics([np.zeros(2)], [np.zeros(2), np.zeros(2)])
