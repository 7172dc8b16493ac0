"""Evaluate a model, or any picker's coordinate files, against ground truth.

Particle level (what the field reports): picks matched one-to-one to ground-truth centres
within ``radius`` original pixels (default: half the particle diameter), per micrograph and
pooled; precision/recall/F1 at the threshold, the best F1 over thresholds and average
precision. Pixel level (model only): the probability map against the ground-truth target.

Pick files from Topaz, crYOLO, RELION or selfpick itself are read with
:func:`selfpick.io.coords.read_coordinates`, so pickers can be compared on the user's own data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from selfpick.errors import InputError, SelfpickError
from selfpick.evaluation.metrics import particle_metrics, pixel_metrics
from selfpick.io import coords as coordio
from selfpick.io.micrographs import list_micrographs, micrograph_name, read_micrograph
from selfpick.model.modelfile import SavedModel, load_model
from selfpick.picking.inference import predict_probability
from selfpick.picking.pick import picks_from_probability
from selfpick.preprocess import preprocess
from selfpick.targets import make_target
from selfpick.training.validate import CANDIDATE_FLOOR
from selfpick.utils.runtime import resolve_device

log = logging.getLogger("selfpick")


@dataclass
class Truth:
    """Ground truth matched to micrographs."""

    by_name: dict[str, np.ndarray]  # name -> (N, 2) centres, original pixels
    paths: dict[str, Path]  # name -> micrograph file (those with truth)
    diameter: float | None  # from the coordinate file, original pixels
    report: coordio.MatchReport


def load_truth(image_dir, coords_file, coords_format: str | None = None) -> Truth:
    """Ground-truth centres of the micrographs in ``image_dir`` that have coordinates."""
    paths = list_micrographs(image_dir)
    names = [micrograph_name(p) for p in paths]
    picks = coordio.read_coordinates(coords_file, coords_format)
    by_name, report = coordio.match_coordinates(picks, names)
    with_truth = {n: t for n, t in by_name.items() if n in names}
    if not with_truth:
        raise InputError("no ground-truth coordinates match any micrograph: "
                         + report.summary(), coords_file)
    diam = picks["diameter"].dropna()
    return Truth(
        by_name={n: t[["x", "y"]].to_numpy(np.float64) for n, t in with_truth.items()},
        paths={n: p for n, p in zip(names, paths) if n in with_truth},
        diameter=float(np.median(diam)) if len(diam) else None,
        report=report,
    )


def _radius(radius: float | None, diameter: float | None, truth: Truth,
            model: SavedModel | None = None) -> float:
    if radius:
        return float(radius)
    for d in (diameter, model.particle_diameter if model else None, truth.diameter):
        if d:
            return float(d) / 2
    raise SelfpickError("the match radius is unknown: give --radius (pixels) or "
                        "--particle-diameter")


def evaluate_model(model_path, image_dir, coords_file, radius: float | None = None,
                   threshold: float | None = None, device: str = "auto",
                   coords_format: str | None = None, progress: bool = True) -> dict:
    """Particle- and pixel-level metrics of a model file on labelled micrographs."""
    truth = load_truth(image_dir, coords_file, coords_format)
    dev = resolve_device(device)
    saved = load_model(model_path, dev)
    r = _radius(radius, None, truth, saved)
    thr = saved.threshold if threshold is None else float(threshold)
    items, probs, targets = [], [], []
    r_model = saved.radius_model_px
    tc = saved.config.targets
    for name, path in tqdm(truth.paths.items(), desc="Evaluating", unit="mic",
                           disable=not progress or None):
        data, _ = read_micrograph(path, saved.config.data.pixel_size)
        img, scale = preprocess(data, saved.downsample, saved.config.preprocess)
        prob = predict_probability(saved.model, img, dev, tta=saved.tta)
        xy, scores = picks_from_probability(saved, prob, scale, data.shape, CANDIDATE_FLOOR)
        items.append((name, xy, scores, truth.by_name[name]))
        probs.append(prob.cpu().numpy())
        targets.append(make_target(img.shape, scale.to_model(truth.by_name[name]), r_model,
                                   tc.positive_radius, tc.ignore_radius))
    particle = particle_metrics(items, r, thr)
    particle["threshold_rule"] = ("model's own threshold (chosen on its validation split)"
                                  if threshold is None else "--threshold")
    return {
        "model": str(model_path),
        "coords_file": str(coords_file),
        "match_report": truth.report.summary(),
        "particle": particle,
        "pixel": pixel_metrics(probs, targets, 0.5),
    }


def evaluate_picks(picks_path, image_dir, coords_file, radius: float | None = None,
                   threshold: float | None = None, particle_diameter: float | None = None,
                   picks_format: str | None = None, coords_format: str | None = None) -> dict:
    """Particle-level metrics of a coordinate file (any picker) against ground truth.

    Micrographs with truth but no picks count as all missed; picks on micrographs without
    truth are reported, not scored.
    """
    truth = load_truth(image_dir, coords_file, coords_format)
    picks = coordio.read_coordinates(picks_path, picks_format, allow_empty=True)
    names = list(truth.paths)
    by_name, report = coordio.match_coordinates(picks, names)
    r = _radius(radius, particle_diameter, truth)
    items = []
    for name in names:
        t = by_name.get(name)
        if t is None or len(t) == 0:
            xy, scores = np.zeros((0, 2)), np.zeros(0)
        else:
            xy = t[["x", "y"]].to_numpy(np.float64)
            scores = t["score"].to_numpy(np.float64)
            if np.isnan(scores).any():
                scores = None if np.isnan(scores).all() else np.nan_to_num(scores, nan=0.0)
        items.append((name, xy, scores, truth.by_name[name]))
    particle = particle_metrics(items, r, threshold)
    return {
        "picks": str(picks_path),
        "coords_file": str(coords_file),
        "match_report": truth.report.summary(),
        "picks_match_report": report.summary(),
        "particle": particle,
    }


def metrics_table(result: dict) -> str:
    """Per-micrograph and overall particle metrics as plain text."""
    p = result["particle"]
    rows = [f"{'micrograph':<40} {'n_true':>7} {'n_pred':>7} {'P':>6} {'R':>6} {'F1':>6}"]
    for m in p.get("per_micrograph", []):
        rows.append(f"{str(m['name'])[:40]:<40} {m['n_true']:7d} {m['n_pred']:7d} "
                    f"{m['precision']:6.3f} {m['recall']:6.3f} {m['f1']:6.3f}")
    rows.append(f"{'ALL':<40} {p['n_true']:7d} {p['n_pred']:7d} {p['precision']:6.3f} "
                f"{p['recall']:6.3f} {p['f1']:6.3f}")
    thr = "all picks" if p["threshold"] is None else f"{p['threshold']:.3f}"
    rows.append(f"threshold {thr}; match radius {p['match_radius']:.1f} px; best F1 "
                f"{p['best_f1']:.3f} at {p['best_threshold']}; AP {p['average_precision']:.3f}")
    if "pixel" in result:
        x = result["pixel"]
        auc = "n/a" if x.get("roc_auc") is None else f"{x['roc_auc']:.3f}"
        rows.append(f"pixel level: P {x['precision']:.3f} R {x['recall']:.3f} F1 {x['f1']:.3f} "
                    f"IoU {x['iou']:.3f} ROC-AUC {auc}")
    return "\n".join(rows)


__all__ = ["evaluate_model", "evaluate_picks", "load_truth", "metrics_table", "Truth"]
