"""Whole-image versus tiled inference, and the out-of-memory fallback.

The spec promises that tiling gives the whole-image result. Tiles are cut from the image
after it is padded to the network's grid, with a margin wider than the receptive field, so
the two must agree everywhere -- borders included, as a window that touches the image edge
sees the same zero padding as the whole image -- up to float rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfpick.model.unet import UNet
from selfpick.picking import inference
from selfpick.picking.inference import (
    MARGIN_PER_STRIDE,
    predict_logits,
    predict_logits_tiled,
    predict_probability,
)

H, W = 300, 350  # not multiples of the grid, not of the tile, not square


def _random_unet(depth: int, norm: str = "batch", seed: int = 0) -> UNet:
    """A U-Net in eval mode whose output actually varies across the image.

    Default initialisation gives nearly constant logits (std ~1e-5) that would make any
    comparison pass; He-initialised convolutions and BatchNorm layers with non-trivial
    running statistics and affine parameters give logits with a spread of order 0.1-1.
    """
    torch.manual_seed(seed)
    model = UNet(depth=depth, width=4, norm=norm)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(mod.weight)
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _image(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(H, W, generator=g)


def _assert_same_map(a: torch.Tensor, b: torch.Tensor, spread: torch.Tensor) -> None:
    assert a.shape == b.shape == (H, W)
    assert float(spread.std()) > 1e-2, "the test network's output is too flat to compare"
    diff = (a - b).abs().max().item()
    assert diff < 1e-4, f"tiled and whole-image logits differ by up to {diff:.3g}"


@pytest.mark.parametrize("depth", [2, 3])
def test_tiled_equals_whole_image_everywhere(depth):
    model = _random_unet(depth)
    img = _image()
    whole = predict_logits(model, img[None, None])[0, 0]
    # Small tiles: 5 x 6 windows, interior ones, edge ones and the ragged last row/column.
    tiled = predict_logits_tiled(model, img, tile=64, margin=MARGIN_PER_STRIDE * model.multiple)
    _assert_same_map(tiled, whole, whole)


def test_a_margin_narrower_than_the_receptive_field_is_detected():
    # Guards the test above: with too little context the tiles really do differ, so the
    # comparison is sensitive enough to catch a wrong margin or misaligned windows.
    model = _random_unet(3)
    img = _image()
    whole = predict_logits(model, img[None, None])[0, 0]
    tiled = predict_logits_tiled(model, img, tile=64, margin=8)
    assert (tiled - whole).abs().max().item() > 1e-2


@pytest.mark.parametrize(
    "depth,norm",
    [(2, "batch"), (3, "batch"), (3, "none"), (4, "batch")],
)
def test_predict_probability_tiles_equal_whole_image_for_configurable_models(depth, norm):
    # What picking actually calls: tile=0 (whole image) versus tiles of 64 with the default
    # margin, for U-Nets that a config may ask for (model.depth is unbounded, model.norm may
    # be batch or none). Probabilities, as the peak finder sees them.
    model = _random_unet(depth, norm)
    img = _image()
    whole = predict_probability(model, img, tile=0)
    tiled = predict_probability(model, img, tile=64)
    logits = predict_logits(model, img[None, None])[0, 0]
    assert float(logits.std()) > 1e-2
    diff = (whole - tiled).abs().max().item()
    assert diff < 1e-5, (f"depth {depth}, norm {norm}: tiled probabilities differ from the "
                         f"whole-image ones by up to {diff:.3g}")


def test_out_of_memory_falls_back_to_tiles_with_the_same_result(monkeypatch):
    model = _random_unet(2)
    img = _image()
    expected = predict_probability(model, img, tile=0)

    calls = {"whole": 0, "tiled": 0}
    real_tiled = inference.predict_logits_tiled

    def whole_runs_out_of_memory(*args, **kwargs):
        calls["whole"] += 1
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def counting_tiled(*args, **kwargs):
        calls["tiled"] += 1
        return real_tiled(*args, **kwargs)

    monkeypatch.setattr(inference, "predict_logits", whole_runs_out_of_memory)
    monkeypatch.setattr(inference, "predict_logits_tiled", counting_tiled)
    got = predict_probability(model, img)  # automatic choice: whole image first
    assert calls == {"whole": 1, "tiled": 1}
    assert (got - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("exc", [MemoryError(), RuntimeError("DefaultCPUAllocator: can't "
                                                                  "allocate memory")])
def test_other_out_of_memory_errors_also_fall_back(monkeypatch, exc):
    model = _random_unet(2)
    img = _image()

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(inference, "predict_logits", fail)
    out = predict_probability(model, img)
    assert out.shape == (H, W) and torch.isfinite(out).all()


def test_errors_other_than_memory_are_not_hidden(monkeypatch):
    model = _random_unet(2)

    def broken(*args, **kwargs):
        raise RuntimeError("Given groups=1, weight of size [4, 1, 3, 3], expected input ...")

    monkeypatch.setattr(inference, "predict_logits", broken)
    with pytest.raises(RuntimeError, match="Given groups"):
        predict_probability(model, _image())


def test_probability_map_is_a_float_map_of_the_image_size_in_0_1():
    model = _random_unet(2)
    prob = predict_probability(model, _image().numpy(), tile=0)  # numpy input accepted too
    assert prob.dtype == torch.float32 and prob.shape == (H, W)
    assert float(prob.min()) >= 0.0 and float(prob.max()) <= 1.0


def test_several_images_of_one_size_run_as_one_batch_with_the_same_result(monkeypatch):
    from selfpick.picking import inference

    torch.manual_seed(0)
    net = UNet(depth=2, width=4).eval()
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((40, 52)).astype(np.float32) for _ in range(3)]
    images.append(rng.standard_normal((36, 36)).astype(np.float32))  # another size
    calls = []
    real = inference.predict_logits

    def counting(model, x, amp=False):
        calls.append(tuple(x.shape))
        return real(model, x, amp=amp)

    monkeypatch.setattr(inference, "predict_logits", counting)
    together = inference.predict_probabilities(net, images[:3])
    assert calls == [(3, 1, 40, 52)]
    for img, prob in zip(images[:3], together):
        torch.testing.assert_close(prob, inference.predict_probability(net, img),
                                   rtol=1e-4, atol=1e-5)
    mixed = inference.predict_probabilities(net, images)  # sizes differ: one at a time
    assert [tuple(p.shape) for p in mixed] == [(40, 52)] * 3 + [(36, 36)]


def test_a_batch_that_runs_out_of_memory_is_done_one_image_at_a_time(monkeypatch):
    from selfpick.picking import inference

    net = UNet(depth=1, width=4).eval()
    real = inference.predict_logits

    def no_room_for_batches(model, x, amp=False):
        if x.shape[0] > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, x, amp=amp)

    monkeypatch.setattr(inference, "predict_logits", no_room_for_batches)
    images = [np.zeros((16, 16), np.float32), np.ones((16, 16), np.float32)]
    probs = inference.predict_probabilities(net, images)
    assert len(probs) == 2 and all(p.shape == (16, 16) for p in probs)


# --- test-time augmentation -------------------------------------------------------------

def _by_position(v: torch.Tensor) -> torch.Tensor:
    """A 'network' whose output depends on where a pixel is, not only on what is there:
    views that are not mapped back exactly would show up in the average."""
    h, w = v.shape[-2:]
    rows = torch.arange(h, dtype=v.dtype)[:, None].expand(h, w)
    return v + 0.01 * rows


def test_tta_one_is_the_plain_output():
    img = _image()
    assert torch.equal(inference.augmented_logits(_by_position, img, 1), _by_position(img))


@pytest.mark.parametrize("tta", [2, 4, 8])
def test_each_view_is_mapped_back_to_the_pixel_it_came_from(tta):
    # For a function of the pixel alone every view must give the image back exactly; a
    # missing inverse flip or transpose would move pixels.
    img = _image()
    assert torch.allclose(inference.augmented_logits(lambda v: 2 * v, img, tta), 2 * img)
    # The position-dependent part is averaged over the views' own row indices.
    out = inference.augmented_logits(_by_position, img, tta)
    assert out.shape == (H, W)
    assert not torch.allclose(out, _by_position(img))


def test_the_eight_views_are_the_eight_symmetries_of_the_square():
    x = torch.arange(16.0).reshape(4, 4)
    seen = set()
    for transpose, flip_rows, flip_cols in inference.TTA_TRANSFORMS:
        v = x.T if transpose else x
        dims = [d for d, f in ((0, flip_rows), (1, flip_cols)) if f]
        v = v.flip(dims) if dims else v
        seen.add(tuple(v.flatten().tolist()))
    assert len(seen) == 8


def test_tta_refuses_other_numbers():
    with pytest.raises(ValueError, match="tta"):
        inference.augmented_logits(_by_position, _image(), 3)


@pytest.mark.parametrize("tta", [2, 8])
def test_tta_gives_the_same_map_whole_tiled_and_batched(tta):
    # Non-square image: transposed views have other shapes, and tiles must still line up.
    model = _random_unet(3)
    img = _image()
    whole = predict_probability(model, img, tile=0, tta=tta)
    tiled = predict_probability(model, img, tile=64, tta=tta)
    assert (whole - tiled).abs().max().item() < 1e-5
    batched = inference.predict_probabilities(model, [img, img.flip(0)], tile=0, tta=tta)
    assert (batched[0] - whole).abs().max().item() < 1e-5
    # Averaging over a symmetric set of views makes the map equivariant under those views:
    # the map of the flipped image is the flipped map (180-degree rotation is in every set).
    rotated = predict_probability(model, img.flip(0).flip(1), tile=0, tta=tta)
    assert (rotated.flip(0).flip(1) - whole).abs().max().item() < 1e-5
    plain = predict_probability(model, img, tile=0)
    assert (plain - whole).abs().max().item() > 1e-3
