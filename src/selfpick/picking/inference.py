"""Probability maps from a U-Net: whole-micrograph or overlapping tiles.

Inputs go in channels-last layout (as the models are kept): oneDNN's convolutions run about
twice as fast that way on CPUs, and GPUs prefer it too.

Tiles are cut on the network's downsampling grid with a margin wider than the receptive field
and only their centres are kept, so away from the borders the tiled map equals the whole-image
map (up to float rounding). Large micrographs, and any micrograph that runs out of memory as a
whole, are done in tiles.

Test-time augmentation (``tta``): the network also sees the micrograph flipped and
transposed, and the logits, mapped back, are averaged. Particles have no preferred
orientation in the image plane, so each view is an equally valid guess; their mean ranks
particles better (bench/NOTES.md, "Test-time augmentation") at ``tta`` times the network
time.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from selfpick.config import TTA_CHOICES

log = logging.getLogger(__name__)

# Whole-image inference up to this many model pixels; beyond it, tiles bound the memory.
WHOLE_IMAGE_MAX_PIXELS = 2048 * 2048
DEFAULT_TILE = 512
# Tile margin per unit of the network's coarsest stride (2**depth): the receptive-field radius
# of the U-Net grows as about 8 * 2**depth model pixels.
MARGIN_PER_STRIDE = 9
# The eight symmetries of the square as (transpose, flip rows, flip columns), in the order
# ``tta`` takes them: 2 = identity and 180-degree rotation, 4 = adds both mirrors, 8 = all.
TTA_TRANSFORMS = ((False, False, False), (False, True, True), (False, True, False),
                  (False, False, True), (True, False, False), (True, True, True),
                  (True, True, False), (True, False, True))


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = _round_up(h, multiple) - h, _round_up(w, multiple) - w
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, amp: bool = False) -> torch.Tensor:
    """Logits for a batch ``(B, 1, H, W)`` of model-scale images of one size (any H, W)."""
    multiple = getattr(model, "multiple", 1)
    x, h, w = _pad_to_multiple(images, multiple)
    with _autocast(x.device, amp):
        out = model(x.contiguous(memory_format=torch.channels_last))
    return out[..., :h, :w].float()


@torch.inference_mode()
def predict_logits_tiled(model: torch.nn.Module, image: torch.Tensor, tile: int = DEFAULT_TILE,
                         margin: int | None = None, amp: bool = False,
                         batch_size: int = 4) -> torch.Tensor:
    """Logits ``(H, W)`` of one image ``(H, W)`` computed in overlapping tiles."""
    multiple = getattr(model, "multiple", 1)
    tile = max(multiple, _round_up(tile, multiple))
    if margin is None:
        margin = MARGIN_PER_STRIDE * multiple
    margin = _round_up(margin, multiple)
    x, h, w = _pad_to_multiple(image[None, None], multiple)
    H, W = x.shape[-2:]
    out = torch.empty((H, W), dtype=torch.float32, device=image.device)
    windows = []
    for y0 in range(0, H, tile):
        for x0 in range(0, W, tile):
            y1, x1 = min(y0 + tile, H), min(x0 + tile, W)
            wy0, wx0 = max(0, y0 - margin), max(0, x0 - margin)
            wy1, wx1 = min(H, y1 + margin), min(W, x1 + margin)
            windows.append((y0, x0, y1, x1, wy0, wx0, wy1, wx1))
    # Group windows of equal size so they run as one batch.
    by_size: dict[tuple[int, int], list] = {}
    for win in windows:
        by_size.setdefault((win[6] - win[4], win[7] - win[5]), []).append(win)
    for group in by_size.values():
        for i in range(0, len(group), batch_size):
            chunk = group[i : i + batch_size]
            batch = torch.cat([x[..., w[4]:w[6], w[5]:w[7]] for w in chunk], dim=0)
            with _autocast(batch.device, amp):
                pred = model(batch.contiguous(memory_format=torch.channels_last)).float()
            for k, (y0, x0, y1, x1, wy0, wx0, _, _) in enumerate(chunk):
                out[y0:y1, x0:x1] = pred[k, 0, y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
    return out[:h, :w]


def augmented_logits(logits_of, x: torch.Tensor, tta: int = 1) -> torch.Tensor:
    """Mean of ``logits_of`` over the first ``tta`` of :data:`TTA_TRANSFORMS` of ``x``.

    ``x`` is ``(..., H, W)``; ``logits_of`` maps such a tensor (also transposed, ``W, H``)
    to logits of the same shape. Each view's logits are mapped back before averaging, so
    the result is ``(..., H, W)`` and ``tta=1`` is ``logits_of(x)`` itself.
    """
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {TTA_CHOICES}, not {tta!r}")
    total = None
    for transpose, flip_rows, flip_cols in TTA_TRANSFORMS[:tta]:
        dims = [d for d, flip in ((-2, flip_rows), (-1, flip_cols)) if flip]
        view = x.transpose(-2, -1) if transpose else x
        if dims:
            view = view.flip(dims)
        out = logits_of(view.contiguous() if (dims or transpose) else view)
        if dims:
            out = out.flip(dims)
        if transpose:
            out = out.transpose(-2, -1)
        total = out if total is None else total + out
    return total if tta == 1 else total / tta


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate" in msg
                                              or "not enough memory" in msg)


def _as_tensor(image: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if not torch.is_tensor(image):
        image = np.asarray(image, dtype=np.float32)
        if not image.flags.writeable:  # a memory-mapped cache entry: torch would warn on stderr
            image = image.copy()
    return torch.as_tensor(image, device=device).float()


def _tile_size(shape: tuple[int, ...], tile: int | None) -> int:
    """The tile side for an image of ``shape`` (model pixels); 0 = the whole image at once."""
    if tile is not None:
        return tile
    h, w = shape[-2:]
    return DEFAULT_TILE if h * w > WHOLE_IMAGE_MAX_PIXELS else 0


def _unless_out_of_memory(run, device: torch.device, warning: str) -> torch.Tensor | None:
    """``run()``, or None (after logging ``warning``) when it runs out of memory."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - only memory exhaustion is handled
        if not _is_oom(exc):
            raise
        log.warning(warning)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return None


def predict_probability(model: torch.nn.Module, image: np.ndarray | torch.Tensor,
                        device: torch.device | str = "cpu", tile: int | None = None,
                        amp: bool = False, tta: int = 1) -> torch.Tensor:
    """Particle probability ``(H, W)`` (float32, on ``device``) for one model-scale image.

    ``tile=None`` decides by size: whole-image up to :data:`WHOLE_IMAGE_MAX_PIXELS`, tiles
    beyond. ``tile=0`` forces whole-image. A whole-image pass that runs out of memory is
    retried in tiles instead of failing. ``tta`` views are averaged (see
    :func:`augmented_logits`).
    """
    device = torch.device(device)
    x = _as_tensor(image, device)
    use_tiles = _tile_size(x.shape, tile)
    if not use_tiles:
        h, w = x.shape[-2:]
        prob = _unless_out_of_memory(
            lambda: torch.sigmoid(augmented_logits(
                lambda v: predict_logits(model, v[None, None], amp=amp)[0, 0], x, tta)),
            device, f"micrograph of {w}x{h} model px does not fit in memory as a whole; "
            "predicting in tiles")
        if prob is not None:
            return prob
        use_tiles = DEFAULT_TILE
    return torch.sigmoid(augmented_logits(
        lambda v: predict_logits_tiled(model, v, tile=use_tiles, amp=amp), x, tta))


def predict_probabilities(model: torch.nn.Module, images: list, device: torch.device | str = "cpu",
                          tile: int | None = None, amp: bool = False,
                          tta: int = 1) -> list[torch.Tensor]:
    """:func:`predict_probability` of several model-scale images ``(H, W)``.

    Images of one size that fit whole go through the network as one batch (a GPU does a
    batch of micrographs in little more time than one); the rest, and a batch that runs out
    of memory, one at a time.
    """
    device = torch.device(device)
    xs = [_as_tensor(im, device) for im in images]
    if len(xs) > 1 and len({x.shape for x in xs}) == 1 and not _tile_size(xs[0].shape, tile):
        prob = _unless_out_of_memory(
            lambda: torch.sigmoid(augmented_logits(
                lambda v: predict_logits(model, v, amp=amp), torch.stack(xs)[:, None], tta)),
            device, f"a batch of {len(xs)} micrographs does not fit in memory; predicting them "
            "one at a time")
        if prob is not None:
            return list(prob[:, 0])
    return [predict_probability(model, x, device, tile=tile, amp=amp, tta=tta) for x in xs]
