"""Picks browser: one static page to page through a pick run with a live threshold slider.

:func:`write_browser` turns a pick run (the folder ``selfpick pick`` wrote, or any pick file
or folder selfpick reads) and its micrographs into a folder that any browser opens from disk,
without a server::

    browser/
    ├── index.html        the page: thumbnails, large view, slider, counts, command line;
    │                     per-micrograph pick counts at every slider step are inline
    ├── img/000000.jpg    each micrograph at about 1024 px (display size)
    ├── thumbs/000000.jpg each micrograph at about 192 px
    ├── data/000000.js    each micrograph's picks (and truth), loaded when it is shown
    └── browser.json      what the page was made from (and how to recognise it)

The page holds, per micrograph, the number of picks (and with ground truth the number of true
positives) at each of the slider's 101 thresholds, so moving the slider updates every count at
once without loading any pick; only the micrograph in the large view has its picks loaded and
drawn (a ``<script>`` per micrograph: browsers do not let a page opened from ``file://`` fetch
files). Thumbnails load as they scroll into view. A run of 1,000 micrographs with 500 picks
each makes a page of about 0.4 MB and 7 MB of pick data in 1,000 files.

Scores are kept in the page as integer thousandths of the slider's range, rounded down (and put
on the right side of every slider step by comparing the score with it), and every count
compares them with the slider's steps, so the page shows a pick at threshold ``t`` exactly
when ``score >= t``, the rule of ``selfpick pick`` and ``selfpick evaluate``. With ground
truth, true positives, false positives and missed particles come from
:func:`selfpick.evaluation.matching.match_picks` run once on all picks: matching is greedy by
score, so the picks kept at a threshold are matched exactly as they would be on their own (see
that module), and the page only has to hide the picks, and free the truths, below the threshold.
The counts therefore agree with ``selfpick evaluate --threshold t``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from selfpick.errors import InputError, OutputError, SelfpickError
from selfpick.io import coords as coordio
from selfpick.io.formats._common import build_table, file_stem_name
from selfpick.io.micrographs import list_micrographs, micrograph_name, read_micrograph
# The colours of the report's overlays, so that both read alike.
from selfpick.report.figures import FP_COLOUR, MISSED_COLOUR, TP_COLOUR
from selfpick.utils.atomic import os_error_to_output_error

log = logging.getLogger("selfpick")

#: Slider positions: thresholds ``lo + k * (hi - lo) / STEPS`` for ``k = 0 .. STEPS``.
STEPS = 100
#: Scores in the page are integers ``0 .. QUANTA`` over the slider's range.
QUANTA = 1000
DISPLAY_SIZE = 1024
THUMB_SIZE = 192
MARKER = "browser.json"

# Files selfpick pick writes next to the picks that hold no picks.
_RUN_FILES = re.compile(r"^(pick_summary.*\.json|failed_micrographs.*\.txt|"
                        r"RELION_OUTPUT_NODES\.star|browser\.json)$", re.I)
_PER_MICROGRAPH = ("star", "box", "cbox", "cryoppp")
_COORD_EXTENSIONS = coordio._COORD_EXTENSIONS


@dataclass
class PickRun:
    """The picks of a run and what the run recorded about itself (``pick_summary.json``)."""

    table: pd.DataFrame
    source: str
    # Every micrograph the run covers, those without picks included (from the index or the
    # empty per-micrograph files); None when unknown.
    names: list[str] | None = None
    model: str | None = None
    threshold: float | None = None
    fmt: str | None = None
    flip_y: bool = False


@dataclass
class BrowserSummary:
    output: Path
    n_micrographs: int = 0
    n_picks: int = 0
    n_without_picks: int = 0
    n_with_truth: int = 0
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def index(self) -> Path:
        return self.output / "index.html"

    def describe(self) -> str:
        txt = f"picks browser of {self.n_micrographs} micrograph(s), {self.n_picks} picks"
        if self.n_without_picks:
            txt += f" ({self.n_without_picks} micrograph(s) without any)"
        if self.n_with_truth:
            txt += f", ground truth on {self.n_with_truth}"
        if self.unreadable:
            txt += f"; {len(self.unreadable)} unreadable micrograph(s) left out"
        return txt + f", {self.seconds:.1f} s"


# ----------------------------------------------------------------------------- inputs


def _read_json_quietly(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        log.warning("%s: not readable as a pick summary (ignored)", path)
        return {}


def read_pick_run(picks, picks_format: str | None = None) -> PickRun:
    """The picks of ``picks``: a ``selfpick pick`` output folder (its ``autopick*.star``
    index(es) or its pick files, ``pick_summary*.json`` read for the run's model and
    threshold), a RELION job folder, a folder of pick files, or one pick file.

    Raises :class:`InputError` for a missing path or a folder without pick files. Empty pick
    files are allowed here (a micrograph may have no picks); the caller decides whether no
    picks at all is an error.
    """
    from selfpick.io.formats import relion_star

    path = Path(picks)
    if not path.exists():
        raise InputError("no such file or folder", path)
    folder = path if path.is_dir() else path.parent
    meta: dict = {}
    for f in sorted(folder.glob("pick_summary*.json")):
        meta = meta or _read_json_quietly(f)
    if path.is_dir():
        files = sorted(f for f in path.iterdir()
                       if f.is_file() and not f.name.startswith(".")
                       and f.suffix.lower() in _COORD_EXTENSIONS and not _RUN_FILES.match(f.name))
        if not files:
            raise InputError("no pick files in this folder (expected what selfpick pick writes: "
                             "<micrograph>_autopick.star files with autopick.star, or "
                             "picks.csv, picks.txt, .box, .cbox or .json files)", path)
        indexes = []
        if picks_format in (None, "star"):
            indexes = [f for f in files if f.suffix.lower() == ".star" and relion_star.is_index(f)]
        names: list[str] = []
        tables = []
        if indexes:
            # selfpick pick's (or RELION's) index(es), one per shard: they name the files.
            try:
                tables = [coordio.read_coordinates(f, "star", allow_empty=True) for f in indexes]
                for f in indexes:
                    names += _index_names(f)
            except InputError as exc:
                # A folder moved since picking: its index's paths lead nowhere, but the
                # per-micrograph files are still here.
                log.warning("%s; reading the pick files of %s instead", exc, path)
                indexes, names = [], []
                files = [f for f in files if not (f.suffix.lower() == ".star"
                                                  and relion_star.is_index(f))]
        if not indexes:
            for f in files:
                t = coordio.read_coordinates(f, picks_format, allow_empty=True)
                tables.append(t)
                if t.empty and (picks_format or coordio.detect_format(f)) in _PER_MICROGRAPH:
                    names.append(file_stem_name(f))  # a micrograph without picks
        tables = [t for t in tables if len(t)]
        table = pd.concat(tables, ignore_index=True) if tables else coordio.empty_picks()
        if len(indexes) > 1:
            table = table.drop_duplicates(ignore_index=True)
    else:
        table = coordio.read_coordinates(path, picks_format, allow_empty=True)
        names = []
        if path.suffix.lower() == ".star" and relion_star.is_index(path):
            names = _index_names(path)
        elif table.empty and (picks_format or coordio.detect_format(path)) in _PER_MICROGRAPH:
            names = [file_stem_name(path)]
    names = list(dict.fromkeys(names + table["micrograph"].astype(str).tolist()))
    threshold = meta.get("threshold")
    return PickRun(table=table, source=str(path), names=names, model=meta.get("model"),
                   threshold=float(threshold) if isinstance(threshold, (int, float)) else None,
                   fmt=meta.get("format"), flip_y=bool(meta.get("flip_y", False)))


def _index_names(path: Path) -> list[str]:
    """The micrographs a RELION picking index lists (those without picks included)."""
    from selfpick.io.formats import relion_star
    from selfpick.io.formats._common import coordinate_names

    for block in relion_star.read_blocks(path).values():
        frame = relion_star._as_frame(block)
        if frame is not None and relion_star.MIC in frame.columns:
            return coordinate_names(frame[relion_star.MIC])
    return []


def _score_range(scores: np.ndarray) -> tuple[float, float]:
    """The slider's range: 0-1 for selfpick's scores (probabilities), else whole numbers
    around the scores of another picker (Topaz's log-odds, for instance)."""
    finite = scores[np.isfinite(scores)]
    if not len(finite) or (finite.min() >= 0 and finite.max() <= 1):
        return 0.0, 1.0
    lo, hi = math.floor(float(finite.min())), math.ceil(float(finite.max()))
    return float(lo), float(hi if hi > lo else lo + 1)


def quantize(scores: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Scores as integers ``0 .. QUANTA`` over ``[lo, hi]``, rounded down, such that
    ``q >= k * QUANTA / STEPS`` holds exactly when ``score >= lo + k * (hi - lo) / STEPS``,
    the slider's ``k``-th threshold (for 0-1 scores ``k / 100``, the number the command line
    passes on)."""
    s = np.asarray(scores, np.float64)
    per_step = QUANTA // STEPS
    q = np.floor((s - lo) / (hi - lo) * QUANTA + 1e-6)
    # Where rounding put a score on the wrong side of a threshold, the comparison decides.
    thresholds = lo + np.arange(STEPS + 1) * (hi - lo) / STEPS
    level = np.clip(np.searchsorted(thresholds, s, side="right") - 1, 0, STEPS)
    q = np.clip(q, level * per_step, np.where(level == STEPS, QUANTA, level * per_step
                                                + per_step - 1))
    return np.clip(q, 0, QUANTA).astype(np.int64)


@dataclass
class _Micrograph:
    index: int
    name: str
    path: Path
    x: np.ndarray  # picks, best first (original pixels)
    y: np.ndarray
    q: np.ndarray  # quantized scores, non-increasing
    tp: np.ndarray | None  # per pick, with truth
    tx: np.ndarray | None  # truth
    ty: np.ndarray | None
    tq: np.ndarray | None  # per truth: q of the pick matched to it, -1 when none
    counts: list[int] = field(default_factory=list)  # picks at each slider step
    tp_counts: list[int] | None = None
    width: int = 0
    height: int = 0
    shown_width: float = 0.0  # the display image's extent in original pixels
    shown_height: float = 0.0


def _micrograph_picks(i: int, name: str, path: Path, picks: pd.DataFrame | None,
                      truth_xy: np.ndarray | None, radius: float, lo: float, hi: float
                      ) -> _Micrograph:
    from selfpick.evaluation.matching import match_picks, rank_order

    if picks is None or not len(picks):
        xy, scores = np.zeros((0, 2)), np.zeros(0)
    else:
        xy = picks[["x", "y"]].to_numpy(np.float64)
        scores = picks["score"].to_numpy(np.float64)
    # As selfpick evaluate: no scores at all = every pick counts, a missing one counts as 0.
    no_scores = not len(scores) or bool(np.isnan(scores).all())
    ranked = None if no_scores else np.nan_to_num(scores, nan=0.0)
    order = rank_order(ranked, len(xy))
    xy = xy[order]
    q = (np.full(len(xy), QUANTA, np.int64) if ranked is None
         else quantize(ranked[order], lo, hi))
    thresholds = np.arange(STEPS + 1) * (QUANTA // STEPS)
    counts = len(q) - np.searchsorted(q[::-1], thresholds, side="left")
    mic = _Micrograph(i, name, path, xy[:, 0], xy[:, 1], q, None, None, None, None,
                      counts=[int(c) for c in counts])
    if truth_xy is not None:
        res = match_picks(xy, None if ranked is None else ranked[order], truth_xy, radius)
        mic.tp = res.is_tp
        mic.tx, mic.ty = truth_xy[:, 0], truth_xy[:, 1]
        mic.tq = np.full(len(truth_xy), -1, np.int64)
        mic.tq[res.matched_truth[res.is_tp]] = q[res.is_tp]
        cum = np.concatenate([[0], np.cumsum(res.is_tp)])
        mic.tp_counts = [int(c) for c in cum[counts]]
    return mic


# ----------------------------------------------------------------------------- images


def display_images(path: Path, diameter: float | None, display_size: int = DISPLAY_SIZE,
                   thumb_size: int = THUMB_SIZE) -> tuple[bytes, bytes, tuple[int, int], int]:
    """JPEGs of a micrograph for the page: about ``display_size`` px on the longer side
    (binned by a whole factor, low-passed to a tenth of the particle, robustly normalised as
    the network sees it, :func:`selfpick.preprocess.normalize`) and a thumbnail.

    Returns ``(display_jpeg, thumb_jpeg, (ny, nx) of the micrograph, binning factor)``.
    """
    import io

    import scipy.ndimage
    from PIL import Image

    from selfpick.preprocess import normalize

    data, _ = read_micrograph(path)
    ny, nx = data.shape
    f = max(1, math.ceil(max(ny, nx) / display_size))
    if f > 1:
        # Pad to whole bins with the edge pixels; the page crops the padding away.
        py, px = -ny % f, -nx % f
        img = np.pad(data, ((0, py), (0, px)), mode="edge") if (py or px) else data
        my, mx = img.shape[0] // f, img.shape[1] // f
        img = img.reshape(my, f, mx, f).mean(axis=(1, 3), dtype=np.float32)
    else:
        img = np.asarray(data, np.float32)
    if diameter:
        sigma = float(diameter) / f / 10.0
        if sigma >= 0.5:
            img = scipy.ndimage.gaussian_filter(img, sigma, mode="reflect")
    grey = (normalize(img, clip_sigma=3.0) + 3.0) * (255.0 / 6.0)
    im = Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8), mode="L")
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=88)
    im.thumbnail((thumb_size, thumb_size), Image.LANCZOS)
    small = io.BytesIO()
    im.save(small, format="JPEG", quality=80)
    return out.getvalue(), small.getvalue(), (ny, nx), f


# ----------------------------------------------------------------------------- output


def _read_truth(truth, truth_format: str | None, names: list[str]
                ) -> tuple[dict[str, np.ndarray], pd.DataFrame | None]:
    """Ground-truth centres per micrograph name, and the table read."""
    if truth is None:
        return {}, None
    table = coordio.read_coordinates(truth, truth_format)
    by_name, report = coordio.match_coordinates(table, names)
    if not by_name:
        raise InputError("no ground-truth coordinates match any micrograph: " + report.summary(),
                         truth)
    if report.unmatched_coord_names:
        log.info("ground truth for %d micrograph(s) that are not among the micrographs "
                    "(not used): %s", len(report.unmatched_coord_names),
                    coordio._name_list(report.unmatched_coord_names))
    return {n: t[["x", "y"]].to_numpy(np.float64) for n, t in by_name.items()}, table


def _median_diameter(table: pd.DataFrame) -> float | None:
    d = table["diameter"].to_numpy(np.float64)
    d = d[np.isfinite(d) & (d > 0)]
    return float(np.median(d)) if len(d) else None


def _model_settings(model, given: bool) -> tuple[float | None, float | None]:
    """``(particle diameter, threshold)`` of a selfpick model file. A model the pick run
    recorded may have moved since: then Nones (the page does without); a model the user
    ``given`` must be readable."""
    from selfpick.model.modelfile import load_model

    if not model or not (given or Path(model).is_file()):
        return None, None
    try:
        saved = load_model(model, "cpu")
    except SelfpickError as exc:
        if given:
            raise
        log.warning("picks browser: the pick run's model is not readable (%s)", exc)
        return None, None
    return saved.particle_diameter, saved.threshold


def _check_output(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise OutputError("exists and is not a folder; choose another --output", out)
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise OutputError("the folder is not empty and holds no picks browser; choose a new "
                              "--output (an earlier picks browser there would be replaced)", out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _numbers(a: np.ndarray, digits: int) -> list:
    if digits == 0:
        return [int(v) for v in np.rint(a)]
    return [round(float(v), digits) for v in a]


def _js_json(obj) -> str:
    # Inside <script>: "</" must not end the element.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")


def _file_id(i: int) -> str:
    return f"{i:06d}"


def _quote_paths(spec) -> str:
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    return " ".join(shlex.quote(str(p)) for p in items)


def write_browser(picks, images, output, truth=None, *, picks_format: str | None = None,
                  truth_format: str | None = None, particle_diameter: float | None = None,
                  radius: float | None = None, threshold: float | None = None,
                  model: str | None = None, display_size: int = DISPLAY_SIZE,
                  thumb_size: int = THUMB_SIZE, workers: int | None = None,
                  progress: bool = True) -> BrowserSummary:
    """Write the picks browser of a pick run into the folder ``output``.

    Parameters
    ----------
    picks:
        A pick run folder (``selfpick pick`` output), a pick file or folder in any format
        :func:`selfpick.io.coords.read_coordinates` reads, or a pick table (DataFrame).
    images:
        The micrographs (folder, glob, list file or a list of these); every micrograph the
        picks name must be among them.
    truth:
        Optional ground-truth coordinates (file or folder, any format). Picks are then shown
        as true/false positives and unpicked particles as missed, matched within ``radius``
        (default half the particle diameter) as ``selfpick evaluate`` matches.
    particle_diameter:
        Original pixels; default: the picks' diameter where their format records one, else
        the model's (the one given or the pick run's), else the truth's.
    threshold:
        The slider's starting position; default: the run's threshold (``pick_summary.json``).
    model:
        The model for the page's ``selfpick pick`` command line; default: the run's.

    Nothing is written when the input is unusable (:class:`InputError`); the folder is built
    under a temporary name and renamed into place at the end, replacing an earlier picks
    browser there but nothing else.
    """
    t0 = time.perf_counter()
    out = Path(output)
    if display_size < 64 or thumb_size < 16:
        raise SelfpickError("--display-size must be 64 px or more and --thumb-size 16 or more")
    # --- every input check before anything is written
    if isinstance(picks, pd.DataFrame):
        run = PickRun(table=coordio._normalise_table(picks), source="(pick table)")
    else:
        run = read_pick_run(picks, picks_format)
    paths = list_micrographs(images)
    names = [micrograph_name(p) for p in paths]
    table = run.table
    if table.empty:
        raise InputError("no picks: the pick files hold no particle at all (picked with too "
                         "high a threshold? pick again with --threshold 0 to keep every "
                         "candidate)", run.source)
    covered = run.names if run.names is not None else list(dict.fromkeys(names))
    every = build_table(np.asarray(covered, dtype=object), np.zeros(len(covered)),
                        np.zeros(len(covered)), None, None)
    shown, report = coordio.match_coordinates(every, names)
    if report.unmatched_coord_names:
        missing = report.unmatched_coord_names
        raise InputError(
            f"{len(missing)} micrograph(s) named in the picks are not among the micrographs "
            f"of {_quote_paths(images)}: {coordio._name_list(missing)}; give --images the "
            "micrographs that were picked", run.source)
    by_name, _ = coordio.match_coordinates(table, names)
    truth_by_name, truth_table = _read_truth(truth, truth_format, names)
    left_out = [n for n in names if n not in shown]
    if left_out:
        log.info("%d micrograph(s) of --images are not in the pick run and are not shown: %s",
                 len(left_out), coordio._name_list(left_out))
    paths = [p for p, n in zip(paths, names) if n in shown]
    names = [n for n in names if n in shown]
    # The particle diameter: given, else the picks', the model's or the truth's.
    model_diameter, model_threshold = _model_settings(model or run.model, model is not None)
    model = model or run.model
    diameter = particle_diameter or _median_diameter(table) or model_diameter or (
        _median_diameter(truth_table) if truth_table is not None else None)
    if not diameter or not (diameter > 0 and math.isfinite(diameter)):
        raise SelfpickError("the particle diameter is unknown (the picks do not record it and "
                            "no model file says it): give --particle-diameter in pixels")
    match_radius = float(radius) if radius else diameter / 2
    if not (match_radius > 0 and math.isfinite(match_radius)):
        raise SelfpickError(f"--radius {radius}: give a positive number of pixels")
    scores = table["score"].to_numpy(np.float64)
    lo, hi = _score_range(scores)
    has_scores = bool(np.isfinite(scores).any())
    if threshold is not None and not lo <= threshold <= hi:
        raise SelfpickError(f"--threshold {threshold:g}: the scores lie between {lo:g} and "
                            f"{hi:g}; give a threshold in that range")
    _check_output(out)

    mics = [_micrograph_picks(i, n, p, by_name.get(n), truth_by_name.get(n), match_radius,
                              lo, hi) for i, (n, p) in enumerate(zip(names, paths))]
    # --- build the folder under a temporary name
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise os_error_to_output_error(exc, out) from exc
    try:
        summary = _write_folder(tmp, out, mics, run, images, diameter, match_radius, lo, hi,
                                has_scores, threshold, model, model_threshold, truth,
                                display_size, thumb_size, workers, progress)
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise os_error_to_output_error(exc, out) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.seconds = time.perf_counter() - t0
    return summary


def _write_folder(tmp: Path, out: Path, mics: list[_Micrograph], run: PickRun, images,
                  diameter: float, radius: float, lo: float, hi: float, has_scores: bool,
                  threshold: float | None, model: str | None, model_threshold: float | None,
                  truth, display_size: int, thumb_size: int, workers: int | None,
                  progress: bool) -> BrowserSummary:
    for sub in ("img", "thumbs", "data"):
        (tmp / sub).mkdir()
    summary = BrowserSummary(output=out)
    workers = max(1, workers or min(4, os.cpu_count() or 1))

    def convert(mic: _Micrograph):
        try:
            return display_images(mic.path, diameter, display_size, thumb_size)
        except InputError as exc:
            return exc

    def in_order(pool):
        # A few micrographs ahead of the writing, not all of them: memory stays flat.
        ahead = deque(pool.submit(convert, m) for m in mics[:2 * workers])
        nxt = len(ahead)
        while ahead:
            res = ahead.popleft().result()
            if nxt < len(mics):
                ahead.append(pool.submit(convert, mics[nxt]))
                nxt += 1
            yield res

    kept: list[_Micrograph] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for mic, res in tqdm(zip(mics, in_order(pool)), total=len(mics), desc="Browser",
                             unit="mic", disable=not progress or None):
            if isinstance(res, InputError):
                log.warning("picks browser: leaving out %s", res)
                summary.unreadable.append(str(res))
                continue
            big, small, (ny, nx), f = res
            mic.index = len(kept)
            mic.height, mic.width = ny, nx
            mic.shown_height, mic.shown_width = ny + (-ny % f), nx + (-nx % f)
            fid = _file_id(mic.index)
            (tmp / "img" / f"{fid}.jpg").write_bytes(big)
            (tmp / "thumbs" / f"{fid}.jpg").write_bytes(small)
            digits = 0 if max(nx, ny) > 400 else 1
            data = {"x": _numbers(mic.x, digits), "y": _numbers(mic.y, digits),
                    "q": mic.q.tolist()}
            if mic.tp is not None:
                data.update(m=mic.tp.astype(int).tolist(), tx=_numbers(mic.tx, digits),
                            ty=_numbers(mic.ty, digits), tq=mic.tq.tolist())
            (tmp / "data" / f"{fid}.js").write_text(
                f"SP_LOAD({mic.index},{_js_json(data)});\n", encoding="utf-8")
            kept.append(mic)
    if not kept:
        raise InputError("none of the micrographs could be read; first problem: "
                         + summary.unreadable[0])
    summary.n_micrographs = len(kept)
    summary.n_picks = sum(len(m.q) for m in kept)
    summary.n_without_picks = sum(1 for m in kept if not len(m.q))
    summary.n_with_truth = sum(1 for m in kept if m.tp is not None)

    step = (hi - lo) / STEPS
    decimals = max(2, math.ceil(-math.log10(step) - 1e-9))
    start = lo
    for candidate in (threshold, run.threshold or None, model_threshold):
        if candidate is not None and lo <= candidate <= hi and has_scores:
            start = candidate
            break
    # Rounded down: the slider starts with every pick of the run in view.
    start_step = int(min(STEPS, max(0, math.floor((start - lo) / step + 1e-6))))
    fmt = run.fmt if run.fmt in coordio.FORMATS else None
    extra = (f" --format {fmt}" if fmt and fmt != "star" else "") + (
        " --flip-y" if run.flip_y else "")
    source = run.source if run.source != "(pick table)" else "picks"
    base = source.rstrip("/\\") or "picks"
    if Path(base).suffix:  # a pick file: name the new folder after its folder
        base = str(Path(base).parent / "picks")
    notes = []
    if summary.unreadable:
        notes.append(f"{len(summary.unreadable)} micrograph(s) could not be read and are left "
                     "out: " + "; ".join(summary.unreadable[:5]))
    if not has_scores:
        notes.append("These picks carry no scores: the slider does not change them.")
    if (lo, hi) != (0.0, 1.0):
        notes.append(f"The scores lie outside 0–1 (another picker's?): the slider runs from "
                     f"{lo:g} to {hi:g}, and the command below is for selfpick's own scores.")
    page_data = {
        "title": Path(source).name or source,
        "picks": run.source, "images": _quote_paths(images),
        "truth": None if truth is None else str(truth),
        "diameter": round(diameter, 2), "radius": round(radius, 2),
        "lo": lo, "hi": hi, "steps": STEPS, "quanta": QUANTA, "decimals": decimals,
        "start": start_step, "hasScores": has_scores, "hasTruth": summary.n_with_truth > 0,
        "runThreshold": run.threshold,
        "colours": {"tp": TP_COLOUR, "fp": FP_COLOUR, "missed": MISSED_COLOUR},
        "command": {
            "model": shlex.quote(model) if model else None,
            "images": _quote_paths(images),
            "output": shlex.quote(base),
            "extra": extra,
            "selfpickScores": (lo, hi) == (0.0, 1.0),
        },
        "notes": notes,
        "names": [m.name for m in kept],
        "w": [m.width for m in kept], "h": [m.height for m in kept],
        "sw": [m.shown_width for m in kept], "sh": [m.shown_height for m in kept],
        "n": [len(m.q) for m in kept],
        "nt": [-1 if m.tx is None else len(m.tx) for m in kept],
        "cnt": [m.counts for m in kept],
        "tp": [m.tp_counts for m in kept] if summary.n_with_truth else None,
    }
    (tmp / "index.html").write_text(render_page(page_data), encoding="utf-8")
    (tmp / MARKER).write_text(json.dumps({
        "what": "selfpick picks browser", "picks": run.source, "images": _quote_paths(images),
        "truth": None if truth is None else str(truth), "diameter": diameter,
        "match_radius": radius, "n_micrographs": summary.n_micrographs,
        "n_picks": summary.n_picks, "n_with_truth": summary.n_with_truth,
        "unreadable": summary.unreadable, "micrographs": [str(m.path) for m in kept],
    }, indent=2) + "\n", encoding="utf-8")
    return summary


# ----------------------------------------------------------------------------- the page


def render_page(data: dict) -> str:
    """The page's HTML, with ``data`` (see :func:`_write_folder`) inline."""
    import html

    return (_PAGE.replace("__TITLE__", html.escape(str(data["title"])))
            .replace("__DATA__", _js_json(data))
            .replace("__SCRIPT__", _SCRIPT))


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__ · selfpick picks browser</title>
<style>
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  background: #1b1c1f; color: #e4e4e4; display: flex; flex-direction: column; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 18px;
  padding: 8px 14px; background: #2a2c30; border-bottom: 1px solid #3b3d42; }
header h1 { font-size: 15px; margin: 0 6px 0 0; font-weight: 600; white-space: nowrap; }
header h1 small { font-weight: 400; color: #a9abb1; }
.thr { display: flex; align-items: center; gap: 8px; }
#thr { width: 280px; accent-color: #4da3ff; }
#thrval { font-variant-numeric: tabular-nums; font-weight: 700; font-size: 16px;
  min-width: 3.2em; }
#total, #truthTotal { font-variant-numeric: tabular-nums; white-space: nowrap; }
#truthTotal { color: #c8cad0; }
#warn { color: #ffb347; }
main { flex: 1; display: flex; min-height: 0; }
#strip { width: 212px; flex: none; overflow-y: auto; background: #222327;
  border-right: 1px solid #3b3d42; padding: 6px; }
.thumb { position: relative; margin: 0 0 6px; cursor: pointer; border: 2px solid transparent;
  border-radius: 4px; background: #0e0e10; overflow: hidden; }
.thumb.sel { border-color: #4da3ff; }
.thumb img { display: block; width: 100%; height: auto; }
.thumb .lab { position: absolute; left: 0; right: 0; bottom: 0; display: flex; gap: 6px;
  justify-content: space-between; font-size: 11px; padding: 1px 5px;
  background: rgba(0, 0, 0, .66); }
.thumb .nm { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.thumb .ct { font-variant-numeric: tabular-nums; font-weight: 600; }
.thumb.zero .ct { color: #8d8f95; }
#view { flex: 1; min-width: 0; position: relative; padding: 10px; display: flex;
  align-items: center; justify-content: center; }
#svg { display: block; width: 100%; height: 100%; }
#svg circle { fill: none; vector-effect: non-scaling-stroke; stroke-width: 1.6; }
#truthg circle.missed { stroke-dasharray: 5 3; stroke-width: 2.2; }
#svg.nocircles #circles, #svg.nocircles #truthg { display: none; }
#msg { position: absolute; top: 14px; left: 14px; padding: 4px 8px; background: rgba(0,0,0,.7);
  border-radius: 4px; display: none; }
aside { width: 340px; flex: none; overflow-y: auto; background: #2a2c30;
  border-left: 1px solid #3b3d42; padding: 10px 14px 20px; }
aside h2 { font-size: 15px; margin: 10px 0 2px; word-break: break-all; }
aside h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: #a9abb1;
  margin: 16px 0 6px; }
.nav { display: flex; align-items: center; gap: 8px; }
.nav span { flex: 1; text-align: center; font-variant-numeric: tabular-nums; }
button { background: #3a3d44; color: #eee; border: 1px solid #50535b; border-radius: 4px;
  padding: 4px 10px; font: inherit; cursor: pointer; }
button:hover { background: #464a52; }
table.mi { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
table.mi td { padding: 1px 0; }
table.mi td:last-child { text-align: right; font-weight: 600; }
.legend div { display: flex; align-items: center; gap: 8px; margin: 3px 0; }
.sw { width: 16px; height: 16px; border-radius: 50%; border: 2.5px solid; flex: none; }
.sw.dash { border-style: dashed; }
.grad { height: 10px; border-radius: 3px; margin: 4px 0 1px;
  background: linear-gradient(to right, #3f6fe0, #a45bd1, #e8578f, #ff9a4a, #ffe94a); }
.gradlab { display: flex; justify-content: space-between; font-size: 11px; color: #a9abb1; }
.opts label { display: block; margin: 3px 0; }
#cmd { width: 100%; height: 96px; resize: vertical; white-space: pre-wrap;
  word-break: break-all; font: 12px/1.35 ui-monospace, Menlo,
  Consolas, monospace; background: #17181b; color: #e8e8e8; border: 1px solid #50535b;
  border-radius: 4px; padding: 6px; }
.small { font-size: 12px; color: #a9abb1; }
.note { font-size: 12px; color: #ffcf8a; }
kbd { font: 11px ui-monospace, monospace; border: 1px solid #60636b; border-bottom-width: 2px;
  border-radius: 3px; padding: 0 4px; background: #34363c; }
</style>
</head>
<body>
<header>
  <h1>selfpick picks <small>__TITLE__</small></h1>
  <div class="thr">
    <label for="thr">score threshold</label>
    <input id="thr" type="range" min="0" max="100" step="1" value="0">
    <span id="thrval"></span>
  </div>
  <span id="total"></span>
  <span id="truthTotal"></span>
  <span id="warn"></span>
</header>
<main>
  <nav id="strip" aria-label="micrographs"></nav>
  <section id="view">
    <svg id="svg" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">
      <image id="img" x="-0.5" y="-0.5" preserveAspectRatio="none"></image>
      <g id="truthg"></g><g id="circles"></g>
    </svg>
    <div id="msg"></div>
  </section>
  <aside>
    <div class="nav"><button id="prev" title="previous (←)">◀ prev</button>
      <span id="pos"></span><button id="next" title="next (→)">next ▶</button></div>
    <h2 id="name"></h2>
    <div class="small" id="size"></div>
    <table class="mi" id="micinfo"></table>
    <h3>Colours</h3>
    <div class="legend" id="legend"></div>
    <div class="opts" id="opts"></div>
    <h3>Pick again at this threshold</h3>
    <textarea id="cmd" readonly spellcheck="false"></textarea>
    <div><button id="copy">Copy command</button> <span class="small" id="copied"></span></div>
    <p class="note" id="cmdnote"></p>
    <p class="note" id="notes"></p>
    <h3>Keys</h3>
    <div class="small"><kbd>→</kbd>/<kbd>n</kbd> next, <kbd>←</kbd>/<kbd>p</kbd> previous,
      <kbd>Home</kbd>/<kbd>End</kbd> first/last, <kbd>↑</kbd>/<kbd>↓</kbd> threshold ±0.01,
      <kbd>PgUp</kbd>/<kbd>PgDn</kbd> ±0.1, <kbd>c</kbd> circles on/off.</div>
    <h3>Source</h3>
    <div class="small" id="source"></div>
  </aside>
</main>
<script>window.SP_DATA = __DATA__;</script>
<script>__SCRIPT__</script>
</body>
</html>
"""

_SCRIPT = r"""
(function () {
"use strict";
var D = window.SP_DATA, N = D.names.length;
var $ = function (id) { return document.getElementById(id); };
var QSTEP = D.quanta / D.steps;
var SVGNS = "http://www.w3.org/2000/svg";
var k = D.start, cur = 0, mode = D.hasTruth ? "match" : "score", showMissed = true;
var cache = new Map(), pending = new Set();
var thr = $("thr"), strip = $("strip"), svg = $("svg"), img = $("img");
var circles = $("circles"), truthg = $("truthg");
var labels = new Array(N), thumbs = new Array(N), shownCounts = new Array(N);
var rememberTimer = null;

function fid(i) { var s = String(i); while (s.length < 6) s = "0" + s; return s; }
function thrValue(s) { return D.lo + s * (D.hi - D.lo) / D.steps; }
function fmtThr(s) { return thrValue(s).toFixed(D.decimals); }
function fmtInt(n) { return n.toLocaleString("en-US"); }
function ratio(a, b) { return b > 0 ? (a / b).toFixed(3) : "–"; }

// Score colours: blue (low) - violet - pink - orange - yellow (high).
var STOPS = [[63, 111, 224], [164, 91, 209], [232, 87, 143], [255, 154, 74], [255, 233, 74]];
function scoreColour(q) {
  var t = Math.max(0, Math.min(1, q / D.quanta)) * (STOPS.length - 1);
  var i = Math.min(STOPS.length - 2, Math.floor(t)), f = t - i, a = STOPS[i], b = STOPS[i + 1];
  return "rgb(" + Math.round(a[0] + (b[0] - a[0]) * f) + "," + Math.round(a[1] + (b[1] - a[1]) * f)
    + "," + Math.round(a[2] + (b[2] - a[2]) * f) + ")";
}

// ---- thumbnails: built once, images loaded as they scroll into view
function buildStrip() {
  var frag = document.createDocumentFragment();
  var io = ("IntersectionObserver" in window) ? new IntersectionObserver(function (entries) {
    entries.forEach(function (e) {
      if (e.isIntersecting) { var im = e.target; im.src = im.dataset.src; io.unobserve(im); }
    });
  }, {root: strip, rootMargin: "600px 0px"}) : null;
  for (var i = 0; i < N; i++) {
    var div = document.createElement("div");
    div.className = "thumb";
    div.dataset.i = i;
    div.title = D.names[i];
    var im = document.createElement("img");
    im.alt = D.names[i];
    im.loading = "lazy";
    im.style.aspectRatio = D.w[i] + " / " + D.h[i];
    im.dataset.src = "thumbs/" + fid(i) + ".jpg";
    if (io) io.observe(im); else im.src = im.dataset.src;
    var lab = document.createElement("div");
    lab.className = "lab";
    var nm = document.createElement("span");
    nm.className = "nm";
    nm.textContent = D.names[i];
    var ct = document.createElement("span");
    ct.className = "ct";
    lab.appendChild(nm); lab.appendChild(ct);
    div.appendChild(im); div.appendChild(lab);
    frag.appendChild(div);
    labels[i] = ct; thumbs[i] = div;
  }
  strip.appendChild(frag);
  strip.addEventListener("click", function (e) {
    var t = e.target.closest(".thumb");
    if (t) show(+t.dataset.i);
  });
}

// ---- counts at the threshold: from the per-step tables, no pick data needed
function micCounts(i) {
  var c = {n: D.cnt[i][k], total: D.n[i], truth: D.nt[i]};
  if (D.tp && D.tp[i]) { c.tp = D.tp[i][k]; c.fp = c.n - c.tp; c.missed = c.truth - c.tp; }
  return c;
}
function updateCounts() {
  var tot = 0, tp = 0, pred = 0, nt = 0, withTruth = 0;
  for (var i = 0; i < N; i++) {
    var c = D.cnt[i][k];
    tot += c;
    if (shownCounts[i] !== c) {  // touch only the labels that change
      if (shownCounts[i] === 0 || c === 0) thumbs[i].classList.toggle("zero", c === 0);
      labels[i].textContent = c;
      shownCounts[i] = c;
    }
    if (D.tp && D.tp[i]) { tp += D.tp[i][k]; pred += c; nt += D.nt[i]; withTruth++; }
  }
  $("thrval").textContent = fmtThr(k);
  var el = $("total");
  el.dataset.count = tot;
  el.textContent = fmtInt(tot) + " picks on " + fmtInt(N) + " micrographs ("
    + (tot / N).toFixed(1) + " per micrograph)";
  var tt = $("truthTotal");
  if (D.hasTruth) {
    var p = pred ? tp / pred : 0, r = nt ? tp / nt : 0, f = p + r ? 2 * p * r / (p + r) : 0;
    tt.dataset.tp = tp; tt.dataset.fp = pred - tp; tt.dataset.missed = nt - tp;
    tt.textContent = "vs truth (" + withTruth + " micrographs): precision " + ratio(tp, pred)
      + ", recall " + ratio(tp, nt) + ", F1 " + f.toFixed(3) + " · TP " + fmtInt(tp) + ", FP "
      + fmtInt(pred - tp) + ", missed " + fmtInt(nt - tp);
  }
  var below = D.runThreshold !== null
    && thrValue(k) < D.runThreshold - (D.hi - D.lo) / D.steps - 1e-9;
  $("warn").textContent = below ? "below the pick run's threshold ("
    + D.runThreshold.toFixed(D.decimals) + "): no more picks exist here" : "";
}

// ---- the large view
function load(i) {
  if (i < 0 || i >= N || cache.has(i) || pending.has(i)) return;
  pending.add(i);
  var s = document.createElement("script");
  s.src = "data/" + fid(i) + ".js";
  s.onload = function () { s.remove(); };
  s.onerror = function () {
    pending.delete(i); s.remove();
    if (i === cur) message("cannot load " + s.src + " (was the folder moved in part?)");
  };
  document.head.appendChild(s);
}
window.SP_LOAD = function (i, d) {
  pending.delete(i);
  cache.set(i, d);
  if (cache.size > 64) {  // keep memory flat on long sessions
    for (var key of cache.keys()) { if (Math.abs(key - cur) > 2) { cache.delete(key); break; } }
  }
  if (i === cur) draw();
};
function message(t) { var m = $("msg"); m.textContent = t; m.style.display = t ? "block" : "none"; }

function draw() {
  var d = cache.get(cur);
  if (!d) {
    circles.textContent = ""; truthg.textContent = ""; message("loading picks…");
    return;
  }
  message("");
  var t = k * QSTEP, r = D.diameter / 2, out = [], tout = [];
  var judged = mode === "match" && d.m;
  for (var j = 0; j < d.q.length && d.q[j] >= t; j++) {
    var cls, col;
    if (judged) {
      cls = d.m[j] ? "pick tp" : "pick fp";
      col = d.m[j] ? D.colours.tp : D.colours.fp;
    }
    else { cls = "pick"; col = scoreColour(d.q[j]); }
    out.push('<circle class="' + cls + '" cx="' + d.x[j] + '" cy="' + d.y[j] + '" r="' + r
      + '" stroke="' + col + '"></circle>');
  }
  if (d.tx && mode === "match" && showMissed) {
    for (var u = 0; u < d.tx.length; u++) {
      if (d.tq[u] < t) tout.push('<circle class="missed" cx="' + d.tx[u] + '" cy="' + d.ty[u]
        + '" r="' + r + '" stroke="' + D.colours.missed + '"></circle>');
    }
  }
  circles.innerHTML = out.join("");
  truthg.innerHTML = tout.join("");
  svg.dataset.shown = out.length;
}

function info() {
  var i = cur, c = micCounts(i);
  $("pos").textContent = (i + 1) + " / " + N;
  $("name").textContent = D.names[i];
  $("size").textContent = D.w[i] + " × " + D.h[i] + " px · particle " + D.diameter + " px"
    + (D.hasTruth ? " · match radius " + D.radius + " px" : "");
  var rows = [["picks at " + fmtThr(k), fmtInt(c.n)], ["candidates in the file", fmtInt(c.total)]];
  if (c.tp !== undefined) {
    rows.push(["true positives", fmtInt(c.tp)], ["false positives", fmtInt(c.fp)],
      ["missed particles", fmtInt(c.missed)], ["precision", ratio(c.tp, c.n)],
      ["recall", ratio(c.tp, c.truth)]);
  } else if (D.hasTruth) {
    rows.push(["ground truth", "none for this micrograph"]);
  }
  var tb = $("micinfo");
  tb.textContent = "";
  rows.forEach(function (row) {
    var tr = tb.insertRow();
    tr.insertCell().textContent = row[0];
    tr.insertCell().textContent = row[1];
  });
}

function show(i) {
  if (!(i >= 0 && i < N)) return;
  if (thumbs[cur]) thumbs[cur].classList.remove("sel");
  cur = i;
  thumbs[i].classList.add("sel");
  thumbs[i].scrollIntoView({block: "nearest"});
  svg.setAttribute("viewBox", "-0.5 -0.5 " + D.w[i] + " " + D.h[i]);
  img.setAttribute("width", D.sw[i]);
  img.setAttribute("height", D.sh[i]);
  img.setAttribute("href", "img/" + fid(i) + ".jpg");
  load(i);
  draw();
  info();
  for (var n = 1; n <= 2; n++) {  // the neighbours, ready before they are asked for
    [i + n, i - n].forEach(function (j) {
      if (j >= 0 && j < N) { load(j); if (n === 1) new Image().src = "img/" + fid(j) + ".jpg"; }
    });
  }
  remember();
}

function command() {
  var C = D.command, T = fmtThr(k);
  return "selfpick pick \\\n  --model " + (C.model || "<MODEL.pt>") + " \\\n  --images " + C.images
    + " \\\n  --output " + C.output + "_t" + T + " \\\n  --threshold " + T + C.extra;
}
function fitCommand() {  // once: the command keeps its number of lines
  var box = $("cmd");
  box.style.height = "auto";
  box.style.height = (box.scrollHeight + 4) + "px";
}
function updateCommand() {
  $("cmd").value = command();
  var notes = [];
  if (!D.command.model) notes.push("Replace <MODEL.pt> with the model file that made these picks.");
  if (!D.command.selfpickScores) notes.push("These scores are not selfpick's (0–1).");
  $("cmdnote").textContent = notes.join(" ");
}

function setStep(s) {
  s = Math.max(0, Math.min(D.steps, Math.round(s)));
  if (s !== +thr.value) thr.value = s;
  k = s;
  updateCounts(); draw(); info(); updateCommand(); remember();
}

function remember() {  // in the address, a moment after the last change (browsers limit it)
  clearTimeout(rememberTimer);
  rememberTimer = setTimeout(function () {
    var hash = "#t=" + fmtThr(k) + "&mic=" + encodeURIComponent(D.names[cur]);
    try { history.replaceState(null, "", hash); }
    catch (e) { /* some browsers refuse it on file:// pages */ }
  }, 250);
}
function restore() {
  var h = location.hash.replace(/^#/, ""), out = {};
  h.split("&").forEach(function (kv) {
    var p = kv.split("=");
    if (p.length === 2) out[p[0]] = decodeURIComponent(p[1]);
  });
  if (out.t !== undefined && isFinite(+out.t)) k = Math.max(0, Math.min(D.steps,
    Math.round((+out.t - D.lo) / (D.hi - D.lo) * D.steps)));
  if (out.mic !== undefined) { var i = D.names.indexOf(out.mic); if (i >= 0) cur = i; }
}

function legend() {
  var L = $("legend"), html = [];
  function sw(col, text, dash) {
    return '<div><span class="sw' + (dash ? " dash" : "") + '" style="border-color:' + col
      + '"></span><span>' + text + "</span></div>";
  }
  if (D.hasTruth && mode === "match") {
    html.push(sw(D.colours.tp, "true positive: a pick on a true particle"));
    html.push(sw(D.colours.fp, "false positive: a pick on no true particle"));
    html.push(sw(D.colours.missed, "missed: a true particle without a pick at this threshold",
      true));
    html.push('<div class="small">Matched one-to-one within ' + D.radius + " px, greedy by score, "
      + "as selfpick evaluate matches. Micrographs without ground truth: score colours.</div>");
  }
  if (!D.hasTruth || mode === "score" || D.tp.some(function (x) { return !x; })) {
    html.push('<div class="small">pick score</div><div class="grad"></div>'
      + '<div class="gradlab"><span>'
      + D.lo + "</span><span>" + ((D.lo + D.hi) / 2) + "</span><span>" + D.hi + "</span></div>");
  }
  L.innerHTML = html.join("");
}

function options() {
  var O = $("opts"), parts = [];
  if (D.hasTruth) {
    parts.push('<label><input type="radio" name="mode" value="match"'
      + (mode === "match" ? " checked" : "")
      + "> colour by match to the ground truth</label>");
    parts.push('<label><input type="radio" name="mode" value="score"'
      + (mode === "score" ? " checked" : "")
      + "> colour by score</label>");
    parts.push('<label><input type="checkbox" id="missedbox" checked> show missed particles'
      + "</label>");
  }
  parts.push('<label><input type="checkbox" id="circlebox" checked> show circles (c)</label>');
  O.innerHTML = parts.join("");
  O.addEventListener("change", function (e) {
    if (e.target.name === "mode") { mode = e.target.value; legend(); draw(); }
    else if (e.target.id === "missedbox") { showMissed = e.target.checked; draw(); }
    else if (e.target.id === "circlebox") { svg.classList.toggle("nocircles", !e.target.checked); }
  });
}

function toggleCircles() {
  var box = $("circlebox");
  box.checked = !box.checked;
  svg.classList.toggle("nocircles", !box.checked);
}

function copy() {
  var text = command(), done = function () {
    $("copied").textContent = "copied";
    setTimeout(function () { $("copied").textContent = ""; }, 1500);
  };
  var fallback = function () {
    var ta = $("cmd");
    ta.focus(); ta.select();
    try { document.execCommand("copy"); done(); }
    catch (e) { $("copied").textContent = "select and copy by hand"; }
  };
  if (navigator.clipboard && navigator.clipboard.writeText) {
    navigator.clipboard.writeText(text).then(done, fallback);
  } else fallback();
}

function keys(e) {
  var t = e.target;
  if (e.altKey || e.ctrlKey || e.metaKey) return;
  if (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type !== "range"
      && t.type !== "checkbox" && t.type !== "radio")) return;
  var handled = true;
  switch (e.key) {
    case "ArrowRight": case "n": case "j": show(cur + 1); break;
    case "ArrowLeft": case "p": case "k": show(cur - 1); break;
    case "Home": show(0); break;
    case "End": show(N - 1); break;
    case "ArrowUp": setStep(k + 1); break;
    case "ArrowDown": setStep(k - 1); break;
    case "PageUp": setStep(k + 10); break;
    case "PageDown": setStep(k - 10); break;
    case "c": toggleCircles(); break;
    default: handled = false;
  }
  if (handled) e.preventDefault();
}

function init() {
  thr.max = D.steps;
  restore();
  thr.value = k;
  buildStrip();
  options();
  legend();
  thr.addEventListener("input", function () { setStep(+thr.value); });
  $("prev").addEventListener("click", function () { show(cur - 1); });
  $("next").addEventListener("click", function () { show(cur + 1); });
  $("copy").addEventListener("click", copy);
  document.addEventListener("keydown", keys);
  window.addEventListener("hashchange", function () {  // an address edited by hand
    restore(); thr.value = k; updateCounts(); updateCommand(); show(cur);
  });
  $("notes").textContent = D.notes.join(" ");
  var src = $("source");
  src.textContent = "";
  var sources = [["picks", D.picks], ["micrographs", D.images], ["ground truth", D.truth]];
  sources.forEach(function (row) {
    if (row[1] === null) return;
    var div = document.createElement("div");
    div.textContent = row[0] + ": " + row[1];
    src.appendChild(div);
  });
  updateCounts();
  updateCommand();
  fitCommand();
  show(cur);
  document.body.dataset.ready = "1";
}
init();
})();
"""


__all__ = ["BrowserSummary", "PickRun", "display_images", "quantize", "read_pick_run",
           "render_page", "write_browser"]
