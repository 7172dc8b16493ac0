"""Losses for particle-centre segmentation with ignored pixels.

Targets hold 1 (particle), 0 (background) or -1 (ignore). Only valid pixels (target != -1)
contribute, and an ignored pixel receives exactly zero gradient. Every loss is safe on a batch
without valid or without positive pixels (it returns 0, never NaN).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_EPS = 1e-6


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) on valid pixels, averaged over the number of valid pixels.

    ``alpha`` weights positives (``1 - alpha`` negatives); ``gamma`` down-weights pixels that are
    already well classified; ``pos_weight`` is passed to
    :func:`torch.nn.functional.binary_cross_entropy_with_logits` for class imbalance.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, pos_weight: float | None = None):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.pos_weight = pos_weight

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        valid = (targets != -1).to(logits.dtype)
        t = targets.clamp(min=0).to(logits.dtype)
        pw = None
        if self.pos_weight is not None:
            pw = torch.as_tensor(self.pos_weight, dtype=logits.dtype, device=logits.device)
        bce = F.binary_cross_entropy_with_logits(logits, t, pos_weight=pw, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * t + (1 - p) * (1 - t)
        loss = bce * (1 - p_t).pow(self.gamma)
        if self.alpha is not None and self.alpha >= 0:
            loss = loss * (self.alpha * t + (1 - self.alpha) * (1 - t))
        return (loss * valid).sum() / (valid.sum() + _EPS)


class DiceLoss(nn.Module):
    """Soft Dice loss over the valid pixels of the whole batch: ``1 - 2|P∩T| / (|P| + |T|)``.

    Pooled over the batch rather than per image, so crops without particles neither explode
    nor dominate. With no positive target and no predicted mass the loss is 0.
    """

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        valid = (targets != -1).to(torch.float32)
        p = torch.sigmoid(logits.float()) * valid
        t = targets.clamp(min=0).to(torch.float32) * valid
        inter = (p * t).sum()
        denom = p.sum() + t.sum()
        return 1 - (2 * inter + self.smooth) / (denom + self.smooth)


class PULoss(nn.Module):
    """Positive-unlabelled loss for partially labelled micrographs (non-negative PU risk,
    Kiryo et al. 2017, on pixels).

    Targets as everywhere: 1 = inside a labelled particle's disk (P), 0 = every other valid
    pixel, which with partial picks is *unlabelled* (U) rather than background, -1 ignored.
    ``unlabelled_prior`` is the share of real particle pixels among the U pixels (unpicked
    particles); U then mixes positives and negatives, and the negatives' risk is recovered
    as ``(E_U[l-] - prior * E_P[l-]) / (1 - prior)``, clamped at 0 (the non-negative
    correction: a network that scores its labelled particles far above the unpicked ones
    drives the estimate below zero; Kiryo et al. then take a gradient step on ``-R_N``
    alone, which on pixels lowered every labelled score until nothing passed the candidate
    floor on EMPIAR-10017: ``bench/NOTES.md``).
    ``positive_weight`` balances the classes, like focal alpha: the loss is
    ``w * E_P[l+] + (1 - w) * E_N[l-]``. Means over the pixels of the batch; 0 (never NaN)
    when the batch has no P or no U pixel.
    """

    def __init__(self, unlabelled_prior: float, positive_weight: float = 0.5):
        super().__init__()
        if not 0.0 <= unlabelled_prior < 1.0:
            raise ValueError("the unlabelled prior must be in [0, 1)")
        self.prior = float(unlabelled_prior)
        self.positive_weight = float(positive_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor):
        z = logits.float()
        pos = (targets == 1).to(z.dtype)
        unl = (targets == 0).to(z.dtype)
        n_pos, n_unl = pos.sum(), unl.sum()
        l_plus, l_minus = F.softplus(-z), F.softplus(z)  # BCE for label 1 and label 0
        p_plus = (l_plus * pos).sum() / (n_pos + _EPS)
        p_minus = (l_minus * pos).sum() / (n_pos + _EPS)
        u_minus = (l_minus * unl).sum() / (n_unl + _EPS)
        has_pos = (n_pos > 0).to(z.dtype)
        negative = (u_minus - self.prior * p_minus * has_pos) / (1.0 - self.prior)
        negative = negative * (n_unl > 0).to(z.dtype)
        w = self.positive_weight
        total = w * p_plus + (1 - w) * negative.clamp(min=0.0)
        return total, {"focal": (w * p_plus).detach(), "dice": ((1 - w) * negative).detach(),
                       "total": total.detach()}


def unlabelled_prior(n_positive: float, n_unlabelled: float, completeness: float,
                     without_picks: float = 0.0) -> float:
    """Share of particle pixels among the unlabelled pixels the loss sees.

    ``n_positive`` labelled particle pixels are a fraction ``completeness`` of the particle
    pixels of the micrographs with picks, whose other ``n_unlabelled`` pixels are unlabelled.
    ``without_picks`` is the share of training crops drawn from micrographs nobody picked:
    every pixel there is unlabelled, and particles are taken to cover them at the density
    the picks imply. At most 0.5.
    """
    w = float(without_picks)
    if not 0.0 <= w <= 1.0:
        raise ValueError("without_picks must be in [0, 1]")
    area = n_positive + n_unlabelled
    if area <= 0:
        return 0.0
    c = min(1.0, max(completeness, 1e-3))
    density = n_positive / c / area  # particle pixels per pixel of a picked micrograph
    hidden = (1 - w) * (density - n_positive / area) + w * density
    unlabelled = (1 - w) * n_unlabelled / area + w
    return float(min(0.5, hidden / unlabelled)) if unlabelled > 0 else 0.0


class CombinedLoss(nn.Module):
    """``focal_weight * Focal + dice_weight * Dice``; returns ``(loss, components)``.

    ``components`` maps ``"focal"``, ``"dice"`` and ``"total"`` to detached scalar tensors
    (call ``.item()`` only when logging, to avoid a device sync every step).
    """

    def __init__(self, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 pos_weight: float | None = None, focal_weight: float = 0.7,
                 dice_weight: float = 0.3):
        super().__init__()
        self.focal = FocalLoss(focal_alpha, focal_gamma, pos_weight)
        self.dice = DiceLoss()
        self.focal_weight = focal_weight
        self.dice_weight = dice_weight

    def forward(self, logits: torch.Tensor, targets: torch.Tensor):
        focal = self.focal(logits, targets)
        dice = self.dice(logits, targets)
        total = self.focal_weight * focal + self.dice_weight * dice
        return total, {"focal": focal.detach(), "dice": dice.detach(), "total": total.detach()}

    @classmethod
    def from_config(cls, cfg) -> "CombinedLoss":
        return cls(cfg.focal_alpha, cfg.focal_gamma, cfg.pos_weight, cfg.focal_weight,
                   cfg.dice_weight)
