"""selfpick model files.

A model file is a ``torch.save`` of a plain dictionary -- tensors, numbers, strings, lists and
dicts only, so it loads with ``torch.load(..., weights_only=True)`` and can never run code::

    {
      "format": "selfpick-model",
      "format_version": 1,
      "selfpick_version": "0.1.0", "torch_version": "2.13.0",
      "created": "2026-11-23T10:00:00+00:00",
      "stage": "iteration_1_selftrain",
      "config": {...},                 # the whole experiment Config (preprocess, model, ...)
      "particle_diameter": 108.0,      # original pixels
      "downsample": 5.4,               # original px per model px
      "threshold": 0.41,               # picking threshold chosen on validation
      "min_distance": 0.5,             # fraction of the diameter between picks
      "metrics": {...},                # validation metrics of this stage (may be empty)
      "state_dict": {...},             # U-Net weights
    }

Everything needed to pick with the model is inside: no flags to remember.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from selfpick import __version__
from selfpick.config import Config
from selfpick.errors import ModelFileError
from selfpick.model.unet import UNet
from selfpick.utils.atomic import atomic_path

FORMAT = "selfpick-model"
FORMAT_VERSION = 1


@dataclass
class SavedModel:
    """A model with everything needed to use it."""

    model: UNet
    config: Config
    particle_diameter: float  # original pixels
    downsample: float  # original px per model px
    threshold: float  # score threshold chosen on validation
    min_distance: float = 0.5  # fraction of the particle diameter
    stage: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    selfpick_version: str = __version__

    @property
    def radius_model_px(self) -> float:
        """Particle radius in model pixels."""
        return self.particle_diameter / 2 / self.downsample

    @property
    def tta(self) -> int:
        """Views averaged at picking (:func:`selfpick.picking.inference.augmented_logits`),
        as in the validation that chose :attr:`threshold`."""
        return int(self.config.pick.tta)

    @property
    def edge_margin(self) -> float:
        """Picks closer than this to a micrograph edge are dropped (original pixels)."""
        return float(self.config.pick.edge_margin or 0.0)


def model_payload(model: torch.nn.Module, config: Config, particle_diameter: float,
                  downsample: float, threshold: float, min_distance: float = 0.5,
                  stage: str = "", metrics: dict | None = None) -> dict[str, Any]:
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "selfpick_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "stage": stage,
        "config": config.to_dict(),
        "particle_diameter": float(particle_diameter),
        "downsample": float(downsample),
        "threshold": float(threshold),
        "min_distance": float(min_distance),
        "metrics": _plain(metrics or {}),
        "state_dict": state,
    }


def save_model(path: str | os.PathLike, model: torch.nn.Module, config: Config,
               particle_diameter: float, downsample: float, threshold: float,
               min_distance: float = 0.5, stage: str = "", metrics: dict | None = None) -> None:
    """Write a model file atomically (a crash never leaves a truncated model behind)."""
    payload = model_payload(model, config, particle_diameter, downsample, threshold,
                            min_distance, stage, metrics)
    with atomic_path(path) as tmp:
        # Serialised in memory first (models are a few MB at most), then written by Python:
        # on a full disk torch.save's own C++ writer fails with a RuntimeError that hides the
        # OSError ("no space left") atomic_path reports to the user.
        buf = io.BytesIO()
        torch.save(payload, buf)
        _write_durably(tmp, buf.getbuffer())


def _write_durably(path: Path, data) -> None:
    """Write ``data`` (bytes-like) to ``path`` and flush it to the disk."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               inference: bool = True) -> SavedModel:
    """Load a model file safely (``weights_only=True``); the model is in eval mode on ``device``.

    ``inference=True`` (the default: picking, evaluation, reports) folds BatchNorm into the
    convolutions, which is faster with the same outputs; give ``inference=False`` to get the
    trainable network with its BatchNorm layers, e.g. to continue training.

    Raises :class:`ModelFileError` for files that are not selfpick models, are damaged, try to
    run code when loaded, or come from an incompatible format version.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError("model file not found", path)
    if path.stat().st_size == 0:
        raise ModelFileError("the model file is empty (0 bytes)", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(
            "refused to load: the file contains Python objects other than weights and settings "
            "(it is not a selfpick model, or it was crafted to run code when loaded)", path
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types on foreign files
        raise ModelFileError(f"not a readable model file (damaged or not a PyTorch file: "
                             f"{type(exc).__name__}: {exc})", path) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError("not a selfpick model file (no selfpick header)", path)
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"model format {version} (made by selfpick {payload.get('selfpick_version', '?')}) "
            f"cannot be read by selfpick {__version__}, which reads model format {FORMAT_VERSION}",
            path,
        )
    try:
        config = Config.from_saved(payload["config"], source=path)
        model = UNet.from_config(config.model)
        model.load_state_dict(payload["state_dict"])
        saved = SavedModel(
            model=model,
            config=config,
            particle_diameter=float(payload["particle_diameter"]),
            downsample=float(payload["downsample"]),
            threshold=float(payload["threshold"]),
            min_distance=float(payload.get("min_distance", 0.5)),
            stage=str(payload.get("stage", "")),
            metrics=dict(payload.get("metrics", {})),
            created=str(payload.get("created", "")),
            selfpick_version=str(payload.get("selfpick_version", "")),
        )
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"the model file is damaged or inconsistent ({exc})", path) from exc
    if inference:
        saved.model = saved.model.eval().fused()
    # Channels-last weights: see selfpick.picking.inference (about 2x faster on CPUs).
    saved.model.to(device=device, memory_format=torch.channels_last).eval()
    return saved


def _plain(obj: Any) -> Any:
    """JSON-like copy of ``obj`` (numpy scalars to Python), safe for ``weights_only`` loading."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
