"""Validation metrics: particle level (what the field reports) and pixel level.

Particle level
--------------
Picks are matched one-to-one to ground-truth centres by
:func:`selfpick.evaluation.matching.match_picks`: greedy by score, nearest free truth within
``radius``, inclusive. Micrographs are matched separately: a pick never matches a truth of
another micrograph. The per-pick outcomes are then pooled into one ranking, a
:class:`ParticleCurve`. All threshold rules use ``score >= t``.
Because matching is greedy by score, the picks kept at any threshold are a prefix of that
ranking, and their TP/FP labels are exactly what matching only those picks would give.

With ``n_pred`` kept picks, ``n_true`` truths and ``tp`` matches:

* ``precision = tp / n_pred``; with ``n_pred == 0`` it is 1.0 if ``n_true == 0`` (nothing to find,
  nothing wrongly claimed) and 0.0 otherwise;
* ``recall = tp / n_true``; with ``n_true == 0`` it is 1.0;
* ``f1 = 2 tp / (n_pred + n_true)``. This equals the harmonic mean of the two above whenever that is
  defined. With ``n_pred == n_true == 0`` it is 1.0.

``average_precision`` is non-interpolated and Topaz-style: the sum, over the distinct score
levels from high to low, of precision at that level times the true positives it adds, divided by
``n_true``. Truths that no pick matches therefore cap it below 1. Tied scores enter together,
so the result does not depend on how ties are ordered. Without ties it is the sum over TPs in
rank order of precision@k divided by ``n_true``. With ``n_true == 0`` it is 0.0 by convention.

Every dictionary returned here is JSON-ready: plain ``int``/``float``/``str``/``None``, never NaN.

Pixel level
-----------
:func:`pixel_metrics` compares a probability map with a ``{1, 0, -1}`` target. Pixels marked -1
are ignored. Its ROC-AUC and PR-AUC use the **probabilities**. The original research script
computed "AUC" from 0/1 predictions, which gives balanced accuracy instead. Pixel figures can be
compared with the original notes but not with particle-level figures from the literature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from selfpick.evaluation.matching import check_points, check_radius, check_scores, match_picks

__all__ = [
    "ParticleCurve",
    "particle_curve",
    "particle_metrics",
    "pixel_metrics",
    "precision_recall_f1",
]


# --------------------------------------------------------------------------- conventions


def precision_recall_f1(tp, n_pred, n_true) -> tuple:
    """Precision, recall and F1 with the module's empty-case conventions (never NaN).

    Arguments may be scalars or arrays (broadcast together). Scalars return floats.
    """
    tp_a = np.asarray(tp, dtype=np.float64)
    pred_a = np.asarray(n_pred, dtype=np.float64)
    true_a = np.asarray(n_true, dtype=np.float64)
    denom = pred_a + true_a
    # np.where evaluates both branches; the empty-case branch is then discarded, so silence
    # the 0/0 it computes.
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_a > 0, tp_a / pred_a, np.where(true_a == 0, 1.0, 0.0))
        recall = np.where(true_a > 0, tp_a / true_a, 1.0)
        f1 = np.where(denom > 0, 2.0 * tp_a / denom, 1.0)
    if precision.ndim == 0:
        return float(precision), float(recall), float(f1)
    return precision, recall, f1


def _counts_dict(threshold, tp: int, n_pred: int, n_true: int) -> dict:
    p, r, f = precision_recall_f1(tp, n_pred, n_true)
    return {
        "threshold": None if threshold is None else float(threshold),
        "n_pred": int(n_pred),
        "tp": int(tp),
        "fp": int(n_pred - tp),
        "fn": int(n_true - tp),
        "precision": p,
        "recall": r,
        "f1": f,
    }


def _check_threshold(threshold) -> float | None:
    if threshold is None:
        return None
    t = float(threshold)
    if math.isnan(t):
        raise ValueError("threshold must not be NaN")
    return t


# --------------------------------------------------------------------------- particle level


@dataclass(eq=False)
class ParticleCurve:
    """Pooled pick outcomes, ranked from highest to lowest score.

    Attributes
    ----------
    scores:
        ``(K,)`` float, descending: every pick of every micrograph.
    is_tp:
        ``(K,)`` bool, aligned with ``scores``: the pick was matched to a truth.
    n_true:
        Number of ground-truth particles over all micrographs.
    """

    scores: np.ndarray
    is_tp: np.ndarray
    n_true: int
    # Derived arrays, one entry per distinct score level (the points where the curve can move).
    _level_end: np.ndarray = field(init=False, repr=False)
    _tp_cum: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.is_tp = np.asarray(self.is_tp, dtype=bool).reshape(-1)
        self.n_true = int(self.n_true)
        if self.scores.shape != self.is_tp.shape:
            raise ValueError("scores and is_tp must have the same length")
        if np.any(np.diff(self.scores) > 0) or np.isnan(self.scores).any():
            raise ValueError("scores must be sorted in descending order and contain no NaN")
        if int(self.is_tp.sum()) > self.n_true:
            raise ValueError("more true positives than ground-truth particles")
        self._tp_cum = np.cumsum(self.is_tp, dtype=np.int64)
        k = len(self.scores)
        # Index of the last pick of each run of equal scores: a threshold equal to that score
        # keeps every pick up to and including it.
        is_end = np.ones(k, dtype=bool)
        if k > 1:
            is_end[:-1] = self.scores[1:] != self.scores[:-1]
        self._level_end = np.flatnonzero(is_end)

    def _levels(self):
        """(n_pred, tp, threshold) at each distinct score level, highest threshold first."""
        n_pred = self._level_end + 1
        return n_pred, self._tp_cum[self._level_end], self.scores[self._level_end]

    def at_threshold(self, t: float | None) -> dict:
        """Counts and P/R/F1 for the picks with ``score >= t``. ``t=None`` keeps every pick.

        Returns a dict with ``threshold, n_pred, tp, fp, fn, precision, recall, f1``.
        """
        t = _check_threshold(t)
        if t is None:
            n = len(self.scores)
        else:
            # scores descending, so -scores is ascending. Counting -s <= -t counts s >= t.
            n = int(np.searchsorted(-self.scores, -t, side="right"))
        tp = int(self._tp_cum[n - 1]) if n else 0
        return _counts_dict(t, tp, n, self.n_true)

    def best(self) -> dict:
        """The threshold with the highest F1, with its counts and P/R/F1 (as :meth:`at_threshold`).

        Only thresholds equal to a pick score are tried, so at least one pick is kept and
        ``at_threshold(best()["threshold"])`` reproduces the same figures. When several
        thresholds tie on F1, the highest wins (fewest picks). With no picks at all,
        ``threshold`` is ``None``.
        """
        if len(self.scores) == 0:
            return _counts_dict(None, 0, 0, self.n_true)
        n_pred, tp, thr = self._levels()
        _, _, f1 = precision_recall_f1(tp, n_pred, self.n_true)
        k = int(np.argmax(f1))  # first maximum, i.e. the highest threshold among ties
        return _counts_dict(thr[k], int(tp[k]), int(n_pred[k]), self.n_true)

    def average_precision(self) -> float:
        """Non-interpolated AP of the pooled ranking over ``n_true`` (0.0 if ``n_true == 0``).

        Truths that no pick matches cap the attainable recall, and so the AP, below 1. See
        the module docstring.
        """
        if self.n_true == 0 or len(self.scores) == 0:
            return 0.0
        n_pred, tp, _ = self._levels()
        new_tp = np.diff(tp, prepend=0)
        return float(np.sum(tp / n_pred * new_tp) / self.n_true)

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(precision, recall, thresholds)``: one point per distinct score, thresholds descending.

        Point ``i`` describes the picks with ``score >= thresholds[i]``, so recall never
        decreases along the arrays. All three are empty when there are no picks.
        """
        n_pred, tp, thr = self._levels()
        if len(thr) == 0:
            empty = np.empty(0, dtype=np.float64)
            return empty, empty.copy(), empty.copy()
        precision, recall, _ = precision_recall_f1(tp, n_pred, self.n_true)
        return precision, recall, thr.copy()


@dataclass
class _MicrographResult:
    name: str | None
    scores: np.ndarray  # (N,) float, input order
    is_tp: np.ndarray  # (N,) bool, input order
    n_true: int


def _unpack(item) -> tuple:
    """Accept ``(pred_xy, scores, true_xy)`` or ``(name, pred_xy, scores, true_xy)``."""
    item = tuple(item)
    if len(item) == 3:
        return (None, *item)
    if len(item) == 4:
        return item
    raise ValueError(
        "each micrograph must be (pred_xy, scores, true_xy) or (name, pred_xy, scores, true_xy); "
        f"got a tuple of {len(item)} items"
    )


def _match_all(per_micrograph: Iterable, radius: float) -> list[_MicrographResult]:
    r = check_radius(radius)
    out = []
    for item in per_micrograph:
        name, pred_xy, scores, true_xy = _unpack(item)
        res = match_picks(pred_xy, scores, true_xy, r)
        n = len(res.is_tp)
        s = check_scores(scores, n)
        if s is None:
            # Unscored picks all count as score 1.0. They are ranked by input order for matching
            # and kept together at any threshold <= 1.
            s = np.ones(n, dtype=np.float64)
        n_true = len(check_points(true_xy, "true_xy"))
        out.append(_MicrographResult(None if name is None else str(name), s, res.is_tp, n_true))
    return out


def _pool(results: list[_MicrographResult]) -> ParticleCurve:
    if results:
        scores = np.concatenate([m.scores for m in results])
        is_tp = np.concatenate([m.is_tp for m in results])
    else:
        scores, is_tp = np.empty(0), np.empty(0, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    return ParticleCurve(scores[order], is_tp[order], sum(m.n_true for m in results))


def particle_curve(per_micrograph: Iterable, radius: float) -> ParticleCurve:
    """Match every micrograph and pool the outcomes into one :class:`ParticleCurve`.

    Parameters
    ----------
    per_micrograph:
        Iterable of ``(pred_xy, scores, true_xy)`` or ``(name, pred_xy, scores, true_xy)``.
        ``pred_xy`` is ``(N, 2)``, ``scores`` is ``(N,)`` or ``None`` (unscored picks count as
        score 1.0), and ``true_xy`` is ``(M, 2)``. Centres are ``(x, y)`` in pixels.
    radius:
        Match radius in the same pixel units, inclusive. The default is half the particle
        diameter.
    """
    return _pool(_match_all(per_micrograph, radius))


def particle_metrics(
    per_micrograph: Iterable, radius: float, threshold: float | None = None
) -> dict:
    """Particle-level validation figures as a JSON-ready dict.

    Parameters
    ----------
    per_micrograph, radius:
        As for :func:`particle_curve`.
    threshold:
        Picks with ``score >= threshold`` count for ``n_pred/tp/fp/fn/precision/recall/f1``
        (usually the model's picking threshold). ``None`` counts **every** pick, as if the
        threshold were ``-inf``. The output then has ``"threshold": null`` and
        ``"threshold_rule": "all picks"``.

    Returns
    -------
    dict
        ``level`` ("particle"), ``match_radius``, ``threshold``, ``threshold_rule``,
        ``n_micrographs``, ``n_true``, ``n_pred``, ``tp``, ``fp``, ``fn``, ``precision``,
        ``recall``, ``f1``, ``best_f1``, ``best_threshold`` (a pick score, or ``None`` when
        there are no picks), ``best_precision``, ``best_recall``, ``best_n_pred``,
        ``average_precision``. When any item carries a name, there is also ``per_micrograph``:
        a list of ``{name, n_true, n_pred, tp, fp, fn, precision, recall, f1}`` at the threshold,
        in input order; unnamed items get ``name: null``.
        The empty-case conventions are in the module docstring. No value is NaN.
    """
    r = check_radius(radius)
    t = _check_threshold(threshold)
    mics = _match_all(per_micrograph, r)
    curve = _pool(mics)
    at = curve.at_threshold(t)
    best = curve.best()
    out = {
        "level": "particle",
        "match_radius": r,
        "threshold": t,
        "threshold_rule": "all picks" if t is None else "score >= threshold",
        "n_micrographs": len(mics),
        "n_true": curve.n_true,
        "n_pred": at["n_pred"],
        "tp": at["tp"],
        "fp": at["fp"],
        "fn": at["fn"],
        "precision": at["precision"],
        "recall": at["recall"],
        "f1": at["f1"],
        "best_f1": best["f1"],
        "best_threshold": best["threshold"],
        "best_precision": best["precision"],
        "best_recall": best["recall"],
        "best_n_pred": best["n_pred"],
        "average_precision": curve.average_precision(),
    }
    if any(m.name is not None for m in mics):
        rows = []
        for m in mics:
            # Greedy-by-score matching means a micrograph's picks above t keep their labels
            # (prefix property), so the per-micrograph counts need no rematching.
            keep = np.ones(len(m.scores), dtype=bool) if t is None else m.scores >= t
            row = _counts_dict(t, int(np.count_nonzero(m.is_tp[keep])), int(keep.sum()), m.n_true)
            del row["threshold"]
            rows.append({"name": m.name, "n_true": m.n_true, **row})
        out["per_micrograph"] = rows
    return out


# --------------------------------------------------------------------------- pixel level


def _as_map_list(x) -> list:
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _valid_pixels(prob_i, target_i, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Flattened ``(probabilities, is_positive)`` of the non-ignored pixels of one map."""
    p = np.asarray(prob_i)
    t = np.asarray(target_i)
    if p.shape != t.shape:
        raise ValueError(f"map {index}: prob shape {p.shape} differs from target shape {t.shape}")
    p = p.reshape(-1)
    t = t.reshape(-1)
    valid = t != -1
    tv = t[valid]
    if not np.isin(tv, (0, 1)).all():
        raise ValueError(
            f"map {index}: target values must be 1 (particle), 0 (background) or -1 (ignore)"
        )
    pv = p[valid].astype(np.float64, copy=False)
    if not np.isfinite(pv).all():
        raise ValueError(f"map {index}: probabilities contain NaN or infinite values")
    return pv, tv == 1


def pixel_metrics(
    prob,
    target,
    threshold: float = 0.5,
    max_pixels: int | None = 2_000_000,
    seed: int = 0,
) -> dict:
    """Pixel-level figures on the valid pixels (``target != -1``) of one or several maps.

    Parameters
    ----------
    prob:
        Probability map (any shape, values in [0, 1]) or a list of maps.
    target:
        Same shape or list of shapes. 1 = particle, 0 = background, -1 = ignored.
    threshold:
        A pixel is predicted positive when ``prob >= threshold``.
    max_pixels:
        The threshold-free figures (``roc_auc``, ``pr_auc``, ``best_f1``, ``best_threshold``)
        sort the probabilities, so they use a seeded, uniform random sample without
        replacement of at most this many valid pixels, pooled over all maps. ``None`` uses
        every pixel. The figures at ``threshold`` always use every valid pixel.
    seed:
        Seed of that sample, so the same inputs give the same figures.

    Returns
    -------
    dict
        ``level`` ("pixel"), ``threshold``, ``n_pixels`` (valid), ``n_positive``, ``n_ignored``,
        ``tp``, ``fp``, ``fn``, ``tn``, and ``precision``, ``recall``, ``f1`` (conventions in
        the module docstring), ``iou`` = tp / (tp + fp + fn) (1.0 when that is 0), all at
        ``threshold``. Then ``roc_auc`` and ``pr_auc``
        (= ``sklearn.metrics.average_precision_score``) from the probabilities, and ``best_f1``
        with its ``best_threshold`` (a probability, over the
        ``sklearn.metrics.precision_recall_curve`` thresholds). Finally
        ``auc_n_pixels``, the size of the sample those four used.
        ``roc_auc`` is ``None`` unless the sample holds both classes. ``pr_auc``,
        ``best_f1`` and ``best_threshold`` are ``None`` when it holds no positive pixel.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    thr = float(threshold)
    if math.isnan(thr):
        raise ValueError("threshold must not be NaN")
    if max_pixels is not None and int(max_pixels) < 1:
        raise ValueError(f"max_pixels must be >= 1 or None; got {max_pixels!r}")
    probs = _as_map_list(prob)
    targets = _as_map_list(target)
    if len(probs) != len(targets):
        raise ValueError(f"{len(probs)} probability maps for {len(targets)} target maps")

    # Pass 1: exact counts at the threshold on every valid pixel (cheap, no sorting).
    tp = fp = fn = tn = 0
    n_total = 0
    n_valid = []
    for i, (p_i, t_i) in enumerate(zip(probs, targets)):
        pv, yv = _valid_pixels(p_i, t_i, i)
        n_total += int(np.asarray(t_i).size)
        pred = pv >= thr
        a = int(np.count_nonzero(pred & yv))
        b = int(np.count_nonzero(pred))
        c = int(np.count_nonzero(yv))
        tp, fp, fn, tn = tp + a, fp + b - a, fn + c - a, tn + len(pv) - b - c + a
        n_valid.append(len(pv))
    n_pix = tp + fp + fn + tn
    n_pos = tp + fn
    precision, recall, f1 = precision_recall_f1(tp, tp + fp, n_pos)
    iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0

    # Pass 2: the sample for the threshold-free figures. Drawing how many pixels come from each
    # map (multivariate hypergeometric), then which ones, is exactly a uniform sample without
    # replacement of the pooled pixels, with no need to concatenate every map in memory.
    rng = np.random.default_rng(seed)
    if max_pixels is None or n_pix <= int(max_pixels):
        take = None
    else:
        take = rng.multivariate_hypergeometric(np.asarray(n_valid, dtype=np.int64), int(max_pixels))
    s_parts, y_parts = [], []
    for i, (p_i, t_i) in enumerate(zip(probs, targets)):
        if take is not None and take[i] == 0:
            continue
        pv, yv = _valid_pixels(p_i, t_i, i)
        if take is not None and take[i] < len(pv):
            idx = rng.choice(len(pv), size=int(take[i]), replace=False)
            pv, yv = pv[idx], yv[idx]
        s_parts.append(pv)
        y_parts.append(yv)
    s = np.concatenate(s_parts) if s_parts else np.empty(0)
    y = np.concatenate(y_parts) if y_parts else np.empty(0, dtype=bool)
    n_pos_s = int(np.count_nonzero(y))

    roc_auc = pr_auc = best_f1 = best_threshold = None
    # The undefined cases are skipped before calling sklearn, which would otherwise raise or
    # warn on every validation pass.
    if 0 < n_pos_s < len(y):
        roc_auc = float(roc_auc_score(y, s))
    if n_pos_s > 0:
        pr_auc = float(average_precision_score(y, s))
        prec, rec, thresholds = precision_recall_curve(y, s)
        # The last (precision=1, recall=0) point has no threshold.
        prec, rec = prec[:-1], rec[:-1]
        denom = prec + rec
        f1s = np.divide(2 * prec * rec, denom, out=np.zeros_like(denom), where=denom > 0)
        # thresholds ascend; take the highest threshold among equal F1 (fewest positives).
        k = len(f1s) - 1 - int(np.argmax(f1s[::-1]))
        best_f1, best_threshold = float(f1s[k]), float(thresholds[k])

    return {
        "level": "pixel",
        "threshold": thr,
        "n_pixels": int(n_pix),
        "n_positive": int(n_pos),
        "n_ignored": int(n_total - n_pix),
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "tn": int(tn),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "iou": float(iou),
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        "best_f1": best_f1,
        "best_threshold": best_threshold,
        "auc_n_pixels": int(len(y)),
    }
