"""Every stage model of one or more experiments, evaluated on the same micrographs.

This replaces the original ``compare_all_models.py``. Each ``iteration_*/model.pt`` is run on
the same labelled micrographs, exactly as :func:`selfpick.evaluation.evaluate.evaluate_model`
does (same preprocessing, peak finding, matching and metrics), so a row of the comparison and
``selfpick evaluate --model`` on those micrographs give the same numbers.

Which micrographs: ``--image-dir``/``--coords-file`` when given, otherwise the validation split
of the first experiment (from its ``config.json``). The metrics are measured against the
ground-truth coordinates of those micrographs, never against pseudo-labels.

The same machinery (:func:`evaluate_models`) gives ``selfpick report`` its per-stage
precision–recall curves and pick overlays.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfpick.errors import InputError, SelfpickError

log = logging.getLogger("selfpick")

_STAGE_DIR = re.compile(r"^iteration_(\d+)_")
COMPARISON_NOTE = ("particle level: each model's picks (at its own threshold, chosen on its "
                   "validation split) matched one-to-one to the ground-truth centres within half "
                   "a particle diameter; best F1 over all thresholds and average precision from "
                   "the same ranking. Pixel level: the probability map against the ground-truth "
                   "target on its valid pixels, at probability 0.5.")


# ----------------------------------------------------------------------------- experiments

@dataclass
class Experiment:
    """An experiment folder written by ``selfpick train`` (read-only view)."""

    path: Path
    config: dict  # config.json ({} when missing)
    metrics: dict  # root metrics.json ({"stages": []} when missing)
    label: str = ""

    @property
    def stages(self) -> list[dict]:
        """The completed stages' entries of the root ``metrics.json``, in training order."""
        return list(self.metrics.get("stages") or [])

    @property
    def best_stage(self) -> str | None:
        return self.metrics.get("best_stage")

    @property
    def final_stage(self) -> str | None:
        return self.metrics.get("final_stage")

    @property
    def split(self) -> dict[str, list[str]]:
        s = self.config.get("split") or {}
        return {k: list(s.get(k) or []) for k in ("train", "val", "unlabeled")}

    @property
    def val_regions(self) -> dict[str, tuple[float, float]]:
        """Validation strips ``{name: (y0, y1)}`` in original pixels, when the experiment
        validated on parts of its few labelled micrographs."""
        s = (self.config.get("split") or {}).get("val_regions") or {}
        return {k: (float(v[0]), float(v[1])) for k, v in s.items()}

    @property
    def data(self) -> dict:
        """The ``data`` section of the experiment's settings (image_dir, coords_file, ...)."""
        return dict((self.config.get("config") or {}).get("data") or {})

    def stage_models(self) -> list[tuple[str, int, Path]]:
        """``(stage name, iteration, model path)`` of every ``iteration_*/model.pt``, in order."""
        found = []
        for d in self.path.iterdir():
            m = _STAGE_DIR.match(d.name)
            if m and d.is_dir() and (d / "model.pt").is_file():
                found.append((d.name, int(m.group(1)), d / "model.pt"))
        return sorted(found, key=lambda t: t[1])


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read this experiment file ({exc})", path) from exc
    if not isinstance(data, dict):
        raise InputError("not a selfpick experiment file (expected a JSON object)", path)
    return data


def load_experiment(path) -> Experiment:
    """Open an experiment folder; :class:`InputError` when ``path`` is not one."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such experiment folder", p)
    if not p.is_dir():
        raise InputError("not an experiment folder (it is a file; give the folder that "
                         "selfpick train wrote, the one holding config.json and metrics.json)", p)
    cfg_path, met_path = p / "config.json", p / "metrics.json"
    if not cfg_path.is_file() and not met_path.is_file():
        raise InputError("not a selfpick experiment folder: it has no config.json or "
                         "metrics.json (give the --output-dir of selfpick train)", p)
    config = _read_json(cfg_path) if cfg_path.is_file() else {}
    metrics = _read_json(met_path) if met_path.is_file() else {"stages": []}
    if not isinstance(metrics.get("stages", []), list):
        raise InputError("metrics.json has no list of stages", met_path)
    return Experiment(p, config, metrics, label=p.name)


def _unique_labels(exps: list[Experiment]) -> None:
    """Give each experiment a short, unique label (folder name, then parent/name, then #i)."""
    names = [e.path.name for e in exps]
    for e in exps:
        if names.count(e.path.name) > 1:
            e.label = f"{e.path.resolve().parent.name}/{e.path.name}"
    seen: dict[str, int] = {}
    for e in exps:
        if e.label in seen:
            seen[e.label] += 1
            e.label = f"{e.label} #{seen[e.label]}"
        else:
            seen[e.label] = 1


# ----------------------------------------------------------------------------- data

@dataclass
class EvalSet:
    """Labelled micrographs to evaluate on: names, files and ground-truth centres.

    ``truth[name]`` is ``(N, 2)`` ``(x, y)`` in original pixels. ``info`` is a JSON-ready
    description (what was used and why); ``description`` says it in one line.
    """

    paths: dict[str, Path]
    truth: dict[str, np.ndarray]
    description: str
    info: dict = field(default_factory=dict)
    # Micrographs validated on a strip (an experiment with few labelled micrographs): only
    # picks with y in [y0, y1) (original pixels) count there; ``truth`` is already the strip's.
    regions: dict[str, tuple[float, float]] = field(default_factory=dict)

    def keep(self, name: str, xy: np.ndarray) -> np.ndarray | slice:
        """Index of the picks ``xy`` ``(N, 2)`` of micrograph ``name`` that count."""
        region = self.regions.get(name)
        if region is None:
            return slice(None)
        y = np.asarray(xy, dtype=np.float64).reshape(-1, 2)[:, 1]
        return (y >= region[0]) & (y < region[1])

    @property
    def names(self) -> list[str]:
        return list(self.paths)

    @property
    def n_particles(self) -> int:
        return int(sum(len(t) for t in self.truth.values()))


def given_eval_set(image_dir, coords_file, coords_format: str | None = None) -> EvalSet:
    """The micrographs of ``image_dir`` that have coordinates in ``coords_file``."""
    from selfpick.evaluation.evaluate import load_truth

    truth = load_truth(image_dir, coords_file, coords_format)
    names = list(truth.paths)
    return EvalSet(
        paths=dict(truth.paths), truth=dict(truth.by_name),
        description=(f"{len(names)} micrograph(s) of {image_dir} with ground truth from "
                     f"{coords_file}"),
        info={"source": "given", "image_dir": str(image_dir), "coords_file": str(coords_file),
              "match_report": truth.report.summary(), "micrographs": names,
              "n_particles": int(sum(len(t) for t in truth.by_name.values()))},
    )


def experiment_eval_set(exp: Experiment) -> EvalSet:
    """The experiment's validation micrographs (its training micrographs when it had none).

    Their files and ground truth are found through the experiment's own settings
    (``config.json``: ``data.image_dir``, ``data.coords_file``).
    """
    from selfpick.evaluation.evaluate import load_truth

    data = exp.data
    image_dir, coords_file = data.get("image_dir"), data.get("coords_file")
    split = exp.split
    names, which = split["val"], "validation split"
    if not names:
        names, which = split["train"], "training micrographs (the experiment had no " \
                                       "validation split; figures are optimistic)"
    if not names:
        raise InputError("config.json lists no validation or training micrographs; give "
                         "--image-dir and --coords-file", exp.path / "config.json")
    if not image_dir or not coords_file:
        raise InputError("config.json does not say where the experiment's micrographs and "
                         "coordinates are; give --image-dir and --coords-file",
                         exp.path / "config.json")
    try:
        truth = load_truth(image_dir, coords_file, data.get("coords_format"))
    except InputError as exc:
        raise InputError(f"the experiment's {which} cannot be read through its config.json "
                         f"({exc}); give --image-dir and --coords-file", exp.path) from exc
    missing = [n for n in names if n not in truth.paths]
    if missing:
        log.warning("%d micrograph(s) of the experiment's %s are no longer found in %s or have "
                    "no coordinates: %s", len(missing), which, image_dir, ", ".join(missing[:5]))
    names = [n for n in names if n in truth.paths]
    if not names:
        raise InputError(f"none of the experiment's {which} micrographs is found in "
                         f"{image_dir}; give --image-dir and --coords-file", exp.path)
    regions = {n: r for n, r in exp.val_regions.items() if n in names} if split["val"] else {}
    es = EvalSet(paths={n: truth.paths[n] for n in names}, truth={}, description="",
                 regions=regions)
    es.truth = {n: truth.by_name[n][es.keep(n, truth.by_name[n])] for n in names}
    strips = " (held-out strips)" if regions else ""
    es.description = f"the {which}{strips} of {exp.label} ({len(names)} micrograph(s))"
    es.info = {"source": which + strips, "experiment": str(exp.path),
               "image_dir": str(image_dir), "coords_file": str(coords_file),
               "micrographs": names, "n_particles": es.n_particles}
    if regions:
        es.info["val_regions"] = {n: list(r) for n, r in regions.items()}
    return es


# ----------------------------------------------------------------------------- evaluation

@dataclass
class StageEvaluation:
    """One model evaluated on an :class:`EvalSet`.

    ``particle``/``pixel`` are the dicts of :func:`~selfpick.evaluation.metrics.particle_metrics`
    (at the model's own ``threshold``) and :func:`~selfpick.evaluation.metrics.pixel_metrics`
    (probability 0.5). ``curve`` is the pooled ranking of all candidate picks (for PR curves).
    ``picks[name]`` = ``(xy, scores)``: every candidate pick of that micrograph, ``(N, 2)``
    in original pixels, scores descending (keep ``scores >= threshold`` for the model's picks).
    ``radius`` (match radius) and ``diameter`` are in original pixels.
    """

    model_path: Path
    stage: str
    threshold: float
    radius: float
    diameter: float
    particle: dict
    pixel: dict
    curve: object
    picks: dict[str, tuple[np.ndarray, np.ndarray]]

    def as_result(self) -> dict:
        """The same layout as :func:`~selfpick.evaluation.evaluate.evaluate_model` returns."""
        return {"model": str(self.model_path), "particle": self.particle, "pixel": self.pixel}


def _prep_key(saved) -> str:
    return json.dumps([round(saved.downsample, 9), dataclasses.asdict(saved.config.preprocess),
                       saved.config.data.pixel_size], sort_keys=True)


def evaluate_models(model_paths, evalset: EvalSet, device="auto",
                    progress: bool = False) -> list[StageEvaluation]:
    """Evaluate each model file on ``evalset`` (same steps as ``evaluate_model``).

    Micrographs are read and preprocessed once per distinct preprocessing (normally once per
    experiment) and kept at model scale while the models that share it run.
    """
    import torch
    from tqdm.auto import tqdm

    from selfpick.evaluation.metrics import particle_curve, particle_metrics, pixel_metrics
    from selfpick.io.micrographs import read_micrograph
    from selfpick.model.modelfile import load_model
    from selfpick.picking.inference import predict_probability
    from selfpick.picking.pick import picks_from_probability
    from selfpick.preprocess import preprocess
    from selfpick.targets import ignore_rows, make_target
    from selfpick.training.validate import CANDIDATE_FLOOR
    from selfpick.utils.runtime import resolve_device

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    cache_key, cache = None, {}
    out = []
    for mp in model_paths:
        saved = load_model(mp, dev)
        key = _prep_key(saved)
        if key != cache_key:
            cache_key, cache = key, {}  # only one preprocessing held at a time (memory)
        r_model = saved.radius_model_px
        radius = saved.particle_diameter / 2
        tc = saved.config.targets
        items, probs, targets, picks = [], [], [], {}
        it = tqdm(evalset.paths.items(), desc=f"Evaluating {Path(mp).parent.name}", unit="mic",
                  leave=False, disable=not progress or None)
        for name, path in it:
            if name not in cache:
                data, _ = read_micrograph(path, saved.config.data.pixel_size)
                cache[name] = (*preprocess(data, saved.downsample, saved.config.preprocess),
                               data.shape)
            img, scale, shape = cache[name]
            with torch.no_grad():
                prob = predict_probability(saved.model, img, dev, tta=saved.tta)
                xy, scores = picks_from_probability(saved, prob, scale, shape, CANDIDATE_FLOOR)
            keep = evalset.keep(name, xy)
            xy, scores = xy[keep], scores[keep]
            truth = evalset.truth[name]
            items.append((name, xy, scores, truth))
            picks[name] = (xy, scores)
            probs.append(prob.cpu().numpy())
            target = make_target(img.shape, scale.to_model(truth), r_model,
                                 tc.positive_radius, tc.ignore_radius)
            if name in evalset.regions:  # only the strip's pixels count
                y0, y1 = evalset.regions[name]
                rows = scale.to_model(np.array([[0.0, y0], [0.0, y1]]))[:, 1]
                ignore_rows(target, rows[0], rows[1], inside=False)
            targets.append(target)
        particle = particle_metrics(items, radius, saved.threshold)
        particle["threshold_rule"] = "model's own threshold (chosen on its validation split)"
        pixel = pixel_metrics(probs, targets, 0.5)
        out.append(StageEvaluation(Path(mp), saved.stage or Path(mp).parent.name,
                                   saved.threshold, radius, saved.particle_diameter, particle,
                                   pixel, particle_curve(items, radius), picks))
        del probs, targets
    return out


# ----------------------------------------------------------------------------- compare

def _data_identity(exp: Experiment) -> tuple[str, str]:
    d = exp.data

    def norm(x):
        if not x:
            return ""
        try:
            return str(Path(x).resolve())
        except OSError:
            return str(x)

    return norm(d.get("image_dir")), norm(d.get("coords_file"))


def compare_experiments(experiment_dirs, image_dir=None, coords_file=None, device="auto",
                        coords_format: str | None = None, progress: bool = True) -> dict:
    """Evaluate every stage model of each experiment on the same labelled micrographs.

    Returns a JSON-ready dict: ``data`` (which micrographs and truth were used), ``experiments``
    and ``rows`` (one per stage per experiment: ``experiment``, ``stage``, ``iteration``,
    ``model``, ``best``, ``final``, ``threshold``, ``particle``, ``pixel``). Raises
    :class:`SelfpickError` when the experiments were trained on different data and no
    ``image_dir``/``coords_file`` says what to compare them on.
    """
    if not experiment_dirs:
        raise SelfpickError("give at least one experiment folder")
    if (image_dir is None) != (coords_file is None):
        raise SelfpickError("--image-dir and --coords-file go together: the micrographs and "
                            "their ground-truth coordinates")
    exps = [load_experiment(p) for p in experiment_dirs]
    _unique_labels(exps)
    models = {}
    for e in exps:
        models[e.label] = e.stage_models()
        if not models[e.label]:
            raise InputError("no stage model (iteration_*/model.pt) in this experiment yet",
                             e.path)
    if image_dir is not None:
        evalset = given_eval_set(image_dir, coords_file, coords_format)
    else:
        ids = {e.label: _data_identity(e) for e in exps}
        if len(set(ids.values())) > 1:
            lines = "; ".join(f"{k}: {v[0] or '?'} + {v[1] or '?'}" for k, v in ids.items())
            raise SelfpickError("the experiments were trained on different data (" + lines
                                + "); give --image-dir and --coords-file to compare them on "
                                "the same labelled micrographs")
        evalset = experiment_eval_set(exps[0])
    log.info("comparing on %s, %d ground-truth particle(s)", evalset.description,
             evalset.n_particles)
    eval_names = set(evalset.names)
    exp_info = []
    for e in exps:
        seen = sorted(eval_names & (set(e.split["train"]) | set(e.split["unlabeled"])))
        if seen:
            log.warning("%s trained on %d of the comparison micrographs (%s): its figures on "
                        "them are optimistic", e.label, len(seen), ", ".join(seen[:5]))
        exp_info.append({"label": e.label, "path": str(e.path), "best_stage": e.best_stage,
                         "final_stage": e.final_stage,
                         "trained_on_evaluation_micrographs": seen})
    rows = []
    for e in exps:
        stages = models[e.label]
        evals = evaluate_models([m for _, _, m in stages], evalset, device, progress)
        for (name, k, mp), ev in zip(stages, evals):
            rows.append({
                "experiment": e.label, "experiment_dir": str(e.path), "stage": name,
                "iteration": k, "model": str(mp), "best": name == e.best_stage,
                "final": name == e.final_stage, "threshold": ev.threshold,
                "match_radius": ev.radius, "particle": ev.particle, "pixel": ev.pixel,
            })
    from selfpick import __version__

    return {
        "selfpick_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": {**evalset.info, "description": evalset.description},
        "note": COMPARISON_NOTE,
        "experiments": exp_info,
        "rows": rows,
    }


def _f(x, width: int = 6) -> str:
    return f"{'n/a':>{width}}" if x is None else f"{x:{width}.3f}"


def comparison_table(result: dict) -> str:
    """The comparison as plain text, one line per stage model (``*`` = best stage)."""
    rows = result["rows"]
    w = max([len("experiment")] + [len(r["experiment"]) for r in rows])
    ws = max([len("stage")] + [len(r["stage"]) for r in rows]) + 2
    head = (f"{'experiment':<{w}}  {'stage':<{ws}} {'thr':>6} {'P':>6} {'R':>6} {'F1':>6} "
            f"{'bestF1':>7} {'AP':>6} | {'pixF1':>6} {'ROCAUC':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        p, x = r["particle"], r["pixel"]
        stage = r["stage"] + (" *" if r["best"] else "")
        lines.append(f"{r['experiment']:<{w}}  {stage:<{ws}} {r['threshold']:6.3f} "
                     f"{_f(p['precision'])} {_f(p['recall'])} {_f(p['f1'])} "
                     f"{_f(p['best_f1'], 7)} {_f(p['average_precision'])} | {_f(x['f1'])} "
                     f"{_f(x.get('roc_auc'), 7)}")
    d = result["data"]
    lines.append("")
    lines.append(f"* = the experiment's best stage (by its own validation). Evaluated on "
                 f"{d['description']}: {d.get('n_particles', '?')} ground-truth particles.")
    lines.append("Particle level (P, R, F1 at the model's threshold 'thr'; best F1 over all "
                 "thresholds; AP) against the ground-truth centres; pixel level (pixF1 at "
                 "probability 0.5, ROC-AUC) against the ground-truth target.")
    return "\n".join(lines)


def _figure_title(data: dict) -> str:
    n = len(data.get("micrographs") or [])
    where = ("given micrographs" if data.get("source") == "given"
             else f"{data.get('source', 'micrographs')} of the first experiment")
    return (f"Every stage model on the same {n} micrograph(s) ({where}; "
            f"{data.get('n_particles', '?')} ground-truth particles)")


def write_comparison(result: dict, output) -> dict[str, Path]:
    """``comparison.json`` and ``comparison.png`` in the folder ``output``.

    The figure is optional: if it fails, a warning is logged and the JSON is still written.
    """
    from selfpick.utils.atomic import atomic_write_json

    out = Path(output)
    if out.exists() and not out.is_dir():
        raise SelfpickError("the output path exists and is not a folder", out)
    written = {}
    atomic_write_json(out / "comparison.json", result)
    written["json"] = out / "comparison.json"
    try:
        from selfpick.report.figures import comparison_figure

        bars = [{"experiment": r["experiment"], "iteration": r["iteration"],
                 "stage": r["stage"], "f1": r["particle"]["f1"],
                 "ap": r["particle"]["average_precision"], "best": r["best"]}
                for r in result["rows"]]
        comparison_figure(out / "comparison.png", bars,
                          title=_figure_title(result["data"]))
        written["figure"] = out / "comparison.png"
    except SelfpickError:
        raise
    except Exception as exc:  # noqa: BLE001 - a figure never costs the numbers
        log.warning("could not draw %s (%s); comparison.json is written", out / "comparison.png",
                    exc)
    return written


__all__ = ["Experiment", "EvalSet", "StageEvaluation", "load_experiment", "given_eval_set",
           "experiment_eval_set", "evaluate_models", "compare_experiments", "comparison_table",
           "write_comparison"]
