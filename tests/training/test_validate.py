"""The picking threshold a model stores: between two validation scores, never on one."""

from __future__ import annotations

import numpy as np

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
