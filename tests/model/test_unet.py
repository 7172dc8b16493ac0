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
