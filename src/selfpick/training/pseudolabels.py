"""Pseudo-labels for self-training and the adaptive threshold schedule.

Two ways to turn a model's predictions into labels:

``pixel`` (the original research script): per pixel, ``p >= pos`` -> 1, ``p <= neg`` -> 0, else
-1. Its weakness, seen on real data: after short training few pixels reach 0.95, so hardly any
pseudo-positive appears while most of the map becomes "ignore".

``peaks`` (default): particles are found as peaks of the probability map, exactly as picking
does; a confident peak becomes a labelled particle (positive disk + ignored ring), an
uncertain peak an ignored disk, and pixels the model is sure are empty stay background. The
positive threshold is expressed as a *validation precision* ("pseudo-particles are picks whose
score gives at least 95 % precision on the validation micrographs"), so the schedule means the
same whatever the network's calibration.

In both modes ground truth wins: labelled particles stay 1 and their rings stay ignored.

With ``unpicked_pixels='unlabelled'`` (the default) no pixel is background: everything
outside the peaks' disks and rings is 0 = *unlabelled*, and self-training uses the
positive-unlabelled loss with the share of particle pixels among them estimated from the
picks (:func:`estimated_particles`, :func:`hidden_particles`, :func:`unlabelled_share`).
Teaching low-scored pixels as background taught the particles a weak model missed as
background: on EMPIAR-10017 with 50 picks on one micrograph it had 27 % of the real
particles below the background level, and self-training lost ranking in all three draws
(``bench/NOTES.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selfpick.config import SelfTrainConfig, TargetConfig
from selfpick.model.losses import unlabelled_prior
from selfpick.targets import IGNORE, NEGATIVE, POSITIVE, paint_disks
from selfpick.training.validate import (CANDIDATE_FLOOR, FEW_VALIDATION_PARTICLES,
                                        PSEUDO_LABEL_FLOOR)


def threshold_schedule(iteration: int, cfg: SelfTrainConfig) -> tuple[float, float]:
    """``(positive, negative)`` thresholds for self-training iteration ``iteration`` (1-based).

    Linear: ``pos = max(pos_min, pos0 - step*(k-1))``, ``neg = min(neg_max, neg0 + step*(k-1))``,
    i.e. (0.95, 0.05) -> (0.93, 0.07) -> (0.91, 0.09) with the defaults.
    """
    if iteration < 1:
        raise ValueError("self-training iterations are numbered from 1")
    pos0, neg0 = cfg.positive_threshold, cfg.negative_threshold
    if cfg.threshold_schedule == "constant":
        return pos0, neg0
    k = iteration - 1
    pos = max(cfg.positive_threshold_min, pos0 - cfg.threshold_step * k)
    neg = min(cfg.negative_threshold_max, neg0 + cfg.threshold_step * k)
    return round(pos, 10), round(neg, 10)


# In 'peaks' mode with calibrated thresholds, a pixel is pseudo-background only where the
# probability is below this fraction of the validation-chosen picking threshold (and below
# the schedule's absolute threshold). Half the threshold: a particle the model scores there
# is one it would not pick, but not one it is sure is empty.
BACKGROUND_FRACTION = 0.5


def calibrated_background(neg: float, picking_threshold: float) -> float:
    """The pseudo-background threshold for a model that picks at ``picking_threshold``.

    The schedule's ``neg`` (0.05 at iteration 1) assumes a calibrated network. An
    under-confident one (picking threshold 0.01) scores most real particles below 0.05, and
    would have them taught as background; its background level is then
    ``BACKGROUND_FRACTION * picking_threshold`` instead. Never below 0.0.
    """
    return float(max(0.0, min(neg, BACKGROUND_FRACTION * picking_threshold)))


def listing_floor(pos_score: float | None, background: float | None) -> float:
    """Lowest peak score listed when pseudo-labelling.

    A quarter of the pseudo-particle score and the background level, when those are below
    the usual :data:`~selfpick.training.validate.PSEUDO_LABEL_FLOOR` (an under-confident
    model's particles can all score below it): every listed peak is at least an ignored
    "maybe" disk, never background. Never below the scoring floor
    :data:`~selfpick.training.validate.CANDIDATE_FLOOR`. ``background=None``: pixel mode,
    which keeps the usual floor.
    """
    floor = PSEUDO_LABEL_FLOOR
    if pos_score is not None and np.isfinite(pos_score):
        floor = min(floor, pos_score / 4)
    if background is not None:
        floor = max(min(floor, background), CANDIDATE_FLOOR)
    return float(floor)


def merge_with_ground_truth(pseudo: np.ndarray, gt_target: np.ndarray,
                            labelled: bool) -> np.ndarray:
    """Ground truth wins: labelled disks stay 1 and their rings stay -1."""
    if not labelled:
        return pseudo
    out = pseudo.copy()
    out[gt_target == IGNORE] = IGNORE
    out[gt_target == POSITIVE] = POSITIVE
    return out


def pixel_pseudo_labels(prob: np.ndarray, gt_target: np.ndarray, labelled: bool,
                        pos: float, neg: float, unlabelled: bool = False) -> np.ndarray:
    """The original scheme: threshold the probability map ``(h, w)`` pixel by pixel.
    ``unlabelled``: every pixel below ``pos`` is 0 = unlabelled (for the PU loss)."""
    if unlabelled:
        return merge_with_ground_truth(np.where(prob >= pos, POSITIVE, NEGATIVE)
                                       .astype(np.int8), gt_target, labelled)
    pl = np.full(prob.shape, IGNORE, dtype=np.int8)
    pl[prob >= pos] = POSITIVE
    pl[prob <= neg] = NEGATIVE
    return merge_with_ground_truth(pl, gt_target, labelled)


def peak_pseudo_labels(prob: np.ndarray, peaks_xy: np.ndarray, peak_scores: np.ndarray,
                       gt_target: np.ndarray, labelled: bool, radius: float,
                       pos_score: float, neg: float | None, tcfg: TargetConfig) -> np.ndarray:
    """Particle-level pseudo-labels for one micrograph.

    Parameters
    ----------
    prob: ``(h, w)`` probability map, model scale.
    peaks_xy, peak_scores: detected peaks ``(N, 2)`` in model pixels and their scores.
    radius: particle radius in model pixels.
    pos_score: peaks with score >= this become pseudo-particles; other peaks are ignored disks.
    neg: pixels with probability <= neg and no peak nearby are background. ``None``: no
        pixel is background -- every pixel outside the peaks' disks and rings is
        0 = *unlabelled*, for :class:`~selfpick.model.losses.PULoss`.
    """
    peaks_xy = np.asarray(peaks_xy).reshape(-1, 2)
    sure = peak_scores >= pos_score
    r_pos = max(1.0, tcfg.positive_radius * radius)
    r_ign = max(r_pos, tcfg.ignore_radius * radius)
    if neg is None:
        pl = np.full(prob.shape, NEGATIVE, dtype=np.int8)
    else:
        pl = np.where(prob <= neg, NEGATIVE, IGNORE).astype(np.int8)
    # An uncertain peak may be a particle the model has not learnt yet, or one the curators
    # left out on purpose: taught neither way.
    paint_disks(pl, peaks_xy[~sure], max(r_ign, radius), IGNORE)
    paint_disks(pl, peaks_xy[sure], r_ign, IGNORE)
    paint_disks(pl, peaks_xy[sure], r_pos, POSITIVE)
    return merge_with_ground_truth(pl, gt_target, labelled)


def score_for_precision(rank_scores: np.ndarray, local_precision: np.ndarray,
                        target: float) -> float | None:
    """Lowest score down to which picks are real particles with probability >= ``target``.

    ``rank_scores`` descending, ``local_precision[i]`` the estimated share of real particles
    among the picks ranked around pick ``i`` (see
    :func:`selfpick.training.validate.local_precision`). Scanning from the best pick, the
    threshold is the score of the last pick before the local precision first falls below
    ``target``. Returns ``None`` when even the best picks miss the target.
    """
    below = np.flatnonzero(np.asarray(local_precision) < target)
    if len(rank_scores) == 0 or (len(below) and below[0] == 0):
        return None
    end = below[0] if len(below) else len(rank_scores)
    return float(rank_scores[end - 1])


def score_for_half_the_particles(pool_scores: list[np.ndarray], n_estimated: float,
                                 pos_score: float, picking_threshold: float) -> float:
    """The pseudo-particle score, lowered where it would leave most real particles out.

    ``pool_scores``: the peak scores of each pseudo-labelled micrograph, ``n_estimated``
    the real particles on them (:func:`estimated_particles`), ``pos_score`` the score the
    validation precision asks for. The completeness estimate already takes the top half of
    the real particles to be particles (:func:`selfpick.training.validate.
    estimate_completeness`); when fewer peaks than that reach ``pos_score``, it drops to the
    score of the ``n_estimated / 2``-th best peak, never below ``picking_threshold`` (a
    pseudo-particle is a pick the model would make). On a strip of 8 labelled particles
    the precision rule put it at 0.66 and left 1,043 pseudo-particles on ten EMPIAR-10017
    micrographs of ~6,500 particles (``bench/NOTES.md``).
    """
    if not np.isfinite(pos_score) or n_estimated <= 0:
        return pos_score
    scores = np.sort(np.concatenate([np.asarray(s, dtype=np.float64).ravel()
                                     for s in pool_scores] or [np.zeros(0)]))[::-1]
    half = int(np.ceil(n_estimated / 2))
    if half <= 0 or np.count_nonzero(scores >= pos_score) >= half or len(scores) == 0:
        return pos_score
    at_half = float(scores[min(half, len(scores)) - 1])
    return float(max(picking_threshold, min(pos_score, at_half)))


def estimated_particles(n_picks: int, precision: float, recall: float) -> float:
    """Real particles on micrographs where a model makes ``n_picks`` picks at a threshold
    with validation ``precision`` (completeness-corrected) and ``recall``: the true picks
    ``n_picks * precision`` are a share ``recall`` of them. Labels drawn at random from the
    particles make the recall measured on them the recall on all particles."""
    if n_picks <= 0 or precision <= 0:
        return 0.0
    return float(n_picks * precision / max(recall, 0.05))


def hidden_particles(n_estimated: float, n_known: float, recall: float) -> float:
    """Particles in the unlabelled pixels of pseudo-label maps: of the ``n_estimated`` real
    ones, those the model does not pick at its threshold (``1 - recall`` of them; the
    picks it makes lie in positive or ignored disks), and never more than those without
    a label or pseudo-label (``n_estimated - n_known``)."""
    return float(max(0.0, min(n_estimated - n_known, n_estimated * (1.0 - recall))))


def unlabelled_share(n_positive_pixels: int, n_unlabelled_pixels: int, n_known: float,
                     n_hidden: float) -> float:
    """Share of particle pixels among the unlabelled pixels of pseudo-label maps (the PU
    loss's prior) when ``n_known`` particles (labelled or pseudo) have disks of
    ``n_positive_pixels`` in all and ``n_hidden`` more lie in the unlabelled pixels, with
    disks of the same mean size (capped at 0.5, see
    :func:`~selfpick.model.losses.unlabelled_prior`)."""
    if n_known <= 0 or n_hidden <= 0:
        return 0.0
    # the known particles are a share n_known / (n_known + n_hidden) of all: the same
    # formula as the supervised stage's prior
    return unlabelled_prior(n_positive_pixels, n_unlabelled_pixels,
                            n_known / (n_known + n_hidden))


@dataclass
class PseudoLabelStats:
    """What one round of pseudo-labelling did, for the log and metrics.json."""

    mode: str
    positive_threshold: float
    negative_threshold: float
    positive_score: float | None  # peaks mode: the score threshold the precision maps to
    n_micrographs: int
    n_pixels: int
    share_positive: float
    share_negative: float
    share_ignore: float
    n_pseudo_particles: int  # confident detections not explained by a labelled particle
    # peaks mode with calibrated thresholds: pixels below this probability were background
    # (the schedule's negative threshold, lowered for an under-confident model)
    background_level: float | None = None
    # peaks mode: the estimated share of real particles among validation picks scoring at
    # least positive_score (completeness-corrected local precision, averaged) -- what the
    # pseudo-particles are expected to be worth
    estimated_precision: float | None = None
    # unpicked_pixels='unlabelled': no pixel is background; the PU loss takes this share of
    # the unlabelled pixels to be particles the model has not picked
    unlabelled_prior: float | None = None
    # labelled validation particles the estimated precision rests on: with a strip of ~10
    # it read 98-100 % where the curated picks of the unlabelled training micrographs gave
    # 0.63-0.92 (bench/NOTES.md), so the log says how little it is based on
    validation_particles: int | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def describe(self) -> str:
        txt = (f"pseudo-labels ({self.mode}, pos {self.positive_threshold:.3f} / "
               f"neg {self.negative_threshold:.3f}")
        if self.positive_score is not None:
            txt += f", score >= {self.positive_score:.3f}"
        if self.background_level is not None and self.background_level != self.negative_threshold:
            txt += f", background below {self.background_level:.4f}"
        neg = "background" if self.unlabelled_prior is None else "unlabelled"
        txt += (f"): {self.share_positive:.1%} positive, {self.share_negative:.1%} "
                f"{neg}, {self.share_ignore:.1%} ignored pixels; "
                f"{self.n_pseudo_particles} pseudo-particles added on "
                f"{self.n_micrographs} micrographs")
        if self.estimated_precision is not None:
            txt += (f" (estimated precision {self.estimated_precision:.0%} from the validation "
                    f"picks above the same score")
            n = self.validation_particles
            if n is not None:
                txt += (f", {n} labelled validation particles"
                        + ("; a rough figure" if n < FEW_VALIDATION_PARTICLES else ""))
            txt += ")"
        if self.unlabelled_prior is not None:
            txt += (f"; positive-unlabelled loss, {self.unlabelled_prior:.1%} of the unlabelled "
                    f"pixels taken to be particles not yet picked")
        return txt


def estimated_precision(rank_scores: np.ndarray, local_precision: np.ndarray,
                        pos_score: float | None) -> float | None:
    """Mean local precision of the validation picks scoring at least ``pos_score``: the
    expected share of real particles among pseudo-particles chosen with that score
    (``None`` when no validation pick reaches it)."""
    if pos_score is None or not np.isfinite(pos_score):
        return None
    keep = np.asarray(rank_scores) >= pos_score
    if not keep.any():
        return None
    return float(np.mean(np.asarray(local_precision)[keep]))


def label_shares(maps: list[np.ndarray]) -> tuple[int, float, float, float]:
    n = sum(m.size for m in maps)
    if n == 0:
        return 0, 0.0, 0.0, 0.0
    pos = sum(int(np.count_nonzero(m == POSITIVE)) for m in maps) / n
    neg = sum(int(np.count_nonzero(m == NEGATIVE)) for m in maps) / n
    return n, pos, neg, 1.0 - pos - neg
