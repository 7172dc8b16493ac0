"""A compact U-Net: one input channel (a normalised micrograph), one logit per pixel."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from selfpick.config import ModelConfig

# Initial foreground prior of the output layer: particle centres cover a few percent of a
# micrograph. Starting the logits there keeps the first focal-loss steps from being spent on
# learning the class balance (the RetinaNet initialisation).
_PRIOR = 0.05


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str):
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True),
        )


def unfold_blocks(y: torch.Tensor, s: int) -> torch.Tensor:
    """``(B, s*s, h, w)`` block channels -> ``(B, 1, s*h, s*w)`` map, smoothed by a separable
    triangle filter ``2s - 1`` pixels wide (weights ``(s - |k|) / s^2``, edges replicated).

    Why the filter: the ``s*s`` channels, unfolded, can differ slightly from each other and
    leave a pattern repeating every ``s`` pixels -- a local maximum in almost every block of
    a particle's plateau (10^5 peaks per micrograph for the peak finder). The triangle
    filter has zeros at exactly those frequencies. It is part of the network, so training
    sees it too.

    Written as ``pixel_shuffle`` of a contiguous tensor and sums of shifted views: on a CPU
    less than half the time of ``pixel_shuffle`` on channels-last followed by a one-channel
    convolution (neither has a vectorised path there).
    """
    y = F.pixel_shuffle(y.contiguous(), s)
    _, _, hh, ww = y.shape
    p = F.pad(y, (s - 1,) * 4, mode="replicate")
    weights = [float(s - abs(k)) for k in range(1 - s, s)]
    for dim, n in ((3, ww), (2, hh)):
        out = p.narrow(dim, 0, n) * weights[0]
        for i in range(1, len(weights)):
            out.add_(p.narrow(dim, i, n), alpha=weights[i])
        p = out
    return p.mul_(1.0 / s**4)


class UNet(nn.Module):
    """U-Net with ``depth`` 2x downsamplings and ``width * 2**level`` channels per level.

    Input ``(B, 1, H, W)`` with ``H`` and ``W`` multiples of :attr:`multiple`
    (``2**depth * input_stride``); output logits ``(B, 1, H, W)``.

    ``input_stride`` s > 1 folds each ``s x s`` block of the input into ``s*s`` channels
    (pixel unshuffle), so the network works on a grid ``s`` times coarser while seeing every
    input pixel, and unfolds ``s*s`` output channels back with :func:`unfold_blocks`.

    ``skip`` says how the decoder joins the upsampled coarse features with the encoder's:
    ``"add"`` first maps the coarse features to the finer level's channel count with a 1x1
    convolution (at the coarse resolution, where it is cheap), upsamples and adds;
    ``"concat"`` (the classic U-Net, and selfpick's models before version 0.2) upsamples all
    coarse channels and concatenates. The decoder's 3x3 convolutions then see half or a third
    of the input channels: "add" makes CPU picking about a third faster at the same accuracy
    (``bench/NOTES.md``).
    """

    def __init__(self, depth: int = 3, width: int = 16, norm: str = "batch", skip: str = "add",
                 input_stride: int = 1):
        super().__init__()
        if skip not in ("add", "concat"):
            raise ValueError(f"skip must be 'add' or 'concat', not {skip!r}")
        if input_stride < 1:
            raise ValueError(f"input_stride must be at least 1, not {input_stride!r}")
        self.depth = depth
        self.skip = skip
        self.input_stride = input_stride
        chans = [width * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(input_stride**2, chans[0], norm)
        self.down = nn.ModuleList(DoubleConv(chans[i], chans[i + 1], norm) for i in range(depth))
        if skip == "add":
            self.reduce = nn.ModuleList(
                nn.Conv2d(chans[i + 1], chans[i], 1) for i in reversed(range(depth))
            )
            self.up = nn.ModuleList(
                DoubleConv(chans[i], chans[i], norm) for i in reversed(range(depth))
            )
        else:
            self.reduce = None
            self.up = nn.ModuleList(
                DoubleConv(chans[i + 1] + chans[i], chans[i], norm) for i in reversed(range(depth))
            )
        self.head = nn.Conv2d(chans[0], input_stride**2, 1)
        nn.init.constant_(self.head.bias, math.log(_PRIOR / (1 - _PRIOR)))

    @property
    def multiple(self) -> int:
        return 2**self.depth * self.input_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_stride
        if s > 1:
            x = F.pixel_unshuffle(x, s)
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for level, block in enumerate(self.up):
            skip = skips.pop()
            if self.reduce is not None:
                y = self.reduce[level](y)
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(y + skip if self.reduce is not None else torch.cat([y, skip], dim=1))
        y = self.head(y)
        return unfold_blocks(y, s) if s > 1 else y

    def fused(self) -> "UNet":
        """An inference copy with each BatchNorm folded into the convolution before it.

        Same outputs in eval mode (up to float rounding), one pass less over every feature
        map. Not for training: the folded copy has no BatchNorm statistics left to update.
        """
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        twin = copy.deepcopy(self).eval()
        for block in twin.modules():
            if isinstance(block, DoubleConv):
                for i in range(len(block) - 1):
                    conv, bn = block[i], block[i + 1]
                    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                        block[i] = fuse_conv_bn_eval(conv, bn)
                        block[i + 1] = nn.Identity()
        return twin

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "UNet":
        # input_stride 0 (automatic) is resolved from the data before training
        # (:func:`selfpick.training.data.load_training_set`); unresolved, it means 1.
        return cls(cfg.depth, cfg.width, cfg.norm, cfg.skip, max(1, cfg.input_stride))
