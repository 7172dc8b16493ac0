"""Validation of a model against the user's original ground truth (never pseudo-labels).

Pixel level: the probability map against the ground-truth target on its valid pixels.
Particle level: picks (peaks of the map, exactly as ``selfpick pick`` finds them) matched
one-to-one to labelled centres within half a particle diameter, in original pixels.

The picking threshold stored in a model is the one that maximises validation particle F1.
When labels are clearly incomplete (a hurried hand-picker labels a fraction of the particles)
real but unlabelled particles count as false positives, so precision is underestimated and
the F1-optimal threshold is biased. The label completeness ``c`` is estimated as the fraction
of the most confident picks that match a label (those picks are almost all real particles),
and, when ``c`` is clearly below 1, thresholds are chosen on the completeness-corrected
precision ``min(1, P / c)``, the F1 averaged over the binomial error of ``c``
(:func:`expected_corrected_f1`). Both the raw and the corrected figures are reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from selfpick.evaluation.metrics import ParticleCurve, particle_curve, particle_metrics, pixel_metrics
from selfpick.picking.inference import predict_probability
from selfpick.picking.peaks import micrograph_peaks

log = logging.getLogger(__name__)

# Peaks below this score are not candidates when a model is scored and its threshold chosen.
# It was 0.02 until a supervised model trained on 3 x 65 picks of EMPIAR-10017 (every unpicked
# particle taught as background) scored most real particles below 0.02: validation recall
# stopped at 0.19 and no threshold could reach the rest (bench/NOTES.md).
CANDIDATE_FLOOR = 0.001
# Pseudo-labelling lists peaks from this score up: weaker peaks are left as background
# rather than painted as ignored "maybe particle" disks.
PSEUDO_LABEL_FLOOR = 0.02
# Labels are treated as complete when the estimated completeness is at least this (then
# thresholds are not corrected and self-training is skipped; the help of
# --self-train-complete-labels in selfpick.config says "8 in 10").
COMPLETE_LABELS = 0.8


@dataclass
class MicrographPrediction:
    """A model's output on one micrograph."""

    name: str
    prob: np.ndarray  # (h, w) float32 probability map at model scale
    xy_model: np.ndarray  # (N, 2) candidate picks, model pixels, best first
    xy: np.ndarray  # (N, 2) the same in original pixels
    scores: np.ndarray  # (N,) descending


def predict_micrographs(model: torch.nn.Module, micrographs, radius_model: float,
                        device: torch.device, min_distance: float = 0.5, amp: bool = False,
                        floor: float = CANDIDATE_FLOOR, desc: str = "Predicting",
                        progress: bool = True, edge_margin: float = 0.0, tta: int = 1
                        ) -> list[MicrographPrediction]:
    """Probability maps and candidate picks for training-set micrographs.

    ``min_distance`` is a fraction of the particle diameter, as in the model file;
    ``edge_margin`` is in original pixels, as ``selfpick pick`` applies it; ``tta`` views
    are averaged, as ``selfpick pick`` will average them (so a threshold chosen here holds
    there).
    """
    model.eval()
    out = []
    for m in tqdm(micrographs, desc=desc, unit="mic", leave=False, disable=not progress or None):
        prob = predict_probability(model, np.asarray(m.image, dtype=np.float32), device, amp=amp,
                                   tta=tta)
        xy, scores = micrograph_peaks(prob, m.scale, m.original_shape, radius_model,
                                      min_distance, threshold=floor, edge_margin=edge_margin)
        out.append(MicrographPrediction(m.name, prob.cpu().numpy(), m.scale.to_model(xy), xy,
                                        scores))
    return out


def estimate_completeness(curve: ParticleCurve, rounds: int = 8) -> float:
    """Fraction of the real particles that carry a label, from the most confident picks.

    The picks a model is surest of are almost all real particles, so the share of them that
    match a label estimates the completeness ``c``. How many picks to use: the top half of
    the real particles, whose number is itself estimated as ``n_true / c``. The first
    guess uses the top ``n_true / 2`` picks (exact for complete labels); each round then
    re-counts over the top ``n_true / (2 c)``. With complete labels nothing changes; with
    65 picks out of ~650 particles the estimate rests on ~300 picks instead of 32, whose
    binomial error (±0.05 around 0.1) made the completeness-corrected threshold swing by a
    factor of two (``bench/NOTES.md``).
    """
    if curve.n_true == 0 or len(curve.scores) == 0:
        return 1.0
    half = max(1, curve.n_true // 2)
    k = min(half, len(curve.scores))
    c = float(np.clip(curve.is_tp[:k].mean(), 0.01, 1.0))
    for _ in range(rounds):
        k_next = _completeness_picks(curve, c)
        if k_next == k:
            break
        k = k_next
        c = float(np.clip(curve.is_tp[:k].mean(), 0.01, 1.0))
    return c


def completeness_standard_error(curve: ParticleCurve, completeness: float) -> float:
    """Binomial standard error of :func:`estimate_completeness`'s ``completeness``.

    The estimate is the share of labelled picks among the top ``k`` picks, ``k`` half the
    real particles it implies (``n_true / (2 c)``), so its error is ``sqrt(c (1 - c) / k)``:
    about a quarter of ``c`` with 45 labelled validation particles. 0 without labels.
    """
    if curve.n_true == 0 or len(curve.scores) == 0:
        return 0.0
    c = float(np.clip(completeness, 0.01, 1.0))
    return float(np.sqrt(c * (1 - c) / _completeness_picks(curve, c)))


def _completeness_picks(curve: ParticleCurve, c: float) -> int:
    """How many of the top picks a completeness ``c`` is read from: half the real particles
    it implies, ``n_true / (2 c)``, at least ``n_true / 2``, at most every pick."""
    half = max(1, curve.n_true // 2)
    return int(min(len(curve.scores), max(half, round(half / c))))


def corrected_curve(curve: ParticleCurve, completeness: float):
    """``(precision, recall, f1, thresholds)`` with precision corrected for incomplete labels."""
    precision, recall, thresholds = curve.pr_curve()
    if completeness < COMPLETE_LABELS:
        precision = np.minimum(1.0, precision / completeness)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1, thresholds


def expected_corrected_f1(curve: ParticleCurve, completeness: float, se: float,
                          points: int = 9) -> np.ndarray:
    """The completeness-corrected F1 at each threshold, averaged over the completeness's
    uncertainty: a normal of standard deviation ``se`` around ``completeness``, taken at
    ``points`` values within two ``se`` (clipped to 0.01-1). Thresholds as
    :func:`corrected_curve` gives them.

    Why: ``P / c`` with a ``c`` read a quarter too high (45 labelled particles) makes real
    particles look like false picks and moves the F1 maximum up into them; a ``c`` read too
    low costs little, because the corrected precision is capped at 1 where the picks are
    particles. Averaged, the curve keeps its maximum where the point estimate is right and
    drops it where only a high ``c`` put it (36 stage models on micrographs their runs never
    saw: 9 picked better, by 0.004-0.106 F1, 2 worse by <= 0.002; ``bench/NOTES.md``).
    """
    if se <= 0:
        return corrected_curve(curve, completeness)[2]
    z = np.linspace(-2.0, 2.0, points)
    w = np.exp(-z ** 2 / 2)
    w /= w.sum()
    return sum(wi * corrected_curve(curve, float(np.clip(completeness + zi * se, 0.01, 1.0)))[2]
               for zi, wi in zip(z, w))


@dataclass
class ValidationResult:
    metrics: dict  # JSON-ready: "particle" and "pixel" entries, each with level/split/threshold
    threshold: float  # the picking threshold chosen on this split
    completeness: float  # estimated fraction of real particles that carry a label
    predictions: list[MicrographPrediction]
    rank_scores: np.ndarray  # (K,) scores of all candidate picks, descending
    local_precision: np.ndarray  # (K,) completeness-corrected share of real particles among
    # the picks ranked around each one (see local_precision)


def local_precision(is_tp: np.ndarray, completeness: float) -> np.ndarray:
    """For each pick in rank order, the estimated probability that a pick there is a particle.

    A non-increasing (isotonic) fit of the TP flags against rank, divided by the label
    completeness (capped at 1). Unlike the cumulative precision it falls as soon as the picks
    at a score stop being particles, which is what a pseudo-label threshold needs; unlike a
    moving average it does not dip by chance where a few labelled particles happen to be
    missing (with 30 % labels, most real particles are "false positives" by chance alone).
    """
    from sklearn.isotonic import IsotonicRegression

    k = len(is_tp)
    if k == 0:
        return np.zeros(0)
    c = completeness if completeness < COMPLETE_LABELS else 1.0
    fit = IsotonicRegression(increasing=False).fit_transform(np.arange(k), is_tp.astype(float))
    return np.minimum(1.0, fit / c)


def f1_standard_error(f1: float, n_true: int) -> float:
    """Binomial standard error of an F1 measured on ``n_true`` labelled particles.

    ``sqrt(F1 (1 - F1) / n)`` with F1 Laplace-smoothed as ``(n F1 + 1) / (n + 2)``, so that
    a perfect score on a handful of particles is not taken as certain (F1 1.0 on 11
    particles: 0.08, not 0). 0 when there are no labelled particles.
    """
    if not n_true:
        return 0.0
    smooth = (float(f1) * n_true + 1) / (n_true + 2)
    return float(np.sqrt(smooth * (1 - smooth) / n_true))


def threshold_uncertainty(f1: np.ndarray, thresholds: np.ndarray, k: int,
                          n_true: int) -> dict:
    """How well the validation labels pin the picking threshold down.

    ``f1``: F1 at each of ``thresholds`` (descending, one per distinct score), ``k``: the
    index of the F1 maximum, ``n_true``: labelled validation particles. F1 measured on ``n``
    particles has a binomial standard error of about ``sqrt(F1 (1 - F1) / n)`` (with F1
    smoothed as ``(n F1 + 1) / (n + 2)``, so that F1 = 1 is not certain); every threshold of
    the contiguous run around ``k`` whose F1 is within one standard error of the best is as
    good as far as these labels can tell. A wide range (ninety particles give +-0.03) says
    the threshold is a guess within it (:func:`choose_threshold` then takes its middle when
    the particles are few); a narrow one that the curve falls off steeply.
    """
    best = float(f1[k])
    se = f1_standard_error(best, n_true)
    near = f1 >= best - se
    lo = hi = k
    while lo > 0 and near[lo - 1]:
        lo -= 1
    while hi + 1 < len(f1) and near[hi + 1]:
        hi += 1
    return {"f1_standard_error": round(se, 4), "n_labelled": int(n_true),
            "range": [float(thresholds[hi]), float(thresholds[lo])],
            "note": "thresholds whose validation F1 is within one binomial standard error "
                    "of the best (the contiguous run around the chosen one)"}


# Below this many labelled validation particles the picking threshold is the middle of the
# range threshold_uncertainty finds, not the argmax: on a flat F1 curve measured on a handful
# of particles the argmax falls at a random end of it (EMPIAR-10028, 25 picks: argmax 0.94,
# F1 0.64 on the unlabelled training micrographs, 0.76 at the middle). On 54 stage models
# validated on < 30 particles the middle gained 0.018 +- 0.048 F1 on the unlabelled training
# micrographs (28 better, 20 worse); on 18 validated on 65 it lost 0.004 (bench/NOTES.md).
# Not for a fresh self-training student: trained from random weights on hard pseudo-labels,
# it scores particles near 1 and the rest low, the strip's labelled particles sit in that top
# mode, and the argmax is its lower edge, where the middle of a range spanning 0.02-0.998 is
# 0.5, deep among the background peaks. On 6 fresh students with one labelled micrograph the
# argmax gained 0.022 F1 on the unlabelled training micrographs (4 better, 1 equal, 1 worse).
FEW_VALIDATION_PARTICLES = 30

#: How ``threshold_rule`` in a stage's validation metrics begins; the rule follows.
THRESHOLD_RULE_PREFIX = "chosen on this split: "


def middle_of_range(thresholds: np.ndarray, score_range) -> int:
    """Index into ``thresholds`` (descending) of the last threshold at or above the middle of
    ``score_range`` = ``[low, high]`` (scores, as :func:`threshold_uncertainty` gives them)."""
    mid = 0.5 * (float(score_range[0]) + float(score_range[1]))
    return max(0, int(np.count_nonzero(thresholds >= mid)) - 1)


def choose_threshold(f1: np.ndarray, thresholds: np.ndarray, n_true: int,
                     rule: str = "max F1", polarised: bool = False
                     ) -> tuple[int, int, dict, str]:
    """Where on the validation curve to pick: ``(k, kt, uncertainty, rule)``.

    ``f1`` at each of ``thresholds`` (descending, non-empty; with partial labels the
    corrected F1 averaged over the completeness's error, :func:`expected_corrected_f1`),
    ``n_true`` labelled particles.
    ``k`` is the F1 maximum, ``uncertainty`` the :func:`threshold_uncertainty` around it,
    ``kt`` the index picked at: ``k``, or the middle of the uncertain range with fewer than
    :data:`FEW_VALIDATION_PARTICLES` particles, unless the model is ``polarised`` (a fresh
    self-training student: see :data:`FEW_VALIDATION_PARTICLES`); ``rule`` says which, in
    words.
    """
    k = int(np.argmax(f1))
    uncertainty = threshold_uncertainty(f1, thresholds, k, n_true)
    if n_true >= FEW_VALIDATION_PARTICLES:
        return k, k, uncertainty, rule
    if polarised:
        return k, k, uncertainty, (f"{rule}, however few the labelled particles (a fresh "
                                   f"self-training student, whose scores crowd near 0 and 1)")
    kt = middle_of_range(thresholds, uncertainty["range"])
    return k, kt, uncertainty, (f"middle of the thresholds within one standard error of the "
                                f"{rule} (fewer than {FEW_VALIDATION_PARTICLES} labelled "
                                f"particles)")


def completeness_sensitivity(curve: ParticleCurve, completeness: float,
                             thresholds: np.ndarray, rule: str = "max F1",
                             polarised: bool = False, se: float | None = None) -> dict:
    """Where the threshold would land with the completeness one standard error either side.

    The corrected precision is ``P / c``; a ``c`` read too high makes it too low and moves
    the threshold up (a simulated draw: ``c`` 0.14 on strips that held 0.105, recall 0.68 at
    the threshold chosen; ``bench/NOTES.md``). For the user, not used by the choice (which
    averages over the error, :func:`expected_corrected_f1`): the same :func:`choose_threshold`
    rule on the point curves at ``c - se`` and ``c + se`` gives ``thresholds`` ``[low, high]``
    (scores; ``thresholds`` descending, as :func:`corrected_curve` gives them).
    """
    if se is None:
        se = completeness_standard_error(curve, completeness)
    at = []
    for c in (max(0.01, completeness - se), min(1.0, completeness + se)):
        f1 = corrected_curve(curve, c)[2]
        at.append(_between(thresholds, choose_threshold(f1, thresholds, curve.n_true, rule,
                                                        polarised)[1]))
    return {"estimate": round(float(completeness), 4), "standard_error": round(se, 4),
            "thresholds": [float(min(at)), float(max(at))],
            "note": "the threshold this rule chooses with the label completeness one binomial "
                    "standard error lower and higher (reported only)"}


def threshold_curve(f1: np.ndarray, precision: np.ndarray, recall: np.ndarray,
                    thresholds: np.ndarray, k: int, points: int = 200) -> dict:
    """The validation F1/precision/recall against threshold, thinned to about ``points``
    points (always keeping the chosen index ``k``) for the report's figure."""
    idx = np.unique(np.r_[np.linspace(0, len(thresholds) - 1, min(points, len(thresholds)))
                    .round().astype(int), k])
    return {"threshold": [round(float(x), 5) for x in thresholds[idx]],
            "f1": [round(float(x), 4) for x in f1[idx]],
            "precision": [round(float(x), 4) for x in precision[idx]],
            "recall": [round(float(x), 4) for x in recall[idx]]}


def _between(thresholds: np.ndarray, k: int) -> float:
    """A threshold that keeps exactly the picks of ``thresholds[k]`` (scores descending):
    midway to the next lower score, not at a pick's own score, where float rounding on
    another machine or thread count would decide whether that pick is kept."""
    if k + 1 < len(thresholds):
        return float(0.5 * (thresholds[k] + thresholds[k + 1]))
    return float(np.nextafter(np.float32(thresholds[k]), np.float32(0)))


def validate(model: torch.nn.Module, micrographs, particle_diameter: float, radius_model: float,
             device: torch.device, split: str, min_distance: float = 0.5, amp: bool = False,
             progress: bool = True, edge_margin: float = 0.0, tta: int = 1,
             polarised: bool = False) -> ValidationResult:
    """Metrics of ``model`` on labelled ``micrographs`` and the threshold it should pick with
    (picks closer than ``edge_margin`` original pixels to an edge are dropped first, as
    ``selfpick pick`` will drop them; ``polarised``: see :func:`choose_threshold`)."""
    preds = predict_micrographs(model, micrographs, radius_model, device, min_distance, amp,
                                desc=f"Validating ({split})", progress=progress,
                                edge_margin=edge_margin, tta=tta)
    radius = particle_diameter / 2
    items = []
    for p, m in zip(preds, micrographs):
        # A micrograph validated on a strip (few labelled micrographs): only the picks in
        # the strip count; its labels are the strip's.
        keep = m.in_region(p.xy)
        items.append((p.name, p.xy[keep], p.scores[keep], m.truth))
    curve = particle_curve(items, radius)
    completeness = estimate_completeness(curve)
    precision, recall, f1, thresholds = corrected_curve(curve, completeness)
    rule = "max F1"
    f1_choice = f1
    se = completeness_standard_error(curve, completeness)
    if completeness < COMPLETE_LABELS:
        # The threshold is chosen on the corrected F1 averaged over the completeness's error;
        # the stage is still ranked on the point estimate's maximum (selection_f1 below).
        rule += " (completeness-corrected, averaged over its binomial error)"
        f1_choice = expected_corrected_f1(curve, completeness, se)
    if len(thresholds):
        k, kt, uncertainty, rule = choose_threshold(f1_choice, thresholds, curve.n_true, rule,
                                                    polarised)
        threshold = _between(thresholds, kt)
        k = int(np.argmax(f1))
    else:
        threshold = 0.5
    particle = particle_metrics(items, radius, threshold)
    particle.update(split=split, threshold_rule=THRESHOLD_RULE_PREFIX + rule,
                    label_completeness=completeness,
                    min_distance_px=min_distance * particle_diameter)
    if len(thresholds):
        if completeness < COMPLETE_LABELS:
            uncertainty["completeness"] = completeness_sensitivity(
                curve, completeness, thresholds, rule, polarised, se)
        particle["threshold_uncertainty"] = uncertainty
        particle["threshold_curve"] = threshold_curve(f1_choice, precision, recall, thresholds,
                                                      kt)
        if kt != k:
            # Stages are still ranked on the best F1 the split shows, not on the F1 at a
            # threshold moved off the maximum on purpose (selection_f1 in experiment.py).
            particle["selection_f1"] = float(f1[k])
    if completeness < COMPLETE_LABELS and len(thresholds):
        particle["corrected"] = {"precision": float(precision[kt]), "recall": float(recall[kt]),
                                 "f1": float(f1[kt]),
                                 "note": "precision divided by the estimated label "
                                 "completeness (unlabelled particles are not errors)"}
    pixel = pixel_metrics([p.prob for p in preds], [m.gt_target for m in micrographs], 0.5)
    pixel["split"] = split
    metrics = {"split": split, "n_micrographs": len(micrographs), "particle": particle,
               "pixel": pixel, "threshold": threshold}
    return ValidationResult(metrics, threshold, completeness, preds, curve.scores,
                            local_precision(curve.is_tp, completeness))
