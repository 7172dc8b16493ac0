"""Training targets at model scale.

A target map is an ``int8`` array ``(ny, nx)`` in model pixels with values

- ``1``: inside the positive disk around a labelled centre,
- ``0``: background,
- ``-1``: ignored -- the ring around each disk (a particle's edge is neither clearly particle
  nor background, and labelled centres are off by a few pixels) and, for micrographs without
  labels, everything.
"""

from __future__ import annotations

import numpy as np

POSITIVE, NEGATIVE, IGNORE = 1, 0, -1


def _disk_offsets(radius: float) -> tuple[np.ndarray, np.ndarray]:
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    inside = dx * dx + dy * dy <= radius * radius
    return dy[inside], dx[inside]


def paint_disks(out: np.ndarray, centres: np.ndarray, radius: float, value: int) -> None:
    """Set ``out`` to ``value`` within ``radius`` (model px) of each ``(x, y)`` centre, in place.

    Centres are rounded to the nearest pixel; disks are clipped at the image border.
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    if len(centres) == 0 or radius <= 0:
        return
    dy, dx = _disk_offsets(radius)
    cx = np.rint(centres[:, 0]).astype(np.int64)
    cy = np.rint(centres[:, 1]).astype(np.int64)
    ys = (cy[:, None] + dy[None, :]).ravel()
    xs = (cx[:, None] + dx[None, :]).ravel()
    ok = (ys >= 0) & (ys < out.shape[0]) & (xs >= 0) & (xs < out.shape[1])
    out[ys[ok], xs[ok]] = value


def make_target(shape: tuple[int, int], centres: np.ndarray, particle_radius: float,
                positive_radius: float = 0.5, ignore_radius: float = 1.0,
                labelled: bool = True) -> np.ndarray:
    """Target map for one micrograph.

    Parameters
    ----------
    shape: ``(ny, nx)`` in model pixels.
    centres: ``(N, 2)`` labelled particle centres ``(x, y)`` in model pixels.
    particle_radius: particle radius in model pixels.
    positive_radius, ignore_radius: disk and ring radii as fractions of ``particle_radius``.
    labelled: ``False`` for micrographs nobody labelled: everything is ignored.
    """
    if not labelled:
        return np.full(shape, IGNORE, dtype=np.int8)
    target = np.zeros(shape, dtype=np.int8)
    r_pos = max(1.0, positive_radius * particle_radius)
    r_ign = max(r_pos, ignore_radius * particle_radius)
    paint_disks(target, centres, r_ign, IGNORE)
    # Positives last: a neighbour's ring never hides a labelled particle.
    paint_disks(target, centres, r_pos, POSITIVE)
    return target


def ignore_rows(target: np.ndarray, first: float, last: float, inside: bool) -> None:
    """Set the rows of ``target`` from model row ``first`` up to (not including) ``last`` to
    ignore (``inside=True``), or every other row (``inside=False``), in place.

    Rows are model pixels, possibly fractional: a row counts as inside when its index is at
    least ``ceil(first)`` and below ``ceil(last)`` (the rows whose centres a strip of
    original pixels [y0, y1) covers). Used for validation strips (see
    :func:`selfpick.training.data.hold_out_strip`).
    """
    a = int(np.ceil(max(0.0, first)))
    b = int(np.ceil(max(0.0, last)))
    if inside:
        target[a:b] = IGNORE
    else:
        target[:a] = IGNORE
        target[b:] = IGNORE
