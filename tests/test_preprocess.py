"""Downsampling, the original <-> model coordinate mapping, and robust normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfpick.config import PreprocessConfig
from selfpick.preprocess import (Scale, area_downsample, choose_downsample, choose_input_stride,
                                 clip_outliers, clip_outliers_tensor, fourier_crop, model_shape,
                                 normalize, normalize_tensor, preprocess, preprocess_tensor,
                                 runs_on_tensors)


def _blob(shape, x0, y0, sigma):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2)).astype(np.float32)


def _centroid(img):
    w = np.asarray(img, dtype=np.float64)
    yy, xx = np.mgrid[: w.shape[0], : w.shape[1]]
    return np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])


# ---------------------------------------------------------------- downsampling


@pytest.mark.parametrize("out_shape", [(32, 32), (27, 40), (33, 17), (64, 63)])
def test_fourier_crop_keeps_the_mean(out_shape):
    rng = np.random.default_rng(0)
    img = rng.normal(3.0, 2.0, size=(64, 80)).astype(np.float32)
    small = fourier_crop(img, out_shape)
    assert small.shape == out_shape and small.dtype == np.float32
    assert small.mean() == pytest.approx(img.mean(), abs=1e-4)
    assert np.isrealobj(small)


def test_fourier_crop_of_a_constant_is_the_same_constant():
    np.testing.assert_allclose(fourier_crop(np.full((50, 60), 2.5), (21, 24)), 2.5, atol=1e-5)


def test_fourier_crop_identity_and_refuses_to_upsample():
    img = np.random.default_rng(1).normal(size=(16, 16)).astype(np.float32)
    same = fourier_crop(img, (16, 16))
    np.testing.assert_array_equal(same, img)
    assert same is not img
    with pytest.raises(ValueError):
        fourier_crop(img, (32, 16))


@pytest.mark.parametrize("method", ["fourier", "area"])
@pytest.mark.parametrize("factor", [2.0, 3.0, 2.5, 1.7, 4.3])
def test_blob_centre_maps_back_to_the_original_position(method, factor):
    """A Gaussian blob's centre, found at model scale, maps back within 0.05 original px."""
    shape = (200, 180)
    x0, y0 = 87.3, 101.7  # deliberately off the pixel grid
    img = _blob(shape, x0, y0, sigma=2.5 * factor)  # 2.5 model px: well sampled
    cfg = PreprocessConfig(downsample=factor, downsample_method=method, clip_sigma=0.0)
    _, scale = preprocess(img, choose_downsample(24.0, cfg), cfg)
    assert scale.method == method
    ms = model_shape(shape, factor)
    small = fourier_crop(img, ms) if method == "fourier" else area_downsample(img, ms)
    # The blob's centre at model scale: its intensity centroid (background is exactly 0).
    found = scale.to_original(_centroid(small))[0]
    np.testing.assert_allclose(found, [x0, y0], atol=0.05)
    # And the other direction: the true centre lands where the blob is in the small image.
    np.testing.assert_allclose(scale.to_model([[x0, y0]])[0], _centroid(small), atol=0.05 / 1.7)


def test_area_downsample_integer_factor_is_a_block_mean():
    img = np.arange(36, dtype=np.float32).reshape(6, 6)
    small = area_downsample(img, (3, 2))
    np.testing.assert_allclose(small, img.reshape(3, 2, 2, 3).mean(axis=(1, 3)))


def test_preprocess_returns_the_model_shape_and_its_scale():
    img = np.random.default_rng(2).normal(size=(130, 101)).astype(np.float32)
    cfg = PreprocessConfig(downsample=2.5)
    out, scale = preprocess(img, 2.5, cfg)
    assert out.shape == model_shape(img.shape, 2.5) == (52, 40)
    assert scale.sx == pytest.approx(101 / 40) and scale.sy == pytest.approx(130 / 52)


def test_choose_downsample():
    assert choose_downsample(200.0, PreprocessConfig(target_particle_px=20)) == pytest.approx(10)
    assert choose_downsample(10.0, PreprocessConfig(target_particle_px=20)) == 1.0  # never up
    assert choose_downsample(200.0, PreprocessConfig(downsample=3.0)) == 3.0  # explicit wins
    # With input stride 2 the model image holds the particle at twice the size.
    assert choose_downsample(200.0, PreprocessConfig(target_particle_px=20), 2) == \
        pytest.approx(5)
    assert choose_downsample(30.0, PreprocessConfig(target_particle_px=20), 2) == 1.0


def test_choose_input_stride():
    cfg = PreprocessConfig(target_particle_px=20)
    assert choose_input_stride(108.0, cfg) == 2  # 108 px >= 2 x 20: twice the detail
    assert choose_input_stride(40.0, cfg) == 2
    assert choose_input_stride(39.0, cfg) == 1  # small particles: the grid would be too coarse
    assert choose_input_stride(108.0, cfg, requested=1) == 1  # the user's choice wins
    assert choose_input_stride(108.0, cfg, requested=3) == 3
    # An explicit downsampling factor decides the particle's size in the model image.
    assert choose_input_stride(108.0, PreprocessConfig(target_particle_px=20, downsample=3)) == 1
    assert choose_input_stride(108.0, PreprocessConfig(target_particle_px=20, downsample=2.5)) == 2


# ---------------------------------------------------------------- Scale


@settings(max_examples=60, deadline=None)
@given(sx=st.floats(0.25, 40.0), sy=st.floats(0.25, 40.0),
       method=st.sampled_from(["fourier", "area"]),
       pts=st.lists(st.tuples(st.floats(-100, 10_000), st.floats(-100, 10_000)), min_size=1,
                    max_size=8))
def test_scale_round_trip(sx, sy, method, pts):
    s = Scale(sx, sy, method)
    xy = np.array(pts, dtype=np.float64)
    np.testing.assert_allclose(s.to_original(s.to_model(xy)), xy, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(s.to_model(s.to_original(xy)), xy, rtol=1e-9, atol=1e-7)
    assert s.to_model(xy).shape == (len(pts), 2)


def test_scale_conventions():
    # Fourier crop: model sample j sits at original j*s.
    f = Scale(4.0, 2.0, "fourier")
    np.testing.assert_allclose(f.to_original([[1, 1]]), [[4, 2]])
    # Area averaging: model pixel 0 covers original [0, s): its centre is (s - 1) / 2.
    a = Scale(4.0, 2.0, "area")
    np.testing.assert_allclose(a.to_original([[0, 0]]), [[1.5, 0.5]])
    np.testing.assert_allclose(a.to_model([[1.5, 0.5]]), [[0, 0]])


# ---------------------------------------------------------------- normalisation


def test_normalize_standardises_robustly():
    rng = np.random.default_rng(3)
    img = rng.normal(10.0, 3.0, size=(256, 256)).astype(np.float32)
    out = normalize(img, clip_sigma=0)
    assert np.median(out) == pytest.approx(0.0, abs=0.02)
    assert out.std() == pytest.approx(1.0, abs=0.03)
    assert out.dtype == np.float32


def test_a_few_huge_outliers_do_not_change_the_scale_and_are_clipped():
    rng = np.random.default_rng(4)
    img = rng.normal(0.0, 2.0, size=(256, 256)).astype(np.float32)
    bad = img.copy()
    idx = rng.choice(img.size, size=50, replace=False)  # hot pixels, an ice crystal
    bad.flat[idx] = np.where(np.arange(50) % 2, 1e6, -1e5)
    clean, dirty = normalize(img, clip_sigma=5.0), normalize(bad, clip_sigma=5.0)
    keep = np.ones(img.size, dtype=bool)
    keep[idx] = False
    # The other pixels are scaled (almost) exactly as without the outliers ...
    np.testing.assert_allclose(dirty.flat[keep], clean.flat[keep], atol=0.02)
    # ... and the outliers are clipped to +-clip_sigma.
    assert dirty.max() == pytest.approx(5.0) and dirty.min() == pytest.approx(-5.0)
    assert np.all(np.abs(dirty.flat[idx]) == pytest.approx(5.0))


@pytest.mark.parametrize("clip", [2.0, 3.5])
def test_normalize_clips_at_clip_sigma(clip):
    img = np.random.default_rng(5).standard_t(2, size=(128, 128)).astype(np.float32)
    out = normalize(img, clip_sigma=clip)
    assert out.max() <= clip and out.min() >= -clip
    assert out.max() == pytest.approx(clip)  # heavy tails do reach the limit


@pytest.mark.parametrize("img", [np.full((32, 32), 7.0), np.zeros((32, 32))])
def test_normalize_constant_image_gives_finite_values(img):
    out = normalize(img)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, 0.0)


def test_normalize_mostly_constant_image_does_not_blow_up():
    # MAD is 0 when more than half the pixels are equal (a blank border); still finite.
    img = np.zeros((64, 64), dtype=np.float32)
    img[:10] = np.random.default_rng(6).normal(size=(10, 64))
    out = normalize(img, clip_sigma=5.0)
    assert np.isfinite(out).all() and np.abs(out).max() <= 5.0


# ---------------------------------------------------------------- hot pixels


def _counts_with_a_hot_pixel(value=60000.0):
    img = np.random.default_rng(3).poisson(30.0, size=(512, 512)).astype(np.float32)
    img[201, 302] = value  # off the model grid: on it, the sinc's samples would be 0
    return img


def test_a_hot_pixel_does_not_ring_across_the_downsampled_image():
    img = _counts_with_a_hot_pixel()
    # Fourier cropping alone turns the pixel into a sinc along its row and column
    ringing, _ = preprocess(img, 4.0, PreprocessConfig(outlier_sigma=0.0))
    clean, _ = preprocess(img, 4.0, PreprocessConfig())
    row, col = round(201 / 4), round(302 / 4)
    far = np.r_[0:col - 8, col + 9:ringing.shape[1]]  # the row away from the pixel itself
    assert np.mean(np.abs(ringing[row, far]) > 3) > 0.5
    assert np.mean(np.abs(ringing) > 3) > 0.03  # one pixel of 262,144
    assert np.mean(np.abs(clean[row, far]) > 3) < 0.03
    assert np.mean(np.abs(clean) > 3) < 0.01


def test_clip_outliers_leaves_ordinary_pixels_and_its_input_alone():
    img = _counts_with_a_hot_pixel()
    before = img.copy()
    out = clip_outliers(img, 10.0)
    np.testing.assert_array_equal(img, before)
    changed = out != img
    assert changed.sum() == 1 and changed[201, 302] and 30 < out[201, 302] < 100
    np.testing.assert_array_equal(clip_outliers(img, 0.0), img)  # 0 = off
    sparse = np.zeros((64, 64), np.float32)  # counts of 0 almost everywhere: MAD 0
    sparse[::7, ::5] = 1.0
    sparse[3, 3] = 500.0
    assert clip_outliers(sparse, 10.0).max() < 10 and clip_outliers(sparse, 10.0)[0, 0] == 1.0


def test_torch_outlier_clipping_equals_the_numpy_one():
    import torch

    img = _counts_with_a_hot_pixel()
    np.testing.assert_array_equal(clip_outliers_tensor(torch.from_numpy(img), 10.0).numpy(),
                                  clip_outliers(img, 10.0))
    want, _ = preprocess(img, 3.0, PreprocessConfig())
    got, _ = preprocess_tensor(torch.from_numpy(img), 3.0, PreprocessConfig())
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=0)


# ---------------------------------------------------------------- torch (GPU) preprocessing


@settings(max_examples=25, deadline=None)
@given(ny=st.integers(16, 160), nx=st.integers(16, 160), factor=st.floats(1.0, 4.0),
       seed=st.integers(0, 2**16), offset=st.floats(-100, 100), spread=st.floats(0.01, 50))
def test_torch_preprocessing_equals_the_numpy_one(ny, nx, factor, seed, offset, spread):
    import torch

    img = (np.random.default_rng(seed).normal(size=(ny, nx)) * spread + offset).astype(np.float32)
    cfg = PreprocessConfig()
    want, want_scale = preprocess(img, factor, cfg)
    got, got_scale = preprocess_tensor(torch.from_numpy(img), factor, cfg)
    assert got_scale == want_scale
    assert got.dtype == torch.float32 and tuple(got.shape) == want.shape
    # Normalised units (clipped at 5): float32 rounding of two FFT libraries, no more. A
    # large offset over a small spread leaves fewer significant bits for the signal in
    # float32 (in either library), hence the tolerance grows with their ratio.
    tol = 2e-5 * (1 + abs(offset) / spread)
    np.testing.assert_allclose(got.numpy(), want, atol=tol, rtol=0)


@pytest.mark.parametrize("n", [7, 8])  # odd and even: numpy averages the two middle values
def test_torch_normalisation_takes_numpys_median(n):
    import torch

    img = np.arange(n * n, dtype=np.float32).reshape(n, n) ** 1.5
    img[0, :3] = [1e6, -1e6, 3e5]
    np.testing.assert_allclose(normalize_tensor(torch.from_numpy(img)).numpy(), normalize(img),
                               rtol=1e-6, atol=1e-6)
    flat = np.full((16, 16), 3.0, np.float32)  # MAD 0: the standard deviation, then 1
    np.testing.assert_allclose(normalize_tensor(torch.from_numpy(flat)).numpy(), normalize(flat))


def test_only_fourier_cropping_without_lowpass_runs_on_tensors():
    import torch

    assert runs_on_tensors(PreprocessConfig())
    assert not runs_on_tensors(PreprocessConfig(downsample_method="area"))
    assert not runs_on_tensors(PreprocessConfig(lowpass_sigma=1.0))
    with pytest.raises(ValueError, match="Fourier"):
        preprocess_tensor(torch.zeros(32, 32), 2.0, PreprocessConfig(downsample_method="area"))
