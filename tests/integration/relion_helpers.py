"""Running RELION's own programs on what selfpick writes: shared by the integration tests.

Nothing here imitates RELION: the helpers run its programs (``relion_preprocess``,
``relion_pipeliner``, ``relion_star_printtable``, ``relion_refine``) in a scratch project
folder and read back what they wrote with ``mrcfile`` and ``starfile``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
REAL_DATA = REPO.parent / "shared" / "data" / "real"
RIBOSOME = REAL_DATA / "empiar10028_ribosome80s_promptsam"  # 1024^2 PNG, 56 px particles
BETAGAL = REAL_DATA / "empiar10017_betagal_cryosegnet"  # 4096^2 JPEG, 108 px particles

RELION_PREPROCESS = shutil.which("relion_preprocess")
NO_RELION = ("RELION is not installed: relion_preprocess is not on PATH "
             "(Debian/Ubuntu: apt-get install relion)")


def require(program: str) -> str:
    """The path of a RELION program, or skip the test with the reason."""
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not on PATH (part of RELION: apt-get install relion)")
    return path


def require_real(folder: Path) -> Path:
    if not folder.is_dir():
        pytest.skip(f"real data not available at {folder}")
    return folder


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> str:
    """Run a RELION program in the project folder ``cwd``; its output, or a failed test that
    shows the command and the end of what it printed.

    RELION programs print ``ERROR`` and exit 1 on a bad input; a few only print, so both count.
    """
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "ERROR" in out:
        pytest.fail(f"{' '.join(map(str, cmd))} (in {cwd}) exited {proc.returncode}:\n"
                    f"{out[-3000:]}")
    return out


def write_micrographs_star(path: Path, names: list[str], pixel_size: float,
                           ctf: bool = False) -> None:
    """A RELION 3.1 micrographs STAR (``data_optics`` + ``data_micrographs``) as Import writes
    it, or with ``ctf`` as CtfFind does (defocus columns; extraction copies them to the
    particles)."""
    import starfile

    optics = pd.DataFrame({
        "rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
        "rlnMicrographPixelSize": [pixel_size], "rlnVoltage": [300.0],
        "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
    })
    mics = pd.DataFrame({"rlnMicrographName": pd.Series(names, dtype=object),
                         "rlnOpticsGroup": [1] * len(names)})
    if ctf:
        n = len(names)
        mics["rlnCtfImage"] = [f"{Path(m).with_suffix('')}.ctf:mrc" for m in names]
        mics["rlnDefocusU"] = [15000.0] * n
        mics["rlnDefocusV"] = [14800.0] * n
        mics["rlnCtfAstigmatism"] = [200.0] * n
        mics["rlnDefocusAngle"] = [30.0] * n
        mics["rlnCtfFigureOfMerit"] = [0.2] * n
        mics["rlnCtfMaxResolution"] = [4.5] * n
    path.parent.mkdir(parents=True, exist_ok=True)
    starfile.write({"optics": optics, "micrographs": mics}, path)


def image_to_mrc(src: Path, dst: Path, pixel_size: float) -> np.ndarray:
    """An 8-bit PNG/JPEG micrograph as a float32 MRC (rows as stored: row 0 is y = 0)."""
    import mrcfile
    from PIL import Image

    with Image.open(src) as im:
        data = np.asarray(im.convert("L"), dtype=np.float32)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(dst, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = pixel_size
    return data


def extract(project: Path, mics_star: str, coord_dir: str, out_dir: str, box: int, *,
            scale: int | None = None, norm: bool = True, invert: bool = True,
            suffix: str = "_autopick.star") -> Path:
    """``relion_preprocess --extract`` as RELION 3.1's Extract job composes it
    (``RelionJob::getCommandsExtractJob``: background diameter 75 % of the box, dust removal
    off); returns the particles STAR."""
    part_star = f"{out_dir.rstrip('/')}/particles.star"
    cmd = [RELION_PREPROCESS or "relion_preprocess", "--i", mics_star,
           "--coord_dir", coord_dir.rstrip("/") + "/", "--coord_suffix", suffix,
           "--part_star", part_star, "--part_dir", out_dir.rstrip("/") + "/",
           "--extract", "--extract_size", str(box)]
    size = box
    if scale:
        cmd += ["--scale", str(scale)]
        size = scale
    if norm:
        cmd += ["--norm", "--bg_radius", str(int(0.75 * size / 2)),
                "--white_dust", "-1", "--black_dust", "-1"]
    if invert:
        cmd += ["--invert_contrast"]
    run(cmd, project)
    return project / part_star


def read_particles(star: Path, project: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The particles table RELION wrote and its images, in table order (``NNNNNN@stack``)."""
    import mrcfile
    import starfile

    table = starfile.read(star, always_dict=True, parse_as_string=["rlnMicrographName"])
    parts = table["particles"].reset_index(drop=True)
    stacks: dict[str, np.ndarray] = {}
    images = []
    for name in parts["rlnImageName"]:
        index, stack = str(name).split("@", 1)
        if stack not in stacks:
            with mrcfile.open(project / stack, permissive=True) as mrc:
                data = np.asarray(mrc.data, dtype=np.float32)
            stacks[stack] = data if data.ndim == 3 else data[None]
        images.append(stacks[stack][int(index) - 1])
    return parts, np.stack(images) if images else np.zeros((0, 0, 0), np.float32)


def relion_window(shape: tuple[int, int], x: float, y: float, box: int
                  ) -> tuple[slice, slice] | None:
    """The micrograph rows/columns RELION 3.1 cuts for a pick at ``(x, y)``: centre pixel
    ``(int(x), int(y))`` (truncated, ``preprocessing.cpp``), ``box // 2`` before and
    ``box - box // 2 - 1`` after it. ``None`` when the box crosses an edge (RELION then keeps
    the particle and repeats the edge pixels)."""
    cx, cy = int(x), int(y)
    x0, y0 = cx - box // 2, cy - box // 2
    if x0 < 0 or y0 < 0 or x0 + box > shape[1] or y0 + box > shape[0]:
        return None
    return slice(y0, y0 + box), slice(x0, x0 + box)


def expected_extracted(xy: np.ndarray, shape: tuple[int, int], box: int) -> int:
    """How many picks RELION 3.1 extracts: all whose box is not completely outside the
    micrograph (a box crossing an edge is kept, padded with the edge pixels; one completely
    outside stops the program with an error)."""
    if len(xy) == 0:
        return 0
    cx, cy = xy[:, 0].astype(np.int64), xy[:, 1].astype(np.int64)
    x0, y0 = cx - box // 2, cy - box // 2
    x1, y1 = x0 + box - 1, y0 + box - 1
    inside = (x1 >= 0) & (y1 >= 0) & (x0 < shape[1]) & (y0 < shape[0])
    return int(inside.sum())


def centre_offset(average: np.ndarray) -> np.ndarray:
    """Where the particle in an average sits relative to the box centre, ``(dx, dy)`` pixels.

    The box centre is pixel ``box // 2`` (where RELION puts the pick). An image that is
    point-symmetric about ``c`` correlates best with its own 180-degree rotation at ``2c``:
    the peak of the (zero-padded) self-convolution is at ``2c``. This needs no threshold and
    no sign convention (dark or bright particles, with or without inverted contrast), and a
    ring of neighbouring particles, which is centred on the particle, does not pull it.
    The background (the mean of the box's outer ring of pixels) is subtracted first.
    """
    a = np.asarray(average, dtype=np.float64)
    n_y, n_x = a.shape
    edge = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])
    a = a - edge.mean()
    f = np.fft.rfft2(a, s=(2 * n_y, 2 * n_x))
    conv = np.fft.irfft2(f * f, s=(2 * n_y, 2 * n_x))
    peak_y, peak_x = np.unravel_index(int(np.argmax(conv)), conv.shape)
    return np.array([peak_x / 2 - n_x // 2, peak_y / 2 - n_y // 2], dtype=np.float64)


def relion_version(program: str = "relion_preprocess") -> str:
    """``3.1.3`` etc., from ``<program> --version``; empty when it does not say."""
    import re

    proc = subprocess.run([require(program), "--version"], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    found = re.search(r"RELION version:\s*v?([0-9][0-9.]*)", proc.stdout + proc.stderr)
    return found.group(1) if found else ""
