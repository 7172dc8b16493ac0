"""The one typed configuration of a selfpick experiment.

Every setting lives in a dataclass field with its help text, so the same definition drives:
``selfpick train`` flags (``--initial-epochs``), config files (JSON/YAML, flat keys such as
``initial_epochs`` or nested ``{"train": {"initial_epochs": 5}}``), ``config.json`` in the
experiment folder, and the copy stored inside every model file.

Units: ``particle_diameter`` is in pixels of the *original* micrographs; ``crop_size`` and
anything called "model px" is in pixels after downsampling.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfpick.errors import InputError


def opt(default: Any, help: str, *, flag: str | None = None, choices: tuple | None = None,
        aliases: tuple[str, ...] = (), cli: bool = True, factory: Any = None,
        bounds: tuple[float | None, float | None] | None = None, above: bool = False) -> Any:
    """A dataclass field carrying its command-line help.

    ``bounds`` = (lowest, highest) allowed value (None = unbounded); ``above`` excludes the
    lowest value itself (a diameter must be > 0).
    """
    meta = {"help": help, "flag": flag, "choices": choices, "aliases": aliases, "cli": cli,
            "above": above}
    if bounds is not None:
        meta["bounds"] = bounds
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    image_dir: str | None = opt(None, "folder, glob or list file of labelled micrographs "
                                "(MRC, TIFF, PNG/JPG, .npy)", aliases=("--images",))
    coords_file: str | None = opt(None, "particle coordinates: a file (JSON, STAR, CSV, .box, "
                                  ".cbox, Topaz text) or a folder of per-micrograph files",
                                  aliases=("--coords",))
    coords_format: str | None = opt(None, "coordinate format when detection is not wanted",
                                    choices=("json", "star", "cryoppp", "box", "cbox", "topaz",
                                             "csv"))
    unlabeled_dir: str | None = opt(None, "micrographs without coordinates, used only through "
                                    "pseudo-labels during self-training")
    particle_diameter: float | None = opt(None, "particle diameter in original micrograph pixels "
                                          "(default: from the coordinate file when it has one)", bounds=(0, None), above=True)
    particle_radius: float | None = opt(None, "particle radius in original pixels (the original "
                                        "script's flag; --particle-diameter is preferred)", bounds=(0, None), above=True)
    pixel_size: float | None = opt(None, "Å per original pixel, used only when the micrograph "
                                   "headers do not say", bounds=(0, None), above=True)


@dataclass
class PreprocessConfig:
    downsample: float = opt(0.0, "downsampling factor (original px per model px); 0 chooses it "
                            "so a particle is --target-particle-px model pixels across", bounds=(0, None))
    target_particle_px: float = opt(20.0, "particle diameter in pixels of the network's "
                                    "working grid when the downsampling factor is chosen "
                                    "automatically (the model image has --input-stride times "
                                    "as many)", bounds=(0, None), above=True)
    downsample_method: str = opt("fourier", "Fourier cropping (exact for any factor, keeps the "
                                 "noise spectrum) or area averaging (faster)",
                                 choices=("fourier", "area"))
    outlier_sigma: float = opt(10.0, "before downsampling, clip original pixels farther than "
                               "this many robust standard deviations from the median (hot or "
                               "dead detector pixels, which downsampling would smear into "
                               "stripes); 0 = off", bounds=(0, None))
    clip_sigma: float = opt(5.0, "after robust standardisation, clip pixel values to +-this "
                            "many robust standard deviations (hot pixels, ice crystals)", bounds=(0, None))
    lowpass_sigma: float = opt(0.0, "optional Gaussian low-pass, sigma in model pixels (0 = off)", bounds=(0, None))


@dataclass
class ModelConfig:
    depth: int = opt(4, "U-Net depth (number of 2x downsamplings)", bounds=(0, None))
    width: int = opt(8, "channels of the first U-Net level (doubled at each level)", bounds=(1, None))
    norm: str = opt("batch", "normalisation layers (per-image norms such as group norm are "
                    "not offered: they would make tiled picking differ from whole-image "
                    "picking)", choices=("batch", "none"))
    skip: str = opt("add", "how the decoder joins coarse and fine features: 'add' (1x1 "
                    "projection, upsample, add: about a third faster) or 'concat' (classic "
                    "U-Net)", choices=("add", "concat"))
    input_stride: int = opt(0, "the U-Net runs on a grid this many times coarser than the "
                            "model image: each stride x stride block of pixels enters as "
                            "stride^2 channels and the output is unfolded back, so the network "
                            "sees twice (stride 2) the detail at the cost of the coarser grid; "
                            "0 = 2 when the particle is at least twice --target-particle-px "
                            "across in the micrographs, else 1", bounds=(0, None))


@dataclass
class TargetConfig:
    positive_radius: float = opt(0.5, "radius of the positive disk around each centre, as a "
                                 "fraction of the particle radius", bounds=(0, None), above=True)
    ignore_radius: float = opt(1.0, "outer radius of the ignored ring around each positive disk, "
                               "as a fraction of the particle radius", bounds=(0, None))


@dataclass
class LossConfig:
    focal_alpha: float = opt(0.25, "focal loss alpha (weight of positive pixels)", bounds=(0.0, 1.0))
    focal_gamma: float = opt(2.0, "focal loss gamma (down-weights easy pixels)", bounds=(0, None))
    pos_weight: float | None = opt(None, "pos_weight passed to binary_cross_entropy_with_logits "
                                   "(class imbalance); unset = 1", bounds=(0, None), above=True)
    focal_weight: float = opt(0.7, "weight of the focal term in the combined loss", bounds=(0, None))
    dice_weight: float = opt(0.3, "weight of the Dice term in the combined loss", bounds=(0, None))
    pu_epochs: int = opt(20, "when validation says the picks are clearly partial (fewer "
                         "than half the particles picked), the supervised stage goes on for "
                         "this many epochs with a positive-unlabelled loss that does not count "
                         "unpicked particles as background (class prior from the estimated "
                         "completeness) and keeps whichever model validates better; with "
                         "fewer than 30 labelled validation particles, which can tell "
                         "neither, it runs whenever the picks do not look complete and its "
                         "model is kept; 0 = off",
                         bounds=(0, None))
    pu_after: float = opt(0.25, "share of the supervised epochs after which validation first "
                          "estimates how complete the picks are; when fewer than 15 in 100 of "
                          "the particles look picked (measured on at least 30 labelled "
                          "validation particles), supervised training stops there, before it "
                          "teaches the unpicked particles as background, and the remaining "
                          "epochs plus --pu-epochs use the positive-unlabelled loss; 1 = "
                          "only the check after all supervised epochs",
                          bounds=(0.0, 1.0), above=True)
    pu_micrographs: str = opt("labelled", "which micrographs the positive-unlabelled epochs "
                              "of the supervised stage train on: 'labelled' (those with "
                              "picks) or 'all' (the unlabelled ones too, every pixel "
                              "unlabelled, at the particle density the picks imply; half "
                              "the crops still come from micrographs with picks: with a few "
                              "hundred picks it ranked particles a little better but chose "
                              "worse thresholds, so it is not the default)",
                              choices=("labelled", "all"))


@dataclass
class TrainConfig:
    output_dir: str | None = opt(None, "experiment folder to create", aliases=("--output",))
    initial_epochs: int = opt(80, "epochs of supervised training (iteration 0)", bounds=(1, None))
    retrain_epochs: int = opt(10, "epochs of each self-training iteration", bounds=(0, None))
    batch_size: int = opt(8, "crops per optimisation step", bounds=(1, None))
    learning_rate: float = opt(3e-3, "AdamW peak learning rate of supervised training (warm-up, "
                               "then cosine decay)", bounds=(0, None), above=True)
    retrain_learning_rate: float | None = opt(None, "peak learning rate of the self-training "
                                              "iterations, which fine-tune the previous weights "
                                              "(default: a third of --learning-rate)",
                                              bounds=(0, None), above=True)
    weight_decay: float = opt(1e-4, "AdamW weight decay", bounds=(0, None))
    crop_size: int = opt(0, "side of the random training crops, in model pixels; 0 = 192 "
                         "pixels of the network's grid (192 x --input-stride model pixels)",
                         bounds=(0, None))
    crops_per_epoch: int = opt(0, "crops per epoch; 0 = enough to cover the training "
                               "micrographs' area once, at least 64 and at most 160 (so "
                               "many large micrographs, or thousands of unlabelled ones in "
                               "self-training, do not make an epoch longer; on a GPU a "
                               "larger value may buy a little accuracy)", bounds=(0, None))
    grad_clip: float = opt(1.0, "gradient norm clipping (0 = off)", bounds=(0, None))
    val_fraction: float = opt(0.1, "fraction of labelled micrographs held out for validation "
                              "(at least one when there are two or more)", bounds=(0.0, 1.0))
    seed: int = opt(0, "random seed for the split, Python, NumPy and torch")
    deterministic: bool = opt(False, "use deterministic algorithms only (slower on GPU)")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    multi_gpu: bool = opt(False, "train on all visible GPUs with DistributedDataParallel "
                          "(selfpick starts torchrun for you)")
    workers: int = opt(0, "DataLoader worker processes (0 = load in the main process)", bounds=(0, None))
    amp: bool = opt(True, "mixed precision on CUDA (ignored on CPU)")
    max_val_micrographs: int = opt(0, "evaluate at most this many validation micrographs "
                                   "(0 = all)", cli=False, bounds=(0, None))


@dataclass
class SelfTrainConfig:
    self_training_iterations: int = opt(1, "self-training iterations after supervised "
                                        "training. One: on 12 few-pick runs of both real data "
                                        "sets a second iteration lost ranking (AP) on the "
                                        "micrographs without labels in 10 or 11 of 12 "
                                        "(with either loss)", bounds=(0, None))
    pseudo_label_mode: str = opt("peaks", "how pseudo-labels are made: 'peaks' adds disks at "
                                 "confident detected particles (robust), 'pixel' thresholds "
                                 "the probability map per pixel (the original script)",
                                 choices=("peaks", "pixel"))
    positive_threshold: float = opt(0.95, "pseudo-positive threshold at iteration 1", bounds=(0.0, 1.0))
    negative_threshold: float = opt(0.05, "pseudo-negative threshold at iteration 1 (in 'peaks' "
                                    "mode with calibrated thresholds, pixels are background "
                                    "only below half the picking threshold too, for "
                                    "under-confident models)", bounds=(0.0, 1.0))
    threshold_step: float = opt(0.02, "how much both thresholds relax per iteration", bounds=(0.0, 1.0))
    positive_threshold_min: float = opt(0.80, "the positive threshold never relaxes below this", bounds=(0.0, 1.0))
    negative_threshold_max: float = opt(0.20, "the negative threshold never relaxes above this", bounds=(0.0, 1.0))
    threshold_schedule: str = opt("linear", "how thresholds relax over iterations",
                                  choices=("linear", "constant"))
    calibrate_thresholds: bool = opt(True, "in 'peaks' mode, express thresholds relative to the "
                                     "validation-chosen picking threshold so the schedule works "
                                     "with the model's real calibration")
    unpicked_pixels: str = opt("unlabelled", "what self-training teaches about the pixels "
                               "outside its pseudo-particles: 'unlabelled' (default: a "
                               "positive-unlabelled loss takes a share of them, estimated "
                               "from the picks, to be particles not picked yet, so a "
                               "particle the model misses is not taught as background) or "
                               "'background' (those the model scores far below its "
                               "threshold are background; focal + Dice loss)",
                               choices=("background", "unlabelled"))
    student: str = opt("auto", "how each self-training iteration's model starts: "
                       "'finetune' goes on from the previous stage's weights for "
                       "--retrain-epochs at a third of the learning rate; 'fresh' trains a "
                       "new network from random weights on the pseudo-labels of every "
                       "micrograph for --student-epochs at the full learning rate (a student "
                       "that does not inherit its teacher's mistakes, at the cost of a second "
                       "training); 'auto' (default): 'fresh' when validation is on strips "
                       "(picks on 1-3 micrographs, whose teacher has seen only those "
                       "micrographs' particles, or too sparse on more to spare a whole one), "
                       "'finetune' otherwise",
                       choices=("auto", "finetune", "fresh"))
    student_epochs: int = opt(40, "epochs of a fresh student (--student), on the pseudo-labels "
                              "of every micrograph, but never fewer crops than the supervised "
                              "stage trained on (it starts from random weights); 0 = "
                              "--initial-epochs. On large micrographs 40 ranked as well as 80 "
                              "in two thirds of the training time", bounds=(0, None))
    early_stop_patience: int = opt(0, "stop self-training after this many iterations without a "
                                   "better validation particle F1 (0 = never)", bounds=(0, None))
    self_train_complete_labels: bool = opt(False, "self-train even when the validation labels "
                                           "look complete (8 in 10 or more of the picks the model "
                                           "is surest of carry a label); by default training "
                                           "then stops after the supervised stage, since "
                                           "self-training learns from unlabelled particles")


# Views test-time augmentation may average (see selfpick.picking.inference.TTA_TRANSFORMS).
TTA_CHOICES = (1, 2, 4, 8)


@dataclass
class PickConfig:
    threshold: float | None = opt(None, "score threshold for picks (default: the one the model "
                                  "chose on validation)", cli=False, bounds=(0.0, 1.0))
    min_distance: float = opt(0.5, "minimum distance between picks, as a fraction of the particle "
                              "diameter", cli=False, bounds=(0, None))
    edge_margin: float | None = opt(None, "drop picks closer than this to a micrograph edge, in "
                                    "original pixels (default: learned from the labels -- "
                                    "as close as the closest labelled particle, at most one "
                                    "particle diameter)", bounds=(0, None))
    tta: int = opt(8, "test-time augmentation: average the network's output over this many "
                   "flips and transposes of each micrograph (1 = off, 2, 4 or 8). 8 ranked "
                   "particles better on both real data sets, at 8 times the network time; "
                   "used in validation and self-training too, and saved with the model",
                   choices=TTA_CHOICES)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    selftrain: SelfTrainConfig = field(default_factory=SelfTrainConfig)
    pick: PickConfig = field(default_factory=PickConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | os.PathLike | None = None) -> "Config":
        cfg = cls()
        cfg.update(d, source=source)
        return cfg

    @classmethod
    def from_saved(cls, d: dict[str, Any], source: str | os.PathLike | None = None) -> "Config":
        """A configuration saved by selfpick itself (model file, experiment ``config.json``).

        Settings added since the file was written take the value that reproduces how it was
        made, not today's default (see :data:`SAVED_BEFORE`).
        """
        d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
        for section, values in SAVED_BEFORE.items():
            if isinstance(d.get(section), dict):
                for key, value in values.items():
                    d[section].setdefault(key, value)
        return cls.from_dict(d, source=source)

    def update(self, d: dict[str, Any], source: str | os.PathLike | None = None) -> None:
        """Apply flat (``{"initial_epochs": 5}``) or nested (``{"train": {...}}``) settings.

        Unknown keys and values of the wrong type raise :class:`InputError` naming ``source``.
        """
        index = _field_index()
        for key, value in d.items():
            k = key.replace("-", "_")
            if k in SECTIONS and isinstance(value, dict):
                for sub, v in value.items():
                    sk = sub.replace("-", "_")
                    if sk not in index or index[sk][0] != k:
                        raise InputError(f"unknown setting {sub!r} in section {k!r}", source)
                    self._set(sk, v, source)
            elif k in index:
                self._set(k, value, source)
            else:
                raise InputError(
                    f"unknown setting {key!r} (known settings: {', '.join(sorted(index))})",
                    source,
                )

    def _set(self, key: str, value: Any, source: Any) -> None:
        section, f = _field_index()[key]
        setattr(getattr(self, section), key, _coerce(key, value, f, source))

    def flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for section in SECTIONS:
            out.update(dataclasses.asdict(getattr(self, section)))
        return out


SECTIONS = tuple(f.name for f in dataclasses.fields(Config))

# What a saved configuration that lacks a setting meant when it was written: the U-Net's
# decoder concatenated its skip connections until the "skip" setting was added, and it read
# the model image directly until "input_stride" was, and self-training ran whatever the
# labels' completeness until "self_train_complete_labels" was added, and taught the pixels
# its model scored low as background until "unpicked_pixels" was, and picked without
# test-time augmentation (its threshold was chosen that way) until "tta" was added, and
# downsampled hot pixels as they were until "outlier_sigma" was, and judged the picks partial
# only after all supervised epochs until "pu_after" was, and trained a fresh student for
# the supervised epochs until "student_epochs" was.
SAVED_BEFORE: dict[str, dict[str, Any]] = {"model": {"skip": "concat", "input_stride": 1},
                                            "selftrain": {"self_train_complete_labels": True,
                                                          "unpicked_pixels": "background",
                                                          "student": "finetune",
                                                          "student_epochs": 0},
                                            "loss": {"pu_epochs": 0,
                                                     "pu_micrographs": "labelled",
                                                     "pu_after": 1.0},
                                            "pick": {"tta": 1},
                                            "preprocess": {"outlier_sigma": 0.0}}


def _field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    index: dict[str, tuple[str, dataclasses.Field]] = {}
    hints = typing.get_type_hints(Config)
    for section in SECTIONS:
        sec_cls = hints[section]
        sec_hints = typing.get_type_hints(sec_cls)
        for f in dataclasses.fields(sec_cls):
            f.type = sec_hints[f.name]  # resolve string annotations once
            index[f.name] = (section, f)
    return index


def _base_type(tp: Any) -> tuple[type, bool]:
    """(the concrete type, whether None is allowed) of an annotation like ``float | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _coerce(key: str, value: Any, f: dataclasses.Field, source: Any) -> Any:
    tp, nullable = _base_type(f.type)
    if value is None:
        if nullable:
            return None
        raise InputError(f"setting {key!r} cannot be empty", source)
    ok = False
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    if not ok:
        raise InputError(
            f"setting {key!r} must be {tp.__name__}, got {type(value).__name__} {value!r}", source
        )
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        allowed = ", ".join(map(str, choices))
        raise InputError(f"setting {key!r} must be one of {allowed}, got {value!r}", source)
    _check_range(key, value, f, source)
    return value


def _check_range(key: str, value: Any, f: dataclasses.Field, source: Any) -> None:
    """Refuse numbers outside a field's ``bounds`` up front, naming their source: they would
    crash deep inside training (batch size 0) or silently train nothing (negative epochs)."""
    if "bounds" not in f.metadata or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    (lo, hi), open_lo = f.metadata["bounds"], f.metadata["above"]
    too_low = lo is not None and (value <= lo if open_lo else value < lo)
    too_high = hi is not None and value > hi
    if not math.isfinite(value) or too_low or too_high:
        want = ("a finite number" if lo is None else
                f"{'greater than' if open_lo else 'at least'} {lo:g}"
                + (f" and at most {hi:g}" if hi is not None else ""))
        raise InputError(f"setting {key!r} must be {want}, got {value!r}", source)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict (validated later by :meth:`Config.update`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found", path)
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        # One line: YAML's own message spans several (a code excerpt with a caret).
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise InputError(f"cannot parse the config file ({where}{what})", path) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError("a config file must hold a mapping of setting names to values", path)
    # config.json written by selfpick itself holds the settings under "config".
    if "config" in data and isinstance(data["config"], dict) and "selfpick_version" in data:
        data = data["config"]
    return data


def add_config_arguments(parser: argparse.ArgumentParser, sections: tuple[str, ...]) -> None:
    """Add one flag per config field of ``sections``; unset flags do not override anything."""
    index = _field_index()
    for section in sections:
        group = parser.add_argument_group(section)
        for name, (sec, f) in index.items():
            if sec != section or not f.metadata.get("cli", True):
                continue
            flag = f.metadata.get("flag") or "--" + name.replace("_", "-")
            names = [flag, *f.metadata.get("aliases", ())]
            tp, _ = _base_type(f.type)
            default = f.default if f.default is not dataclasses.MISSING else None
            help_text = f.metadata["help"]
            if tp is bool:
                group.add_argument(*names, dest=name, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS,
                                   help=f"{help_text} (default: {'on' if default else 'off'})")
                continue
            if not (default is None or "(default" in help_text):
                help_text = f"{help_text} (default: {default})"
            metavar = None
            if not f.metadata.get("choices"):
                metavar = {int: "N", float: "X"}.get(tp) or name.upper().split("_")[-1]
            group.add_argument(*names, dest=name, type=tp, default=argparse.SUPPRESS,
                               choices=f.metadata.get("choices"), metavar=metavar,
                               help=help_text)


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None,
                     source: str | None = None) -> Config:
    """Defaults, then a config file's settings (``base``), then the flags given."""
    cfg = Config()
    if base:
        cfg.update(base, source=source)
    index = _field_index()
    given = {k: v for k, v in vars(args).items() if k in index}
    cfg.update(given, source="command line")
    return cfg


def given_keys(args: argparse.Namespace, base: dict[str, Any] | None = None) -> set[str]:
    """Flat names of the settings the user set: flags given plus a config file's keys."""
    index = _field_index()
    keys = {k for k in vars(args) if k in index}
    for key, value in (base or {}).items():
        k = key.replace("-", "_")
        if k in SECTIONS and isinstance(value, dict):
            keys |= {sub.replace("-", "_") for sub in value}
        else:
            keys.add(k)
    return keys
