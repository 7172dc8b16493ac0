"""Training data: micrographs read and preprocessed once, then random augmented crops.

Preprocessed micrographs are cached as float32 ``.npy`` files (memory-mapped when read), keyed by
the source file and the preprocessing settings, so self-training iterations, ``--resume`` and
DDP ranks never re-read or re-preprocess the originals, and thousands of micrographs do not
have to fit in RAM.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from selfpick.config import Config, PreprocessConfig
from selfpick.errors import InputError
from selfpick.io import coords as coordio
from selfpick.io.micrographs import list_micrographs, micrograph_name, read_micrograph
from selfpick.preprocess import Scale, choose_downsample, choose_input_stride, preprocess
from selfpick.targets import IGNORE, ignore_rows, make_target

log = logging.getLogger(__name__)

# The original script's default --particle-radius.
LEGACY_RADIUS = 10.0
# Training crop side in pixels of the network's grid: about ten particle diameters at the
# default 20 px per particle, context enough for the U-Net's receptive field.
DEFAULT_CROP = 192


@dataclass
class TrainingMicrograph:
    """One micrograph of the training set, at model scale."""

    name: str
    path: Path
    image: np.ndarray  # (h, w) model-scale, normalised; float32 (memory-mapped from the cache)
    scale: Scale  # original <-> model pixels
    original_shape: tuple[int, int]  # (ny, nx) original pixels
    truth: np.ndarray | None  # (N, 2) labelled centres in ORIGINAL pixels; None = unlabelled
    split: str  # "train", "val" or "unlabeled"
    gt_target: np.ndarray = field(repr=False, default=None)  # (h, w) int8
    # Validation on part of a micrograph (few labelled micrographs): the rows
    # [y0, y1) in ORIGINAL pixels whose labels and picks count; None = the whole micrograph.
    region: tuple[float, float] | None = None

    @property
    def labelled(self) -> bool:
        return self.truth is not None

    def in_region(self, xy: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: which ``(N, 2)`` original-pixel centres lie in :attr:`region`."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if self.region is None:
            return np.ones(len(xy), dtype=bool)
        return (xy[:, 1] >= self.region[0]) & (xy[:, 1] < self.region[1])

    def truth_model(self) -> np.ndarray:
        """Labelled centres in model pixels, ``(N, 2)``."""
        if self.truth is None:
            return np.zeros((0, 2))
        return self.scale.to_model(self.truth)


@dataclass
class TrainingSet:
    micrographs: list[TrainingMicrograph]
    particle_diameter: float  # original pixels
    downsample: float  # original px per model px
    match_report: coordio.MatchReport | None = None

    @property
    def radius_model(self) -> float:
        return self.particle_diameter / 2 / self.downsample

    def subset(self, split: str) -> list[TrainingMicrograph]:
        return [m for m in self.micrographs if m.split == split]

    @property
    def validates_on_strips(self) -> bool:
        """Whether validation is on held-out strips of the labelled micrographs
        (:func:`validate_on_strips`) rather than on whole micrographs."""
        return any(m.region is not None for m in self.subset("val"))

    def split_names(self) -> dict:
        out: dict = {s: [m.name for m in self.subset(s)] for s in ("train", "val", "unlabeled")}
        regions = {m.name: [float(m.region[0]), float(m.region[1])] for m in self.subset("val")
                   if m.region is not None}
        if regions:
            out["val_regions"] = regions
        return out


def resolve_diameter(cfg: Config, picks) -> float:
    """Particle diameter in original pixels: the flag, else the file's, else the legacy default."""
    d = cfg.data
    if d.particle_diameter:
        return float(d.particle_diameter)
    if d.particle_radius:
        return 2.0 * float(d.particle_radius)
    diam = picks["diameter"].dropna() if picks is not None and len(picks) else []
    if len(diam):
        return float(np.median(diam))
    log.warning("no --particle-diameter given and the coordinate file has no diameters: using "
                "the original script's default --particle-radius %.0f (diameter %.0f px)",
                LEGACY_RADIUS, 2 * LEGACY_RADIUS)
    return 2 * LEGACY_RADIUS


# An empty border is taken as the hand-picker's choice only when this many labels would be
# expected in it were the labels spread evenly (an empty band then happens by chance with
# probability exp(-3), 5 %).
EDGE_EVIDENCE = 3.0


def label_edge_margin(micrographs: list[TrainingMicrograph], diameter: float) -> float:
    """How close to a micrograph edge the hand-picker picked: the smallest distance from any
    labelled centre to the nearest edge, at most one particle ``diameter`` (original pixels).

    Hand-pickers leave out particles cut by the edge (their boxes could not be extracted
    whole), and motion correction and filtering leave artefacts there that look like
    particles to a network; picking where the labels never go only adds false picks. The cap
    keeps a few labels that happen to lie far from the edges from hiding a wide border.

    A handful of picks leaves a wide border empty by chance: the border is learned only when
    evenly spread labels would have put at least :data:`EDGE_EVIDENCE` of them there; with
    fewer, the margin is at most a particle radius (a particle centred closer than that is
    cut by the edge, and nobody picks it). No labels: 0.
    """
    nearest, counts, areas = [], [], []
    for m in micrographs:
        if m.truth is None or not len(m.truth):
            continue
        ny, nx = m.original_shape
        x, y = m.truth[:, 0], m.truth[:, 1]
        d = np.minimum(np.minimum(x, nx - 1 - x), np.minimum(y, ny - 1 - y))
        nearest.append(float(d.min()))
        counts.append(len(m.truth))
        areas.append((nx, ny))
    if not nearest:
        return 0.0
    margin = float(np.floor(np.clip(min(nearest), 0.0, diameter)))
    expected = sum(n * (1.0 - max(0.0, nx - 2 * margin) * max(0.0, ny - 2 * margin) / (nx * ny))
                   for n, (nx, ny) in zip(counts, areas))
    if expected < EDGE_EVIDENCE:
        margin = min(margin, float(np.floor(diameter / 2)))
    return margin


# With fewer labelled micrographs than this, no whole micrograph can be spared for
# validation: a strip of each is held out instead (see hold_out_strip).
REGION_VALIDATION_BELOW = 3
# Share of each micrograph's rows held out when validating on strips.
STRIP_FRACTION = 0.25
# With exactly REGION_VALIDATION_BELOW labelled micrographs, strips are held out when they
# would still hold this many picks (validate.FEW_VALIDATION_PARTICLES: enough to choose a
# threshold on). EMPIAR-10017, 3 x 65 picks: one whole micrograph held out left two to train
# on and set the threshold on one (easy) micrograph; strips of all three (45-49 picks) ranked
# and picked better. EMPIAR-10028, 3 x 25 picks: strips would hold ~19 and picked no better
# (bench/NOTES.md, "Strips on three labelled micrographs").
STRIP_VALIDATION_PARTICLES = 30


def validate_on_strips(picks_per_micrograph: list[int], val_fraction: float) -> bool:
    """Whether validation holds out a strip of every labelled micrograph rather than whole
    micrographs: always with one or two labelled micrographs, with three when a
    :data:`STRIP_FRACTION` of their picks reaches :data:`STRIP_VALIDATION_PARTICLES`, and
    with more when the whole micrographs held out would carry fewer than
    :data:`STRIP_VALIDATION_PARTICLES` picks and the strips more (sparse picks on every
    micrograph: EMPIAR-10028 with 10 % picked, 8-9 on the one validation micrograph, 13 in
    strips). ``picks_per_micrograph``: the number of picks on each labelled micrograph."""
    n = len(picks_per_micrograph)
    if val_fraction <= 0 or n == 0:
        return False
    if n < REGION_VALIDATION_BELOW:
        return True
    in_strips = STRIP_FRACTION * sum(picks_per_micrograph)
    if n == REGION_VALIDATION_BELOW:
        return in_strips >= STRIP_VALIDATION_PARTICLES
    # The micrographs split_micrographs holds out, at the mean number of picks.
    whole = n_validation_micrographs(n, val_fraction) * sum(picks_per_micrograph) / n
    return whole < STRIP_VALIDATION_PARTICLES and in_strips > whole


def hold_out_strip(index: int, shape: tuple[int, int], diameter: float, seed: int,
                   fraction: float = STRIP_FRACTION) -> tuple[float, float]:
    """A seeded horizontal strip ``(y0, y1)`` (original pixels) of labelled micrograph number
    ``index`` (in name order) to validate on: ``fraction`` of its height ``shape[0]``, at
    least two particle diameters high.

    Used when only one to three micrographs carry labels, or picks are too sparse on more
    to spare a whole one (:func:`validate_on_strips`): holding
    out a whole one would leave nothing (or one or two) to train on and set the threshold on
    one micrograph's particles, and validating on training labels is optimistic, and worse
    for partial picks (the unpicked particles the model learned to call background then
    decide the threshold). The strip's labels are never trained on and nothing in it becomes
    a pseudo-label; the rest of the micrograph trains as usual.
    """
    ny = shape[0]
    h = min(float(ny), max(fraction * ny, 2.0 * diameter))
    rng = np.random.default_rng([seed, index])
    y0 = float(np.floor(rng.uniform(0.0, ny - h)))
    return y0, y0 + h


def n_validation_micrographs(n: int, val_fraction: float) -> int:
    """How many of ``n`` labelled micrographs :func:`split_micrographs` holds out: a
    ``val_fraction`` of them, at least one and never all; none with fewer than two."""
    if n < 2 or val_fraction <= 0:
        return 0
    return min(n - 1, max(1, int(round(val_fraction * n))))


def split_micrographs(names: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split by micrograph. Returns ``(train, val)`` name lists, each sorted.

    At least one validation micrograph when there are two or more labelled ones; none when
    there is only one (the caller then validates on training data and says so).
    """
    names = sorted(names)
    n = len(names)
    n_val = n_validation_micrographs(n, val_fraction)
    if n_val == 0:
        return names, []
    rng = np.random.default_rng(seed)
    val = set(rng.choice(n, size=n_val, replace=False).tolist())
    return ([x for i, x in enumerate(names) if i not in val],
            [x for i, x in enumerate(names) if i in val])


def _cache_key(path: Path, factor: float, pcfg: PreprocessConfig) -> str:
    st = path.stat()
    blob = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, round(factor, 6),
                       asdict(pcfg)], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def load_preprocessed(path: Path, factor: float, pcfg: PreprocessConfig,
                      cache_dir: Path | None, pixel_size: float | None = None
                      ) -> tuple[np.ndarray, Scale, tuple[int, int]]:
    """Model-scale image, its :class:`Scale` and the original shape, from cache when possible."""
    if cache_dir is not None:
        key = _cache_key(path, factor, pcfg)
        npy = cache_dir / f"{micrograph_name(path)}-{key}.npy"
        meta = npy.with_suffix(".json")
        if npy.is_file() and meta.is_file():
            try:
                m = json.loads(meta.read_text())
                img = np.load(npy, mmap_mode="r")
                return img, Scale(m["sx"], m["sy"], m["method"]), tuple(m["original_shape"])
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache entry is rebuilt below
    data, _ = read_micrograph(path, pixel_size)
    img, scale = preprocess(data, factor, pcfg)
    shape = data.shape
    if cache_dir is not None:
        from selfpick.utils.atomic import atomic_path, atomic_write_json

        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(npy) as tmp:
            with open(tmp, "wb") as fh:
                # float32, exactly what picking computes: a threshold chosen on validation
                # must apply unchanged to the pick-time images.
                np.save(fh, img.astype(np.float32))
        atomic_write_json(meta, {"sx": scale.sx, "sy": scale.sy, "method": scale.method,
                                 "original_shape": list(shape)})
        img = np.load(npy, mmap_mode="r")
    return img, scale, shape


def load_training_set(cfg: Config, cache_dir: Path | None = None,
                      progress: bool = True, strips: bool | None = None) -> TrainingSet:
    """Read, match, check, split and preprocess the labelled (and unlabelled) micrographs.

    ``strips``: validate on strips (True) or whole micrographs (False) whatever
    :func:`validate_on_strips` says; a resumed experiment passes what it was started with.
    """
    d = cfg.data
    if not d.image_dir:
        raise InputError("no micrographs given: use --image-dir")
    if not d.coords_file:
        raise InputError("no coordinates given: use --coords-file")
    paths = list_micrographs(d.image_dir)
    picks = coordio.read_coordinates(d.coords_file, d.coords_format)
    names = [micrograph_name(p) for p in paths]
    by_name, report = coordio.match_coordinates(picks, names)
    log.info("%s", report.summary())
    labelled = [n for n in names if n in by_name and len(by_name[n])]
    if not labelled:
        raise InputError(
            "no coordinates match any micrograph by name: " + report.summary(), d.coords_file
        )
    diameter = resolve_diameter(cfg, picks)
    # Resolved here, from the data, and saved with the configuration: a model file always
    # says which stride its network has.
    cfg.model.input_stride = choose_input_stride(diameter, cfg.preprocess,
                                                 cfg.model.input_stride)
    factor = choose_downsample(diameter, cfg.preprocess, cfg.model.input_stride)
    if strips is None:
        strips = validate_on_strips([len(by_name[n]) for n in labelled], cfg.train.val_fraction)
    strips = bool(strips) and cfg.train.val_fraction > 0
    if strips:
        train_names, val_names = sorted(labelled), []
    else:
        train_names, val_names = split_micrographs(labelled, cfg.train.val_fraction,
                                                   cfg.train.seed)
    split = {n: "train" for n in train_names} | {n: "val" for n in val_names}

    unlabeled_paths: list[Path] = []
    if d.unlabeled_dir:
        unlabeled_paths = list_micrographs(d.unlabeled_dir)
    # Micrographs of --image-dir without coordinates are not negatives (nobody said they are
    # empty); they join the unlabelled pool used only through pseudo-labels.
    items = [(p, n) for p, n in zip(paths, names)]
    items += [(p, micrograph_name(p)) for p in unlabeled_paths]
    seen = set()
    micrographs: list[TrainingMicrograph] = []
    iterator = tqdm(items, desc="Preprocessing micrographs", unit="mic",
                    disable=not progress or None)
    r_model = diameter / 2 / factor
    for path, name in iterator:
        if name in seen:
            raise InputError(f"micrograph name {name!r} appears in both --image-dir and "
                             "--unlabeled-dir", path)
        seen.add(name)
        img, scale, shape = load_preprocessed(path, factor, cfg.preprocess, cache_dir,
                                              d.pixel_size)
        if min(shape) <= diameter:
            raise InputError(f"the particle diameter ({diameter:g} px) is not smaller than the "
                             f"micrograph ({shape[1]}x{shape[0]} px); check --particle-diameter",
                             path)
        truth = None
        if name in split:
            table = by_name[name]
            coordio.check_in_bounds(table, shape, d.coords_file)
            truth = table[["x", "y"]].to_numpy(dtype=np.float64)
        m = TrainingMicrograph(name, path, img, scale, shape, truth, split.get(name, "unlabeled"))
        if strips and truth is not None:
            region = hold_out_strip(train_names.index(name), shape, diameter, cfg.train.seed)
            micrographs.extend(_strip_views(m, region, diameter, r_model, cfg))
            continue
        m.gt_target = make_target(img.shape, m.truth_model(), r_model,
                                  cfg.targets.positive_radius, cfg.targets.ignore_radius,
                                  labelled=m.labelled)
        micrographs.append(m)
    ts = TrainingSet(micrographs, diameter, factor, report)
    n_unl = len(ts.subset("unlabeled"))
    log.info("particle diameter %.1f px; downsampling x%.2f (particle = %.1f model px, "
             "network input stride %d); %d training, %d validation, %d unlabelled micrographs",
             diameter, factor, diameter / factor, cfg.model.input_stride, len(train_names),
             len(val_names), n_unl)
    if strips:
        val = ts.subset("val")
        if len(val) <= REGION_VALIDATION_BELOW:
            why = f"only {len(val)} labelled micrograph(s)"
            instead = f"label {REGION_VALIDATION_BELOW + 1} or more micrographs"
        else:
            why = (f"{len(val)} labelled micrographs, so sparsely picked that the whole ones "
                   f"held out would carry fewer than {STRIP_VALIDATION_PARTICLES} picks")
            instead = "pick more particles per micrograph"
        log.info("%s: validating on a held-out strip of each (%s; %d labelled particles), "
                 "never trained on or pseudo-labelled; %s to validate on whole ones", why,
                 ", ".join(f"{m.name} rows {m.region[0]:.0f}-{m.region[1]:.0f}" for m in val),
                 sum(len(m.truth) for m in val), instead)
    return ts


def _strip_views(m: TrainingMicrograph, region: tuple[float, float], diameter: float,
                 r_model: float, cfg: Config) -> list[TrainingMicrograph]:
    """The training and validation views of a micrograph validated on the strip ``region``.

    Validation view: the labels inside the strip; its target ignores every pixel outside.
    Training view: the labels farther than a particle radius from the strip; its target
    ignores the strip widened by that radius (a particle there is half in the strip), so
    neither labels nor pseudo-labels ever come from it. Both views share the image.
    """
    y0, y1 = region
    y = m.truth[:, 1]
    guard = diameter / 2
    inside = (y >= y0) & (y < y1)
    away = (y < y0 - guard) | (y >= y1 + guard)
    tcfg = cfg.targets
    train = dataclasses.replace(m, truth=m.truth[away], split="train")
    train.gt_target = make_target(m.image.shape, train.truth_model(), r_model,
                                  tcfg.positive_radius, tcfg.ignore_radius)
    val = dataclasses.replace(m, truth=m.truth[inside], split="val", region=region)
    val.gt_target = make_target(m.image.shape, val.truth_model(), r_model,
                                tcfg.positive_radius, tcfg.ignore_radius)
    rows = m.scale.to_model(np.array([[0.0, y0 - guard], [0.0, y1 + guard]]))[:, 1]
    ignore_rows(train.gt_target, rows[0] - 1, rows[1], inside=True)
    rows = m.scale.to_model(np.array([[0.0, y0], [0.0, y1]]))[:, 1]
    ignore_rows(val.gt_target, rows[0], rows[1], inside=False)
    return [train, val]


class CropDataset(torch.utils.data.Dataset):
    """Random crops with flips, 90° rotations and intensity/noise jitter.

    Item ``i`` of epoch ``e`` is drawn from ``numpy.random.default_rng([seed, e, i])``, so the
    data do not depend on the number of workers and a resumed run sees the same crops.
    Image ``k`` is chosen with probability ``weights[k] / sum(weights)`` (default: its area).

    Returns ``(image, target)`` tensors of shape ``(1, crop, crop)``: ``float32`` image and
    ``float32`` target holding 1, 0 or -1 (ignore).
    """

    def __init__(self, images: list[np.ndarray], targets: list[np.ndarray], crop: int,
                 length: int, seed: int, augment: bool = True,
                 weights: np.ndarray | None = None):
        if not images:
            raise ValueError("CropDataset needs at least one image")
        self.images = images
        self.targets = targets
        self.crop = int(crop)
        self.length = int(length)
        self.seed = int(seed)
        self.augment = augment
        self.epoch = 0
        if weights is None:  # every pixel equally likely to be seen
            weights = np.array([float(im.shape[0] * im.shape[1]) for im in images])
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(images),) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError("CropDataset weights must be one non-negative number per image")
        self.weights = weights / weights.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        k = int(rng.choice(len(self.images), p=self.weights))
        img, tgt = self.images[k], self.targets[k]
        c = self.crop
        h, w = img.shape
        y0 = int(rng.integers(0, max(1, h - c + 1)))
        x0 = int(rng.integers(0, max(1, w - c + 1)))
        x = np.zeros((c, c), dtype=np.float32)
        t = np.full((c, c), IGNORE, dtype=np.float32)
        ch, cw = min(c, h), min(c, w)
        x[:ch, :cw] = img[y0 : y0 + ch, x0 : x0 + cw]
        t[:ch, :cw] = tgt[y0 : y0 + ch, x0 : x0 + cw]
        if self.augment:
            rot = int(rng.integers(4))
            x, t = np.rot90(x, rot), np.rot90(t, rot)
            if rng.random() < 0.5:
                x, t = x[:, ::-1], t[:, ::-1]
            # Contrast and offset vary between micrographs even after normalisation (ice
            # thickness, dose); extra noise mimics thicker ice.
            x = x * rng.uniform(0.8, 1.25) + rng.normal(0.0, 0.1)
            if rng.random() < 0.5:
                x = x + rng.normal(0.0, rng.uniform(0.0, 0.3), size=x.shape).astype(np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        t = np.ascontiguousarray(t, dtype=np.float32)
        return torch.from_numpy(x)[None], torch.from_numpy(t)[None]


def crop_side(cfg: Config, multiple: int) -> int:
    """Training crop side in model pixels: ``cfg.train.crop_size``, or 192 pixels of the
    network's grid when it is 0; rounded down to a multiple of the network's ``multiple``."""
    crop = cfg.train.crop_size or DEFAULT_CROP * max(1, cfg.model.input_stride)
    return max(multiple, crop - crop % multiple)


# Crops per epoch when --crops-per-epoch is 0: enough to cover the micrographs once, within
# these bounds. The floor keeps a few small micrographs (EMPIAR-10028: 5 of 1024^2) trained
# long enough; the ceiling keeps the epoch of many large ones (or of a self-training pool
# of thousands of unlabelled micrographs) at a bounded cost. 160 is just above every real
# training set measured (EMPIAR-10017, 10 micrographs of 4096^2 at 108 px: 141-157), so it
# changes none of them; 8 simulated micrographs of 2048^2 with 28 px particles (407 crops)
# trained in 526 s instead of 1,130 s on 2 cores for F1 0.887 instead of 0.898, AP 0.961
# instead of 0.963 (bench/NOTES.md).
MIN_CROPS_PER_EPOCH = 64
MAX_CROPS_PER_EPOCH = 160


def crops_to_cover(images: list[np.ndarray], crop: int) -> int:
    """Crops of side ``crop`` (model pixels) that add up to the micrographs' total area."""
    area = sum(im.shape[0] * im.shape[1] for im in images)
    return int(np.ceil(area / (crop * crop)))


def default_crops_per_epoch(images: list[np.ndarray], crop: int,
                            minimum: int = MIN_CROPS_PER_EPOCH,
                            maximum: int = MAX_CROPS_PER_EPOCH) -> int:
    """Enough crops to cover the micrographs' total area once, at least ``minimum`` and at
    most ``maximum``."""
    return int(min(maximum, max(minimum, crops_to_cover(images, crop))))
