"""FocalLoss, DiceLoss and CombinedLoss on targets holding 1, 0 and -1 (ignore).

The properties checked are those SPEC.md ("Targets and loss") promises: only valid pixels
count, ignored pixels get exactly zero gradient, the focal term is a mean over valid pixels,
``pos_weight`` reaches ``binary_cross_entropy_with_logits``, and degenerate batches (no valid
or no positive pixel) give finite losses and gradients.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selfpick.config import Config
from selfpick.model import losses
from selfpick.model.losses import CombinedLoss, DiceLoss, FocalLoss


def _batch(seed: int = 0, shape=(2, 1, 8, 8), p_ignore: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g) * 3
    targets = (torch.rand(shape, generator=g) < 0.3).float()
    targets[torch.rand(shape, generator=g) < p_ignore] = -1
    return logits, targets


def _focal_by_hand(logits, targets, alpha=0.25, gamma=2.0, pos_weight=1.0) -> float:
    """Lin et al.'s focal loss written out pixel by pixel, averaged over valid pixels."""
    total, n_valid = 0.0, 0
    for z, t in zip(logits.flatten().tolist(), targets.flatten().tolist()):
        if t == -1:
            continue
        n_valid += 1
        p = 1 / (1 + math.exp(-z))
        if t == 1:
            total += -alpha * (1 - p) ** gamma * pos_weight * math.log(p)
        else:
            total += -(1 - alpha) * p**gamma * math.log(1 - p)
    return total / n_valid


LOSSES = {
    "focal": lambda: FocalLoss(),
    "dice": lambda: DiceLoss(),
    "combined": lambda: (lambda z, t: CombinedLoss()(z, t)[0]),
}


# ---------------------------------------------------------------- ignored pixels


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_ignored_pixels_do_not_change_the_loss(name):
    loss_fn = LOSSES[name]()
    logits, targets = _batch(1)
    ignored = targets == -1
    assert ignored.any() and (~ignored).any()
    other = logits.clone()
    other[ignored] = torch.randn(int(ignored.sum())) * 50  # wildly different, incl. saturated
    assert loss_fn(logits, targets).item() == pytest.approx(loss_fn(other, targets).item(),
                                                           rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_is_exactly_zero_on_ignored_pixels(name):
    loss_fn = LOSSES[name]()
    logits, targets = _batch(2)
    logits.requires_grad_(True)
    loss_fn(logits, targets).backward()
    ignored = targets == -1
    assert torch.all(logits.grad[ignored] == 0)  # exactly, not approximately
    assert torch.any(logits.grad[~ignored] != 0)  # valid pixels do learn


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), p_ignore=st.floats(0.0, 0.9),
       scale=st.floats(0.1, 30.0), pos_weight=st.sampled_from([None, 0.5, 3.0]))
def test_property_only_valid_pixels_count(seed, p_ignore, scale, pos_weight):
    """Any batch: rewriting ignored logits changes neither loss nor the valid gradients."""
    loss_fn = CombinedLoss(pos_weight=pos_weight)
    logits, targets = _batch(seed, shape=(2, 1, 6, 6), p_ignore=p_ignore)
    logits = logits * scale
    ignored = targets == -1
    other = logits.clone()
    other[ignored] = -other[ignored] + 7.0
    a = logits.clone().requires_grad_(True)
    b = other.clone().requires_grad_(True)
    la, ca = loss_fn(a, targets)
    lb, _ = loss_fn(b, targets)
    la.backward()
    lb.backward()
    assert math.isfinite(la.item())
    assert la.item() == pytest.approx(lb.item(), rel=1e-5, abs=1e-6)
    assert torch.all(a.grad[ignored] == 0) and torch.all(b.grad[ignored] == 0)
    torch.testing.assert_close(a.grad[~ignored], b.grad[~ignored], rtol=1e-4, atol=1e-7)
    assert ca["total"].item() == pytest.approx(la.item())


# ---------------------------------------------------------------- focal loss values


def test_focal_matches_hand_computed_value_normalised_by_valid_pixels():
    logits = torch.tensor([[[[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]]]])
    targets = torch.tensor([[[[1.0, 0.0, -1.0], [0.0, 1.0, -1.0]]]])
    # 4 valid pixels; the two ignored ones must not be in the denominator.
    expected = _focal_by_hand(logits, targets)
    assert FocalLoss(alpha=0.25, gamma=2.0)(logits, targets).item() == pytest.approx(
        expected, rel=1e-5)
    # A mean over all 6 pixels would be 4/6 of that: make sure that is not what we get.
    assert expected * 4 / 6 != pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("alpha,gamma,pos_weight", [(0.25, 2.0, 1.0), (0.5, 0.0, 1.0),
                                                    (0.8, 1.5, 4.0)])
def test_focal_matches_formula_on_a_random_batch(alpha, gamma, pos_weight):
    logits, targets = _batch(3, shape=(1, 1, 5, 7))
    fl = FocalLoss(alpha=alpha, gamma=gamma, pos_weight=pos_weight)
    assert fl(logits, targets).item() == pytest.approx(
        _focal_by_hand(logits, targets, alpha, gamma, pos_weight), rel=1e-4)


def test_focal_mean_does_not_depend_on_how_many_pixels_are_ignored():
    logits, targets = _batch(4, shape=(1, 1, 4, 4), p_ignore=0.0)
    # The same valid pixels surrounded by a large ignored border: same mean.
    big_l = torch.zeros(1, 1, 12, 12)
    big_t = torch.full((1, 1, 12, 12), -1.0)
    big_l[..., 4:8, 4:8] = logits
    big_t[..., 4:8, 4:8] = targets
    assert FocalLoss()(big_l, big_t).item() == pytest.approx(FocalLoss()(logits, targets).item(),
                                                             rel=1e-5)


# ---------------------------------------------------------------- pos_weight


def test_pos_weight_is_passed_to_bce_with_logits(monkeypatch):
    seen = []
    real = losses.F.binary_cross_entropy_with_logits

    def spy(*args, **kwargs):
        seen.append(kwargs.get("pos_weight"))
        return real(*args, **kwargs)

    monkeypatch.setattr(losses.F, "binary_cross_entropy_with_logits", spy)
    logits, targets = _batch(5)
    CombinedLoss(pos_weight=3.0)(logits, targets)
    assert seen and seen[0] is not None and float(seen[0]) == pytest.approx(3.0)


def test_pos_weight_scales_the_loss_of_positive_pixels_only():
    logits, targets = _batch(6, p_ignore=0.2)
    only_pos = torch.where(targets == 0, torch.full_like(targets, -1.0), targets)
    only_neg = torch.where(targets == 1, torch.full_like(targets, -1.0), targets)
    plain, weighted = FocalLoss(), FocalLoss(pos_weight=5.0)
    # Positives: BCE's log-term is multiplied by pos_weight, hence the focal loss too.
    assert weighted(logits, only_pos).item() == pytest.approx(5 * plain(logits, only_pos).item(),
                                                              rel=1e-5)
    # Negatives: untouched.
    assert weighted(logits, only_neg).item() == pytest.approx(plain(logits, only_neg).item(),
                                                              rel=1e-6)
    # Mixed: strictly larger.
    assert weighted(logits, targets).item() > plain(logits, targets).item()


def test_pos_weight_unset_equals_one():
    logits, targets = _batch(7)
    assert FocalLoss(pos_weight=None)(logits, targets).item() == pytest.approx(
        FocalLoss(pos_weight=1.0)(logits, targets).item(), rel=1e-6)


# ---------------------------------------------------------------- degenerate batches


@pytest.mark.parametrize("case", ["no_valid", "no_positive", "no_negative", "saturated"])
def test_degenerate_batches_give_finite_loss_and_gradients(case):
    logits = torch.randn(2, 1, 8, 8) * 3
    if case == "no_valid":
        targets = torch.full_like(logits, -1.0)
    elif case == "no_positive":
        targets = torch.zeros_like(logits)
        targets[0, 0, :2] = -1
    elif case == "no_negative":
        targets = torch.ones_like(logits)
    else:  # confident and wrong: logits far in the saturated range
        logits = torch.full_like(logits, 80.0)
        logits[1] = -80.0
        targets = torch.zeros_like(logits)
        targets[1] = 1
    logits.requires_grad_(True)
    loss, parts = CombinedLoss(pos_weight=2.0)(logits, targets)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(math.isfinite(v.item()) for v in parts.values())
    assert torch.isfinite(logits.grad).all()
    if case == "no_valid":
        # Nothing to learn from: no loss and no gradient at all.
        assert parts["focal"].item() == pytest.approx(0.0, abs=1e-6)
        assert torch.all(logits.grad == 0)


def test_dice_without_positives_and_without_predicted_mass_is_zero():
    logits = torch.full((1, 1, 4, 4), -30.0)
    targets = torch.zeros(1, 1, 4, 4)
    assert DiceLoss()(logits, targets).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_perfect_and_opposite_predictions():
    targets = torch.zeros(1, 1, 8, 8)
    targets[..., 2:5, 2:5] = 1
    perfect = torch.where(targets == 1, 30.0, -30.0)
    assert DiceLoss(smooth=0.0)(perfect, targets).item() == pytest.approx(0.0, abs=1e-6)
    assert DiceLoss(smooth=0.0)(-perfect, targets).item() == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------- combined loss


@pytest.mark.parametrize("fw,dw", [(0.7, 0.3), (0.2, 0.8), (1.0, 0.0)])
def test_combined_is_the_weighted_sum_and_returns_components(fw, dw):
    logits, targets = _batch(8)
    loss, parts = CombinedLoss(focal_weight=fw, dice_weight=dw)(logits, targets)
    assert set(parts) == {"focal", "dice", "total"}
    focal = FocalLoss()(logits, targets).item()
    dice = DiceLoss()(logits, targets).item()
    assert parts["focal"].item() == pytest.approx(focal, rel=1e-6)
    assert parts["dice"].item() == pytest.approx(dice, rel=1e-6)
    assert loss.item() == pytest.approx(fw * focal + dw * dice, rel=1e-6)
    assert parts["total"].item() == pytest.approx(loss.item(), rel=1e-6)
    # Components are for logging: detached, so they never keep the graph alive.
    assert all(not v.requires_grad for v in parts.values())


def test_combined_defaults_and_from_config():
    c = CombinedLoss()
    assert (c.focal_weight, c.dice_weight) == (0.7, 0.3)
    assert (c.focal.alpha, c.focal.gamma, c.focal.pos_weight) == (0.25, 2.0, None)
    cfg = Config()
    cfg.update({"focal_alpha": 0.4, "focal_gamma": 1.0, "pos_weight": 2.5,
                "focal_weight": 0.6, "dice_weight": 0.4})
    c = CombinedLoss.from_config(cfg.loss)
    assert (c.focal.alpha, c.focal.gamma, c.focal.pos_weight) == (0.4, 1.0, 2.5)
    assert (c.focal_weight, c.dice_weight) == (0.6, 0.4)


def test_combined_loss_accepts_half_precision_logits():
    # Under autocast the network emits float16 logits; the loss works in float32.
    logits, targets = _batch(9)
    loss32, _ = CombinedLoss()(logits, targets)
    loss16, _ = CombinedLoss()(logits.half(), targets)
    assert loss16.dtype == torch.float32
    assert loss16.item() == pytest.approx(loss32.item(), rel=1e-2)


# ---------------------------------------------------------------- positive-unlabelled


def test_pu_loss_without_hidden_particles_is_the_balanced_bce():
    from selfpick.model.losses import PULoss

    torch.manual_seed(0)
    z = torch.randn(2, 1, 8, 8)
    t = (torch.rand(2, 1, 8, 8) < 0.2).float()
    t[0, 0, 0, :3] = -1
    loss, parts = PULoss(0.0, positive_weight=0.5)(z, t)
    pos, neg = t == 1, t == 0
    expect = 0.5 * torch.nn.functional.softplus(-z[pos]).mean() + \
        0.5 * torch.nn.functional.softplus(z[neg]).mean()
    assert torch.allclose(loss, expect, atol=1e-6)
    assert torch.allclose(parts["total"], loss)


def test_pu_loss_does_not_punish_confidence_on_hidden_particles():
    """Unlabelled pixels that are really particles, scored high: PN punishes them as false
    positives; PU with the right prior much less, and never below zero."""
    from selfpick.model.losses import PULoss

    t = torch.zeros(1, 1, 1, 100)
    t[..., :10] = 1  # 10 labelled particle pixels
    z = torch.full((1, 1, 1, 100), -4.0)
    z[..., :30] = 4.0  # the 10 labelled and 20 hidden particle pixels all scored high
    pn, _ = PULoss(0.0)(z, t)
    pu, parts = PULoss(20 / 90)(z, t)
    assert pu < 0.5 * pn
    z.requires_grad_(True)
    loss, _ = PULoss(20 / 90)(z, t)
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_pu_loss_negative_background_risk_is_clamped_and_positives_still_learn():
    """Labelled particles scored high, hidden ones (inside U) low, as after training with
    unpicked particles as background: the estimated background risk is negative and counts
    as 0, while the labelled particles keep their gradient."""
    from selfpick.model.losses import PULoss

    t = torch.zeros(1, 1, 1, 100)
    t[..., :10] = 1
    z = torch.full((1, 1, 1, 100), -6.0)
    z[..., :10] = 3.0
    z.requires_grad_(True)
    loss, parts = PULoss(20 / 90)(z, t)
    assert parts["dice"] < 0  # reported as estimated, before the clamp
    loss.backward()
    assert (z.grad[..., :10] < 0).all()  # descent raises the labelled scores
    assert (z.grad[..., 10:] == 0).all()  # no background push while the estimate is < 0


def test_pu_loss_is_safe_without_positive_or_unlabelled_pixels():
    from selfpick.model.losses import PULoss

    z = torch.randn(1, 1, 4, 4, requires_grad=True)
    for t in (torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4), torch.full((1, 1, 4, 4), -1.0)):
        loss, _ = PULoss(0.3)(z, t)
        assert torch.isfinite(loss)
        loss.backward()
        assert torch.isfinite(z.grad).all()


def test_unlabelled_prior_from_completeness():
    from selfpick.model.losses import unlabelled_prior

    # 100 labelled particle pixels are 10 % of all: 900 hidden among 9,000 unlabelled
    assert unlabelled_prior(100, 9000, 0.1) == pytest.approx(0.1)
    assert unlabelled_prior(100, 9000, 1.0) == 0.0
    assert unlabelled_prior(100, 0, 0.1) == 0.0
    assert unlabelled_prior(100, 100, 0.01) == 0.5  # capped


def test_unlabelled_prior_with_micrographs_without_picks():
    from selfpick.model.losses import unlabelled_prior

    # 100 labelled pixels are 10 % of the particle pixels of 10,000: density 0.1
    assert unlabelled_prior(100, 9900, 0.1, without_picks=1.0) == pytest.approx(0.1)
    # half the crops from each kind: (0.5 * 900 + 0.5 * 1000) / (0.5 * 9900 + 0.5 * 10000)
    assert unlabelled_prior(100, 9900, 0.1, 0.5) == pytest.approx(950 / 9950)
    assert unlabelled_prior(100, 9900, 0.1, 0.0) == unlabelled_prior(100, 9900, 0.1)
    # complete picks: nothing hidden where they were made, particles elsewhere all the same
    assert unlabelled_prior(100, 9900, 1.0, 0.5) == pytest.approx(50 / 9950)
    with pytest.raises(ValueError):
        unlabelled_prior(100, 9900, 0.1, 1.5)
