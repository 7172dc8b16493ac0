"""Target maps: positive disks, ignored rings, background, and unlabelled micrographs."""

from __future__ import annotations

import numpy as np
import pytest

from selfpick.targets import IGNORE, NEGATIVE, POSITIVE, make_target, paint_disks


def _dist(shape, cx, cy):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(xx - cx, yy - cy)


def test_one_particle_disk_ring_and_background():
    shape, R = (40, 50), 8.0  # R = particle radius, model px
    t = make_target(shape, np.array([[30, 12]]), R, positive_radius=0.5, ignore_radius=1.0)
    assert t.shape == shape and t.dtype == np.int8
    d = _dist(shape, 30, 12)  # x = column 30, y = row 12
    np.testing.assert_array_equal(t == POSITIVE, d <= 4.0)
    np.testing.assert_array_equal(t == IGNORE, (d > 4.0) & (d <= 8.0))
    np.testing.assert_array_equal(t == NEGATIVE, d > 8.0)
    assert t[12, 30] == POSITIVE and t[30, 12] == NEGATIVE  # x/y not swapped


@pytest.mark.parametrize("pos,ign", [(0.3, 1.2), (0.5, 0.5), (1.0, 1.5)])
def test_radii_are_fractions_of_the_particle_radius(pos, ign):
    shape, R = (64, 64), 10.0
    t = make_target(shape, np.array([[32.0, 32.0]]), R, positive_radius=pos, ignore_radius=ign)
    d = _dist(shape, 32, 32)
    r_pos, r_ign = max(1.0, pos * R), max(pos * R, ign * R)
    np.testing.assert_array_equal(t == POSITIVE, d <= r_pos)
    np.testing.assert_array_equal(t == IGNORE, (d > r_pos) & (d <= r_ign))


def test_positive_disk_is_at_least_one_pixel_in_radius():
    t = make_target((9, 9), np.array([[4, 4]]), particle_radius=0.4)
    assert np.count_nonzero(t == POSITIVE) == 5  # the centre and its 4 neighbours


def test_centres_are_rounded_to_the_nearest_pixel():
    t = make_target((20, 20), np.array([[10.4, 6.6]]), 2.0, positive_radius=1.0,
                    ignore_radius=1.0)
    np.testing.assert_array_equal(t == POSITIVE, _dist((20, 20), 10, 7) <= 2.0)


def test_a_labelled_particle_is_never_hidden_by_a_neighbours_ring():
    shape, R = (40, 60), 8.0
    a, b = (20, 20), (28, 20)  # b's centre lies on the edge of a's ignored ring
    t = make_target(shape, np.array([a, b]), R)
    for cx, cy in (a, b):
        assert np.all(t[_dist(shape, cx, cy) <= 4.0] == POSITIVE)
    # Listing order does not matter.
    np.testing.assert_array_equal(t, make_target(shape, np.array([b, a]), R))
    # Overlapping particles: both disks positive, the union of rings ignored.
    close = make_target(shape, np.array([[30, 20], [34, 20]]), R)
    for cx in (30, 34):
        assert np.all(close[_dist(shape, cx, 20) <= 4.0] == POSITIVE)


def test_unlabelled_micrograph_is_entirely_ignored():
    t = make_target((30, 40), np.array([[10, 10]]), 5.0, labelled=False)
    assert t.dtype == np.int8 and t.shape == (30, 40)
    assert np.all(t == IGNORE)
    assert np.all(make_target((8, 8), np.zeros((0, 2)), 5.0, labelled=False) == IGNORE)


def test_no_particles_is_all_background():
    t = make_target((16, 16), np.zeros((0, 2)), 4.0)
    assert np.all(t == NEGATIVE)


@pytest.mark.parametrize("cx,cy", [(0, 0), (49, 0), (0, 39), (49, 39), (-1.4, 20), (51.2, 20),
                                   (25, -2), (25, 41)])
def test_centres_at_and_beyond_the_border_are_clipped_not_wrapped(cx, cy):
    shape, R = (40, 50), 8.0
    t = make_target(shape, np.array([[cx, cy]]), R)
    d = _dist(shape, round(cx), round(cy))
    # Exactly the in-image part of the disk and ring: nothing wraps to the opposite edge
    # (negative indices would silently paint the far side in NumPy).
    np.testing.assert_array_equal(t == POSITIVE, d <= 4.0)
    np.testing.assert_array_equal(t == IGNORE, (d > 4.0) & (d <= 8.0))


def test_far_outside_centres_paint_nothing():
    t = make_target((20, 20), np.array([[-50, 5], [5, 100], [-30, -30]]), 4.0)
    assert np.all(t == NEGATIVE)


def test_paint_disks_in_place_and_noop_cases():
    out = np.zeros((10, 10), dtype=np.int8)
    paint_disks(out, np.zeros((0, 2)), 3.0, 1)
    paint_disks(out, np.array([[5, 5]]), 0.0, 1)
    assert not out.any()
    paint_disks(out, [5, 5], 1.0, 7)  # a single (x, y) pair is accepted
    assert np.count_nonzero(out == 7) == 5


def test_ignore_rows_inside_and_outside_a_strip():
    from selfpick.targets import ignore_rows

    t = np.zeros((10, 3), np.int8)
    ignore_rows(t, 2.5, 6.0, inside=True)  # rows 3, 4, 5
    assert (t[:, 0] == IGNORE).nonzero()[0].tolist() == [3, 4, 5]
    t = np.zeros((10, 3), np.int8)
    ignore_rows(t, 2.5, 6.0, inside=False)
    assert (t[:, 0] != IGNORE).nonzero()[0].tolist() == [3, 4, 5]
