"""Reading and writing micrographs.

Every reader returns a ``float32`` array of shape ``(ny, nx)`` (rows, columns) exactly as the
file stores it -- no flips -- and the pixel size in Å when the file carries one. Coordinates in
selfpick refer to this array: ``x`` is the column, ``y`` the row.
"""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from selfpick.errors import InputError
from selfpick.utils.atomic import atomic_path

MRC_EXTENSIONS = (".mrc", ".mrcs", ".map", ".rec")
TIFF_EXTENSIONS = (".tif", ".tiff")
PIL_EXTENSIONS = (".png", ".jpg", ".jpeg")
NPY_EXTENSIONS = (".npy",)
MICROGRAPH_EXTENSIONS = MRC_EXTENSIONS + TIFF_EXTENSIONS + PIL_EXTENSIONS + NPY_EXTENSIONS


@dataclass(frozen=True)
class MicrographInfo:
    """What is known about a micrograph without reading its pixels."""

    path: Path
    shape: tuple[int, int]  # (ny, nx) in original pixels
    pixel_size: float | None  # Å per original pixel, None when the file does not say


def micrograph_name(path: str | os.PathLike) -> str:
    """The name coordinates are matched by: the file name without its image extension."""
    name = Path(path).name
    lower = name.lower()
    for ext in MICROGRAPH_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def is_micrograph_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in MICROGRAPH_EXTENSIONS


def list_micrographs(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Expand a folder, a glob, a list file (one path per line) or several of these.

    Returns the micrograph files sorted by path. Raises :class:`InputError` when nothing matches,
    naming what was searched.
    """
    items: Iterable[str | os.PathLike]
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    found: list[Path] = []
    for item in items:
        p = Path(item)
        text = str(item)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and is_micrograph_file(f))
            if not files:
                raise InputError(
                    "no micrographs in this folder (looked for "
                    + ", ".join(MICROGRAPH_EXTENSIONS) + ")",
                    p,
                )
            found.extend(files)
        elif p.is_file() and is_micrograph_file(p):
            found.append(p)
        elif p.is_file() and p.suffix.lower() in (".txt", ".lst", ".list"):
            base = p.parent
            for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                q = Path(line)
                q = q if q.is_absolute() else base / q
                if not q.is_file():
                    raise InputError(f"listed micrograph {line!r} does not exist", p)
                found.append(q)
        elif any(ch in text for ch in "*?["):
            files = sorted(Path(f) for f in glob.glob(text, recursive=True) if is_micrograph_file(f))
            if not files:
                raise InputError("no micrographs match this pattern", text)
            found.extend(files)
        elif p.exists():
            raise InputError(
                "not a micrograph file (supported: " + ", ".join(MICROGRAPH_EXTENSIONS) + ")", p
            )
        else:
            raise InputError("no such file or folder", p)
    # Keep the user's order for explicit lists but drop exact repeats.
    seen: set[Path] = set()
    unique = []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    names: dict[str, Path] = {}
    for f in unique:
        n = micrograph_name(f)
        try:
            n.encode("utf-8")
        except UnicodeEncodeError:
            # Undecodable bytes in a file name: no coordinate file (STAR, JSON, CSV are text)
            # can name this micrograph, and its picks could not be written.
            raise InputError("the file name is not valid UTF-8 text (it holds undecodable "
                             "bytes); coordinate files cannot name this micrograph: rename it",
                             f) from None
        if n in names:
            raise InputError(
                f"two micrographs share the name {n!r} ({names[n]} and {f}); coordinates are "
                "matched by name, so names must be unique",
                f,
            )
        names[n] = f
    return unique


def read_micrograph(
    path: str | os.PathLike, pixel_size: float | None = None
) -> tuple[np.ndarray, float | None]:
    """Read one 2-D micrograph.

    Returns
    -------
    data:
        ``float32`` array of shape ``(ny, nx)``, finite and not constant.
    pixel_size:
        Å per pixel from the header (MRC), else ``pixel_size`` as given, else ``None``.
        A header value of 0 means "unknown" and falls back to the given value.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such micrograph file", path)
    if path.is_dir():
        raise InputError("is a folder, not a micrograph file", path)
    if path.stat().st_size == 0:
        raise InputError("the file is empty (0 bytes)", path)
    ext = path.suffix.lower()
    header_px = None
    try:
        if ext in MRC_EXTENSIONS:
            data, header_px = _read_mrc(path)
        elif ext in TIFF_EXTENSIONS:
            data = _read_tiff(path)
        elif ext in PIL_EXTENSIONS:
            data = _read_pil(path)
        elif ext in NPY_EXTENSIONS:
            data = _read_npy(path)
        else:
            raise InputError(
                f"unknown micrograph format {ext!r} (supported: "
                + ", ".join(MICROGRAPH_EXTENSIONS) + ")",
                path,
            )
    except InputError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # a reader library failed: the file is damaged or not what it says
        raise InputError(f"cannot read as a {ext.lstrip('.').upper()} image ({exc})", path) from exc
    data = _check_image(data, path)
    px = header_px if header_px else pixel_size
    return data, (float(px) if px else None)


def read_micrograph_info(path: str | os.PathLike) -> MicrographInfo:
    """Shape and pixel size without decoding the pixels where the format allows it."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext in MRC_EXTENSIONS:
        import mrcfile

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
                    h = mrc.header
                    shape = (int(h.ny), int(h.nx))
                    vs = float(mrc.voxel_size.x)
        except Exception as exc:
            raise InputError(f"cannot read the MRC header ({exc})", path) from exc
        return MicrographInfo(path, shape, vs if vs > 0 else None)
    if ext in PIL_EXTENSIONS:
        from PIL import Image

        try:
            with Image.open(path) as im:
                return MicrographInfo(path, (im.height, im.width), None)
        except Exception as exc:
            raise InputError(f"cannot read the image header ({exc})", path) from exc
    if ext in NPY_EXTENSIONS:
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise InputError(f"cannot read as a NumPy array ({exc})", path) from exc
        return MicrographInfo(path, tuple(arr.shape[-2:]), None)
    data, px = read_micrograph(path)
    return MicrographInfo(path, data.shape, px)


def _check_mrc_size(path: Path) -> None:
    """Compare the header's promise (dimensions, mode, extended header) with the file size.

    mrcfile's memory map fails on a short file with only "Error opening memmap"; this says what
    is wrong instead: not an MRC file at all, or an MRC file cut short (an interrupted copy).
    """
    import mrcfile
    from mrcfile.utils import dtype_from_mode

    size = path.stat().st_size
    if size < 1024:
        raise InputError(f"the file is truncated or not an MRC file: {size} bytes, shorter "
                         "than an MRC header (1024 bytes)", path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
            h = mrc.header
            nx, ny, nz, mode, ext = (int(h.nx), int(h.ny), int(h.nz), int(h.mode),
                                     int(h.nsymbt))
    try:
        itemsize = np.dtype(dtype_from_mode(mode)).itemsize
    except ValueError:
        raise InputError(f"not a readable MRC file (unknown data mode {mode} in the header)",
                         path) from None
    if min(nx, ny, nz) < 1 or ext < 0:
        raise InputError(f"not a readable MRC file (the header gives impossible dimensions "
                         f"{nx} x {ny} x {nz})", path)
    expected = 1024 + ext + nx * ny * nz * itemsize
    if size < expected:
        detail = f", of which {ext} for the extended header" if ext else ""
        raise InputError(
            f"the file is truncated or its header is damaged: the header ({nx} x {ny} x {nz} "
            f"pixels, mode {mode}) promises {expected} bytes{detail}, the file holds {size}",
            path,
        )


def _read_mrc(path: Path) -> tuple[np.ndarray, float | None]:
    import mrcfile

    _check_mrc_size(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # permissive: many programs write slightly non-standard headers (wrong map ID, odd
        # exttyp); those are warnings, not reasons to refuse a micrograph.
        with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
            if mrc.data is None:
                problems = "; ".join(str(w.message) for w in caught) or "no data block"
                raise InputError(f"not a readable MRC file ({problems})", path)
            hdr = mrc.header
            expected = int(hdr.nx) * int(hdr.ny) * int(hdr.nz)
            if mrc.data.size < expected:
                raise InputError(
                    f"the file is truncated: the header promises {expected} pixels, "
                    f"the file holds {mrc.data.size}",
                    path,
                )
            data = np.asarray(mrc.data)
            if data.dtype.kind == "c":
                # Casting to float32 below would silently keep only the real part.
                raise InputError(f"holds complex numbers (MRC mode {int(hdr.mode)}, e.g. a "
                                 "Fourier transform), not an image", path)
            vs = float(mrc.voxel_size.x)
            # Copy out of the memory map before the file is closed.
            data = np.array(data, dtype=np.float32, copy=True)
    for w in caught:
        msg = str(w.message)
        if "truncat" in msg.lower() or "could only read" in msg.lower():
            raise InputError(f"the file is truncated ({msg})", path)
    return data, (vs if vs > 0 else None)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(path)


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
            # Exported micrographs are sometimes saved in colour; the luminance is the image.
            im = im.convert("L")
        arr = np.array(im)
    return arr


def _read_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _check_image(data: np.ndarray, path: Path) -> np.ndarray:
    data = np.asarray(data)
    if data.dtype.kind not in "fiub":
        raise InputError(f"pixel type {data.dtype} is not an image type", path)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 3:
        raise InputError(
            f"is a stack or volume of shape {tuple(data.shape)}; selfpick expects one 2-D "
            "micrograph per file (sum movie frames, or split the stack, first)",
            path,
        )
    if data.ndim != 2:
        raise InputError(f"has {data.ndim} dimensions; a micrograph has 2", path)
    if min(data.shape) < 16:
        raise InputError(f"is too small to be a micrograph ({data.shape[1]}x{data.shape[0]} px)", path)
    data = np.asarray(data, dtype=np.float32)
    # NaN and +-inf show in the extremes (NaN propagates through min and max): two passes
    # over the pixels instead of four, which matters when a GPU waits for the reads.
    lo, hi = float(data.min()), float(data.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise InputError(f"contains {bad} NaN or infinite pixel values", path)
    if lo == hi:
        raise InputError(f"is constant (every pixel is {float(data.flat[0])}); nothing to pick", path)
    return data


def write_mrc(path: str | os.PathLike, data: np.ndarray, pixel_size: float | None = None,
              label: str = "selfpick") -> None:
    """Write a 2-D ``float32`` MRC atomically, with the pixel size (Å) in the header.

    ``label`` replaces mrcfile's time-stamped first header label, so the same data always
    give the same bytes.
    """
    import mrcfile

    arr = np.ascontiguousarray(data, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"write_mrc expects a 2-D array, got shape {arr.shape}")
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(arr)
            if pixel_size:
                mrc.voxel_size = float(pixel_size)
            mrc.header.label[0] = label.encode("ascii", "replace")[:80]
            mrc.header.nlabl = 1
