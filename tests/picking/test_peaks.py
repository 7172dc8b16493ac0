"""Peak finding on synthetic score maps: positions, spacing, plateaus, edges, thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selfpick.picking.peaks import (_greedy_nms, find_peaks, inside_margin, micrograph_peaks,
                                    score_map, smooth)
from selfpick.preprocess import Scale


def _blobs(shape, centres, sigma=2.0, heights=None) -> torch.Tensor:
    """Sum of Gaussian bumps at integer ``(x, y)`` centres (x = column, y = row)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros(shape)
    heights = heights if heights is not None else [1.0] * len(centres)
    for (x, y), a in zip(centres, heights):
        out += a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return torch.from_numpy(out.astype(np.float32))


def _min_pairwise(xy: np.ndarray) -> float:
    if len(xy) < 2:
        return np.inf
    d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    d[np.diag_indices(len(xy))] = np.inf
    return float(d.min())


def test_gaussian_blobs_give_their_exact_centres_as_x_column_y_row():
    # Deliberately non-square and asymmetric so that a swapped x/y cannot pass.
    centres = [(10, 40), (55, 12), (30, 25), (70, 50)]
    scores = _blobs((64, 96), centres, heights=[0.9, 0.8, 0.7, 0.6])
    xy, s = find_peaks(scores, min_distance=5)
    # Best first = by height; symmetric blobs on the grid need no sub-pixel shift.
    np.testing.assert_allclose(xy, np.array(centres, dtype=float), atol=1e-3)
    np.testing.assert_allclose(s, [0.9, 0.8, 0.7, 0.6], atol=1e-6)


def test_off_grid_blobs_are_located_to_a_fraction_of_a_pixel():
    # A model pixel is several original pixels: the sub-pixel refinement must move the pick
    # towards the true centre, in the right direction on each axis.
    centres = [(20.3, 30.7), (60.8, 15.2), (45.5, 45.0)]
    scores = _blobs((64, 80), centres, sigma=2.5)
    xy, _ = find_peaks(scores, min_distance=5)
    order = np.lexsort((xy[:, 1], xy[:, 0]))
    expected = np.array(sorted(centres))
    assert np.abs(xy[order] - expected).max() < 0.1


def test_scores_are_descending_and_are_the_map_values_at_the_picks():
    rng = np.random.default_rng(0)
    scores = smooth(torch.from_numpy(rng.random((80, 90)).astype(np.float32)), 1.5)
    xy, s = find_peaks(scores, min_distance=4)
    assert len(xy) > 10
    assert np.all(np.diff(s) <= 0)
    # The score is the map at the maximum's pixel (the position itself is refined).
    rows, cols = np.rint(xy[:, 1]).astype(int), np.rint(xy[:, 0]).astype(int)
    np.testing.assert_allclose(s, scores.numpy()[rows, cols])


@pytest.mark.parametrize("min_distance", [3.0, 6.5, 10.0])
def test_no_two_picks_closer_than_min_distance(min_distance):
    # Noise has maxima everywhere: the square max-pool window alone would let diagonal
    # neighbours through; the circular suppression must remove them.
    rng = np.random.default_rng(1)
    scores = torch.from_numpy(rng.random((120, 100)).astype(np.float32))
    xy, _ = find_peaks(scores, min_distance=min_distance)
    assert len(xy) > 5
    assert _min_pairwise(xy) >= min_distance - 1e-9


def test_a_weaker_blob_within_min_distance_is_suppressed_a_farther_one_kept():
    scores = _blobs((60, 60), [(20, 30), (26, 30), (45, 30)], sigma=1.0, heights=[1.0, 0.9, 0.8])
    xy, _ = find_peaks(scores, min_distance=8)
    # The weaker neighbour leans the stronger pick towards itself by a hair; nothing more.
    np.testing.assert_allclose(xy, [[20.0, 30.0], [45.0, 30.0]], atol=0.05)


def test_saturated_disk_gives_one_pick_at_its_centre():
    # A confident network outputs p = 1.0 over a whole disk; the picking pipeline
    # (score_map smoothing, then peaks) must report it once, at the centre.
    radius = 8.0
    h, w = 64, 64
    yy, xx = np.mgrid[0:h, 0:w]
    prob = torch.from_numpy(((xx - 30) ** 2 + (yy - 33) ** 2 <= radius**2).astype(np.float32))
    xy, s = find_peaks(score_map(prob, radius), min_distance=radius)
    assert len(xy) == 1
    np.testing.assert_allclose(xy[0], [30.0, 33.0], atol=0.01)
    assert s[0] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("radius", [20.0, 27.0, 41.0])
def test_saturated_disk_of_a_fine_map_gives_one_pick_at_its_centre(radius):
    # Maps with many pixels per particle (input stride 2: 40 px per particle) blur the
    # tie-breaker on a coarser grid; the plateau must still peak once, at its centre.
    size = int(4 * radius)
    yy, xx = np.mgrid[0:size, 0:size]
    cx, cy = size // 2 - 1, size // 2 + 2
    prob = torch.from_numpy(((xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2).astype(np.float32))
    # (Threshold 0.5: the blur's far tails leave maxima of ~1e-12 in empty corners, which
    # picking never reaches -- its lowest threshold is KEEP_ALL_FLOOR.)
    xy, s = find_peaks(score_map(prob, radius), min_distance=radius, threshold=0.5)
    assert len(xy) == 1
    np.testing.assert_allclose(xy[0], [cx, cy], atol=1.0)
    assert s[0] == pytest.approx(1.0, abs=1e-3)


def test_coarse_grid_blur_is_close_to_the_full_blur():
    # Only the tie-breaker is blurred on the coarse grid: the score map stays within a
    # small fraction of the tie-break weight of the one blurred at full resolution.
    from selfpick.picking.peaks import TIE_BREAK

    prob = _blobs((120, 100), [(30, 40), (70, 80), (50, 20)], sigma=12.0)
    radius = 24.0
    full = prob + TIE_BREAK * smooth(prob, 0.5 * radius)
    assert torch.allclose(score_map(prob, radius), full, atol=0.05 * TIE_BREAK)


@pytest.mark.parametrize("shape", [(1, 5), (2, 2), (7, 1), (31, 17)])
def test_3x3_maximum_equals_max_pooling(shape):
    from selfpick.picking.peaks import _max3x3

    x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
    pooled = torch.nn.functional.max_pool2d(x[None, None], 3, stride=1, padding=1)[0, 0]
    torch.testing.assert_close(_max3x3(x), pooled, rtol=0, atol=0)


def test_flat_plateau_of_ones_gives_one_pick():
    # Without smoothing every plateau pixel ties in the max-pool; the suppression keeps one.
    scores = torch.zeros(40, 40)
    scores[10:14, 20:24] = 1.0
    xy, s = find_peaks(scores, min_distance=6)
    assert len(xy) == 1
    assert 20 <= xy[0, 0] <= 23 and 10 <= xy[0, 1] <= 13
    assert s.tolist() == [1.0]


def test_edge_margin_drops_picks_closer_than_the_margin_and_keeps_those_at_it():
    h, w, m = 50, 70, 6
    inside = [(m, 25), (w - 1 - m, 25), (35, m), (35, h - 1 - m)]  # exactly m from an edge
    outside = [(m - 1, 10), (w - m, 40), (20, m - 1), (50, h - m)]  # m - 1 from an edge
    scores = _blobs((h, w), inside + outside, sigma=1.0)
    xy, _ = find_peaks(scores, min_distance=3, edge_margin=m)
    order = np.lexsort((xy[:, 1], xy[:, 0]))
    np.testing.assert_allclose(xy[order], np.array(sorted(inside), dtype=float), atol=1e-3)
    # The margin applies to the maximum's pixel; sub-pixel refinement may then move a pick by
    # up to half a pixel (pick_image re-checks the margin in original pixels).
    assert np.all((xy[:, 0] >= m - 0.5) & (xy[:, 0] <= w - 1 - m + 0.5))
    assert np.all((xy[:, 1] >= m - 0.5) & (xy[:, 1] <= h - 1 - m + 0.5))
    # Without a margin all eight are found (the margin, not the blob shape, removed them).
    assert len(find_peaks(scores, min_distance=3)[0]) == 8


def test_threshold_is_inclusive_and_respected():
    heights = [0.9, 0.5, 0.3, 0.1]
    scores = _blobs((40, 100), [(10, 20), (35, 20), (60, 20), (85, 20)], sigma=1.0,
                    heights=heights)
    xy, s = find_peaks(scores, min_distance=5, threshold=0.3)
    np.testing.assert_allclose(xy[:, 0], [10.0, 35.0, 60.0], atol=1e-3)
    assert np.all(s >= 0.3)
    # A score exactly at the threshold is kept (score >= threshold, as everywhere in selfpick).
    t = float(scores[20, 60])
    kept = find_peaks(scores, min_distance=5, threshold=t)[0][:, 0]
    assert np.isclose(kept, 60.0, atol=1e-3).any()


def test_empty_and_zero_maps_give_no_picks():
    xy, s = find_peaks(torch.zeros(30, 30), min_distance=4)
    assert xy.shape == (0, 2) and s.shape == (0,)
    xy, s = find_peaks(_blobs((30, 30), [(15, 15)]), min_distance=4, threshold=1.5)
    assert xy.shape == (0, 2) and s.shape == (0,)


def test_max_peaks_keeps_the_best():
    scores = _blobs((40, 100), [(10, 20), (35, 20), (60, 20)], sigma=1.0, heights=[0.2, 0.9, 0.5])
    xy, s = find_peaks(scores, min_distance=5, max_peaks=2)
    np.testing.assert_allclose(xy[:, 0], [35.0, 60.0], atol=1e-3)


def test_particle_peaks_takes_the_minimum_distance_as_a_fraction_of_the_diameter():
    from selfpick.picking.peaks import particle_peaks

    prob = torch.zeros(64, 64)
    for x, y in [(10, 10), (17, 10), (40, 40)]:  # two centres 7 px apart, one alone
        prob[y, x] = 0.9
    radius = 5.0  # diameter 10 px
    xy_close, _ = particle_peaks(prob, radius, min_distance=0.5)  # 5 px: both kept
    xy_far, _ = particle_peaks(prob, radius, min_distance=1.0)  # 10 px: one suppressed
    assert len(xy_close) == 3 and len(xy_far) == 2
    ref = find_peaks(score_map(prob, radius), 0.5 * 2 * radius)
    np.testing.assert_array_equal(xy_close, ref[0])


def test_micrograph_peaks_drop_edge_picks_in_original_pixels():
    # Model map 40 x 40 at 5 original px per model px: a 200 x 200 micrograph.
    centres = [(2, 20), (20, 20), (37, 5)]
    prob = _blobs((40, 40), centres, sigma=1.0)
    scale = Scale(5.0, 5.0)
    xy, s = micrograph_peaks(prob, scale, (200, 200), radius=2.0, min_distance=0.5)
    assert len(xy) == 3
    xy, s = micrograph_peaks(prob, scale, (200, 200), radius=2.0, min_distance=0.5,
                             edge_margin=20.0)
    np.testing.assert_allclose(xy, [[100.0, 100.0]], atol=0.5)
    assert inside_margin(xy, (200, 200), 20.0).all()


def test_an_edge_peak_does_not_suppress_a_particle_just_inside_the_margin():
    # A strong peak in the margin next to a weaker particle inside, closer than the minimum
    # distance: without the margin the strong one wins; with it the particle is kept.
    prob = _blobs((40, 40), [(1, 20), (5, 20)], sigma=0.8, heights=[1.0, 0.6])
    scale = Scale(1.0, 1.0)
    xy, _ = micrograph_peaks(prob, scale, (40, 40), radius=4.0, min_distance=0.75)
    assert len(xy) == 1 and xy[0, 0] < 3
    xy, _ = micrograph_peaks(prob, scale, (40, 40), radius=4.0, min_distance=0.75,
                             edge_margin=3.0)
    assert len(xy) == 1 and abs(xy[0, 0] - 5) < 0.5


def test_inside_margin_is_inclusive():
    xy = np.array([[3, 3], [2.9, 10], [10, 16], [10, 16.1]])
    assert inside_margin(xy, (20, 20), 3.0).tolist() == [True, False, True, False]


def _greedy_reference(xy: np.ndarray, min_distance: float) -> list[int]:
    """Greedy suppression by brute force: a point survives unless a kept better one is closer
    than ``min_distance``."""
    kept: list[int] = []
    for i in range(len(xy)):
        if all(np.hypot(*(xy[i] - xy[j])) > min_distance - 1e-9 for j in kept):
            kept.append(i)
    return kept


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 60), min_distance=st.floats(0.5, 25.0), integer=st.booleans(),
       seed=st.integers(0, 2**16))
def test_greedy_nms_matches_brute_force_suppression(n, min_distance, integer, seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-30, 60, size=(n, 2))
    if integer:  # exact ties in distance, as on a pixel grid
        xy = np.round(xy)
    assert _greedy_nms(xy, min_distance).tolist() == _greedy_reference(xy, min_distance)


def test_flat_region_gives_picks_spaced_by_the_minimum_distance():
    # A blank region (constant input -> constant network output) makes every pixel a tied
    # maximum; suppression must still return a proper lattice of picks, not one per pixel.
    scores = torch.full((300, 300), 0.05)
    xy, s = find_peaks(scores, min_distance=20)
    assert _min_pairwise(xy) >= 20 - 1e-9
    assert 100 <= len(xy) <= (300 // 20 + 1) ** 2 * 2
    assert np.all(s == np.float32(0.05))
