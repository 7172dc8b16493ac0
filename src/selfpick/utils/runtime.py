"""Devices, seeds, the memory allocator and version information."""

from __future__ import annotations

import ctypes
import os
import platform
import random
import sys

import numpy as np
import torch

from selfpick.errors import SelfpickError


def resolve_device(spec: str | None) -> torch.device:
    """``auto`` -> the first GPU when there is one, else the CPU; explicit names are checked."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") or spec.isdigit():
        if spec.isdigit():
            spec = f"cuda:{spec}"
        if not torch.cuda.is_available():
            raise SelfpickError(f"--device {spec}: no CUDA GPU is available on this machine "
                                "(use --device cpu)")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SelfpickError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) here")
        return dev
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    raise SelfpickError(f"--device {spec!r} is not understood (use auto, cpu, cuda or cuda:N)")


# glibc mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap (glibc's maximum for the setting); freed heap
# memory goes back to the system only when this much sits unused at its top.
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
_TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024
_allocator_tuned: bool | None = None


def tune_allocator() -> bool:
    """Keep glibc from returning every large feature map to the system (Linux only).

    By default glibc serves blocks above a few MB with fresh ``mmap`` pages and unmaps them
    on ``free``: every U-Net feature map of a micrograph (~18 MB at 760x760x8 float32) is
    then page-faulted and zeroed again on every call, which doubled the CPU network time in
    ``bench/speed.py`` (0.085 -> 0.044 s per 4096^2 micrograph with this tuning). Serving them
    from the heap reuses the same pages. Peak memory is unchanged (memory is kept for reuse
    up to the peak, not beyond). Idempotent; returns whether the setting is active.

    Skipped when the user set glibc's own ``MALLOC_*_`` variables or ``SELFPICK_MALLOC=off``,
    and on systems without glibc.
    """
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if os.environ.get("SELFPICK_MALLOC", "").lower() in ("off", "0", "no", "false"):
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                     "MALLOC_MMAP_MAX_")):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _allocator_tuned = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
                            and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
    return _allocator_tuned


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally insist on deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def versions() -> dict[str, str]:
    from selfpick import __version__

    return {
        "selfpick": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda or "none",
    }
