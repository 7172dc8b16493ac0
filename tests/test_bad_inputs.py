"""A corpus of bad inputs, each run through the real command line (``selfpick.cli.main``).

Every case builds one broken input in its own ``tmp_path`` -- from a copy of the tiny simulated
data set, never the session fixture's own files -- and runs ``train``, ``pick``, ``evaluate``
or ``simulate`` on it. What every refusal must look like (SPEC "Errors"):

- exit code 2;
- stderr holds exactly one error line, ``selfpick <command>: error: ...``, which names the
  offending file and says what is wrong (a keyword per case); with ``-q`` nothing else is
  printed, except the per-micrograph "skipping" warning of ``pick``;
- no traceback anywhere;
- no partial output: the workspace is left exactly as it was found -- no new file or folder
  (outputs, temporary files, caches, logs, an empty output folder) and no input changed.

The binary bad files are made by the tests (mrcfile, numpy), not committed. Library-level
coordinate parsing (23 broken coordinate files), foreign model files through ``pick`` and
config validation have their own tests (tests/io/test_coords.py, tests/commands/
test_pick_cli.py, tests/test_config.py); the cases here cover the rest of the way from the
command line and what those do not.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mrcfile
import numpy as np
import pytest
import torch

from selfpick import cli

# Settings small enough that a run which is *not* refused trains in seconds on 2 cores.
TINY_TRAIN = ["--initial-epochs", "1", "--self-training-iterations", "0", "--crop-size", "64",
              "--crops-per-epoch", "8", "--batch-size", "4", "--downsample", "2", "--depth",
              "2", "--width", "8", "--device", "cpu", "--particle-diameter", "24"]
FIRST = "sim_000"  # the micrograph a micrograph case breaks (it has labels)


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory) -> Path:
    """A valid selfpick model file with random weights: picking works, nothing is trained."""
    from selfpick.config import Config
    from selfpick.model.modelfile import save_model
    from selfpick.model.unet import UNet

    cfg = Config()
    cfg.update({"depth": 2, "width": 8, "downsample": 2.0, "particle_diameter": 24.0})
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("untrained") / "model.pt"
    save_model(path, UNet.from_config(cfg.model), cfg, 24.0, 2.0, 0.5)
    return path


@dataclass
class Workspace:
    """A private copy of the tiny data set; every case writes only below ``root``."""

    root: Path
    model: Path  # an untrained but valid model file (outside ``root``)

    @property
    def mics(self) -> Path:
        return self.root / "micrographs"

    @property
    def coords(self) -> Path:
        return self.root / "labels" / "coordinates.json"

    @property
    def exp(self) -> Path:
        return self.root / "exp"

    @property
    def picks(self) -> Path:
        return self.root / "picks"

    def mic(self, name: str = FIRST) -> Path:
        return self.mics / f"{name}.mrc"

    def train(self, *extra: str, images: Path | str | None = None,
              coords: Path | None = None) -> list[str]:
        return ["train", "-q", "--image-dir", str(images or self.mics), "--coords-file",
                str(coords or self.coords), "--output-dir", str(self.exp), *TINY_TRAIN, *extra]

    def pick(self, images: Path | str, *extra: str, model: Path | None = None) -> list[str]:
        return ["pick", "-q", "--model", str(model or self.model), "--images", str(images),
                "--output", str(self.picks), "--device", "cpu", "--workers", "0", *extra]

    def evaluate(self, *what: str, coords: Path | None = None) -> list[str]:
        return ["evaluate", "-q", *what, "--image-dir", str(self.mics), "--coords-file",
                str(coords or self.coords), "--device", "cpu", "--output",
                str(self.root / "metrics.json")]


@pytest.fixture
def ws(tiny_data, untrained_model, tmp_path) -> Workspace:
    src = Path(tiny_data.output_dir)
    root = tmp_path / "ws"
    shutil.copytree(src / "micrographs", root / "micrographs")
    shutil.copytree(src / "labels", root / "labels")
    return Workspace(root, untrained_model)


# ----------------------------------------------------------------------------- bad files


def _write_mrc(path: Path, data: np.ndarray, *, stack: bool = False,
               extended_header: np.ndarray | None = None) -> None:
    path.unlink(missing_ok=True)
    # mrcfile warns about NaN/Inf while computing header statistics: intended here.
    with warnings.catch_warnings(), mrcfile.new(path, overwrite=True) as mrc:
        warnings.simplefilter("ignore", RuntimeWarning)
        mrc.set_data(data)
        if stack:
            mrc.set_image_stack()
        if extended_header is not None:
            mrc.set_extended_header(extended_header)


def _image(ws: Workspace, name: str = FIRST) -> np.ndarray:
    with mrcfile.open(ws.mic(name), permissive=True) as mrc:
        return np.array(mrc.data, dtype=np.float32)


def _patch_header(path: Path, offset: int, value: int) -> None:
    """Overwrite one int32 word of an MRC header (little-endian, as mrcfile writes)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.int32(value).tobytes())


def _dump(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _replace_by(ws: Workspace, new_name: str, content: str | bytes) -> Path:
    """Remove the first micrograph and put ``new_name`` (same micrograph name) in its place."""
    ws.mic().unlink()
    return _dump(ws.mics / new_name, content)


# ----------------------------------------------------------------------------- the corpus


@dataclass
class Case:
    """What a builder returns: the command line and what its one error line must contain."""

    argv: list[str]
    names: str  # the offending file as the message shows it (its name, or a path)
    words: tuple[str, ...]  # each must appear in the error line (case-insensitive)
    warnings_allowed: bool = False  # pick logs "skipping <file>: ..." before its error
    extra_checks: list[Callable[[], None]] = field(default_factory=list)


Builder = Callable[[Workspace], Case]
CASES: dict[str, Builder] = {}


def case(name: str):
    def register(fn: Builder) -> Builder:
        assert name not in CASES
        CASES[name] = fn
        return fn
    return register


# --- micrographs (train reads them; the broken one is a labelled micrograph)

@case("mrc-zero-bytes")
def _(ws):
    ws.mic().write_bytes(b"")
    return Case(ws.train(), ws.mic().name, ("empty", "0 bytes"))


@case("mrc-truncated-data")
def _(ws):
    # An interrupted copy: the header is complete, half the pixels are missing.
    os.truncate(ws.mic(), 1024 + 256 * 256 * 2)
    return Case(ws.train(), ws.mic().name, ("truncated", "bytes"))


@case("mrc-shorter-than-a-header")
def _(ws):
    os.truncate(ws.mic(), 600)
    return Case(ws.train(), ws.mic().name, ("truncated", "1024"))


@case("mrc-stack-of-3")
def _(ws):
    img = _image(ws)
    _write_mrc(ws.mic(), np.stack([img, img, img]), stack=True)
    return Case(ws.train(), ws.mic().name, ("stack", "(3, 256, 256)"))


@case("mrc-volume")
def _(ws):
    _write_mrc(ws.mic(), np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32))
    return Case(ws.train(), ws.mic().name, ("volume", "(32, 32, 32)"))


@case("mrc-unknown-mode")
def _(ws):
    _patch_header(ws.mic(), 12, 5)  # MODE word; 5 is not defined by MRC2014
    return Case(ws.train(), ws.mic().name, ("mode 5",))


@case("mrc-complex-mode-4")
def _(ws):
    # A Fourier transform is a valid MRC file but not an image; casting would drop the
    # imaginary part silently.
    _write_mrc(ws.mic(), _image(ws).astype(np.complex64))
    return Case(ws.train(), ws.mic().name, ("complex", "mode 4"))


@case("mrc-huge-extended-header")
def _(ws):
    _patch_header(ws.mic(), 92, 2**30)  # NSYMBT: 1 GiB of extended header in a 257 KiB file
    return Case(ws.train(), ws.mic().name, ("extended header", "1073741824"))


@case("mrc-bad-dimensions")
def _(ws):
    _patch_header(ws.mic(), 0, -256)  # NX
    return Case(ws.train(), ws.mic().name, ("dimensions", "-256"))


@case("mrc-all-nan")
def _(ws):
    _write_mrc(ws.mic(), np.full((256, 256), np.nan, dtype=np.float32))
    return Case(ws.train(), ws.mic().name, ("65536", "NaN"))


@case("mrc-one-inf")
def _(ws):
    img = _image(ws)
    img[10, 20] = np.inf
    _write_mrc(ws.mic(), img)
    return Case(ws.train(), ws.mic().name, ("1 NaN or infinite",))


@case("mrc-constant")
def _(ws):
    _write_mrc(ws.mic(), np.full((256, 256), 7.0, dtype=np.float32))
    return Case(ws.train(), ws.mic().name, ("constant",))


@case("mrc-too-small")
def _(ws):
    _write_mrc(ws.mic(), np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32))
    return Case(ws.train(), ws.mic().name, ("too small",))


@case("mrc-that-is-text")
def _(ws):
    ws.mic().write_text("this is not a micrograph\n" * 100)
    return Case(ws.train(), ws.mic().name, ("not a readable MRC", "mode"))


@case("tiff-that-is-text")
def _(ws):
    path = _replace_by(ws, f"{FIRST}.tif", "this is not a TIFF\n" * 10)
    return Case(ws.train(), path.name, ("cannot read", "TIF"))


@case("png-that-is-text")
def _(ws):
    path = _replace_by(ws, f"{FIRST}.png", "this is not a PNG\n" * 10)
    return Case(ws.train(), path.name, ("cannot read", "PNG"))


@case("npy-of-python-objects")
def _(ws):
    ws.mic().unlink()
    path = ws.mics / f"{FIRST}.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return Case(ws.train(), path.name, ("cannot read", "NPY"))


@case("same-name-mrc-and-tif")
def _(ws):
    import tifffile

    tif = ws.mics / f"{FIRST}.tif"
    tifffile.imwrite(tif, _image(ws))
    return Case(ws.train(), tif.name, ("share the name", repr(FIRST)))


@case("non-utf8-file-name")
def _(ws):
    bad = os.fsencode(ws.mics) + b"/mic\xff.mrc"
    try:
        with open(bad, "wb") as fh:
            fh.write(ws.mic().read_bytes())
    except OSError as exc:  # some filesystems (macOS APFS, some network mounts) refuse it
        pytest.skip(f"this filesystem refuses a non-UTF-8 file name ({exc})")
    # The message shows the undecodable byte as a \udcff escape.
    return Case(ws.train(), "mic\\udcff.mrc", ("UTF-8", "rename"))


@case("image-dir-missing")
def _(ws):
    missing = ws.root / "no_such_folder"
    return Case(ws.train(images=missing), str(missing), ("no such file or folder",))


@case("glob-matching-nothing")
def _(ws):
    pattern = str(ws.mics / "*.tiff")
    return Case(ws.train(images=pattern), pattern, ("no micrographs match",))


@case("diameter-larger-than-the-image")
def _(ws):
    argv = ws.train()
    argv[argv.index("--particle-diameter") + 1] = "300"
    return Case(argv, f"{FIRST}.mrc", ("diameter", "300", "256x256"))


# --- coordinate files

@case("cryoppp-csv-without-x-column")
def _(ws):
    path = _dump(ws.root / "coords" / f"{FIRST}.csv",
                 "Y-Coordinate,Diameter\n26,24\n216,24\n")
    return Case(ws.train(coords=path.parent), path.name, ("X-Coordinate", "column"))


@case("star-with-only-micrograph-names")
def _(ws):
    path = _dump(ws.root / "coords.star", "data_particles\n\nloop_\n_rlnMicrographName #1\n"
                 + "".join(f"{FIRST}.mrc\n" for _ in range(5)))
    return Case(ws.train(coords=path), path.name, ("rlnCoordinateX", "column"))


@case("coordinates-outside-the-image")
def _(ws):
    data = json.loads(ws.coords.read_text())
    data[FIRST].append([900.0, 40.0])
    path = _dump(ws.root / "outside.json", json.dumps(data))
    return Case(ws.train(coords=path), path.name, ("outside", "x=900", FIRST))


@case("negative-coordinates")
def _(ws):
    data = json.loads(ws.coords.read_text())
    data[FIRST][0] = [-30.0, 40.0]
    path = _dump(ws.root / "negative.json", json.dumps(data))
    return Case(ws.train(coords=path), path.name, ("negative", "x=-30"))


@case("empty-coordinate-file")
def _(ws):
    path = _dump(ws.root / "coords.star", "")
    return Case(ws.train(coords=path), path.name, ("empty",))


@case("coordinate-names-match-no-micrograph")
def _(ws):
    data = {f"other_{k}": v for k, v in json.loads(ws.coords.read_text()).items()}
    path = _dump(ws.root / "renamed.json", json.dumps(data))
    return Case(ws.train(coords=path), path.name, ("no coordinates match", "other_sim_000"))


@case("coordinates-in-an-unknown-format")
def _(ws):
    path = _dump(ws.root / "picks.xyz", "particle one is somewhere near the middle\n")
    return Case(ws.train(coords=path), path.name, ("format",))


# --- config files

@case("config-unknown-key-in-a-section")
def _(ws):
    path = _dump(ws.root / "settings.yaml", "train:\n  initial_epochs: 1\n  epochz: 3\n")
    return Case(ws.train("--config", str(path)), path.name, ("unknown setting", "epochz"))


@case("config-wrong-type")
def _(ws):
    path = _dump(ws.root / "settings.json", '{"initial_epochs": "ten"}')
    return Case(ws.train("--config", str(path)), path.name, ("must be int", "ten"))


@case("config-unparseable-yaml")
def _(ws):
    path = _dump(ws.root / "settings.yaml", "initial_epochs: [1, 2\nwidth: 8\n")
    return Case(ws.train("--config", str(path)), path.name, ("cannot parse",))


@case("config-value-out-of-range")
def _(ws):
    # Used to crash inside the DataLoader (ZeroDivisionError) after the cache was written.
    path = _dump(ws.root / "settings.yaml", "batch_size: 0\n")
    return Case(ws.train("--config", str(path)), path.name, ("batch_size", "at least 1"))


@case("flag-negative-diameter")
def _(ws):
    argv = ws.train()
    argv[argv.index("--particle-diameter") + 1] = "-5"
    return Case(argv, "command line", ("particle_diameter", "greater than 0", "-5"))


# --- model files (pick has its own foreign-model tests: these go through evaluate)

@case("model-that-is-text")
def _(ws):
    path = _dump(ws.root / "best_model.pt", "hello, I am a model\n")
    return Case(ws.evaluate("--model", str(path)), path.name, ("not a readable model file",))


@case("model-of-format-99")
def _(ws):
    from selfpick.config import Config
    from selfpick.model.modelfile import model_payload
    from selfpick.model.unet import UNet

    cfg = Config()
    cfg.update({"depth": 2, "width": 8})
    payload = model_payload(UNet.from_config(cfg.model), cfg, 24.0, 2.0, 0.5)
    payload.update(format_version=99, selfpick_version="9.0.0")
    path = ws.root / "future_model.pt"
    torch.save(payload, path)
    return Case(ws.evaluate("--model", str(path)), path.name, ("format 99", "9.0.0"))


# --- picking and evaluating

@case("pick-a-truncated-micrograph")
def _(ws):
    os.truncate(ws.mic(), 5000)
    return Case(ws.pick(ws.mic()), ws.mic().name, ("could be read", "truncated"),
                warnings_allowed=True)


@case("pick-a-stack-into-an-existing-folder")
def _(ws):
    # The folder existed before: it stays, and stays empty.
    ws.picks.mkdir()
    img = _image(ws)
    _write_mrc(ws.mic(), np.stack([img, img, img]), stack=True)
    return Case(ws.pick(ws.mic(), "--format", "csv"), ws.mic().name, ("stack",),
                warnings_allowed=True)


@case("pick-negative-edge-margin")
def _(ws):
    return Case(ws.pick(ws.mic(), "--edge-margin", "-5"), "--edge-margin", ("-5", "positive"))


@case("evaluate-picks-without-coordinate-columns")
def _(ws):
    path = _dump(ws.root / "topaz.txt", "image_name\tscore\nsim_000\t0.5\n")
    return Case(ws.evaluate("--picks", str(path)), path.name, ("x_coord",))


@case("simulate-into-a-file")
def _(ws):
    path = _dump(ws.root / "sim_output", "a file where the data set should go\n")
    return Case(["simulate", "-q", "--output", str(path), "-n", "1", "--size", "128",
                 "--diameter", "20"], path.name, ("not a folder",))


# ----------------------------------------------------------------------------- the check


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path below ``root``: folders by name, files with size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            key = os.fsdecode(os.path.relpath(p, os.fsencode(root)))
            # A folder's own size and time change with any probe file made and removed in
            # it; only files are compared by size and time.
            out[key] = ("dir",) if os.path.isdir(p) else ("file", st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_cleanly(name, ws, capsys):
    c = CASES[name](ws)
    capsys.readouterr()  # whatever building the case printed
    before = _snapshot(ws.root)

    code = cli.main(c.argv)

    out, err = capsys.readouterr()
    assert code == 2, f"exit code {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    prefix = f"selfpick {c.argv[0]}: error:"
    errors = [line for line in lines if line.startswith(prefix)]
    assert len(errors) == 1, err
    others = [line for line in lines if not line.startswith(prefix)]
    if c.warnings_allowed:
        assert all(line.startswith("skipping ") for line in others), err
    else:
        assert not others, err
    line = errors[0]
    assert c.names in line, line
    for word in c.words:
        assert word.lower() in line.lower(), f"{word!r} not in: {line}"
    # No partial output: nothing created (output folders, temporary files, caches, logs)
    # and no input touched.
    after = _snapshot(ws.root)
    assert after == before, {"new": sorted(set(after) - set(before)),
                             "gone": sorted(set(before) - set(after)),
                             "changed": sorted(k for k in before.keys() & after.keys()
                                               if before[k] != after[k])}
    for check in c.extra_checks:
        check()


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 25


# ----------------------------------------------------------------------------- controls


@pytest.mark.slow  # trains (a few seconds)
def test_unusual_but_valid_micrographs_are_accepted(ws, capsys):
    """Positive controls: MRC mode 12 (float16) and a large, real extended header are valid
    MRC files, so the checks above must not refuse them."""
    img = _image(ws, "sim_000")
    _write_mrc(ws.mic("sim_000"), img.astype(np.float16))
    # 1 MiB extended header (FEI/EPU micrographs carry big ones), declared correctly.
    _write_mrc(ws.mic("sim_001"), _image(ws, "sim_001"),
               extended_header=np.zeros(1 << 20, dtype="V1"))
    with mrcfile.open(ws.mic("sim_000")) as mrc:
        assert mrc.header.mode == 12
    code = cli.main(ws.train())
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in out + err
    assert (ws.exp / "best_model.pt").is_file()


def test_every_numeric_setting_declares_its_range():
    """A numeric setting without bounds would accept values that crash training later."""
    from selfpick.config import _base_type, _field_index

    unbounded = sorted(name for name, (_, f) in _field_index().items()
                       if _base_type(f.type)[0] in (int, float) and "bounds" not in f.metadata
                       and not f.metadata.get("choices"))
    assert unbounded == ["seed"]
