"""Picking: micrographs in, particle coordinates out.

The model file says how to preprocess, the particle size, and the threshold. Micrographs are
read and preprocessed ahead while the network runs (by a background thread, or by DataLoader
worker processes with ``workers > 0``), one or two micrographs at a time, and each
micrograph's picks are written (atomically, also in the background) as soon as they are found
-- so memory stays flat however many micrographs there are, and an interrupted job can
continue with ``skip_existing``. The NumPy/SciPy work around the network (reading, FFT
downsampling, peak finding) releases the GIL for most of its time, so on a 2-core machine it
overlaps with the network instead of adding to it (``bench/NOTES.md``).

On a GPU the downsampling runs there too (``preprocess_on``): the FFT of a 4096^2 micrograph
takes about 0.1 s of a CPU core and under a millisecond of the GPU, so the CPUs only read
files (on threads: reading releases the GIL) and the GPU is not left waiting for them.

Outputs (``fmt``):

- ``star``: RELION 4/5 layout, ``<name>_autopick.star`` per micrograph plus the index
  ``autopick.star``; with ``single_file`` one ``picks.star`` with ``rlnMicrographName``.
- ``box`` / ``cbox`` / ``cryoppp``: one file per micrograph (box = lower-left corner + size).
- ``csv`` / ``topaz`` / ``json``: one file for all micrographs (``picks.csv`` ...), or one per
  micrograph with ``per_micrograph``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from selfpick.config import TTA_CHOICES
from selfpick.errors import InputError, SelfpickError
from selfpick.io import coords as coordio
from selfpick.io.micrographs import list_micrographs, micrograph_name, read_micrograph
from selfpick.model.modelfile import SavedModel, load_model
from selfpick.picking.inference import predict_probabilities, predict_probability
from selfpick.picking.peaks import micrograph_peaks
from selfpick.preprocess import Scale, preprocess, preprocess_tensor, runs_on_tensors
from selfpick.utils.atomic import atomic_write_json, ensure_writable_dir
from selfpick.utils.runtime import resolve_device, tune_allocator

log = logging.getLogger("selfpick")

PER_MICROGRAPH_FORMATS = ("star", "box", "cbox", "cryoppp")
COMBINED_FORMATS = ("csv", "topaz", "json")
# With --threshold 0 every local maximum above this is kept (lower ones are numerical noise).
KEEP_ALL_FLOOR = 1e-3


@dataclass
class PickOptions:
    """How to pick; ``None`` means "as the model file says"."""

    fmt: str = "star"
    threshold: float | None = None
    per_micrograph: bool | None = None  # default: per-micrograph formats yes, combined no
    single_file: bool = False  # star/box... -> one combined file where the format allows
    edge_margin: float | None = None  # original pixels
    min_distance: float | None = None  # fraction of the particle diameter
    flip_y: bool = False
    box_size: float | None = None  # original pixels; default = particle diameter
    device: str = "auto"
    batch_size: int = 1  # micrographs of one size per network pass (GPU throughput)
    workers: int = -1  # -1: automatic
    preprocess_on: str = "auto"  # "cpu", "device" (the picking device) or "auto" (GPU: device)
    tile: int | None = None  # model pixels; None = automatic, 0 = whole micrograph
    tta: int | None = None  # flips/transposes averaged (1, 2, 4, 8); None = the model's
    shard: tuple[int, int] | None = None  # (i, n)
    skip_existing: bool = False
    suffix: str = "_autopick"


@dataclass
class PickSummary:
    n_micrographs: int = 0
    n_picks: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def describe(self) -> str:
        per = self.n_picks / self.n_micrographs if self.n_micrographs else 0.0
        spm = self.seconds / self.n_micrographs if self.n_micrographs else 0.0
        txt = (f"picked {self.n_micrographs} micrograph(s): {self.n_picks} particles "
               f"({per:.1f} per micrograph), {spm:.2f} s per micrograph")
        if self.n_skipped:
            txt += f"; {self.n_skipped} skipped (output already there)"
        if self.n_failed:
            txt += f"; {self.n_failed} could not be read (see failed_micrographs.txt)"
        return txt


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise SelfpickError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def check_threshold(value, flag: str = "--threshold") -> float | None:
    """A score threshold as a float in [0, 1], or None ("the model's own").

    Scores are probabilities: a threshold above 1 would keep nothing and one below 0 the
    same as 0, so both are refused (with NaN) before anything is read or written.
    """
    if value is None:
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise SelfpickError(f"{flag} {value!r}: expected a number from 0 to 1") from None
    if not 0.0 <= t <= 1.0:  # also refuses NaN
        raise SelfpickError(f"{flag} {value}: scores lie between 0 and 1; give a threshold "
                            "from 0 (keep every candidate) to 1")
    return t


def shard_from_environment() -> tuple[int, int] | None:
    """The share of a ``torchrun`` rank, if this process is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return int(os.environ.get("RANK", "0")), world
    return None


def select_shard(paths: list[Path], shard: tuple[int, int] | None) -> list[Path]:
    """Every ``n``-th micrograph starting at ``i`` (of the list sorted by name)."""
    if shard is None:
        return paths
    i, n = shard
    return sorted(paths, key=lambda p: micrograph_name(p))[i::n]


class _MicrographStream(torch.utils.data.Dataset):
    """Reads and preprocesses micrographs (on read-ahead threads or in DataLoader workers);
    an unreadable micrograph gives an item with ``error`` set instead of raising.

    With ``device`` the micrograph is preprocessed there with torch (threads only: a
    DataLoader worker process must not use CUDA), else with NumPy/SciPy on the CPU.
    """

    def __init__(self, paths: list[Path], saved: SavedModel, device: torch.device | None = None):
        self.paths = paths
        self.factor = saved.downsample
        self.pcfg = saved.config.preprocess
        self.pixel_size = saved.config.data.pixel_size
        self.device = device

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            data, _ = read_micrograph(path, self.pixel_size)
            if self.device is None:
                img, scale = preprocess(data, self.factor, self.pcfg)
                img = torch.from_numpy(img)
            else:
                img, scale = preprocess_tensor(torch.from_numpy(data).to(self.device),
                                               self.factor, self.pcfg)
            return {"index": i, "image": img, "scale": (scale.sx, scale.sy, scale.method),
                    "shape": data.shape, "error": None}
        except InputError as exc:
            return {"index": i, "image": None, "scale": None, "shape": None, "error": str(exc)}


def _collate(items):
    return items


def _read_ahead(dataset: _MicrographStream, ahead: int = 1, threads: int = 1):
    """Yield ``dataset[i]`` in order while ``threads`` background threads prepare the next
    ``ahead``."""
    n = len(dataset)
    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="selfpick-read")
    try:
        pending = deque(pool.submit(dataset.__getitem__, i) for i in range(min(n, ahead + 1)))
        nxt = len(pending)
        while pending:
            item = pending.popleft().result()
            if nxt < n:
                pending.append(pool.submit(dataset.__getitem__, nxt))
                nxt += 1
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _batches(items, size: int):
    """Lists of up to ``size`` consecutive readable micrographs of one model-scale size; an
    unreadable micrograph (an item with ``error``) comes alone."""
    batch: list = []
    for item in items:
        if item["error"]:
            yield [item]
            continue
        if batch and batch[0]["image"].shape != item["image"].shape:
            yield batch
            batch = []
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _InOrder:
    """Runs jobs on one background thread, one at a time, results in submission order.

    :meth:`submit` hands back the previous job's result (or raises its error) before the
    next job starts, so at most one job is in flight: it overlaps with the caller's next
    step, and an error (a full disk) stops the run before any later job has run.
    """

    def __init__(self, name: str):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.pending = None

    def submit(self, fn, *args, **kwargs):
        previous = self.result()
        self.pending = self.pool.submit(fn, *args, **kwargs)
        return previous

    def result(self):
        """The in-flight job's result (waiting for it), or None when there is none."""
        future, self.pending = self.pending, None
        return None if future is None else future.result()

    def close(self, quiet: bool = False) -> None:
        try:
            if self.pending is not None:
                if quiet:
                    self.pending.exception()  # waits; the error is dropped
                else:
                    self.result()
        finally:
            self.pending = None
            self.pool.shutdown(wait=True)


@contextlib.contextmanager
def _network_threads(device: torch.device, pipelined: bool):
    """On the CPU, leave one core to the reading / peak-finding threads while the network runs.

    The stages around the network (reading, FFT downsampling, peaks, writing) take about as
    long as the network itself on a 4096^2 micrograph; run beside it on their own core they
    mostly overlap with it, while a network given every core would keep them waiting
    (``bench/NOTES.md``: 0.12 -> 0.10 s per micrograph on 2 cores).
    """
    before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    if device.type != "cpu" or not pipelined or cores < 2 or before < 2:
        yield
        return
    torch.set_num_threads(max(1, min(before, cores - 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pick_image(saved: SavedModel, image: torch.Tensor | np.ndarray, scale: Scale,
               original_shape: tuple[int, int], device: torch.device, threshold: float,
               edge_margin: float | None = None, min_distance: float | None = None,
               tile: int | None = None, amp: bool = True,
               tta: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Picks of one preprocessed micrograph.

    Returns ``(xy, scores)``: ``(N, 2)`` centres in ORIGINAL pixels and their scores,
    best first, all with score >= ``threshold`` and at least ``edge_margin`` original pixels
    from the edge (``None``: the model's own margin); ``tta`` views averaged (``None``: as
    many as the model was validated with).
    """
    prob = predict_probability(saved.model, image, device, tile=tile, amp=amp,
                               tta=saved.tta if tta is None else tta)
    return picks_from_probability(saved, prob, scale, original_shape, threshold, edge_margin,
                                  min_distance)


def picks_from_probability(saved: SavedModel, prob: torch.Tensor, scale: Scale,
                           original_shape: tuple[int, int], threshold: float,
                           edge_margin: float | None = None, min_distance: float | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of a model-scale probability map ``(H, W)`` as picks in ORIGINAL pixels
    (see :func:`pick_image`)."""
    dist_frac = saved.min_distance if min_distance is None else min_distance
    floor = threshold if threshold > 0 else KEEP_ALL_FLOOR
    margin = saved.edge_margin if edge_margin is None else edge_margin
    return micrograph_peaks(prob, scale, original_shape, saved.radius_model_px, dist_frac,
                            threshold=floor, edge_margin=margin)


def pick_micrograph(saved: SavedModel, path: str | os.PathLike, device="cpu",
                    threshold: float | None = None, **kwargs) -> pd.DataFrame:
    """Pick one micrograph file; returns a pick table (see :mod:`selfpick.io.coords`)."""
    data, _ = read_micrograph(path, saved.config.data.pixel_size)
    img, scale = preprocess(data, saved.downsample, saved.config.preprocess)
    thr = saved.threshold if threshold is None else threshold
    xy, scores = pick_image(saved, img, scale, data.shape, torch.device(device), thr, **kwargs)
    return coordio.make_picks(micrograph_name(path), xy, scores, saved.particle_diameter)


def _output_plan(opts: PickOptions) -> tuple[bool, str]:
    fmt = opts.fmt
    if fmt not in coordio.FORMATS:
        raise SelfpickError(f"--format {fmt!r}: choose one of {', '.join(coordio.FORMATS)}")
    per = opts.per_micrograph
    if opts.single_file:
        if fmt in ("box", "cbox", "cryoppp"):
            raise SelfpickError(f"--format {fmt} holds one micrograph per file; "
                                "--single-file needs star, csv, topaz or json")
        per = False
    if per is None:
        per = fmt in PER_MICROGRAPH_FORMATS
    if fmt in ("box", "cbox", "cryoppp"):
        per = True
    return per, fmt


def _preprocess_on_device(choice: str, device: torch.device, saved: SavedModel) -> bool:
    """Whether micrographs are downsampled on the picking device (torch) rather than on the
    CPU (NumPy/SciPy), for ``--preprocess-on`` ``choice``."""
    choice = (choice or "auto").lower()
    if choice not in ("auto", "cpu", "device"):
        raise SelfpickError(f"--preprocess-on {choice!r}: choose auto, cpu or device")
    supported = runs_on_tensors(saved.config.preprocess)
    if choice == "device" and not supported:
        pcfg = saved.config.preprocess
        raise SelfpickError(
            "--preprocess-on device: this model preprocesses with "
            f"{pcfg.downsample_method} downsampling"
            + (f" and a low-pass (sigma {pcfg.lowpass_sigma:g})" if pcfg.lowpass_sigma else "")
            + ", which runs on the CPU only; use --preprocess-on cpu")
    if choice == "auto":
        return supported and device.type == "cuda"
    return choice == "device"


def _per_micrograph_target(out: Path, name: str, fmt: str, suffix: str) -> Path:
    ext = coordio.FORMAT_EXTENSIONS[fmt]
    sfx = suffix if fmt == "star" else ""
    return out / f"{coordio.coordinate_name(name)}{sfx}{ext}"


def pick(model_path: str | os.PathLike, images, output: str | os.PathLike,
         opts: PickOptions | None = None, progress: bool = True) -> PickSummary:
    """Pick every micrograph of ``images`` (folder, glob, list file or list) into ``output``.

    Raises :class:`SelfpickError` for unusable input (no micrographs, not a model file, an
    output folder that cannot be written). A micrograph that cannot be read is logged and
    listed in ``failed_micrographs.txt``; the others are still picked.
    """
    opts = opts or PickOptions()
    tune_allocator()
    if opts.batch_size < 1:
        raise SelfpickError(f"--batch-size {opts.batch_size}: give 1 or more micrographs")
    check_threshold(opts.threshold)
    if opts.tta is not None and opts.tta not in TTA_CHOICES:
        raise SelfpickError(f"--tta {opts.tta}: give one of {', '.join(map(str, TTA_CHOICES))}")
    for flag, value in (("--edge-margin", opts.edge_margin), ("--min-distance", opts.min_distance)):
        if value is not None and not (value >= 0 and np.isfinite(value)):
            raise SelfpickError(f"{flag} {value}: give 0 or a positive number")
    per_mic, fmt = _output_plan(opts)
    shard = opts.shard or shard_from_environment()
    paths = list_micrographs(images)
    paths = select_shard(paths, shard)
    device = resolve_device(opts.device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        # One process per GPU under torchrun: each rank takes its own GPU.
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    saved = load_model(model_path, device)
    on_device = _preprocess_on_device(opts.preprocess_on, device, saved)
    out = Path(output)
    out_existed = out.exists()
    ensure_writable_dir(out)
    threshold = saved.threshold if opts.threshold is None else float(opts.threshold)
    edge = saved.edge_margin if opts.edge_margin is None else opts.edge_margin
    tta = saved.tta if opts.tta is None else opts.tta
    box = opts.box_size or saved.particle_diameter
    summary = PickSummary()
    todo = paths
    if opts.skip_existing and per_mic:
        todo = [p for p in paths
                if not _per_micrograph_target(out, micrograph_name(p), fmt, opts.suffix).is_file()]
        summary.n_skipped = len(paths) - len(todo)
    workers = opts.workers
    if workers < 0:
        workers = 0 if device.type == "cpu" and (os.cpu_count() or 1) <= 2 else min(
            4, max(1, (os.cpu_count() or 2) - 1))
    stream = _MicrographStream(todo, saved, device if on_device else None)
    if on_device:
        # Only reading is left to the CPUs: threads suffice (file reads and the checks of the
        # pixels release the GIL), and two micrographs ahead per thread keep the GPU fed.
        threads = max(1, workers)
        items = _read_ahead(stream, ahead=2 * threads, threads=threads)
    elif workers > 0:
        loader = torch.utils.data.DataLoader(
            stream, batch_size=1, shuffle=False, num_workers=workers, collate_fn=_collate,
            prefetch_factor=2, pin_memory=False, persistent_workers=False)
        items = (item for batch in loader for item in batch)
    else:
        items = _read_ahead(stream)
    log.info("picking %d micrograph(s) with %s (threshold %.3f%s, particle %.0f px, "
             "x%.2f downsampling%s, %d view(s) averaged) on %s", len(todo), model_path,
             threshold, "" if opts.threshold is None else " from --threshold",
             saved.particle_diameter, saved.downsample, " on the device" if on_device else "",
             tta, device)
    combined: list[pd.DataFrame] = []
    index_rows: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc="Picking", unit="mic", disable=not progress or None)

    def finish(jobs: list) -> list[tuple]:
        # Runs on the background thread while the network does the next micrograph(s).
        done = []
        for path, prob, scale, shape in jobs:
            name = micrograph_name(path)
            xy, scores = picks_from_probability(saved, prob, scale, shape, threshold, edge,
                                                opts.min_distance)
            table = coordio.make_picks(name, xy, scores, saved.particle_diameter)
            if opts.flip_y:
                table = coordio.flip_y(table, {name: shape[0]})
            if per_mic:
                coordio.write_per_micrograph(table, out, fmt, box_size=box,
                                             suffix=opts.suffix if fmt == "star" else "",
                                             micrograph_paths={name: path})
            done.append((path, name, table))
        return done

    def record(done: list | None) -> None:
        for path, name, table in done or ():
            summary.n_picks += len(table)
            summary.n_micrographs += 1
            if per_mic:
                index_rows.append((str(path), str(_per_micrograph_target(out, name, fmt,
                                                                         opts.suffix))))
            else:
                combined.append(table)
            bar.update(1)
            bar.set_postfix(picks=len(table))

    post = _InOrder("selfpick-peaks")
    try:
        with _network_threads(device, pipelined=workers == 0 or on_device):
            for group in _batches(items, opts.batch_size):
                if group[0]["error"]:
                    path = todo[group[0]["index"]]
                    log.warning("skipping %s", group[0]["error"])
                    summary.failed.append(f"{path}\t{group[0]['error']}")
                    summary.n_failed += 1
                    bar.update(1)
                    continue
                probs = predict_probabilities(saved.model, [it["image"] for it in group],
                                              device, tile=opts.tile, amp=True, tta=tta)
                record(post.submit(finish, [(todo[it["index"]], prob, Scale(*it["scale"]),
                                             it["shape"]) for it, prob in zip(group, probs)]))
            record(post.result())
    except BaseException:
        # Let the job in flight finish (its file is complete), but report the error that
        # stopped the loop, not a later one.
        post.close(quiet=True)
        raise
    else:
        post.close()
    finally:
        items.close()
    bar.close()
    summary.seconds = time.perf_counter() - t0
    shard_tag = f"_shard{shard[0]}of{shard[1]}" if shard else ""
    if summary.n_micrographs == 0 and summary.n_failed and not summary.n_skipped:
        # Nothing was picked: write no index, summary or failure list (a later run or a
        # RELION import must not take them for results), and remove the folder if we made it.
        if not out_existed:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise InputError(f"none of the {summary.n_failed} micrograph(s) could be read; first "
                         f"problem: {summary.failed[0].split(chr(9))[1]}")
    if per_mic and fmt == "star":
        from selfpick.io.formats import relion_star

        if opts.skip_existing:  # the index must also list what an earlier run picked
            index_rows = [(str(p), str(_per_micrograph_target(out, micrograph_name(p), fmt,
                                                              opts.suffix))) for p in paths]
        index = out / f"{opts.suffix.lstrip('_') or 'autopick'}{shard_tag}.star"
        relion_star.write_index(index_rows, index)
        summary.outputs.append(str(index))
    elif not per_mic:
        table = pd.concat(combined, ignore_index=True) if combined else coordio.empty_picks()
        target = out / f"picks{shard_tag}{coordio.FORMAT_EXTENSIONS[fmt]}"
        coordio.write_coordinates(table, target, fmt, box_size=box)
        summary.outputs.append(str(target))
    if summary.failed:
        from selfpick.utils.atomic import atomic_write_text

        atomic_write_text(out / f"failed_micrographs{shard_tag}.txt",
                          "\n".join(summary.failed) + "\n")
    atomic_write_json(out / f"pick_summary{shard_tag}.json", {
        "model": str(model_path), "threshold": threshold, "views_averaged": tta, "format": fmt,
        "per_micrograph": per_mic, "flip_y": opts.flip_y, "shard": list(shard) if shard else None,
        "n_micrographs": summary.n_micrographs, "n_picks": summary.n_picks,
        "n_failed": summary.n_failed, "n_skipped": summary.n_skipped,
        "seconds": round(summary.seconds, 3),
        "seconds_per_micrograph": round(summary.seconds / max(1, summary.n_micrographs), 4),
    })
    if summary.n_micrographs == 0 and summary.n_failed:
        raise InputError(f"none of the {summary.n_failed} micrograph(s) could be read; first "
                         f"problem: {summary.failed[0].split(chr(9))[1]}")
    return summary


__all__ = ["PickOptions", "PickSummary", "check_threshold", "pick", "pick_image",
           "pick_micrograph", "parse_shard", "picks_from_probability", "select_shard"]
