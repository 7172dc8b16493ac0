"""Figures (matplotlib, Agg backend: no display needed, safe in background threads and jobs).

Every function writes one PNG at 150 dpi atomically. Callers treat a failing figure as a
warning, never as a reason to lose a training stage.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from selfpick.utils.atomic import atomic_path  # noqa: E402

DPI = 150
# target maps: -1 ignore (grey), 0 background (black), 1 particle (white)
TARGET_CMAP = ListedColormap(["#7f7f7f", "#000000", "#ffffff"])


def _display_range(image: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(np.asarray(image, dtype=np.float32)[::4, ::4], [1, 99])
    return float(lo), float(hi)


def save_figure(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", bbox_inches="tight")
    plt.close(fig)


def stage_figure(path, image: np.ndarray, ground_truth: np.ndarray, training_target: np.ndarray,
                 prob: np.ndarray, title: str = "", target_title: str = "Pseudo-label") -> None:
    """The 4-panel comparison: input | ground truth | pseudo-label | prediction heat map.

    All arrays are ``(h, w)`` at model scale; targets hold 1 / 0 / -1 (ignored, grey).
    """
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    lo, hi = _display_range(image)
    axes[0].imshow(image, cmap="gray", vmin=lo, vmax=hi)
    axes[0].set_title("Input")
    axes[1].imshow(ground_truth, cmap=TARGET_CMAP, vmin=-1, vmax=1, interpolation="nearest")
    axes[1].set_title("Ground truth (grey = ignored)")
    axes[2].imshow(training_target, cmap=TARGET_CMAP, vmin=-1, vmax=1, interpolation="nearest")
    axes[2].set_title(target_title)
    im = axes[3].imshow(prob, cmap="magma", vmin=0, vmax=1)
    axes[3].set_title("Prediction (probability)")
    fig.colorbar(im, ax=axes[3], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
