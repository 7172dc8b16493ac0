"""``selfpick report``: an experiment's story in one self-contained HTML page, plus its PNGs.

Written to ``EXPERIMENT/report/`` by default::

    report/
    ├── report.html                      everything below, images embedded (base64), inline CSS
    ├── progression.png                  validation P/R/F1 (+ AP, AUCs) per stage, two levels
    ├── pr_curves.png                    particle precision–recall per stage, same micrographs
    ├── overlay_<micrograph>.png         picks as circles: TP green, FP red, missed orange
    └── <stage>_visualization.png        the 4-panel figure of each stage (copied)

What is measured against what:

- the metrics table and ``progression.png`` are the validation figures training recorded in
  ``metrics.json`` (validation split vs the user's labels, never pseudo-labels);
- ``pr_curves.png`` and the overlays come from running every stage model now on the evaluation
  micrographs: ``image_dir``/``coords_file`` when given (held-out data), otherwise the
  experiment's validation split. With held-out data the report adds a table of every stage on
  it.

No figure can stop the report: a figure that fails is logged and shown as "figure
unavailable" in the page.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfpick.errors import InputError, SelfpickError
from selfpick.report.compare import (EvalSet, Experiment, StageEvaluation, evaluate_models,
                                     experiment_eval_set, given_eval_set, load_experiment)

log = logging.getLogger("selfpick")

MAX_OVERLAYS = 3


@dataclass
class Figure:
    """A figure of the report: the PNG written, or why it could not be."""

    key: str
    title: str
    caption: str
    path: Path | None = None
    error: str | None = None


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120] or "micrograph"


def _draw(fig: Figure, fn, *args, **kwargs) -> Figure:
    """Run a figure function; a failure becomes a warning and ``fig.error``, never an exception."""
    try:
        fn(*args, **kwargs)
        fig.path = Path(args[0])
    except Exception as exc:  # noqa: BLE001 - the report must survive any one figure
        import matplotlib.pyplot as plt

        plt.close("all")  # whatever the failed function left open
        fig.error = f"{type(exc).__name__}: {exc}"
        log.warning("report: could not draw %s (%s); the report continues without it",
                    fig.title, fig.error)
        log.debug("figure failure", exc_info=True)
    return fig


# ----------------------------------------------------------------------------- picks

@dataclass
class _Overlay:
    name: str
    path: Path  # micrograph file
    xy: np.ndarray  # (N, 2) picks, original px
    scores: np.ndarray | None
    truth: np.ndarray | None  # (M, 2) original px


def _file_picks(picks, picks_format, mic_paths: dict[str, Path]):
    """Picks of a coordinate file per micrograph name (only those of ``mic_paths``)."""
    from selfpick.io import coords as coordio

    table = coordio.read_coordinates(picks, picks_format, allow_empty=True)
    by_name, report = coordio.match_coordinates(table, list(mic_paths))
    out = {}
    for name in mic_paths:
        t = by_name.get(name)
        if t is None:
            continue
        xy = t[["x", "y"]].to_numpy(np.float64)
        s = t["score"].to_numpy(np.float64)
        out[name] = (xy, None if np.isnan(s).all() else np.nan_to_num(s, nan=0.0))
    return out, report


def _score_pick_file(file_picks: dict, evalset: EvalSet, radius: float) -> dict:
    """Particle metrics of a pick file on the evaluation micrographs (every pick counts)."""
    from selfpick.evaluation.metrics import particle_metrics

    items = []
    for name in evalset.names:
        xy, s = file_picks.get(name, (np.zeros((0, 2)), np.zeros(0)))
        keep = evalset.keep(name, xy)
        items.append((name, xy[keep], None if s is None else s[keep], evalset.truth[name]))
    return particle_metrics(items, radius, None)


# ----------------------------------------------------------------------------- report

def build_report(experiment_dir, image_dir=None, coords_file=None, picks=None, output=None,
                 device: str = "auto", coords_format: str | None = None,
                 picks_format: str | None = None, max_overlays: int = MAX_OVERLAYS,
                 progress: bool = False) -> Path:
    """Write the report of an experiment; returns the path of ``report.html``.

    Parameters
    ----------
    experiment_dir:
        The folder ``selfpick train`` wrote.
    image_dir, coords_file:
        Labelled micrographs to evaluate every stage on (held-out data, ideally). Without
        them, the experiment's validation split (found through its ``config.json``). An
        ``image_dir`` without ``coords_file`` is only picked and drawn (no truth to judge).
    picks:
        A pick file or folder (any supported format, e.g. ``selfpick pick`` output) to draw and
        score instead of the best model's own picks.
    output:
        Folder of the report; default ``experiment_dir/report``.
    device:
        Where the stage models run (``auto``, ``cpu``, ``cuda:N``).
    """
    from selfpick.utils.atomic import os_error_to_output_error
    from selfpick.utils.runtime import resolve_device

    exp = load_experiment(experiment_dir)
    if not exp.stages:
        raise InputError("this experiment has no completed stage yet (metrics.json lists none)",
                         exp.path)
    if coords_file is not None and image_dir is None:
        raise SelfpickError("--coords-file needs --image-dir: the micrographs its coordinates "
                            "belong to")
    device = resolve_device(device)  # a wrong --device is the user's error, not a missing figure
    out = Path(output) if output else exp.path / "report"
    if out.exists() and not out.is_dir():
        raise SelfpickError("the report output exists and is not a folder", out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error_to_output_error(exc, out) from exc
    best = exp.best_stage or exp.stages[-1]["stage"]
    notes: list[str] = []

    # --- which micrographs the curves and overlays use
    evalset: EvalSet | None = None
    heldout = image_dir is not None and coords_file is not None
    try:
        evalset = (given_eval_set(image_dir, coords_file, coords_format) if heldout
                   else experiment_eval_set(exp))
    except SelfpickError as exc:
        if heldout:
            raise
        notes.append(f"Precision–recall curves and overlays are unavailable: {exc}")
        log.warning("report: %s", notes[-1])

    # --- every stage model on those micrographs
    evals: list[StageEvaluation] = []
    recorded = {s["stage"] for s in exp.stages}
    models = [(n, k, p) for n, k, p in exp.stage_models() if n in recorded]
    if evalset is not None and models:
        try:
            evals = evaluate_models([p for _, _, p in models], evalset, device, progress)
        except SelfpickError as exc:
            notes.append(f"The stage models could not be evaluated: {exc}")
            log.warning("report: %s", notes[-1])
    best_eval = next((e for e, (n, _, _) in zip(evals, models) if n == best), None)

    figures: list[Figure] = []
    figures.append(_progression(exp, best, out))
    figures.append(_pr_curves(exp, evals, models, best, evalset, out))
    figures.append(_thresholds(exp, best, out))
    pick_score = None
    overlay_figs, overlay_note, pick_score = _overlays(exp, evalset, best_eval, best, picks,
                                                       picks_format, image_dir, coords_file,
                                                       device, max_overlays, out)
    if overlay_note:
        notes.append(overlay_note)
    figures.extend(overlay_figs)
    figures.extend(_stage_figures(exp, out))

    page = render_html(exp, figures, evalset, evals, models, best, heldout, pick_score, picks,
                       notes)
    from selfpick.utils.atomic import atomic_write_text

    path = out / "report.html"
    atomic_write_text(path, page)
    log.info("report written to %s", path)
    return path


def _progression(exp: Experiment, best: str, out: Path) -> Figure:
    from selfpick.report.figures import progression_figure

    v = exp.stages[0]["validation"]
    p = v.get("particle", {})
    fig = Figure(
        "progression", "Metrics across stages",
        f"Validation metrics of every stage as recorded during training, on the "
        f"{v.get('split', 'val')} split ({v.get('n_micrographs', '?')} micrograph(s), "
        f"{p.get('n_true', '?')} labelled particles), measured against the user's labels — "
        "never against pseudo-labels. Left, particle level: picks at the stage's own "
        f"threshold matched one-to-one to labelled centres within "
        f"{p.get('match_radius', 0):.3g} px (half a particle diameter); best F1 is the F1 at "
        "the best threshold; AP is average precision over the whole ranking. Right, pixel "
        "level: the probability map at 0.5 against the ground-truth target (disks around the "
        "labelled centres; rings around them ignored); ROC-AUC and PR-AUC from the "
        "probabilities. The shaded stage is the best one (highest validation particle F1).")
    return _draw(fig, progression_figure, out / "progression.png", exp.stages, best,
                 title=f"{exp.label}: validation metrics across stages")


def _thresholds(exp: Experiment, best: str, out: Path) -> Figure:
    from selfpick.report.figures import short_stage_label, threshold_figure
    from selfpick.training.validate import FEW_VALIDATION_PARTICLES

    v = exp.stages[0]["validation"]
    fig = Figure(
        "thresholds", "How the picking threshold was chosen",
        f"Validation particle F1 of every stage against the score threshold, on the "
        f"{v.get('split', 'val')} split ({v.get('particle', {}).get('n_true', '?')} labelled "
        "particles; with incomplete labels, precision corrected for the estimated "
        "completeness). The dot is the threshold each stage chose, stored in its model file: "
        "the highest F1, or with fewer than "
        f"{FEW_VALIDATION_PARTICLES} labelled particles the middle of the thresholds within "
        "one binomial standard error of it. The band marks these thresholds for the best "
        "stage: the validation labels cannot tell them apart, so a wide band means the "
        "threshold is uncertain — check it by eye in the picks browser (selfpick view).")
    series = []
    for s in exp.stages:
        p = s["validation"]["particle"]
        c = p.get("threshold_curve")
        if not c:
            continue
        series.append({"label": short_stage_label(s["stage"]), "threshold": c["threshold"],
                       "f1": c["f1"], "chosen": s.get("threshold"), "best": s["stage"] == best,
                       "range": (p.get("threshold_uncertainty") or {}).get("range")})
    if not series:
        fig.error = ("this experiment's metrics have no threshold curves (made by selfpick "
                     "before 0.6)")
        return fig
    return _draw(fig, threshold_figure, out / "thresholds.png", series,
                 title=f"{exp.label}: validation F1 against the picking threshold")


def _pr_curves(exp: Experiment, evals, models, best: str, evalset: EvalSet | None,
               out: Path) -> Figure:
    from selfpick.report.figures import pr_curve_figure, short_stage_label

    where = evalset.description if evalset is not None else "no micrographs"
    fig = Figure(
        "pr_curves", "Precision–recall curves",
        f"Particle-level precision–recall of every stage model, each run now on the same "
        f"micrographs: {where} ({evalset.n_particles if evalset else 0} ground-truth "
        "particles). Every candidate pick is ranked by score; each point is the precision and "
        "recall of the picks above one score threshold, matched one-to-one to the "
        "ground-truth centres within half a particle diameter. The dot marks the stage's own "
        "picking threshold. Grey curves are lines of equal F1.")
    if not evals:
        fig.error = "no stage model could be evaluated on labelled micrographs"
        return fig
    series = []
    for ev, (name, _, _) in zip(evals, models):
        prec, rec, _ = ev.curve.pr_curve()
        at = ev.curve.at_threshold(ev.threshold)
        series.append({"label": short_stage_label(name), "precision": prec, "recall": rec,
                       "ap": ev.particle["average_precision"], "best": name == best,
                       "at": {"precision": at["precision"], "recall": at["recall"],
                              "threshold": ev.threshold}})
    n_mic = len(evalset.names)
    return _draw(fig, pr_curve_figure, out / "pr_curves.png", series,
                 title=f"Particle-level precision–recall per stage\n({n_mic} micrograph(s), "
                       f"{evalset.n_particles} ground-truth particles)")


def _overlays(exp: Experiment, evalset: EvalSet | None, best_eval: StageEvaluation | None,
              best: str, picks, picks_format, image_dir, coords_file, device, max_overlays: int,
              out: Path):
    """Overlay figures; returns ``(figures, note, pick-file score or None)``."""
    diameter = float(exp.config.get("particle_diameter") or (best_eval.diameter if best_eval
                                                            else 0) or 0)
    radius = best_eval.radius if best_eval else diameter / 2
    note, score = None, None
    overlays: list[_Overlay] = []
    source = ""
    # Micrographs to draw: the given ones (with or without truth), else the evaluation set.
    if image_dir is not None and coords_file is None:
        from selfpick.io.micrographs import list_micrographs, micrograph_name

        mic_paths = {micrograph_name(p): p for p in list_micrographs(image_dir)}
        truth = {}
    elif evalset is not None:
        mic_paths, truth = dict(evalset.paths), evalset.truth
    else:
        return [], "No overlay: no micrographs to draw.", None

    if picks is not None:
        try:
            file_picks, rep = _file_picks(picks, picks_format, mic_paths)
        except SelfpickError as exc:
            file_picks, note = {}, f"The pick file could not be used ({exc})."
            log.warning("report: %s", note)
        if file_picks:
            names = [n for n in mic_paths if n in file_picks][:max_overlays]
            overlays = [_Overlay(n, mic_paths[n], *file_picks[n], truth.get(n)) for n in names]
            source = f"picks from {picks}"
            if evalset is not None and truth and radius:
                score = _score_pick_file(file_picks, evalset, radius)
        elif note is None:
            note = (f"The pick file {picks} has no picks for the drawn micrographs "
                    f"({rep.summary()}); the best model's own picks are drawn instead.")
            log.warning("report: %s", note)
    if not overlays:
        names = list(mic_paths)[:max_overlays]
        if best_eval is not None and all(n in best_eval.picks for n in names):
            for n in names:
                xy, s = best_eval.picks[n]
                keep = s >= best_eval.threshold
                overlays.append(_Overlay(n, mic_paths[n], xy[keep], s[keep], truth.get(n)))
            thr = best_eval.threshold
        else:
            try:
                overlays, thr = _pick_with_best(exp, names, mic_paths, truth, device)
            except SelfpickError as exc:
                return [], f"No overlay: the micrographs could not be picked ({exc}).", score
        source = f"picks of the best model ({best}, threshold {thr:.3f})"

    completeness = _completeness(exp, best)
    figs = []
    for ov in overlays:
        has_truth = ov.truth is not None
        if image_dir is not None:
            where = "micrograph given to the report"
        elif evalset is not None and evalset.info.get("source") == "validation split":
            where = "validation micrograph"
        else:
            where = "training micrograph"
        cap = (f"{ov.name} ({where}): {source}, drawn as circles of the particle diameter "
               f"({diameter:.3g} px). ")
        if has_truth:
            judge = "--coords-file" if coords_file else "the experiment's labels"
            cap += (f"Judged against the ground truth ({judge}) within {radius:.3g} px, "
                    "one-to-one: green = true positive, red = "
                    "false positive (no ground-truth particle there), orange dashed = missed "
                    "ground-truth particle. ")
            if coords_file is None and completeness is not None and completeness < 0.8:
                cap += (f"The labels look incomplete (about {completeness:.0%} of the "
                        "confidently picked particles carry a label), so many red circles may "
                        "be real particles nobody labelled. ")
        else:
            cap += "No ground truth for this micrograph: picks are not judged. "
        cap += ("The image is binned to about 1000 px, low-passed and contrast-stretched for "
                "display only.")
        fig = Figure(f"overlay_{ov.name}", f"Picks on {ov.name}", cap)
        figs.append(_draw(fig, _overlay_one, out / f"overlay_{_safe_name(ov.name)}.png", ov,
                          diameter, radius, exp.data.get("pixel_size"),
                          f"{ov.name} — {source}"))
    return figs, note, score


def _overlay_one(path, ov: _Overlay, diameter: float, radius: float, pixel_size, title: str):
    """One overlay PNG; ``diameter`` and match ``radius`` in original pixels."""
    from selfpick.io.micrographs import read_micrograph
    from selfpick.report.figures import classify_picks, overlay_figure

    image, _ = read_micrograph(ov.path, pixel_size)
    classes = None
    if ov.truth is not None:
        classes = classify_picks(ov.xy, ov.scores, ov.truth, radius)
    overlay_figure(path, image, ov.xy, diameter, ov.truth, classes, title=title)


def _pick_with_best(exp: Experiment, names, mic_paths, truth, device):
    """Pick micrographs with ``best_model.pt`` on ``device`` (a ``torch.device``).

    Used for micrographs no stage evaluation covers (``image_dir`` without coordinates).
    """
    from selfpick.model.modelfile import load_model
    from selfpick.picking.pick import pick_micrograph

    model = exp.path / "best_model.pt"
    if not model.is_file():
        model = exp.stage_models()[-1][2]
    saved = load_model(model, device)
    out = []
    for n in names:
        t = pick_micrograph(saved, mic_paths[n], device)
        out.append(_Overlay(n, mic_paths[n], t[["x", "y"]].to_numpy(np.float64),
                            t["score"].to_numpy(np.float64), truth.get(n)))
    return out, saved.threshold


def _completeness(exp: Experiment, stage: str) -> float | None:
    s = next((s for s in exp.stages if s["stage"] == stage), None)
    return None if s is None else s.get("label_completeness")


def _stage_figures(exp: Experiment, out: Path) -> list[Figure]:
    figs = []
    for s in exp.stages:
        name = s["stage"]
        src = exp.path / name / "visualization.png"
        target = "training target (the labels)" if s.get("iteration", 0) == 0 else \
            "pseudo-label this stage trained on"
        fig = Figure(f"stage_{name}", f"{name}: input, truth, training target, prediction",
                     f"{name}, on a training micrograph: input | ground truth (white = particle, "
                     f"black = background, grey = ignored) | {target} | the stage model's "
                     "probability map (0–1).")
        if not src.is_file():
            fig.error = f"{src} is missing (the figure failed during training, or was deleted)"
        else:
            try:
                dst = out / f"{name}_visualization.png"
                shutil.copyfile(src, dst)
                fig.path = dst
            except OSError as exc:
                fig.error = str(exc)
                log.warning("report: could not copy %s (%s)", src, exc)
        figs.append(fig)
    return figs


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1d2430;
background:#f4f6f9;line-height:1.45}
main{max-width:1320px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 8px;border-bottom:2px solid
#e3e8ef;padding-bottom:4px}h3{font-size:16px;margin:20px 0 6px}
.sub{color:#5b6778;margin:0 0 16px}
table{border-collapse:collapse;font-size:13.5px;margin:8px 0 6px}
th,td{border:1px solid #d5dbe3;padding:4px 8px}
th{background:#eef2f7;font-weight:600}
table.metrics td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.metrics td.stage{text-align:left;white-space:nowrap}
table.metrics th.grp{text-align:center;background:#dde6f2}
table.metrics th.pix{background:#e8eef0}
tr.best td{background:#fff6d6;font-weight:600}
.badge{display:inline-block;background:#e0a800;color:#fff;border-radius:8px;padding:0 6px;
font-size:11px;margin-left:6px;font-weight:600}
table.kv th{text-align:left;width:210px;vertical-align:top}
table.kv td{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;
word-break:break-all}
.note{color:#4a5668;font-size:13px;max-width:1100px}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:6px 10px;margin:8px 0;
font-size:13.5px}
figure{margin:16px 0 28px}
figure img{max-width:100%;height:auto;border:1px solid #e3e8ef}
#pr_curves img{width:820px}
figcaption{font-size:13px;color:#3c4858;max-width:1100px;margin-top:6px}
.unavailable{border:2px dashed #c9ced6;color:#7a8594;padding:28px;text-align:center;
background:#fafbfc;max-width:900px}
.grid{display:flex;flex-wrap:wrap;gap:18px}.grid figure{flex:1 1 380px;max-width:640px}
footer{color:#7a8594;font-size:12px;margin-top:36px}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _n(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    try:
        return f"{float(x):.{digits}f}"
    except (TypeError, ValueError):
        return _e(x)


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_e(Path(path).name)}" src="data:image/png;base64,{data}">'


def _figure_html(fig: Figure) -> str:
    body = None
    if fig.path is not None and fig.error is None:
        try:
            body = _img(fig.path)
        except OSError as exc:
            fig.error = str(exc)
    if body is None:
        body = (f'<div class="unavailable">Figure unavailable: {_e(fig.title)}<br>'
                f'<small>{_e(fig.error or "not drawn")}</small></div>')
    return (f'<figure id="{_e(fig.key)}">{body}<figcaption><b>{_e(fig.title)}.</b> '
            f'{_e(fig.caption)}</figcaption></figure>')


def _metrics_table(rows: list[tuple[str, dict, dict, float | None]], best: str,
                   split_text: str) -> str:
    """``rows`` = (stage, particle dict, pixel dict, threshold)."""
    corrected = any(p.get("corrected") for _, p, _, _ in rows)
    pcols = ["precision", "recall", "F1", "best F1", "AP", "threshold", "picks (TP / FP / FN)"]
    if corrected:
        pcols += ["F1, corrected*", "label completeness"]
    xcols = ["precision", "recall", "F1", "IoU", "ROC-AUC", "PR-AUC"]
    radius = rows[0][1].get("match_radius") if rows else None
    h = ['<table class="metrics"><thead><tr><th rowspan="2">stage</th>',
         f'<th class="grp" colspan="{len(pcols)}">Particle level — picks vs ground-truth '
         f'centres (match radius {_n(radius, 1)} px), {_e(split_text)}</th>',
         f'<th class="grp pix" colspan="{len(xcols)}">Pixel level — probability ≥ 0.5 vs '
         f'ground-truth target (valid pixels), {_e(split_text)}</th></tr><tr>']
    h += [f"<th>{_e(c)}</th>" for c in pcols] + [f'<th class="pix">{_e(c)}</th>' for c in xcols]
    h.append("</tr></thead><tbody>")
    for stage, p, x, thr in rows:
        is_best = stage == best
        cells = [f'<td class="stage">{_e(stage)}'
                 + ('<span class="badge">best</span>' if is_best else "") + "</td>"]
        vals = [_n(p.get("precision")), _n(p.get("recall")), _n(p.get("f1")),
                _n(p.get("best_f1")), _n(p.get("average_precision")), _n(thr),
                f"{p.get('tp', '?')} / {p.get('fp', '?')} / {p.get('fn', '?')}"]
        if corrected:
            c = p.get("corrected") or {}
            vals += [_n(c.get("f1")) if c else "—", _completeness_cell(p)]
        vals += [_n(x.get("precision")), _n(x.get("recall")), _n(x.get("f1")),
                 _n(x.get("iou")), _n(x.get("roc_auc")), _n(x.get("pr_auc"))]
        cells += [f"<td>{v}</td>" for v in vals]
        h.append(f'<tr class="{"best" if is_best else ""}">' + "".join(cells) + "</tr>")
    h.append("</tbody></table>")
    if corrected:
        from selfpick.training.validate import FEW_VALIDATION_PARTICLES, THRESHOLD_RULE_PREFIX

        rules: dict[str, list[str]] = {}
        for stage, p, _, _ in rows:
            rule = str(p.get("threshold_rule") or "").removeprefix(THRESHOLD_RULE_PREFIX)
            if rule:
                rules.setdefault(rule, []).append(stage)
        # Experiments saved before the rule was recorded get the general description.
        how = ("; ".join(f"{', '.join(stages)}: {rule}" for rule, stages in rules.items())
               if rules else
               f"with fewer than {FEW_VALIDATION_PARTICLES} labelled validation particles, in "
               "the middle of the thresholds within one standard error of its maximum")
        h.append('<p class="note">* Precision divided by the estimated label completeness '
                 '(the share of confidently picked particles that carry a label, ± its '
                 'binomial standard error): when labels are incomplete, real but unlabelled '
                 'particles would otherwise count as false positives. The threshold was chosen '
                 f'on this corrected F1 ({_e(how)}).</p>')
    return "".join(h)


def _completeness_cell(p: dict) -> str:
    """The label completeness of a stage's validation, with its binomial standard error
    when validation recorded one (``threshold_uncertainty.completeness``)."""
    c = p.get("label_completeness")
    se = ((p.get("threshold_uncertainty") or {}).get("completeness") or {}).get("standard_error")
    if c is None or se is None:
        return _n(c, 2)
    return f"{_n(c, 2)} ± {_n(se, 2)}"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f}%"


def _pu_note(exp: Experiment) -> str:
    """What the supervised stage did about partial picks (empty when it did nothing)."""
    for st in exp.stages:
        pu = st.get("positive_unlabelled")
        if not pu:
            continue
        after = pu.get("after_supervised_epochs")
        return ('<p class="note">Your picks looked partial (estimated completeness '
                f'{_n(pu.get("completeness_before"), 2)} on {pu.get("validation_particles", "?")}'
                f' labelled validation particles), so after {after if after else "the"} '
                f'supervised epochs {_e(st.get("stage", ""))} went on for {pu.get("epochs")} '
                'epochs with a positive-unlabelled loss (unpicked particles are not '
                f'background; {_pct(pu.get("unlabelled_prior"))} of the unlabelled pixels '
                'taken to be particles); validation F1 '
                f'{_n(pu.get("validation_f1_before"))} before, '
                f'{_n(pu.get("validation_f1_after"))} after; model kept: '
                f'{_e(pu.get("kept", "?"))}.</p>')
    return ""


def _pseudo_table(exp: Experiment) -> str:
    rows = [s for s in exp.stages if s.get("pseudo_labels")]
    if not rows:
        return _pu_note(exp) + ('<p class="note">No self-training stage: the experiment has '
                                'only supervised training.</p>')
    h = [_pu_note(exp), '<table class="metrics"><thead><tr><th>stage</th><th>mode</th>'
         '<th>positive threshold</th><th>negative threshold</th><th>score threshold used</th>'
         '<th>background below</th>'
         '<th>micrographs</th><th>pixels positive</th><th>pixels background / unlabelled</th>'
         '<th>pixels ignored</th><th>pseudo-particles added</th>'
         '<th>estimated precision</th><th>unlabelled pixels taken to be particles</th>'
         '<th>student</th></tr></thead><tbody>']
    for s in rows:
        pl = s["pseudo_labels"]
        h.append(
            f'<tr><td class="stage">{_e(s["stage"])}</td><td>{_e(pl.get("mode"))}</td>'
            f'<td>{_n(pl.get("positive_threshold"))}</td>'
            f'<td>{_n(pl.get("negative_threshold"))}</td>'
            f'<td>{_n(pl.get("positive_score"))}</td><td>{_n(pl.get("background_level"))}</td>'
            f'<td>{_e(pl.get("n_micrographs"))}</td>'
            f'<td>{_pct(pl.get("share_positive"))}</td><td>{_pct(pl.get("share_negative"))}</td>'
            f'<td>{_pct(pl.get("share_ignore"))}</td>'
            f'<td>{_e(pl.get("n_pseudo_particles"))}</td>'
            f'<td>{_pct(pl.get("estimated_precision"))}'
            + (f' ({_e(pl["validation_particles"])} particles)'
               if pl.get("validation_particles") is not None
               and pl.get("estimated_precision") is not None else "") + '</td>'
            f'<td>{_pct(pl.get("unlabelled_prior"))}</td><td>{_student(s)}</td></tr>')
    h.append("</tbody></table>")
    h.append('<p class="note">Pseudo-labels of iteration k are made by the previous stage\'s '
             'model on the training and unlabelled micrographs (never the validation ones). '
             'Positive / negative thresholds: the adaptive schedule (in "peaks" mode a '
             'validation precision, mapped to the score threshold shown; background only below '
             'half the previous stage\'s picking threshold when that is lower than the '
             'negative threshold). Pixel shares are of '
             'all pseudo-label pixels; pseudo-particles added are confident detections farther '
             'than a particle radius from every labelled centre; their estimated precision is the '
             'share of real particles (corrected for incomplete labels) among the validation '
             'picks at or above the same score (in brackets: the labelled validation '
             'particles it rests on; with a few dozen it is a rough figure). With unpicked '
             'pixels "unlabelled" (the default) no pixel is background: the stage trains '
             'with a positive-unlabelled loss that takes the share in the last column of '
             'the unlabelled pixels to be particles the model has not picked (estimated '
             'from its picks, validation precision and recall). Student: whether the stage '
             'fine-tuned the previous model or trained a fresh one from random weights (the '
             'default when validation is on strips of 1-3 labelled micrographs).</p>')
    return "".join(h)


def _student(stage: dict) -> str:
    """How a self-training stage's network started, with its epochs (older experiments did not
    record it: they fine-tuned)."""
    t = stage.get("training") or {}
    kind = t.get("student") or "finetune"
    text = "fresh (random weights)" if kind == "fresh" else "fine-tuned"
    return _e(text + (f", {t['epochs']} epochs" if t.get("epochs") else ""))


def _summary(exp: Experiment, best: str, evalset: EvalSet | None) -> str:
    c = exp.config
    cfg = c.get("config") or {}
    data, pre = cfg.get("data") or {}, cfg.get("preprocess") or {}
    model, train = cfg.get("model") or {}, cfg.get("train") or {}
    st = cfg.get("selftrain") or {}
    split = exp.split
    d, ds = c.get("particle_diameter"), c.get("downsample")
    diam = "n/a"
    if d:
        diam = f"{float(d):g} px (original micrograph pixels)"
    down = "n/a"
    if ds:
        down = (f"×{float(ds):.3g} ({pre.get('downsample_method', 'fourier')}); a particle is "
                f"{float(d) / float(ds):.1f} model px across" if d else f"×{float(ds):.3g}")
    val_names = ", ".join(split["val"][:8]) + (" …" if len(split["val"]) > 8 else "")
    vers = c.get("versions") or {}
    rows = [
        ("Experiment folder", str(exp.path.resolve())),
        ("Created", c.get("created")),
        ("Command line", " ".join(str(a) for a in c.get("command_line") or []) or None),
        ("Micrographs", data.get("image_dir")),
        ("Coordinates (labels)", data.get("coords_file")),
        ("Unlabelled micrographs", data.get("unlabeled_dir")),
        ("Name matching", c.get("match_report")),
        ("Particle diameter", diam),
        ("Downsampling", down),
        ("Split (micrographs)", f"{len(split['train'])} training, {len(split['val'])} validation"
                                f" ({val_names or 'none'}), {len(split['unlabeled'])} unlabelled"),
        ("Model", f"U-Net depth {model.get('depth', '?')}, width {model.get('width', '?')}, "
                  f"norm {model.get('norm', '?')}"),
        ("Training", f"{train.get('initial_epochs', '?')} supervised epochs, then "
                     f"{st.get('self_training_iterations', '?')} self-training iteration(s) of "
                     f"{train.get('retrain_epochs', '?')} epochs; pseudo-labels "
                     f"'{st.get('pseudo_label_mode', '?')}'; seed {c.get('seed', '?')}"),
        ("Stages completed", f"{len(exp.stages)}; best {best}; final {exp.final_stage}"
                             + (f"; no self-training: {exp.metrics['self_training_skipped']}"
                                if exp.metrics.get("self_training_skipped") else "")),
        ("Versions", ", ".join(f"{k} {v}" for k, v in vers.items()) or c.get("selfpick_version")),
        ("Curves and overlays on", evalset.description if evalset else "n/a"),
    ]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v) if v not in (None, '') else '—'}</td></tr>"
                   for k, v in rows)
    return f'<table class="kv">{body}</table>'


def render_html(exp: Experiment, figures: list[Figure], evalset: EvalSet | None,
                evals: list[StageEvaluation], models, best: str, heldout: bool,
                pick_score: dict | None, picks, notes: list[str]) -> str:
    """The report page: one HTML string, images inline, no external resource."""
    from selfpick import __version__

    v = exp.stages[0]["validation"]
    split_text = f"{v.get('split', 'val')} split, {v.get('n_micrographs', '?')} micrograph(s)"
    rec_rows = [(s["stage"], s["validation"]["particle"], s["validation"]["pixel"],
                 s.get("threshold")) for s in exp.stages]
    best_entry = next((s for s in exp.stages if s["stage"] == best), exp.stages[-1])
    bp = best_entry["validation"]["particle"]
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>selfpick report — {_e(exp.label)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>selfpick report — {_e(exp.label)}</h1>",
        f'<p class="sub">Best stage <b>{_e(best)}</b>: validation particle F1 '
        f'{_n(bp.get("f1"))} (precision {_n(bp.get("precision"))}, recall '
        f'{_n(bp.get("recall"))}) at threshold {_n(best_entry.get("threshold"))}; AP '
        f'{_n(bp.get("average_precision"))}. Generated '
        f'{_dt.datetime.now().isoformat(timespec="seconds")} by selfpick {_e(__version__)}.</p>',
    ]
    parts += [f'<div class="warn">{_e(n)}</div>' for n in notes]
    parts.append("<h2>Experiment</h2>" + _summary(exp, best, evalset))
    parts.append("<h2>Metrics per stage (validation, recorded during training)</h2>")
    parts.append(f'<p class="note">Measured against the user\'s labels on the {_e(split_text)} '
                 "that training never used, not against pseudo-labels. Particle level is what "
                 "the field reports; pixel level compares the probability map with the "
                 "ground-truth target. The highlighted row is the best stage (highest "
                 "validation particle F1); its model is <code>best_model.pt</code>.</p>")
    parts.append(_metrics_table(rec_rows, best, split_text))
    if heldout and evals and evalset is not None:
        parts.append("<h2>Every stage on the held-out micrographs</h2>")
        parts.append(f'<p class="note">Each stage model run now on {_e(evalset.description)} '
                     f"({evalset.n_particles} ground-truth particles), at its own threshold. "
                     "These micrographs were given to the report; they are not the validation "
                     "split.</p>")
        rows = [(n, ev.particle, ev.pixel, ev.threshold) for ev, (n, _, _) in zip(evals, models)]
        parts.append(_metrics_table(rows, best, f"{len(evalset.names)} held-out micrograph(s)"))
    if pick_score is not None:
        parts.append("<h2>Pick file against the ground truth</h2>")
        parts.append(
            f'<p class="note">{_e(picks)} on {_e(evalset.description)}: every pick in the file '
            f'counts (the file is already thresholded). Precision {_n(pick_score["precision"])}, '
            f'recall {_n(pick_score["recall"])}, F1 {_n(pick_score["f1"])} '
            f'({pick_score["tp"]} true positives, {pick_score["fp"]} false positives, '
            f'{pick_score["fn"]} missed of {pick_score["n_true"]} particles, match radius '
            f'{_n(pick_score["match_radius"], 1)} px); best F1 over score thresholds '
            f'{_n(pick_score["best_f1"])}, AP {_n(pick_score["average_precision"])}.</p>')
    parts.append("<h2>Partial picks and pseudo-labels</h2>" + _pseudo_table(exp))
    by_key = {f.key: f for f in figures}
    parts.append("<h2>Metrics across stages</h2>" + _figure_html(by_key["progression"]))
    parts.append("<h2>Precision–recall curves</h2>" + _figure_html(by_key["pr_curves"]))
    parts.append("<h2>The picking threshold</h2>" + _figure_html(by_key["thresholds"]))
    overlays = [f for f in figures if f.key.startswith("overlay_")]
    parts.append("<h2>Pick overlays</h2>")
    if overlays:
        parts.append('<div class="grid">' + "".join(_figure_html(f) for f in overlays)
                     + "</div>")
    else:
        parts.append('<div class="unavailable">No overlay: no micrographs to draw.</div>')
    parts.append("<h2>Stage figures</h2>")
    parts += [_figure_html(f) for f in figures if f.key.startswith("stage_")]
    note = exp.metrics.get("note")
    parts.append(f"<footer>{_e(note) if note else ''}<br>Report of {_e(exp.path)}; figures "
                 "are also saved as PNG files next to this page.</footer>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


__all__ = ["build_report", "render_html", "Figure"]
