"""The U-Net: one logit per input pixel, built from (and round-tripped through) its config."""

from __future__ import annotations

import math

import pytest
import torch

from selfpick.errors import InputError

from selfpick.config import Config, ModelConfig
from selfpick.model.unet import UNet


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize("skip", ["add", "concat"])
def test_output_shape_equals_input_shape(depth, norm, skip):
    torch.manual_seed(0)
    net = UNet(depth=depth, width=4, norm=norm, skip=skip).eval()
    m = net.multiple
    assert m == 2**depth
    # Square and non-square inputs, several multiples of 2**depth, batch of 2.
    for h, w in [(m, m), (3 * m, 5 * m), (8 * m, 2 * m)]:
        x = torch.randn(2, 1, h, w)
        with torch.no_grad():
            y = net(x)
        assert y.shape == (2, 1, h, w)
        assert torch.isfinite(y).all()


def test_batch_items_are_independent_in_eval_mode():
    # Inference on a batch of tiles must equal tile-by-tile inference (BatchNorm in eval).
    torch.manual_seed(1)
    net = UNet(depth=2, width=4).eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        together = net(x)
        alone = torch.cat([net(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_initial_output_is_the_foreground_prior():
    # The head bias starts at logit(0.05): an untrained net predicts a few percent foreground.
    net = UNet(depth=1, width=4)
    assert net.head.bias.item() == pytest.approx(math.log(0.05 / 0.95))


def test_gradients_reach_every_parameter():
    torch.manual_seed(2)
    net = UNet(depth=2, width=4)
    net(torch.randn(2, 1, 16, 16)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name


def test_config_round_trip():
    cfg = Config()
    cfg.update({"depth": 2, "width": 8, "norm": "none"})
    net = UNet.from_config(cfg.model)
    assert (net.depth, net.multiple) == (2, 4)
    assert net.inc[0].out_channels == 8
    # The config travels as a plain dict (config.json, model files) and comes back equal,
    # building a network with exactly the same parameter names and shapes.
    back = Config.from_dict(cfg.to_dict())
    assert back.model == cfg.model
    twin = UNet.from_config(back.model)
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    assert {k: v.shape for k, v in twin.state_dict().items()} == shapes
    twin.load_state_dict(net.state_dict())  # strict: same architecture


def test_group_norm_is_not_offered():
    # Group norm normalises over the whole input, so tiled picking could never equal
    # whole-image picking; the setting is refused instead.
    with pytest.raises(InputError):
        Config().update({"norm": "group"})


def test_default_model_config_builds_a_small_network():
    net = UNet.from_config(ModelConfig())
    n_params = sum(p.numel() for p in net.parameters())
    # "a small default that trains on a CPU"
    assert n_params < 5_000_000
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32)


@pytest.mark.parametrize("skip", ["add", "concat"])
def test_fused_copy_gives_the_same_output(skip):
    torch.manual_seed(3)
    net = UNet(depth=2, width=4, skip=skip)
    net(torch.randn(4, 1, 32, 32))  # one training-mode pass: BatchNorm statistics move
    net.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.fused()(x), net(x), rtol=1e-4, atol=1e-4)


def test_additive_decoder_is_smaller_than_concatenating_one():
    add, cat = UNet(3, 8, skip="add"), UNet(3, 8, skip="concat")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(add) < count(cat)
    # the 3x3 decoder convolutions see only the fine level's channels
    assert all(block[0].in_channels == block[0].out_channels for block in add.up)


def test_unknown_skip_mode_is_refused():
    with pytest.raises(ValueError):
        UNet(skip="multiply")
    with pytest.raises(InputError):
        Config().update({"skip": "multiply"})


def test_saved_configs_without_the_skip_setting_mean_concat():
    # Models and experiments saved before the setting existed were concatenating U-Nets;
    # a user's own settings file still gets today's default.
    old = Config().to_dict()
    del old["model"]["skip"]
    assert Config.from_saved(old).model.skip == "concat"
    assert Config.from_dict(old).model.skip == "add"
    assert Config.from_saved(Config().to_dict()).model.skip == "add"


@pytest.mark.parametrize("stride", [2, 3])
def test_input_stride_keeps_the_model_image_grid(stride):
    # The network runs on a grid `stride` times coarser, but takes and returns the model
    # image's grid: one logit per input pixel, shapes a multiple of stride * 2**depth.
    torch.manual_seed(3)
    net = UNet(depth=2, width=4, input_stride=stride).eval()
    assert net.multiple == stride * 4
    assert net.inc[0].in_channels == stride**2
    m = net.multiple
    x = torch.randn(2, 1, 2 * m, 3 * m)
    with torch.no_grad():
        y = net(x)
        fused = net.fused()(x)
    assert y.shape == x.shape
    torch.testing.assert_close(fused, y, rtol=1e-4, atol=1e-4)


def test_input_stride_sees_every_pixel_of_a_block():
    # Space-to-depth, not subsampling: changing any one pixel of a stride x stride block
    # changes the output of that block.
    torch.manual_seed(4)
    net = UNet(depth=1, width=4, input_stride=2).eval()
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        base = net(x)
        for dy, dx in [(0, 0), (0, 1), (1, 0), (1, 1)]:
            x2 = x.clone()
            x2[0, 0, 4 + dy, 4 + dx] += 5.0
            assert not torch.allclose(net(x2)[0, 0, 4:6, 4:6], base[0, 0, 4:6, 4:6])


def test_input_stride_travels_with_the_config():
    cfg = Config()
    cfg.update({"input_stride": 2, "depth": 2, "width": 4})
    back = Config.from_dict(cfg.to_dict())
    assert UNet.from_config(back.model).multiple == 8
    with pytest.raises(InputError):
        Config().update({"input_stride": -1})


def test_saved_configs_without_an_input_stride_mean_stride_1():
    old = Config().to_dict()
    del old["model"]["input_stride"]
    assert Config.from_saved(old).model.input_stride == 1
    # Unresolved automatic stride (0) builds a plain network.
    assert UNet.from_config(ModelConfig()).input_stride == 1


@pytest.mark.parametrize("stride", [2, 3])
def test_unfolded_output_has_no_pattern_repeating_every_stride_pixels(stride):
    # Output channels that differ by a constant would tile the map with a period-`stride`
    # pattern (a local maximum in every block); the triangle filter removes it exactly.
    net = UNet(depth=1, width=4, input_stride=stride).eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.arange(stride**2, dtype=torch.float32))
        y = net(torch.zeros(1, 1, 6 * stride, 6 * stride))
    inner = y[..., stride:-stride, stride:-stride]  # away from the padded border
    torch.testing.assert_close(inner, torch.full_like(inner, (stride**2 - 1) / 2))
