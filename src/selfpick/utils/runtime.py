"""Devices, seeds and version information."""

from __future__ import annotations

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
