"""Tests for the one-to-one greedy-by-score matching of picks to ground-truth centres."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from selfpick.evaluation import matching
from selfpick.evaluation.matching import match_picks


def reference_match(pred, scores, truth, radius):
    """Brute-force transcription of the rule in the module docstring (O(N*M), for checking)."""
    n = len(pred)
    order = list(range(n)) if scores is None else sorted(range(n), key=lambda i: -scores[i])
    taken = set()
    matched = [-1] * n
    for i in order:  # Python's sort is stable: ties keep input order
        best_j, best_d = -1, math.inf
        for j in range(len(truth)):
            if j in taken:
                continue
            dx, dy = pred[i][0] - truth[j][0], pred[i][1] - truth[j][1]
            d = math.sqrt(dx * dx + dy * dy)
            if d <= radius and d < best_d:  # strict <: equal distance keeps the lower index
                best_j, best_d = j, d
        if best_j >= 0:
            taken.add(best_j)
            matched[i] = best_j
    return np.array(matched)


def test_picks_exactly_on_truths():
    truth = np.array([[10.0, 10.0], [50.0, 20.0], [30.0, 80.0]])
    pred = truth[[2, 0, 1]]  # same points, another order
    res = match_picks(pred, [0.5, 0.9, 0.1], truth, radius=5)
    assert res.is_tp.tolist() == [True, True, True]
    assert res.matched_truth.tolist() == [2, 0, 1]
    assert res.distance.tolist() == [0.0, 0.0, 0.0]
    assert res.n_tp == 3


def test_shift_within_outside_and_on_the_radius():
    truth = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0]])
    # (3, 4) is exactly 5 from the first truth; 4.9 and 5.1 from the others.
    pred = np.array([[3.0, 4.0], [104.9, 0.0], [205.1, 0.0]])
    res = match_picks(pred, None, truth, radius=5.0)
    assert res.is_tp.tolist() == [True, True, False]  # distance == radius counts
    assert res.distance[0] == 5.0
    assert res.distance[1] == pytest.approx(4.9)
    assert math.isnan(res.distance[2])
    assert res.matched_truth.tolist() == [0, 1, -1]
    # Just below the boundary distance the first pick no longer matches.
    assert not match_picks(pred[:1], None, truth, radius=4.999).is_tp[0]


def test_duplicates_higher_score_wins_even_if_farther():
    truth = np.array([[50.0, 50.0]])
    # The low-score pick sits exactly on the centre, the high-score one is 3 px off.
    pred = np.array([[50.0, 50.0], [53.0, 50.0]])
    res = match_picks(pred, [0.2, 0.8], truth, radius=10)
    assert res.is_tp.tolist() == [False, True]
    assert res.matched_truth.tolist() == [-1, 0]
    assert res.distance[1] == 3.0


def test_equal_scores_keep_input_order():
    truth = np.array([[0.0, 0.0]])
    pred = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    res = match_picks(pred, [0.5, 0.5, 0.5], truth, radius=5)
    assert res.is_tp.tolist() == [True, False, False]
    # scores=None: the input order is the ranking.
    assert match_picks(pred, None, truth, radius=5).is_tp.tolist() == [True, False, False]


def test_pick_between_two_particles():
    truth = np.array([[0.0, 0.0], [10.0, 0.0]])
    # A pick exactly halfway is 5 px from both; the lower truth index wins the tie.
    res = match_picks([[5.0, 0.0]], [0.9], truth, radius=6)
    assert res.matched_truth.tolist() == [0]
    # A lower-scored pick next to truth 1 still gets it.
    res = match_picks([[5.0, 0.0], [9.0, 0.0]], [0.9, 0.5], truth, radius=6)
    assert res.matched_truth.tolist() == [0, 1]
    # A lower-scored pick next to truth 0 loses it to the earlier pick. Greedy matching does
    # not reassign: truth 1 is 9 px away, beyond the radius, so this pick is an FP.
    res = match_picks([[5.0, 0.0], [1.0, 0.0]], [0.9, 0.5], truth, radius=6)
    assert res.matched_truth.tolist() == [0, -1]


def test_between_two_particles_takes_the_nearer_one():
    truth = np.array([[0.0, 0.0], [6.0, 0.0]])
    # Pick p1 (score 0.9) is 3.5 from A and 2.5 from B, so it takes B, the nearer one.
    # Pick p2 (score 0.5) is 8 from A (> 5) and 2 from B, which is already taken: FP.
    # A rule that gave p1 the first truth in the list (A) would make both picks TPs. The
    # nearest rule gives one TP here, which pins down which rule is implemented.
    res = match_picks([[3.5, 0.0], [8.0, 0.0]], [0.9, 0.5], truth, radius=5)
    assert res.matched_truth.tolist() == [1, -1]
    assert res.distance[0] == 2.5
    # Reversing the scores lets p2 take B; p1 then falls back to A (3.5 <= 5).
    res = match_picks([[3.5, 0.0], [8.0, 0.0]], [0.5, 0.9], truth, radius=5)
    assert res.matched_truth.tolist() == [0, 1]


def test_empty_picks_empty_truth_both_empty():
    truth = np.array([[1.0, 1.0], [5.0, 5.0]])
    res = match_picks(np.empty((0, 2)), np.empty(0), truth, radius=3)
    assert res.is_tp.shape == (0,) and res.is_tp.dtype == bool
    assert res.matched_truth.shape == (0,) and res.distance.shape == (0,)

    res = match_picks([[1.0, 1.0], [9.0, 9.0]], [0.3, 0.4], np.empty((0, 2)), radius=3)
    assert res.is_tp.tolist() == [False, False]
    assert res.matched_truth.tolist() == [-1, -1]
    assert np.isnan(res.distance).all()

    res = match_picks([], None, [], radius=3)  # plain empty lists work too
    assert len(res.is_tp) == 0 and res.n_tp == 0


def test_radius_zero_matches_only_coincident_points():
    res = match_picks([[1.0, 1.0], [2.0, 2.5]], None, [[1.0, 1.0], [2.0, 2.0]], radius=0)
    assert res.is_tp.tolist() == [True, False]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pred_xy=[[1, 2, 0.9]], scores=None, true_xy=[[1, 2]], radius=3), "shape"),
        (dict(pred_xy=[[1, 2]], scores=[0.1, 0.2], true_xy=[[1, 2]], radius=3), "2 values for 1"),
        (dict(pred_xy=[[1, 2]], scores=[np.nan], true_xy=[[1, 2]], radius=3), "NaN"),
        (dict(pred_xy=[[1, np.nan]], scores=None, true_xy=[[1, 2]], radius=3), "NaN"),
        (dict(pred_xy=[[1, 2]], scores=None, true_xy=[[1, 2]], radius=-1), "radius"),
        (dict(pred_xy=[[1, 2]], scores=None, true_xy=[[1, 2]], radius=np.nan), "radius"),
    ],
)
def test_bad_inputs_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        match_picks(**kwargs)


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_brute_force_reference(seed):
    # Integer coordinates and few distinct scores produce many exact distance ties, score ties
    # and points exactly on the radius: the cases where a fast implementation could diverge.
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, 25, size=(60, 2)).astype(float)
    truth = rng.integers(0, 25, size=(40, 2)).astype(float)
    scores = rng.integers(0, 5, size=60).astype(float)
    for radius in (0.0, 1.0, 2.0, 5.0):
        for s in (scores, None):
            res = match_picks(pred, s, truth, radius)
            s_list = None if s is None else s.tolist()
            expected = reference_match(pred.tolist(), s_list, truth.tolist(), radius)
            np.testing.assert_array_equal(res.matched_truth, expected)
            d = np.hypot(*(pred[res.is_tp] - truth[res.matched_truth[res.is_tp]]).T)
            np.testing.assert_allclose(res.distance[res.is_tp], d)


def test_chunked_path_gives_same_result(monkeypatch):
    # A radius that is too large for the data (e.g. in the wrong units) makes every pick a
    # candidate for every truth. The matching then runs in chunks of predictions to bound
    # memory, and must not change the result.
    rng = np.random.default_rng(7)
    pred = rng.uniform(0, 100, size=(300, 2))
    truth = rng.uniform(0, 100, size=(200, 2))
    scores = rng.random(300)
    whole = match_picks(pred, scores, truth, radius=60)
    monkeypatch.setattr(matching, "_MAX_PAIRS_PER_CHUNK", 1000)
    chunked = match_picks(pred, scores, truth, radius=60)
    np.testing.assert_array_equal(whole.matched_truth, chunked.matched_truth)
    np.testing.assert_array_equal(whole.distance, chunked.distance)
    assert whole.n_tp == 200  # 300 picks all within range of everything: every truth is taken


def test_ten_thousand_by_ten_thousand_is_fast():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 4096, size=(10_000, 2))
    # Half the picks near a truth, half random, so there are many matches and many misses.
    near = truth[:5000] + rng.normal(0, 5, size=(5000, 2))
    pred = np.vstack([near, rng.uniform(0, 4096, size=(5000, 2))])
    scores = rng.random(10_000)
    t0 = time.perf_counter()
    res = match_picks(pred, scores, truth, radius=20)
    elapsed = time.perf_counter() - t0
    assert res.n_tp >= 4900
    assert elapsed < 2.0  # typically ~0.02 s; the bound is loose for slow CI machines
