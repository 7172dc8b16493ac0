"""Figures (matplotlib, Agg backend: no display needed, safe in background threads and jobs).

Every function writes one PNG at 150 dpi atomically. Callers treat a failing figure as a
warning, never as a reason to lose a training stage.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """Write ``fig`` as a 150-dpi PNG atomically and close it (also when writing fails)."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI, format="png", bbox_inches="tight")
    finally:
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


# ----------------------------------------------------------------------------- shared pieces

# Pick overlay colours. Missed particles are also dashed, so the three classes differ by more
# than hue (red/orange are hard to tell apart for many readers).
TP_COLOUR = "#2ecc40"  # green: pick matched to a true particle
FP_COLOUR = "#ff2d2d"  # red: pick that matches no true particle
MISSED_COLOUR = "#ff9f1a"  # orange: true particle that no pick matched
PICK_COLOUR = "#00d5ff"  # cyan: a pick when there is no ground truth to judge it

LEVEL_COLOURS = {"precision": "#1f77b4", "recall": "#ff7f0e", "f1": "#2ca02c",
                 "best_f1": "#0b5d1e", "average_precision": "#9467bd", "iou": "#8c564b",
                 "roc_auc": "#d62728", "pr_auc": "#9467bd", "corrected_f1": "#17becf"}


def short_stage_label(stage: str) -> str:
    """A stage name for an axis: ``iteration_2_selftrain`` -> ``2 self-train``."""
    parts = stage.split("_")
    if len(parts) >= 3 and parts[0] == "iteration" and parts[1].isdigit():
        kind = "_".join(parts[2:])
        kind = {"selftrain": "self-train"}.get(kind, kind)
        return f"{parts[1]} {kind}"
    return stage


def _num(x) -> float:
    """A metric value for plotting: ``None`` (undefined) becomes NaN, i.e. a gap in the line."""
    return float("nan") if x is None else float(x)


# ----------------------------------------------------------------------------- progression

def progression_figure(path, stages: list[dict], best_stage: str | None = None,
                       title: str = "") -> None:
    """Validation metrics per stage, two panels: particle level | pixel level.

    ``stages`` are the entries of an experiment's root ``metrics.json`` (each with
    ``stage`` and ``validation.particle`` / ``validation.pixel``). All values are fractions in
    [0, 1]; the particle threshold is the stage's own picking threshold, the pixel threshold
    is a probability of 0.5. The best stage gets a shaded band.
    """
    if not stages:
        raise ValueError("no stages to plot")
    names = [s["stage"] for s in stages]
    x = np.arange(len(stages))
    part = [s["validation"]["particle"] for s in stages]
    pix = [s["validation"]["pixel"] for s in stages]
    split = stages[0]["validation"].get("split", "val")
    n_mic = stages[0]["validation"].get("n_micrographs")
    radius = part[0].get("match_radius")

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    particle_lines = [("precision", "precision", "-", "o"), ("recall", "recall", "-", "s"),
                      ("f1", "F1", "-", "D"), ("best_f1", "best F1 (any threshold)", "--", "d"),
                      ("average_precision", "average precision (AP)", ":", "^")]
    for key, label, ls, mk in particle_lines:
        axes[0].plot(x, [_num(p.get(key)) for p in part], ls, marker=mk, label=label,
                     color=LEVEL_COLOURS[key], lw=2, ms=6)
    corrected = [p.get("corrected", {}).get("f1") for p in part]
    if any(c is not None for c in corrected):
        axes[0].plot(x, [_num(c) for c in corrected], "-.", marker="x",
                     color=LEVEL_COLOURS["corrected_f1"], lw=1.5,
                     label="F1, precision corrected for unlabelled particles")
    pixel_lines = [("precision", "precision", "-", "o"), ("recall", "recall", "-", "s"),
                   ("f1", "F1", "-", "D"), ("iou", "IoU", "--", "v"),
                   ("roc_auc", "ROC-AUC", ":", "^"), ("pr_auc", "PR-AUC", "-.", "P")]
    for key, label, ls, mk in pixel_lines:
        axes[1].plot(x, [_num(p.get(key)) for p in pix], ls, marker=mk, label=label,
                     color=LEVEL_COLOURS[key], lw=2, ms=6)

    where = f"{split} split" + (f", {n_mic} micrograph(s)" if n_mic is not None else "")
    radius_txt = f", match radius {radius:.3g} px" if radius else ""
    axes[0].set_title(f"Particle level — picks vs labelled centres\n({where}; at each stage's "
                      f"threshold{radius_txt})", fontsize=10.5)
    axes[1].set_title(f"Pixel level — probability map vs ground-truth target\n({where}; valid "
                      "pixels, probability ≥ 0.5)", fontsize=10.5)
    labels = [short_stage_label(n) for n in names]
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=20 if len(x) > 4 else 0, ha="right" if len(x) > 4
                           else "center")
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_ylim(0, 1.12)
        ax.set_xlabel("stage")
        ax.grid(True, alpha=0.3)
        if best_stage in names:
            b = names.index(best_stage)
            ax.axvspan(b - 0.4, b + 0.4, color="#ffd54f", alpha=0.35, lw=0, zorder=0)
            ax.text(b, 1.11, "best stage", ha="center", va="top", fontsize=9,
                    color="#8a6d00")
        # Legends below the axes: inside they would hide the lines they describe.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=9,
                  frameon=False)
    axes[0].set_ylabel("value (fraction)")
    fig.suptitle(title or "Validation metrics across stages", fontsize=12)
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------- PR curves

def threshold_figure(path, series: list[dict], title: str = "") -> None:
    """Validation F1 against the picking threshold, one curve per stage.

    Each item of ``series``: ``label``, ``threshold`` and ``f1`` (equal-length arrays,
    thresholds descending), ``chosen`` (the stage's threshold), optional ``range``
    (``[low, high]``: thresholds within one standard error of the best F1, shaded) and
    optional ``best`` (bool: drawn thicker). A flat top means the threshold matters little;
    a peak at the bottom of the score range, a model unsure of every particle.
    """
    if not series:
        raise ValueError("no curves to plot")
    fig, ax = plt.subplots(figsize=(7.6, 4.6))
    cmap = plt.get_cmap("viridis")
    n = len(series)
    for i, s in enumerate(series):
        colour = cmap(0.85 * i / max(1, n - 1))
        t, f = np.asarray(s["threshold"], float), np.asarray(s["f1"], float)
        ax.plot(t, f, color=colour, lw=2.4 if s.get("best") else 1.2, label=s["label"])
        if s.get("chosen") is not None and len(t):
            j = int(np.argmin(np.abs(t - s["chosen"])))
            ax.plot([s["chosen"]], [f[j]], "o", color=colour, ms=7, mec="black", zorder=5)
        if s.get("range") and s.get("best"):
            lo, hi = s["range"]
            ax.axvspan(lo, hi, color=colour, alpha=0.15, lw=0,
                       label=f"{s['label']}: within 1 s.e. of the best F1")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("picking threshold (score)")
    ax.set_ylabel("validation particle F1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    save_figure(fig, path)


def pr_curve_figure(path, series: list[dict], title: str = "") -> None:
    """Particle-level precision–recall curves, one per stage, on the same micrographs.

    Each item of ``series``: ``label``, ``precision`` and ``recall`` (equal-length arrays of
    fractions, one point per score threshold, thresholds descending), optional ``ap``
    (average precision), optional ``at`` = ``{"precision", "recall", "threshold"}`` (the
    stage's own picking threshold, marked with a dot) and optional ``best`` (bool: drawn
    thicker). Grey curves are iso-F1 lines. When every marked point has precision and recall
    of at least 0.8, an inset magnifies that corner (good pickers differ only there).
    """
    if not series:
        raise ValueError("no curves to plot")
    fig, ax = plt.subplots(figsize=(7.6, 6.4))
    cmap = plt.get_cmap("viridis")
    n = len(series)
    colours = [cmap(0.85 * i / max(1, n - 1)) for i in range(n)]
    points = [s.get("at") for s in series]
    points = [a if a and a.get("recall") is not None and a.get("precision") is not None
              else None for a in points]
    marked = [a for a in points if a is not None]
    zoom = None
    if marked and min(min(a["recall"], a["precision"]) for a in marked) >= 0.8:
        lo_r = max(0.0, min(a["recall"] for a in marked) - 0.06)
        lo_p = max(0.0, min(a["precision"] for a in marked) - 0.06)
        zoom = (lo_r, lo_p)

    def iso_f1(target, lo_r=0.0, lo_p=0.0, labels=True):
        # Iso-F1 contours give the reader the F1 of any point without a calculator.
        r = np.linspace(max(0.01, lo_r), 1, 300)
        levels = (0.2, 0.4, 0.6, 0.8, 0.9) if not lo_r else (0.8, 0.85, 0.9, 0.95, 0.98)
        for f in levels:
            with np.errstate(divide="ignore", invalid="ignore"):
                p = f * r / (2 * r - f)
            ok = (p > max(0.0, lo_p)) & (p <= 1.0) & (2 * r > f)
            target.plot(r[ok], p[ok], color="0.75", lw=0.8, zorder=0)
            k = np.flatnonzero(ok)
            if labels and len(k):
                target.text(r[k[-1]], p[k[-1]] + 0.003, f"F1={f:g}", fontsize=7,
                            color="0.5", ha="right", va="bottom")

    def curves(target, thick: float = 1.0, with_labels: bool = True):
        for i, s in enumerate(series):
            prec = np.asarray(s["precision"], dtype=float)
            rec = np.asarray(s["recall"], dtype=float)
            label = s["label"]
            if s.get("ap") is not None:
                label += f" (AP {s['ap']:.3f})"
            if s.get("best"):
                label += " — best stage"
            if len(prec):
                # Start the curve at recall 0 with the first precision: a curve that starts in
                # mid-air reads like a plotting error.
                target.plot(np.r_[0.0, rec], np.r_[prec[0], prec], color=colours[i],
                            lw=(2.6 if s.get("best") else 1.6) * thick,
                            label=label if with_labels else None)
            elif with_labels:
                target.plot([], [], color=colours[i], label=label + " — no picks")
            at = points[i]
            if at is not None:
                target.plot(at["recall"], at["precision"], "o", ms=8 * thick, mfc=colours[i],
                            mec="black", mew=1.0, zorder=5)

    def thresholds(target):
        for i, at in enumerate(points):
            if at is None or at.get("threshold") is None:
                continue
            # Down and to the left of the point (good pickers crowd the top right corner),
            # stacked so that stages do not write over each other.
            target.annotate(f"t={at['threshold']:.2f}", (at["recall"], at["precision"]),
                            textcoords="offset points", xytext=(-14, -14 - 11 * i),
                            ha="right", fontsize=8, color=colours[i],
                            arrowprops={"arrowstyle": "-", "color": colours[i], "lw": 0.6})

    # Under a magnifying inset the main panel's contour labels would be half hidden.
    iso_f1(ax, labels=zoom is None)
    curves(ax)
    ax.plot([], [], "o", ms=8, mfc="white", mec="black",
            label="stage's own picking threshold (t)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    if zoom is None:
        thresholds(ax)
    else:
        ins = ax.inset_axes([0.43, 0.25, 0.54, 0.52])
        iso_f1(ins, zoom[0], zoom[1])
        curves(ins, thick=0.8, with_labels=False)
        thresholds(ins)
        ins.set_xlim(zoom[0], 1.005)
        ins.set_ylim(zoom[1], 1.005)
        ins.tick_params(labelsize=7)
        ins.grid(True, alpha=0.3)
        ins.set_title("magnified", fontsize=8)
        ax.indicate_inset_zoom(ins, edgecolor="0.4")
    ax.set_xlabel("recall (share of true particles picked)")
    ax.set_ylabel("precision (share of picks that are true particles)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8.5, framealpha=0.9)
    ax.set_title(title or "Particle-level precision–recall", fontsize=10.5)
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------- overlays

@dataclass
class PickClasses:
    """How each pick and each true particle came out of matching.

    ``tp``/``fp``: ``(N,)`` bool over the picks; ``missed``: ``(M,)`` bool over the truths.
    """

    tp: np.ndarray
    fp: np.ndarray
    missed: np.ndarray

    def counts(self) -> dict:
        return {"tp": int(self.tp.sum()), "fp": int(self.fp.sum()),
                "missed": int(self.missed.sum())}


def classify_picks(pred_xy, scores, true_xy, radius: float) -> PickClasses:
    """True positives, false positives and missed truths, by the project's matching rule.

    ``pred_xy`` ``(N, 2)`` and ``true_xy`` ``(M, 2)`` are ``(x, y)`` centres and ``radius``
    the match radius, all in the same pixels (normally original micrograph pixels);
    ``scores`` ``(N,)`` or ``None``. Uses :func:`selfpick.evaluation.matching.match_picks`, so
    the counts are exactly those behind the particle-level metrics.
    """
    from selfpick.evaluation.matching import match_picks

    res = match_picks(pred_xy, scores, true_xy, radius)
    m = len(np.asarray(true_xy).reshape(-1, 2)) if np.asarray(true_xy).size else 0
    missed = np.ones(m, dtype=bool)
    missed[res.matched_truth[res.matched_truth >= 0]] = False
    return PickClasses(tp=res.is_tp.copy(), fp=~res.is_tp, missed=missed)


def display_image(image: np.ndarray, diameter: float | None = None,
                  max_width: int = 1000) -> tuple[np.ndarray, int]:
    """A micrograph made readable for a figure: binned, low-passed, contrast-stretched.

    Returns ``(display, factor)``: ``display`` is the image binned by the integer ``factor``
    (display pixel ``j`` covers original pixels ``j*factor .. j*factor + factor - 1``) to about
    ``max_width`` pixels across, low-passed with a Gaussian of about a tenth of the particle
    ``diameter`` (original pixels) -- raw micrographs are mostly noise at this size -- and
    contrast-stretched (median +- 3 robust standard deviations) to [0, 1].
    """
    import scipy.ndimage

    img = np.asarray(image, dtype=np.float32)
    ny, nx = img.shape
    factor = max(1, int(round(nx / max_width)))
    if factor > 1:
        my, mx = ny // factor, nx // factor
        img = img[: my * factor, : mx * factor].reshape(my, factor, mx, factor).mean(axis=(1, 3))
    if diameter:
        sigma = float(diameter) / factor / 10.0
        if sigma >= 0.5:
            img = scipy.ndimage.gaussian_filter(img, sigma, mode="reflect")
    # Median +- 3 robust sigmas, never beyond the 1st/99th percentiles: gold beads, carbon and
    # ice contamination would otherwise set the grey scale and leave particles near-invisible.
    lo, hi = np.percentile(img, [1, 99])
    med = float(np.median(img))
    sigma = 1.4826 * float(np.median(np.abs(img - med)))
    if sigma > 0:
        lo, hi = max(lo, med - 3 * sigma), min(hi, med + 3 * sigma)
    if not hi > lo:
        hi = lo + 1.0
    return np.clip((img - lo) / (hi - lo), 0, 1).astype(np.float32), factor


def overlay_figure(path, image: np.ndarray, picks_xy, diameter: float, truth_xy=None,
                   classes: PickClasses | None = None, title: str = "",
                   max_width: int = 1000) -> dict:
    """Picks drawn as circles of the particle ``diameter`` on the micrograph.

    ``image`` is the original micrograph ``(ny, nx)``; ``picks_xy`` ``(N, 2)`` and
    ``truth_xy`` ``(M, 2)`` are ``(x, y)`` centres in original pixels (x = column, y = row);
    ``diameter`` is in original pixels. With ``classes`` (see :func:`classify_picks`) picks are
    green (true positive) or red (false positive) and unmatched truths orange and dashed
    (missed); without, picks are cyan. Returns the counts shown in the legend.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    picks = np.asarray(picks_xy, dtype=np.float64).reshape(-1, 2)
    truth = None if truth_xy is None else np.asarray(truth_xy, dtype=np.float64).reshape(-1, 2)
    disp, f = display_image(image, diameter, max_width)
    my, mx = disp.shape
    # Axes in ORIGINAL pixel coordinates (pixel centres at integers), so the circles need no
    # rescaling: binned display pixel j spans original [j*f - 0.5, (j+1)*f - 0.5].
    extent = (-0.5, mx * f - 0.5, my * f - 0.5, -0.5)
    width_in = max(6.0, min(11.0, mx / DPI + 0.6))
    fig, ax = plt.subplots(figsize=(width_in, width_in * my / mx + 1.3))
    ax.imshow(disp, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="antialiased")
    r = float(diameter) / 2
    lw = 1.3
    handles, counts = [], {}

    def draw(xy, colour, ls="-"):
        for x, y in xy:
            ax.add_patch(Circle((x, y), r, fill=False, ec=colour, lw=lw, ls=ls))

    if classes is not None and truth is not None:
        draw(picks[classes.tp], TP_COLOUR)
        draw(picks[classes.fp], FP_COLOUR)
        draw(truth[classes.missed], MISSED_COLOUR, "--")
        counts = classes.counts()
        handles = [
            Line2D([], [], ls="none", marker="o", ms=10, mfc="none", mec=TP_COLOUR, mew=2,
                   label=f"true positive: pick on a true particle ({counts['tp']})"),
            Line2D([], [], ls="none", marker="o", ms=10, mfc="none", mec=FP_COLOUR, mew=2,
                   label=f"false positive: pick on no true particle ({counts['fp']})"),
            Line2D([], [], ls="none", marker="o", ms=10, mfc="none", mec=MISSED_COLOUR, mew=2,
                   label=f"missed (dashed): true particle without a pick ({counts['missed']})"),
        ]
    else:
        draw(picks, PICK_COLOUR)
        counts = {"picks": len(picks)}
        handles = [Line2D([], [], ls="none", marker="o", ms=10, mfc="none", mec=PICK_COLOUR,
                          mew=2, label=f"pick ({len(picks)}; no ground truth to judge it)")]
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=1,
              fontsize=9, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    save_figure(fig, path)
    return counts


# ----------------------------------------------------------------------------- compare

def comparison_figure(path, rows: list[dict], title: str = "") -> None:
    """Grouped bars of particle F1 (at each model's threshold) and AP per stage and experiment.

    Each row: ``experiment`` (label), ``iteration`` (int), ``stage``, ``f1``, ``ap`` (fractions)
    and optional ``best`` (bool, marked with a star above its bars).
    """
    if not rows:
        raise ValueError("nothing to compare")
    exps = list(dict.fromkeys(r["experiment"] for r in rows))
    iters = sorted({int(r["iteration"]) for r in rows})
    stage_of = {}
    for r in rows:
        stage_of.setdefault(int(r["iteration"]), short_stage_label(r["stage"]))
    n = len(exps)
    width = 0.8 / n
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 2.2 * len(iters) * max(1, n / 2) + 3), 5.4),
                             sharey=True)
    for ax, key, name in ((axes[0], "f1", "Particle F1 at the model's own threshold"),
                          (axes[1], "ap", "Particle average precision (AP)")):
        for j, e in enumerate(exps):
            xs, ys, best = [], [], []
            for r in rows:
                if r["experiment"] != e:
                    continue
                xs.append(iters.index(int(r["iteration"])) - 0.4 + width * (j + 0.5))
                ys.append(_num(r.get(key)))
                best.append(bool(r.get("best")))
            bars = ax.bar(xs, ys, width * 0.92, color=cmap(j % 10), label=e)
            for b, v, is_best in zip(bars, ys, best):
                if not np.isfinite(v):
                    continue
                xc = b.get_x() + b.get_width() / 2
                ax.text(xc, v + 0.01, f"{v:.2f}", ha="center", va="bottom",
                        fontsize=8 if n <= 3 else 6)
                if is_best:
                    ax.plot(xc, v + 0.075, marker="*", ms=11, color="#e0a800", mec="black",
                            mew=0.5)
        ax.set_xticks(range(len(iters)))
        ax.set_xticklabels([stage_of[i] for i in iters])
        ax.set_xlabel("stage")
        ax.set_ylim(0, 1.15)
        ax.set_title(name, fontsize=10.5)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("value (fraction)")
    from matplotlib.lines import Line2D

    handles, _ = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], ls="none", marker="*", ms=11, color="#e0a800", mec="black",
                          mew=0.5, label="the experiment's best stage"))
    # One legend for the figure: an axes legend that spans both panels makes tight_layout
    # push the panels apart.
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(n + 1, 4), fontsize=9, frameon=False)
    import textwrap

    # A long title would widen the saved figure (bbox "tight") and squeeze the panels apart.
    fig.suptitle(textwrap.fill(title or "Stage models compared on the same micrographs", 100),
                 fontsize=11)
    n_rows = -(-(n + 1) // 4)
    fig.tight_layout(rect=(0, 0.05 * n_rows + 0.02, 1, 1))
    save_figure(fig, path)
