"""Micrograph preprocessing: outlier clipping, downsampling, robust normalisation, optional
low-pass.

The same :class:`~selfpick.config.PreprocessConfig` is stored in every model file, so picking
applies exactly the steps used in training.

Downsampling is by **Fourier cropping** by default: it is exact for any real factor, keeps
the noise spectrum white (area averaging attenuates high frequencies unevenly and aliases), and
is what Topaz and RELION do. Area averaging is offered because it is cheaper.

Coordinate mapping between original pixels and model pixels (``s`` = original px per model px
along that axis):

- Fourier crop: model sample ``j`` sits at original position ``j * s``.
- Area averaging: model pixel ``j`` covers original ``[j*s, (j+1)*s)``, so its centre is
  ``(j + 0.5) * s - 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.ndimage
import torch

from selfpick.config import PreprocessConfig

# Median/MAD are estimated on a strided subsample: a model image of 1500^2 pixels has
# 2.3 M of them and the robust statistics do not need all of them (two medians of 2.3 M
# values take longer than the rest of the normalisation).
_STATS_MAX_PIXELS = 1 << 19


@dataclass(frozen=True)
class Scale:
    """Mapping between original and model pixels for one micrograph.

    ``sx``, ``sy``: original pixels per model pixel along x (columns) and y (rows).
    ``method``: ``"fourier"`` or ``"area"`` (see the module docstring for the formulas).
    """

    sx: float
    sy: float
    method: str = "fourier"

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """``(N, 2)`` original-pixel centres -> model-pixel centres."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        s = np.array([self.sx, self.sy])
        if self.method == "area":
            return (xy + 0.5) / s - 0.5
        return xy / s

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """``(N, 2)`` model-pixel centres -> original-pixel centres."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        s = np.array([self.sx, self.sy])
        if self.method == "area":
            return (xy + 0.5) * s - 0.5
        return xy * s


def choose_input_stride(diameter_px: float, cfg: PreprocessConfig, requested: int = 0) -> int:
    """The U-Net's input stride (see ``ModelConfig.input_stride``) for a particle of
    ``diameter_px`` original pixels: ``requested`` when given (> 0), else 2 when the particle
    is at least ``2 * cfg.target_particle_px`` pixels across at the explicit downsampling
    factor (or in the original micrograph), else 1.

    The network's grid then holds a particle at about ``target_particle_px`` pixels either
    way; a stride of 2 gives it the detail of twice that at the same cost.
    """
    if requested and requested > 0:
        return int(requested)
    particle = float(diameter_px) / (cfg.downsample if cfg.downsample and cfg.downsample > 0
                                     else 1.0)
    return 2 if particle >= 2 * float(cfg.target_particle_px) else 1


def choose_downsample(diameter_px: float, cfg: PreprocessConfig, input_stride: int = 1) -> float:
    """Factor (original px per model px) for a particle of ``diameter_px`` original pixels.

    An explicit ``cfg.downsample`` wins; otherwise the particle becomes about
    ``cfg.target_particle_px * input_stride`` model pixels across. Never upsamples.
    """
    if cfg.downsample and cfg.downsample > 0:
        return float(cfg.downsample)
    return max(1.0, float(diameter_px) / (float(cfg.target_particle_px) * max(1, input_stride)))


def model_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """Shape ``(ny, nx)`` of a micrograph of original ``shape`` after downsampling."""
    return (max(1, int(round(shape[0] / factor))), max(1, int(round(shape[1] / factor))))


def fourier_crop(image: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Downsample ``image`` ``(ny, nx)`` to ``out_shape`` by keeping its low frequencies.

    The mean is preserved. Columns are cropped after the first (real) transform along x, so the
    second transform runs on the kept columns only -- about half the work of a full 2-D FFT.
    """
    ny, nx = image.shape
    my, mx = out_shape
    if (my, mx) == (ny, nx):
        return np.asarray(image, dtype=np.float32).copy()
    if my > ny or mx > nx:
        raise ValueError("fourier_crop only downsamples")
    img = np.asarray(image, dtype=np.float32)
    f = scipy.fft.rfft(img, axis=1, workers=-1)[:, : mx // 2 + 1]
    f = scipy.fft.fft(f, axis=0, workers=-1)
    top = (my + 1) // 2
    bottom = my // 2
    f = np.concatenate([f[:top], f[ny - bottom:]], axis=0) if bottom else f[:top]
    if my % 2 == 0 and my < ny:
        # The kept Nyquist row stands for both +/- Nyquist of the larger grid: halve it
        # so the result stays real and unbiased.
        f[my // 2] *= 0.5
    out = scipy.fft.ifft(f, axis=0, workers=-1)
    out = scipy.fft.irfft(out, n=mx, axis=1, workers=-1)
    out *= (my * mx) / (ny * nx)
    return out.astype(np.float32, copy=False)


def fourier_crop_tensor(image: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor:
    """:func:`fourier_crop` with torch's FFT, on whatever device ``image`` ``(ny, nx)`` is on.

    The same transforms in the same order, so on a GPU the result equals the NumPy one up to
    float32 rounding (a 4096^2 micrograph: under a millisecond on the GPU, about 0.1 s of
    one CPU core with SciPy).
    """
    ny, nx = image.shape
    my, mx = out_shape
    img = image.float()
    if (my, mx) == (ny, nx):
        return img.clone()
    if my > ny or mx > nx:
        raise ValueError("fourier_crop only downsamples")
    f = torch.fft.rfft(img, dim=1)[:, : mx // 2 + 1]
    f = torch.fft.fft(f, dim=0)
    top = (my + 1) // 2
    bottom = my // 2
    f = torch.cat([f[:top], f[ny - bottom:]], dim=0) if bottom else f[:top].clone()
    if my % 2 == 0 and my < ny:
        f[my // 2] *= 0.5  # see fourier_crop
    out = torch.fft.ifft(f, dim=0)
    out = torch.fft.irfft(out, n=mx, dim=1)
    return out * ((my * mx) / (ny * nx))


def area_downsample(image: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Downsample by averaging the original pixels covering each model pixel."""
    ny, nx = image.shape
    my, mx = out_shape
    img = np.asarray(image, dtype=np.float32)
    fy, fx = ny / my, nx / mx
    if fy == int(fy) and fx == int(fx):
        fy, fx = int(fy), int(fx)
        return img[: my * fy, : mx * fx].reshape(my, fy, mx, fx).mean(axis=(1, 3), dtype=np.float32)
    import skimage.transform

    return skimage.transform.resize(img, out_shape, order=1, anti_aliasing=True,
                                    preserve_range=True).astype(np.float32)


def _robust_centre_scale(sample: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 * MAD of ``sample``. When the MAD is 0 (more than half the pixels
    hold one value: a blank border, sparse electron counts), the standard deviation of the
    values left after dropping the highest and lowest 0.1 % (which a few hot pixels would
    otherwise set); 1 when that is 0 too."""
    med = float(np.median(sample))
    sigma = 1.4826 * float(np.median(np.abs(sample - med)))
    if not np.isfinite(sigma) or sigma <= 0:
        v = np.sort(np.ravel(sample))
        k = v.size // 1000
        sigma = float(v[k:v.size - k].std()) or 1.0
    return med, sigma


def clip_outliers(image: np.ndarray, n_sigma: float) -> np.ndarray:
    """Original micrograph ``(ny, nx)`` with pixels farther than ``n_sigma`` robust standard
    deviations from the median clipped to that bound, as float32 (the input is untouched).

    For hot or dead detector pixels in raw counts: Fourier cropping spreads one such pixel
    into a cross of ringing across the whole model image (a sinc along its row and column)
    that no later clipping removes. Real signal never comes near the bound: in raw counts a
    particle changes a pixel by a fraction of the noise, and in denoised or 8-bit images the
    model image is clipped at ``clip_sigma`` (5) after downsampling anyway. ``n_sigma`` <= 0:
    no clipping.
    """
    img = np.asarray(image, dtype=np.float32)
    if not n_sigma or n_sigma <= 0:
        return img
    if np.may_share_memory(img, image):  # float32 input (a memory-mapped file, say)
        img = img.copy()
    step = max(1, int(np.sqrt(img.size / _STATS_MAX_PIXELS)))
    med, sigma = _robust_centre_scale(img[::step, ::step])
    np.clip(img, med - n_sigma * sigma, med + n_sigma * sigma, out=img)
    return img


def normalize(image: np.ndarray, clip_sigma: float = 5.0) -> np.ndarray:
    """Robust standardisation: subtract the median, divide by 1.4826 * MAD, clip to +-clip_sigma.

    Robust statistics keep a few hot pixels, ice crystals or a carbon edge from setting the
    scale of the whole micrograph.
    """
    img = np.asarray(image, dtype=np.float32)
    step = max(1, int(np.sqrt(img.size / _STATS_MAX_PIXELS)))
    med, sigma = _robust_centre_scale(img[::step, ::step])
    out = (img - med) / sigma
    if clip_sigma and clip_sigma > 0:
        np.clip(out, -clip_sigma, clip_sigma, out=out)
    return out.astype(np.float32, copy=False)


def _median(x: torch.Tensor) -> float:
    """NumPy's median of a 1-D tensor: the mean of the two middle values when their number
    is even (``torch.median`` returns the lower one)."""
    v = torch.sort(x).values
    n = v.numel()
    if n % 2:
        return float(v[n // 2])
    # Averaged in float32, as np.median does for float32 input.
    return float((v[n // 2 - 1 : n // 2 + 1].sum() / 2).cpu())


def _robust_centre_scale_tensor(sample: torch.Tensor) -> tuple[float, float]:
    """:func:`_robust_centre_scale` of a 1-D tensor."""
    med = _median(sample)
    sigma = 1.4826 * _median((sample - med).abs())
    if not np.isfinite(sigma) or sigma <= 0:
        v = torch.sort(sample).values
        k = v.numel() // 1000
        sigma = float(v[k:v.numel() - k].std(correction=0)) or 1.0
    return med, sigma


def clip_outliers_tensor(image: torch.Tensor, n_sigma: float) -> torch.Tensor:
    """:func:`clip_outliers` of a tensor ``(ny, nx)``, on its own device, as float32."""
    img = image.float()
    if not n_sigma or n_sigma <= 0:
        return img
    if img.data_ptr() == image.data_ptr():
        img = img.clone()
    step = max(1, int(np.sqrt(img.numel() / _STATS_MAX_PIXELS)))
    med, sigma = _robust_centre_scale_tensor(img[::step, ::step].reshape(-1))
    return img.clamp_(med - n_sigma * sigma, med + n_sigma * sigma)


def normalize_tensor(image: torch.Tensor, clip_sigma: float = 5.0) -> torch.Tensor:
    """:func:`normalize` of a float32 tensor ``(H, W)``, on its own device."""
    img = image.float()
    step = max(1, int(np.sqrt(img.numel() / _STATS_MAX_PIXELS)))
    med, sigma = _robust_centre_scale_tensor(img[::step, ::step].reshape(-1))
    out = (img - med) / sigma
    if clip_sigma and clip_sigma > 0:
        out.clamp_(-clip_sigma, clip_sigma)
    return out


def runs_on_tensors(cfg: PreprocessConfig) -> bool:
    """Whether :func:`preprocess_tensor` implements ``cfg`` (Fourier cropping without the
    optional low-pass; the other settings preprocess with NumPy/SciPy on the CPU)."""
    return cfg.downsample_method == "fourier" and not (cfg.lowpass_sigma and cfg.lowpass_sigma > 0)


def preprocess_tensor(image: torch.Tensor, factor: float, cfg: PreprocessConfig
                      ) -> tuple[torch.Tensor, Scale]:
    """:func:`preprocess` of an original micrograph tensor ``(ny, nx)`` on its device (a GPU:
    the downsampling then costs the picking machine's CPUs nothing). Only for settings where
    :func:`runs_on_tensors` holds; returns the model-scale float32 tensor and the
    :class:`Scale`, as :func:`preprocess` does.
    """
    if not runs_on_tensors(cfg):
        raise ValueError("preprocess_tensor does Fourier cropping without a low-pass only")
    shape = model_shape(tuple(image.shape), factor)
    image = clip_outliers_tensor(image, cfg.outlier_sigma)
    out = normalize_tensor(fourier_crop_tensor(image, shape), cfg.clip_sigma)
    scale = Scale(image.shape[1] / shape[1], image.shape[0] / shape[0], cfg.downsample_method)
    return out, scale


def preprocess(image: np.ndarray, factor: float, cfg: PreprocessConfig) -> tuple[np.ndarray, Scale]:
    """Original micrograph ``(ny, nx)`` -> model-scale image and the coordinate :class:`Scale`.

    ``factor`` is original px per model px (see :func:`choose_downsample`).
    """
    shape = model_shape(image.shape, factor)
    image = clip_outliers(image, cfg.outlier_sigma)
    if cfg.downsample_method == "area":
        small = area_downsample(image, shape)
    else:
        small = fourier_crop(image, shape)
    if cfg.lowpass_sigma and cfg.lowpass_sigma > 0:
        small = scipy.ndimage.gaussian_filter(small, cfg.lowpass_sigma, mode="reflect")
    out = normalize(small, cfg.clip_sigma)
    scale = Scale(image.shape[1] / shape[1], image.shape[0] / shape[0], cfg.downsample_method)
    return out, scale
