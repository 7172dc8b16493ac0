"""An experiment: supervised training, then iterative self-training, in one folder.

::

    OUTPUT_DIR/
    ├── config.json               every setting, versions, command line, seed, the split
    ├── training.log
    ├── metrics.json              one entry per completed stage
    ├── iteration_0_supervised/   model.pt, metrics.json, visualization.png
    ├── iteration_1_selftrain/    model.pt, metrics.json, visualization.png, pseudo_labels/
    ├── best_model.pt             the stage with the best validation particle F1
    ├── final_model.pt            the last stage
    └── cache/                    preprocessed micrographs (safe to delete)

Crash safety: a stage's ``model.pt`` is written (atomically) before anything else of that
stage, its completion is recorded in the root ``metrics.json`` next, and figures come last and
may fail without harm. ``resume=True`` skips completed stages and continues an interrupted one
from its last epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selfpick.config import Config, load_config_file
from selfpick.errors import OutputError, SelfpickError
from selfpick.model.losses import CombinedLoss, PULoss
from selfpick.model.modelfile import load_model, save_model
from selfpick.model.unet import UNet
from selfpick.training import distributed as dist
from selfpick.training.data import (CropDataset, TrainingMicrograph, TrainingSet,
                                    crop_side, crops_to_cover, default_crops_per_epoch,
                                    label_edge_margin, load_training_set)
from selfpick.training.loop import stage_learning_rate, train_stage
from selfpick.training.pseudolabels import (PseudoLabelStats, calibrated_background,
                                            estimated_particles, estimated_precision,
                                            hidden_particles,
                                            label_shares, listing_floor, peak_pseudo_labels,
                                            pixel_pseudo_labels, score_for_half_the_particles,
                                            score_for_precision,
                                            threshold_schedule, unlabelled_share)
from selfpick.training.validate import (CANDIDATE_FLOOR, COMPLETE_LABELS, f1_standard_error,
                                        FEW_VALIDATION_PARTICLES, ValidationResult,
                                        predict_micrographs, validate)
from selfpick.utils.atomic import atomic_path, atomic_write_json, ensure_writable_dir
from selfpick.utils.runtime import resolve_device, seed_everything, tune_allocator, versions

log = logging.getLogger("selfpick")

SUPERVISED = "iteration_0_supervised"
# Files and folders an experiment consists of: --overwrite removes these and nothing else.
_OWNED = ("config.json", "training.log", "metrics.json", "best_model.pt", "final_model.pt",
          "cache")


def stage_name(k: int) -> str:
    return SUPERVISED if k == 0 else f"iteration_{k}_selftrain"


@dataclass
class ExperimentResult:
    output_dir: Path
    stages: list[dict]
    best_stage: str

    @property
    def best(self) -> dict:
        return next(s for s in self.stages if s["stage"] == self.best_stage)


# ----------------------------------------------------------------------------- folder

def _is_experiment(out: Path) -> bool:
    return out.is_dir() and any((out / n).exists() for n in ("config.json", "metrics.json",
                                                            SUPERVISED))


def _prepare_folder(out: Path, resume: bool, overwrite: bool) -> bool:
    """Check/clean the output folder; returns True when an earlier run is to be continued."""
    if out.exists() and not out.is_dir():
        raise OutputError("the output path exists and is not a folder", out)
    if _is_experiment(out):
        if resume:
            return True
        if not overwrite:
            raise OutputError("this folder already holds a selfpick experiment; use --resume to "
                              "continue it or --overwrite to start over", out)
        for child in out.iterdir():
            if child.name in _OWNED or child.name.startswith("iteration_"):
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    ensure_writable_dir(out)
    if resume:
        log.info("nothing to resume in %s: starting a new experiment", out)
    return False


@contextlib.contextmanager
def _log_to_file(path: Path):
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    # On a full disk the log line is lost quietly: the next real write stops the run with one
    # clear message, instead of a "--- Logging error ---" traceback per line on the console.
    handler.handleError = lambda record: None  # type: ignore[method-assign]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("selfpick")
    logger.addHandler(handler)
    old_level = logger.level
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        with contextlib.suppress(OSError):  # flushing the last lines onto a full disk
            handler.close()
        logger.setLevel(old_level)


def _read_root_metrics(out: Path) -> dict:
    path = out / "metrics.json"
    if not path.is_file():
        return {"stages": []}
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("stages"), list):
            return data
    except (OSError, ValueError):
        pass
    log.warning("%s is unreadable; completed stages will be re-validated", path)
    return {"stages": []}


def _completed(out: Path, root: dict, k: int) -> dict | None:
    name = stage_name(k)
    entry = next((s for s in root["stages"] if s.get("stage") == name), None)
    if entry is not None and (out / name / "model.pt").is_file():
        return entry
    return None


# ----------------------------------------------------------------------------- training

# Settings a resumed run may change; everything else is the experiment's own.
RESUME_CHANGEABLE = frozenset({"self_training_iterations", "retrain_epochs", "device", "workers",
                               "early_stop_patience", "multi_gpu", "output_dir", "amp",
                               "self_train_complete_labels", "unpicked_pixels", "student"})


def _resolve_resume_config(out: Path, cfg: Config, explicit: set[str] | None) -> Config:
    """On --resume the experiment's saved settings win; only run-time settings the user gave
    explicitly (``explicit``; ``None`` = those differing from the defaults) may change."""
    saved = Config.from_saved(load_config_file(out / "config.json"), source=out / "config.json")
    new, old, default = cfg.flat(), saved.flat(), Config().flat()
    if explicit is None:
        explicit = {k for k, v in new.items() if v != default.get(k)}
    for key in sorted(explicit):
        if key not in new or new[key] == old.get(key):
            continue
        if key in RESUME_CHANGEABLE:
            log.info("--resume: %s changed from %r to %r", key, old.get(key), new[key])
            saved._set(key, new[key], "command line")
        elif key not in ("image_dir", "coords_file", "coords_format", "unlabeled_dir"):
            log.warning("--resume: keeping the experiment's %s=%r (ignoring %r)", key,
                        old.get(key), new[key])
    return saved


def _validate(cfg: Config, model: torch.nn.Module, ts: TrainingSet,
              val_mics: list[TrainingMicrograph], val_split: str, device: torch.device,
              progress: bool, fresh_student: bool = False) -> ValidationResult:
    """:func:`validate` with the picking settings the model will be saved with (minimum
    distance, edge margin, views averaged), so its threshold holds in ``selfpick pick``;
    a ``fresh_student``'s threshold is the F1 maximum however few the validation particles
    (:func:`selfpick.training.validate.choose_threshold`)."""
    return validate(model, val_mics, ts.particle_diameter, ts.radius_model, device, val_split,
                    cfg.pick.min_distance, cfg.train.amp, progress, cfg.pick.edge_margin,
                    cfg.pick.tta, polarised=fresh_student)


def _pseudo_labels(k: int, cfg: Config, ts: TrainingSet, model: torch.nn.Module,
                   device: torch.device, val: ValidationResult, stage_dir: Path,
                   progress: bool) -> tuple[list[np.ndarray], PseudoLabelStats]:
    """Pseudo-labels of iteration ``k`` for the training and unlabelled micrographs."""
    st = cfg.selftrain
    pos, neg = threshold_schedule(k, st)
    pool = ts.subset("train") + ts.subset("unlabeled")
    peaks = st.pseudo_label_mode == "peaks"
    pu = st.unpicked_pixels == "unlabelled"
    pos_score, background = None, neg
    if peaks and st.calibrate_thresholds:
        pos_score = score_for_precision(val.rank_scores, val.local_precision, pos)
        if pos_score is None:
            log.warning("iteration %d: no score reaches %.0f%% validation precision; no "
                        "pseudo-particles are added this iteration", k, 100 * pos)
            pos_score = float("inf")
        # Background follows the model's calibration too. With the absolute 0.05 an
        # under-confident model (EMPIAR-10017, 3 x 65 picks, threshold near 0.01) had every
        # real particle it scored at 0.001-0.02 painted as background on all nine
        # micrographs, and iteration 1 collapsed (bench/NOTES.md).
        background = calibrated_background(neg, val.threshold)
    elif peaks:
        pos_score = pos
    floor = listing_floor(pos_score, background if peaks else None)
    if pu:
        # every peak the model would pick is listed: their number estimates the particles
        background = None
        floor = max(min(floor, val.threshold), CANDIDATE_FLOOR)
    preds = predict_micrographs(model, pool, ts.radius_model, device, cfg.pick.min_distance,
                                floor=floor,
                                amp=cfg.train.amp, desc=f"Pseudo-labelling (iteration {k})",
                                progress=progress, edge_margin=cfg.pick.edge_margin,
                                tta=cfg.pick.tta)
    n_picks = sum(int(np.count_nonzero(p.scores >= val.threshold)) for p in preds)
    pm = val.metrics["particle"]
    n_est = estimated_particles(n_picks, pm.get("corrected", pm)["precision"], pm["recall"])
    if pu and peaks and st.calibrate_thresholds:
        lowered = score_for_half_the_particles([p.scores for p in preds], n_est, pos_score,
                                               val.threshold)
        if lowered < pos_score:
            log.info("iteration %d: pseudo-particles from score %.3f (not %.3f, which %.0f%% "
                     "validation precision asks for on %d labelled particles): at least half "
                     "of the ~%.0f particles estimated on the %d micrographs", k, lowered,
                     pos_score, 100 * pos, int(pm.get("n_true") or 0), n_est, len(pool))
            pos_score = lowered
    maps, n_new, n_labelled = [], 0, 0
    r = ts.radius_model
    for m, p in zip(pool, preds):
        if peaks:
            pl = peak_pseudo_labels(p.prob, p.xy_model, p.scores, m.gt_target, m.labelled, r,
                                    pos_score, background, cfg.targets)
            confident = p.xy_model[p.scores >= pos_score]
        else:
            pl = pixel_pseudo_labels(p.prob, m.gt_target, m.labelled, pos, neg, unlabelled=pu)
            confident = p.xy_model[p.prob[p.xy_model[:, 1].astype(int),
                                          p.xy_model[:, 0].astype(int)] >= pos]
        truth = m.truth_model()
        n_new += _count_new(confident, truth, r)
        n_labelled += len(truth) if m.labelled else 0
        maps.append(pl)
    n, sp, sn, si = label_shares(maps)
    prior = None
    if pu:
        n_known = n_labelled + n_new
        # 0 (NEGATIVE) in these maps means unlabelled
        prior = unlabelled_share(sp * n, sn * n, n_known,
                                 hidden_particles(n_est, n_known, pm["recall"]))
    finite = pos_score is not None and np.isfinite(pos_score)
    stats = PseudoLabelStats(st.pseudo_label_mode, pos, neg, pos_score if finite else None,
                             len(pool), n, sp, sn, si, n_new,
                             background if peaks else None,
                             estimated_precision(val.rank_scores, val.local_precision, pos_score)
                             if peaks else None, prior,
                             int(val.metrics["particle"].get("n_true") or 0))
    save_dir = stage_dir / "pseudo_labels"
    save_dir.mkdir(parents=True, exist_ok=True)
    for m, pl in zip(pool, maps):
        with atomic_path(save_dir / f"{m.name}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, pl)
    return maps, stats


# Picks count as clearly partial, and the supervised stage goes on with the PU loss, below
# this estimated completeness. On 3 x 65 (EMPIAR-10017) and 3 x 25 (EMPIAR-10028) random picks
# (completeness 0.06-0.23) it lifted the supervised stage from F1 0.785 to 0.843 and from
# 0.698 to 0.804, and the chosen stage of 10028 from 0.712 to 0.843 (bench/NOTES.md). Curated
# sets that leave out damaged particles on purpose (EMPIAR-10028, all picks: 0.76) are not
# measured with it and keep the plain supervised stage.
PU_BELOW = 0.5
# With --pu-micrographs all, the share of the positive-unlabelled epochs' crops drawn from
# the micrographs with picks (the rest from those without).
LABELLED_CROP_SHARE = 0.5
# Validation first asks after --pu-after (a quarter) of the supervised epochs how complete the
# picks are. When they are very partial -- fewer than EARLY_SWITCH_BELOW of the particles
# picked, read on at least FEW_VALIDATION_PARTICLES labelled ones, since the switch cannot be
# undone -- supervised training stops there and the remaining epochs use the PU loss: every
# further supervised epoch teaches the 85-95 % unpicked particles as background more firmly.
# 3 x 65 picks on EMPIAR-10017 (completeness read 0.06-0.10 on 65): the chosen stage's AP on
# the unlabelled training micrographs +0.02 to +0.07 per draw; EMPIAR-10028 (0.18-0.44 on 25
# or fewer, and one strip of 5 reading 0.04) picked worse when switched (chosen F1 -0.03 over 6
# runs), so it is not (bench/NOTES.md).
EARLY_SWITCH_BELOW = 0.15


def pu_switch_epoch(initial_epochs: int, fraction: float) -> int:
    """The supervised epoch after which the picks are first judged partial or not."""
    return max(1, min(initial_epochs, round(fraction * initial_epochs)))


def _picks_look_partial(val: ValidationResult | None) -> tuple[bool, float, int]:
    """``(partial, estimated completeness, labelled validation particles)``.

    Partial below :data:`PU_BELOW`; with fewer than :data:`FEW_VALIDATION_PARTICLES`
    labelled validation particles, below :data:`COMPLETE_LABELS`: so few cannot tell partial
    picks from complete ones (8 in a strip read a completeness of 0.57 where 25 of ~90
    particles were picked, bench/NOTES.md), so the picks count as partial unless they look
    complete.
    """
    if val is None:
        return False, 1.0, 0
    c = float(val.completeness)
    n_val = int(val.metrics["particle"]["n_true"])
    few = n_val < FEW_VALIDATION_PARTICLES
    return bool(c < PU_BELOW or (few and c < COMPLETE_LABELS)), c, n_val


class _PartialPicksProbe:
    """``stop_after`` of the supervised stage: after :func:`pu_switch_epoch` epochs, rank 0
    validates the model and every rank stops when the picks look very partial
    (:data:`EARLY_SWITCH_BELOW`); the validation is kept in :attr:`val` for the
    positive-unlabelled epochs that follow."""

    def __init__(self, cfg: Config, model, ts: TrainingSet, val_mics, val_split: str,
                 device, progress: bool):
        self.at = pu_switch_epoch(cfg.train.initial_epochs, cfg.loss.pu_after)
        self.of = cfg.train.initial_epochs
        self.args = (cfg, model, ts, val_mics, val_split, device, progress)  # for _validate
        self.val: ValidationResult | None = None
        self.partial = False

    def __call__(self, epochs_done: int) -> bool:
        if epochs_done != self.at:
            return False
        val = _validate(*self.args) if dist.is_main() else None
        c, n_val = (float(val.completeness), int(val.metrics["particle"]["n_true"])) \
            if val is not None else (1.0, 0)
        early = c < EARLY_SWITCH_BELOW and n_val >= FEW_VALIDATION_PARTICLES
        self.partial = dist.broadcast_flag(early)
        if self.partial:
            self.val = val
        if dist.is_main():
            log.info("%s: after %d of %d epochs, estimated completeness %.2f on %d labelled "
                     "validation particles: %s", SUPERVISED, epochs_done, self.of, c, n_val,
                     "the picks look very partial, so supervised training stops here rather "
                     "than teach the unpicked particles as background" if early else
                     "supervised training goes on (it stops here only below "
                     f"{EARLY_SWITCH_BELOW:.2f} measured on at least "
                     f"{FEW_VALIDATION_PARTICLES} labelled particles)")
        return self.partial


def _positive_unlabelled(cfg: Config, train_model, model, val, pool, images, crop: int,
                         length: int, device, stage_dir: Path, progress: bool, val_mics,
                         val_split: str, ts: TrainingSet, switched_after: int | None = None):
    """The supervised stage's second half when the picks look partial.

    Trained as usual, the network learns every unpicked particle on the training
    micrographs as background. When the picks look partial (:func:`_picks_look_partial`),
    training goes on for ``pu_epochs`` with :class:`~selfpick.model.losses.PULoss`, whose
    unlabelled pixels hold particles at the share the estimated completeness implies.
    ``switched_after``: the supervised epochs were stopped after this many
    (:class:`_PartialPicksProbe`, very partial picks): the epochs not run are added to
    ``pu_epochs`` and the PU model is kept, the half-trained one before it being no
    alternative. Otherwise (the probe let the supervised stage run to its end) the stage
    keeps whichever model has the better validation F1 (rank 0 decides, every rank
    follows), or the PU model when fewer than
    :data:`FEW_VALIDATION_PARTICLES` labelled validation particles cannot decide. Returns
    ``(validation, record for metrics.json or None, history of the extra epochs)``.
    """
    from selfpick.model.losses import unlabelled_prior
    from selfpick.training.loop import StageHistory

    partial, c, n_val = _picks_look_partial(val) if dist.is_main() else (False, 1.0, 0)
    few = n_val < FEW_VALIDATION_PARTICLES
    go = dist.broadcast_flag(partial or switched_after is not None)
    if not go:
        return val, None, StageHistory()
    # After an early switch the supervised epochs not run are PU epochs too.
    n_epochs = cfg.loss.pu_epochs + (cfg.train.initial_epochs - switched_after
                                     if switched_after is not None else 0)
    n_pos = sum(int(np.count_nonzero(m.gt_target == 1)) for m in pool)
    n_unl = sum(int(np.count_nonzero(m.gt_target == 0)) for m in pool)
    others = ts.subset("unlabeled") if cfg.loss.pu_micrographs == "all" else []
    targets = [m.gt_target for m in pool]
    weights = None
    share = 0.0
    if others:
        # Every pixel of a micrograph nobody picked is unlabelled (0), not ignored. Half the
        # crops still come from the picked micrographs, so each batch keeps its positives
        # however many unpicked micrographs there are.
        share = 1.0 - LABELLED_CROP_SHARE
        area = np.array([float(im.size) for im in images])
        area_o = np.array([float(m.image.size) for m in others])
        weights = np.concatenate([LABELLED_CROP_SHARE * area / area.sum(),
                                  share * area_o / area_o.sum()])
        images = list(images) + [m.image for m in others]
        targets = targets + [np.zeros(m.image.shape, dtype=np.int8) for m in others]
    prior = dist.broadcast_number(unlabelled_prior(n_pos, n_unl, c, share))
    if dist.is_main():
        log.info("%s: picks %s (estimated completeness %.2f%s): %d more epochs with a "
                 "positive-unlabelled loss on %d micrographs%s (%.1f%% of the unlabelled "
                 "pixels taken to be unpicked particles)", SUPERVISED,
                 "look partial" if c < PU_BELOW else "may be partial", c,
                 f" from {n_val} labelled validation particles" if few else "",
                 n_epochs,
                 len(images), f", {len(others)} of them without picks" if others else "",
                 100 * prior)
    # The weights to fall back on; after an early switch there are none worth keeping.
    before = None if switched_after is not None else {
        k: v.detach().clone() for k, v in model.state_dict().items()}
    dataset = CropDataset(images, targets, crop, length, seed=cfg.train.seed * 1000 + 999,
                          weights=weights)
    extra = train_stage(train_model, dataset, cfg.train, n_epochs, device,
                        PULoss(prior), f"{SUPERVISED} (positive-unlabelled)",
                        stage_dir / "checkpoint_pu.pt", progress,
                        lr=stage_learning_rate(cfg.train, 1))
    record = None
    keep_pu = False
    if dist.is_main():
        pu_val = _validate(cfg, model, ts, val_mics, val_split, device, progress)
        f_pn = selection_f1({"validation": val.metrics})
        f_pu = selection_f1({"validation": pu_val.metrics})
        keep_pu = f_pu >= f_pn or few or switched_after is not None
        record = {"unlabelled_prior": prior, "completeness_before": c, "epochs":
                  n_epochs, "after_supervised_epochs": switched_after or
                  cfg.train.initial_epochs, "micrographs": len(images),
                  "micrographs_without_picks": len(others),
                  "validation_f1_before": f_pn, "validation_f1_after": f_pu,
                  "validation_particles": n_val,
                  "kept": "positive-unlabelled" if keep_pu else "supervised (before)"}
        log.info("%s: validation F1 %.3f before, %.3f after the positive-unlabelled epochs: "
                 "keeping the model %s%s", SUPERVISED, f_pn, f_pu,
                 "after" if keep_pu else "before",
                 f" (the supervised epochs stopped after {switched_after})"
                 if switched_after is not None else
                 f" (fewer than {FEW_VALIDATION_PARTICLES} labelled validation particles "
                 "cannot decide)" if few else "")
        if keep_pu:
            val = pu_val
    if not dist.broadcast_flag(keep_pu) and before is not None:
        model.load_state_dict(before)
    (stage_dir / "checkpoint_pu.pt").unlink(missing_ok=True)
    return val, record, extra


def _count_new(confident: np.ndarray, truth: np.ndarray, radius: float) -> int:
    """Confident detections farther than a particle radius from every labelled centre."""
    if len(confident) == 0:
        return 0
    if len(truth) == 0:
        return len(confident)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(truth).query(confident, k=1)
    return int(np.count_nonzero(d > radius))


def _figure(path: Path, m: TrainingMicrograph, target: np.ndarray, prob: np.ndarray,
            title: str, k: int) -> None:
    try:
        from selfpick.report.figures import stage_figure

        stage_figure(path, np.asarray(m.image, dtype=np.float32), m.gt_target, target, prob,
                     title=title, target_title="Training target" if k == 0 else "Pseudo-label")
    except Exception as exc:  # noqa: BLE001 - a figure must never cost a finished stage
        log.warning("could not draw %s (%s); the stage's model and metrics are saved", path, exc)


def run_training(cfg: Config, resume: bool = False, overwrite: bool = False,
                 command_line: list[str] | None = None, progress: bool = True,
                 explicit: set[str] | None = None) -> ExperimentResult:
    """Supervised training then ``self_training_iterations`` self-training iterations.

    Returns the stages' metrics and the best stage. Raises :class:`SelfpickError` for problems
    the user can fix (bad input, an existing experiment without resume/overwrite, ...).
    ``explicit``: the settings the user gave (only these may change on resume).
    """
    if not cfg.train.output_dir:
        raise SelfpickError("no experiment folder given: use --output-dir")
    tune_allocator()
    out = Path(cfg.train.output_dir)
    dev_kind = "cuda" if cfg.train.device.startswith("cuda") or (
        cfg.train.device == "auto" and torch.cuda.is_available()) else "cpu"
    ddp_device = dist.init_from_env(dev_kind)
    rank, world = dist.rank_world()
    is_main = rank == 0
    continuing = False
    existed = out.exists()
    if is_main:
        continuing = _prepare_folder(out, resume, overwrite)
    dist.barrier()
    if not is_main:
        continuing = _is_experiment(out)
    if continuing:
        cfg = _resolve_resume_config(out, cfg, explicit)
    device = ddp_device or resolve_device(cfg.train.device)
    progress = progress and is_main
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    argv = list(command_line) if command_line is not None else ["(called from Python)"]
    try:
        with _log_to_file(out / "training.log") if is_main else contextlib.nullcontext():
            ts, val_mics, val_split = _setup(cfg, out, continuing, argv, progress)
    except BaseException:
        # A run that fails before it has written config.json leaves nothing behind.
        if is_main and not continuing and not (out / "config.json").exists():
            _discard(out, existed)
        raise
    with _log_to_file(out / "training.log") if is_main else contextlib.nullcontext():
        return _run_stages(cfg, ts, out, device, val_mics, val_split, progress)


def _discard(out: Path, existed: bool) -> None:
    for name in ("training.log", "cache"):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()
    if not existed:
        with contextlib.suppress(OSError):
            out.rmdir()


def _saved_strips(out: Path) -> bool | None:
    """Whether the experiment in ``out`` validated on strips (``None``: no record of it)."""
    try:
        split = load_config_file(out / "config.json").get("split")
    except SelfpickError:
        return None
    if not isinstance(split, dict) or "val" not in split:
        return None
    return bool(split.get("val_regions"))


def _setup(cfg: Config, out: Path, continuing: bool, argv: list[str], progress: bool):
    """Load and split the data, write config.json; returns (training set, val micrographs,
    the split name the metrics are measured on)."""
    is_main = dist.is_main()
    if is_main:
        log.info("selfpick train %s", " ".join(argv))
        if continuing:
            log.info("resuming the experiment in %s", out)
    # Rank 0 preprocesses (and fills the cache) first; the other ranks then read the cache.
    ts = None
    # A resumed experiment keeps the kind of validation it started with (whole micrographs or
    # strips), even where today's rule would choose the other: its stages were chosen on it.
    strips = _saved_strips(out) if continuing else None
    if is_main:
        ts = load_training_set(cfg, cache_dir=out / "cache", progress=progress, strips=strips)
    dist.barrier()
    if not is_main:
        ts = load_training_set(cfg, cache_dir=out / "cache", progress=False, strips=strips)
    if not ts.subset("train"):
        raise SelfpickError("no labelled micrograph is left for training after the "
                            "validation split; label more micrographs or lower "
                            "--val-fraction")
    if cfg.pick.edge_margin is None:
        cfg.pick.edge_margin = label_edge_margin(ts.micrographs, ts.particle_diameter)
        if is_main:
            log.info("edge margin %.0f px (how close to an edge the labelled particles come, "
                     "at most one diameter): picks closer to an edge will be dropped; "
                     "--edge-margin sets it", cfg.pick.edge_margin)
    if is_main and cfg.pick.tta > 1:
        log.info("validation, pseudo-labels and picking average %d views of each micrograph "
                 "(flips and transposes; --tta 1 for one)", cfg.pick.tta)
    val_mics = ts.subset("val")
    val_split = "val"
    if not val_mics:
        log.warning("no validation split (--val-fraction 0): validating on the training "
                    "micrographs (metrics will be optimistic)")
        val_mics, val_split = ts.subset("train"), "train"
    if is_main and not continuing:
        atomic_write_json(out / "config.json", {
            "selfpick_version": versions()["selfpick"],
            "versions": versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command_line": ["selfpick", "train", *argv],
            "seed": cfg.train.seed,
            "particle_diameter": ts.particle_diameter,
            "downsample": ts.downsample,
            "split": ts.split_names(),
            "match_report": ts.match_report.summary() if ts.match_report else "",
            "config": cfg.to_dict(),
        })
    return ts, val_mics, val_split


def _run_stages(cfg: Config, ts: TrainingSet, out: Path, device: torch.device,
                val_mics: list[TrainingMicrograph], val_split: str,
                progress: bool) -> ExperimentResult:
    rank, world = dist.rank_world()
    is_main = rank == 0
    model = UNet.from_config(cfg.model).to(device=device, memory_format=torch.channels_last)
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = CombinedLoss.from_config(cfg.loss)
    root = _read_root_metrics(out) if is_main else {"stages": []}
    n_stages = 1 + cfg.selftrain.self_training_iterations
    train_mics = ts.subset("train")
    crop = crop_side(cfg, model.multiple)
    # what the supervised stage trains on, which a fresh self-training student must match
    supervised_crops = cfg.train.initial_epochs * _epoch_length(
        cfg, [m.image for m in train_mics], crop)
    # self-training iterations train fresh networks rather than fine-tune (--student)
    fresh_students = student_for(cfg, ts) == "fresh"
    prev_val: ValidationResult | None = None
    stages: list[dict] = []
    best_f1, since_best = -1.0, 0

    for k in range(n_stages):
        name = stage_name(k)
        stage_dir = out / name
        done = _completed(out, root, k) if is_main else None
        if dist.broadcast_flag(bool(done)):
            if is_main:
                saved = load_model(stage_dir / "model.pt", device, inference=False)
                model.load_state_dict(saved.model.state_dict())
                log.info("%s: already complete, kept as it is", name)
                stages.append(done)
            dist.broadcast_state(model)
            prev_val = None
            if is_main:
                f1 = selection_f1(done)
                best_f1, since_best = (f1, 0) if f1 > best_f1 else (best_f1, since_best + 1)
            if dist.broadcast_flag(is_main and _stop_after(cfg, k, n_stages, stages, since_best,
                                                           root)):
                break
            continue
        t_stage = time.perf_counter()
        pl_stats = None
        stage_dir.mkdir(parents=True, exist_ok=True)
        if k == 0:
            pool = train_mics
            targets = [m.gt_target for m in pool]
        else:
            pool = ts.subset("train") + ts.subset("unlabeled")
            if is_main:
                if prev_val is None:  # resumed: re-measure the previous stage on validation
                    prev_val = _validate(cfg, model, ts, val_mics, val_split, device, progress,
                                         k > 1 and fresh_students)
                targets, pl_stats = _pseudo_labels(k, cfg, ts, model, device, prev_val,
                                                   stage_dir, progress)
                log.info("%s: %s", name, pl_stats.describe())
            dist.barrier()
            if not is_main:
                targets = [np.load(stage_dir / "pseudo_labels" / f"{m.name}.npy") for m in pool]
        images = [m.image for m in pool]
        length = _epoch_length(cfg, images, crop)
        cover = crops_to_cover(images, crop)
        if not cfg.train.crops_per_epoch and is_main and cover > length:
            log.info("%s: %d crops an epoch (covering the %d micrographs once would take %d; "
                     "--crops-per-epoch sets it)", name, length, len(images), cover)
        dataset = CropDataset(images, targets, crop, length, seed=cfg.train.seed * 1000 + k)
        fresh = k > 0 and fresh_students
        epochs = (cfg.train.initial_epochs if k == 0 else
                  fresh_student_epochs(cfg, supervised_crops, length) if fresh else
                  cfg.train.retrain_epochs)
        if fresh:
            if is_main:
                log.info("%s: a fresh student (random weights, %d epochs at the full learning "
                         "rate) learns the pseudo-labels%s", name, epochs,
                         "" if cfg.selftrain.student == "fresh" else
                         " (--student auto: validation is on strips, the picks being on "
                         "one to three micrographs or sparse on every one)")
            # (an interrupted stage's checkpoint then replaces these weights in train_stage)
            _reinitialise(model, cfg, k)
        stage_loss = loss_fn
        if k > 0 and cfg.selftrain.unpicked_pixels == "unlabelled":
            prior = pl_stats.unlabelled_prior if is_main else 0.0
            stage_loss = PULoss(dist.broadcast_number(prior or 0.0))
        probe = None
        if k == 0 and cfg.loss.pu_epochs > 0 and cfg.loss.pu_after < 1:
            probe = _PartialPicksProbe(cfg, model, ts, val_mics, val_split, device, progress)
        history = train_stage(train_model, dataset, cfg.train, epochs, device, stage_loss, name,
                              stage_dir / "checkpoint.pt", progress,
                              lr=stage_learning_rate(cfg.train, 0 if fresh else k),
                              stop_after=probe)
        switched_after = probe.at if probe is not None and probe.partial else None
        if switched_after is not None:
            epochs = switched_after
        val = None
        if is_main:
            val = probe.val if switched_after is not None else _validate(
                cfg, model, ts, val_mics, val_split, device, progress, fresh)
        pu = None
        if k == 0 and cfg.loss.pu_epochs > 0:
            val, pu, extra = _positive_unlabelled(cfg, train_model, model, val, pool, images,
                                                  crop, length, device, stage_dir, progress,
                                                  val_mics, val_split, ts, switched_after)
            history.epochs += extra.epochs
        if is_main:
            entry = {
                "stage": name,
                "iteration": k,
                "validation": val.metrics,
                "threshold": val.threshold,
                "label_completeness": val.completeness,
                "training": {"epochs": epochs, "crops_per_epoch": length, "crop_size": crop,
                             "micrographs": len(pool),
                             "student": None if k == 0 else ("fresh" if fresh else "finetune"),
                             "loss": ("positive-unlabelled" if isinstance(stage_loss, PULoss)
                                      else "focal + Dice"),
                             "final_loss": history.epochs[-1]["loss"] if history.epochs else None,
                             "seconds": round(history.seconds, 2)},
                "pseudo_labels": pl_stats.as_dict() if pl_stats else None,
                "positive_unlabelled": pu,
                "seconds": round(time.perf_counter() - t_stage, 2),
            }
            save_model(stage_dir / "model.pt", model, cfg, ts.particle_diameter, ts.downsample,
                       val.threshold, cfg.pick.min_distance, stage=name, metrics=entry)
            atomic_write_json(stage_dir / "metrics.json", entry)
            root["stages"] = [s for s in root["stages"] if s.get("stage") != name] + [entry]
            _update_root(out, root)
            (stage_dir / "checkpoint.pt").unlink(missing_ok=True)
            p = val.metrics["particle"]
            log.info("%s: validation particle F1 %.3f (P %.3f, R %.3f) at threshold %.3f; "
                     "AP %.3f; pixel F1 %.3f, ROC-AUC %s", name, p["f1"], p["precision"],
                     p["recall"], val.threshold, p["average_precision"], val.metrics["pixel"]["f1"],
                     _fmt(val.metrics["pixel"].get("roc_auc")))
            u = p.get("threshold_uncertainty")
            if u:
                c = u.get("completeness")
                log.info("%s: thresholds %.3f-%.3f score within one standard error (%.3f) of "
                         "the best validation F1 on %d labelled particles; label completeness "
                         "%.2f%s", name, u["range"][0], u["range"][1], u["f1_standard_error"],
                         u["n_labelled"], val.completeness,
                         f" +- {c['standard_error']:.2f}, across which the threshold would be "
                         f"{c['thresholds'][0]:.3f}-{c['thresholds'][1]:.3f}" if c else "")
            fig_mic = pool[0]
            fig_prob = predict_micrographs(model, [fig_mic], ts.radius_model, device,
                                           progress=False, tta=cfg.pick.tta)[0].prob
            _figure(stage_dir / "visualization.png", fig_mic, targets[0], fig_prob,
                    f"{name} — training micrograph {fig_mic.name}", k)
            stages.append(entry)
            prev_val = val
            f1 = selection_f1(entry)
            best_f1, since_best = (f1, 0) if f1 > best_f1 else (best_f1, since_best + 1)
        dist.barrier()
        if dist.broadcast_flag(is_main and _stop_after(cfg, k, n_stages, stages, since_best,
                                                       root)):
            break

    best_stage = ""
    if is_main:
        best_stage = _finish(out, root)
    dist.barrier()
    return ExperimentResult(out, stages if is_main else [], best_stage)


def _epoch_length(cfg: Config, images: list[np.ndarray], crop: int) -> int:
    """Crops an epoch on ``images``: ``--crops-per-epoch``, else enough to cover them once."""
    return cfg.train.crops_per_epoch or default_crops_per_epoch(images, crop)


def fresh_student_epochs(cfg: Config, supervised_crops: int, crops_per_epoch: int) -> int:
    """Epochs of a fresh self-training student: ``--student-epochs``, but never fewer crops
    than the supervised stage trained on (``supervised_crops``, ``--initial-epochs`` times its
    crops an epoch), since the student starts from random weights; 0 = ``--initial-epochs``.

    On EMPIAR-10017 (4096² micrographs: 64 crops an epoch for the teacher on 1-3 labelled
    micrographs, 157 for the student on all ten) 40 epochs ranked as well as 80 in two
    thirds of the time; on EMPIAR-10028 (1024²: 64 crops an epoch for both) 40 epochs were
    half its teacher's training, and B2 draw 0 fell from F1 0.829 to 0.567 (bench/NOTES.md).
    """
    if not cfg.selftrain.student_epochs:
        return cfg.train.initial_epochs
    return max(cfg.selftrain.student_epochs, math.ceil(supervised_crops / crops_per_epoch))


def student_for(cfg: Config, ts: TrainingSet) -> str:
    """``'fresh'`` or ``'finetune'``: how self-training iterations start (``--student``).

    'auto' trains a fresh student when validation is on strips, i.e. the picks are on one to
    three micrographs, or too sparse on more to spare a whole one
    (:func:`~selfpick.training.data.validate_on_strips`): a teacher trained on one
    micrograph, or on a handful of picks per micrograph, has learned little beyond them, and
    a student fine-tuned from it stays close to it.
    On 6 draws with one labelled micrograph (EMPIAR-10017 and -10028) a fresh student ranked
    better on the unlabelled training micrographs in all 6 (AP +0.003 to +0.066) and picked
    better in 5; with three labelled micrographs validated on a whole one it did not (AP
    -0.016 and +0.002 on average), validated on strips (EMPIAR-10017, 3 x 65 picks) it did
    (+0.016; ``bench/NOTES.md``).
    """
    if cfg.selftrain.student != "auto":
        return cfg.selftrain.student
    return "fresh" if ts.validates_on_strips else "finetune"


def _reinitialise(model: torch.nn.Module, cfg: Config, k: int) -> None:
    """Random weights for self-training iteration ``k``'s fresh student, drawn from the run's
    seed and ``k`` (reproducible, and the same on every DDP rank)."""
    device = next(model.parameters()).device
    # The run's own random streams (CPU, and this rank's GPU, which manual_seed also seeds)
    # go on untouched.
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(cfg.train.seed * 1000 + k)
        fresh = UNet.from_config(cfg.model)
    model.load_state_dict(fresh.state_dict())


def _stop_after(cfg: Config, k: int, n_stages: int, stages: list[dict], since_best: int,
                root: dict) -> bool:
    """Rank 0: whether training ends after stage ``k``, whether that stage was trained now or
    kept from an earlier run (a resumed experiment stops where the same settings would have
    stopped it). The reason is logged; a skipped self-training is noted in ``root``."""
    if k + 1 >= n_stages:
        return False
    if k == 0:
        if skip_self_training(cfg, stages[-1]):
            c = stages[-1]["label_completeness"]
            log.info("the labels look complete (about %.0f%% of the surest picks carry one): "
                     "no self-training, which learns from unlabelled particles "
                     "(--self-train-complete-labels runs it anyway)", 100 * c)
            root["self_training_skipped"] = (f"labels look complete (estimated completeness "
                                             f"{c:.2f} >= {COMPLETE_LABELS})")
            return True
        root.pop("self_training_skipped", None)  # an earlier run's decision, now overridden
        return False
    patience = cfg.selftrain.early_stop_patience
    if patience and since_best >= patience:
        log.info("early stop: validation particle F1 has not improved for %d iteration(s)",
                 since_best)
        return True
    return False


def skip_self_training(cfg: Config, supervised: dict) -> bool:
    """Whether training ends after the supervised stage ``supervised`` (its metrics entry)
    because its validation labels look complete.

    Self-training turns confident unlabelled detections into labels; with (nearly) every
    particle labelled it can only teach what the curators left out on purpose. On the 5
    cross-validation folds of EMPIAR-10017's training micrographs the supervised stage was
    as accurate as the stage self-training chose (F1 0.882 both, AP 0.919 both;
    ``bench/NOTES.md``), and the two iterations cost a sixth of the training time.
    """
    if cfg.selftrain.self_train_complete_labels:
        return False
    c = supervised.get("label_completeness")
    return c is not None and c >= COMPLETE_LABELS


def selection_f1(entry: dict) -> float:
    """The validation particle F1 stages are ranked by.

    With clearly incomplete labels the completeness-corrected F1 (see
    :mod:`selfpick.training.validate`), otherwise the plain F1; where validation moved the
    threshold off the F1 maximum (few labelled particles), the maximum it recorded.
    """
    p = entry["validation"]["particle"]
    if "selection_f1" in p:
        return float(p["selection_f1"])
    return float(p.get("corrected", {}).get("f1", p["f1"]))


BEST_STAGE_RULE = ("the latest stage whose validation particle F1 (corrected for incomplete "
                   "labels) is within one standard error of the highest")


def choose_best_stage(stages: list[dict]) -> dict:
    """The stage ``best_model.pt`` comes from: the LATEST stage whose validation F1 (see
    :func:`selection_f1`) is within one standard error of the highest.

    A few validation micrographs, often partially labelled, measure F1 with a standard
    error of 0.01-0.04; the plain maximum then picks among near-equal stages by noise. On
    fresh simulated data with 30 % labels (8 experiments, ``bench/NOTES.md``) the maximum
    kept no gain over iteration 0 (-0.000 F1), this rule +0.003. The standard error is the
    binomial one of :func:`~selfpick.training.validate.f1_standard_error` (n: the labelled
    validation particles), smoothed so that a corrected F1 of 1.000 on a strip of 11
    particles does not outrank a 0.97 by certainty (``bench/NOTES.md``).
    """
    scores = [selection_f1(s) for s in stages]
    top = max(range(len(stages)), key=lambda i: scores[i])
    n = int(stages[top]["validation"]["particle"].get("n_true") or 0)
    se = f1_standard_error(scores[top], n)
    return stages[max(i for i in range(len(stages)) if scores[i] >= scores[top] - se)]


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _update_root(out: Path, root: dict) -> None:
    best = choose_best_stage(root["stages"])
    root["best_stage"] = best["stage"]
    root["best_stage_rule"] = BEST_STAGE_RULE
    root["final_stage"] = root["stages"][-1]["stage"]
    root["note"] = ("particle-level figures: picks matched one-to-one to the labelled centres "
                    "within half a particle diameter on the validation micrographs; pixel-level "
                    "figures on valid pixels of the ground-truth target")
    atomic_write_json(out / "metrics.json", root)


def _finish(out: Path, root: dict) -> str:
    """Write best_model.pt and final_model.pt from the completed stages (idempotent)."""
    _update_root(out, root)
    best, final = root["best_stage"], root["final_stage"]
    for src, dst in ((best, "best_model.pt"), (final, "final_model.pt")):
        with atomic_path(out / dst) as tmp:
            shutil.copyfile(out / src / "model.pt", tmp)
    log.info("best stage: %s (validation particle F1 %.3f); final stage: %s", best,
             selection_f1(next(s for s in root["stages"] if s["stage"] == best)),
             final)
    return best


def stage_table(stages: list[dict]) -> str:
    """A plain-text table of every stage's validation metrics."""
    head = (f"{'stage':<24} {'P':>6} {'R':>6} {'F1':>6} {'F1corr':>7} {'AP':>6} {'thr':>6} | "
            f"{'pixP':>6} {'pixR':>6} {'pixF1':>6} {'IoU':>6} {'ROCAUC':>7}")
    lines = [head, "-" * len(head)]
    note = ("F1corr: F1 with precision corrected for incomplete labels (= F1 when labels look "
            f"complete); best stage: {BEST_STAGE_RULE}")
    for s in stages:
        p, x = s["validation"]["particle"], s["validation"]["pixel"]
        lines.append(
            f"{s['stage']:<24} {p['precision']:6.3f} {p['recall']:6.3f} {p['f1']:6.3f} "
            f"{selection_f1(s):7.3f} {p['average_precision']:6.3f} {s['threshold']:6.3f} | "
            f"{x['precision']:6.3f} {x['recall']:6.3f} {x['f1']:6.3f} {x['iou']:6.3f} "
            f"{_fmt(x.get('roc_auc')):>7}")
    lines.append(note)
    return "\n".join(lines)
