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
