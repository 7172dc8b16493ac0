"""Atomic file output: write to a temporary name in the same folder, then rename.

An interrupted run therefore never leaves a truncated file under the final name that a later
run (``--resume``, a RELION import) would trust.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from selfpick.errors import OutputError

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def os_error_to_output_error(exc: OSError, path: str | os.PathLike) -> OutputError:
    """Turn an operating-system failure while writing ``path`` into one clear message."""
    # numpy's tofile (np.save to a file) reports a short write without an errno: on a
    # regular file that is the disk or quota running full.
    short_write = exc.errno is None and "requested and" in str(exc) and "written" in str(exc)
    if exc.errno in _NO_SPACE or short_write:
        return OutputError("no space left on the device (disk or quota full) while writing", path)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError("permission denied: this location cannot be written", path)
    return OutputError(f"cannot write ({exc.strerror or exc})", path)


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove it can be written, before any long work starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A name of its own: several processes (torchrun ranks, array jobs) may probe the
        # same folder at once.
        fd, probe = tempfile.mkstemp(prefix=".selfpick-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise os_error_to_output_error(exc, folder) from exc
    return folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    ``OSError`` (full disk, permissions) becomes an :class:`OutputError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise os_error_to_output_error(exc, path) from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the permissions a normally created
        # file would have, so colleagues on a shared cluster can read results.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise os_error_to_output_error(exc, path) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths: the usual things that reach a metrics dict.
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
