"""Picking as a RELION External job.

RELION 4/5 run an External job as ``<executable> --o <JobDir>/ --in_mics <micrographs.star>
[--<label> <value> ...] --j <threads>`` from the project folder, and then wait for the job to
leave ``RELION_JOB_EXIT_SUCCESS`` (or ``_FAILURE`` / ``_ABORTED``) in its folder. Its outputs
are announced in ``RELION_OUTPUT_NODES.star``. This module does the picking side of that
contract with the ordinary :func:`selfpick.picking.pick.pick` machinery:

- the micrographs are the ``rlnMicrographName`` entries of the input STAR (RELION 3.1+/4/5
  ``data_optics`` + ``data_micrographs``, or an old single-block file), paths relative to the
  project folder (the working directory RELION runs the job in);
- per micrograph ``<JobDir>/<sub-folder>/<name>_autopick.star`` in RELION's own layout, where
  ``<sub-folder>`` is the part of the micrograph's folder after its ``jobNNN/`` component --
  ``MotionCorr/job002/Movies/mic1.mrc`` gives ``External/job012/Movies/mic1_autopick.star``,
  exactly where ``relion_autopick`` would put it. Mirroring (rather than one flat folder)
  keeps micrographs of the same name in different sub-folders (several sessions imported as
  ``Movies/day1/``, ``Movies/day2/``) from overwriting each other, and looks familiar;
- ``<JobDir>/autopick.star``: RELION's picking index (``data_coordinate_files``) with
  ``rlnMicrographName`` exactly as in the input STAR and ``rlnMicrographCoordinates`` relative
  to the project folder, which is what Extract and Manual picking read;
- ``<JobDir>/RELION_OUTPUT_NODES.star`` announcing ``autopick.star`` as a node of type
  ``MicrographCoordsGroup.star.relion.autopick``;
- ``<JobDir>/coords_suffix_autopick.star``: the input STAR's name, which is how RELION 3.1's
  Extract job is told where coordinates are (3.1 reads neither the index nor the node type).

:func:`external_job` writes the exit markers around any block of work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pandas as pd

from selfpick.errors import InputError, SelfpickError
from selfpick.io.formats import relion_star
from selfpick.io.formats._common import write_star_file
from selfpick.io.micrographs import is_micrograph_file, micrograph_name
from selfpick.utils.atomic import atomic_path, os_error_to_output_error

log = logging.getLogger("selfpick")

SUCCESS = "RELION_JOB_EXIT_SUCCESS"
FAILURE = "RELION_JOB_EXIT_FAILURE"
ABORTED = "RELION_JOB_EXIT_ABORTED"
# The GUI's "Abort" button creates this file in the job folder and waits for ABORTED.
ABORT_NOW = "RELION_JOB_ABORT_NOW"
OUTPUT_NODES = "RELION_OUTPUT_NODES.star"
INDEX = "autopick.star"
COORDS_SUFFIX = "coords_suffix_autopick.star"  # RELION 3.1's way to name the coordinates
SUFFIX = "_autopick"
# RELION 4/5 node type of a picking index (src/pipeline_jobs.h).
NODE_LABEL = "MicrographCoordsGroup.star.relion.autopick"

MIC = "rlnMicrographName"
_MOVIE = "rlnMicrographMovieName"
# RELION job folders are <Type>/jobNNN/ (decomposePipelineFileName looks for "/job" + digits).
_JOB_PART = re.compile(r"job\d{3,}")


class JobAborted(SelfpickError):
    """The user pressed Abort in RELION's GUI."""


@dataclass
class RelionMicrograph:
    """One row of the input STAR."""

    name: str  # rlnMicrographName exactly as written in the STAR
    path: Path  # the file, relative to the project folder unless absolute
    subfolder: PurePosixPath  # where its coordinate file goes, relative to the job folder


@dataclass
class RelionPickResult:
    job_dir: Path
    index: Path
    nodes: Path
    n_micrographs: int = 0
    n_picks: int = 0
    n_skipped: int = 0
    failed: list[str] = field(default_factory=list)
    rows: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        per = self.n_picks / self.n_micrographs if self.n_micrographs else 0.0
        txt = (f"picked {self.n_micrographs} micrograph(s): {self.n_picks} particles "
               f"({per:.1f} per micrograph)")
        if self.n_skipped:
            txt += f"; {self.n_skipped} already done by an earlier run of this job"
        if self.failed:
            txt += f"; {len(self.failed)} could not be read and are left out"
        return txt


# --------------------------------------------------------------------------------------------
# Input


def _frame(block: Any) -> pd.DataFrame | None:
    if isinstance(block, pd.DataFrame):
        return block
    if isinstance(block, dict):  # a table of one row written as key-value pairs
        return pd.DataFrame({k: [v] for k, v in block.items()})
    return None


def read_micrographs_star(path: str | os.PathLike) -> list[str]:
    """The ``rlnMicrographName`` entries of a RELION micrographs STAR, in file order.

    Takes ``data_micrographs`` (RELION 3.1+: ``micrographs_ctf.star``,
    ``corrected_micrographs.star``), else the one block that has the column (RELION 3.0 files
    with a single ``data_`` block). Exact repeats are dropped with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("the input micrographs STAR file does not exist (paths are relative "
                         "to the RELION project folder, where the job runs)", path)
    blocks = {k: _frame(v) for k, v in relion_star.read_blocks(path).items()}
    blocks = {k: v for k, v in blocks.items() if v is not None}
    with_names = {k: v for k, v in blocks.items() if MIC in v.columns}
    if "micrographs" in with_names:
        table = with_names["micrographs"]
    elif len(with_names) == 1:
        table = next(iter(with_names.values()))
    elif with_names:
        raise InputError(f"several data blocks have {MIC} "
                         f"({', '.join('data_' + k for k in with_names)}) and none is "
                         "data_micrographs: which micrographs to pick is unclear", path)
    elif any(_MOVIE in v.columns for v in blocks.values()):
        raise InputError("this STAR lists movies, not micrographs: give the "
                         "corrected_micrographs.star of a Motion correction job (or the "
                         "micrographs_ctf.star of a CTF job) as the input micrographs", path)
    else:
        listing = ", ".join(f"data_{k}" for k in blocks) or "none"
        raise InputError(f"no {MIC} column in any data block (blocks: {listing}); expected a "
                         "RELION micrographs STAR such as micrographs_ctf.star", path)
    names = [str(v).strip() for v in table[MIC].tolist()]
    empty = [i for i, n in enumerate(names) if not n or n.lower() in ("nan", "<na>", "none")]
    if empty:
        raise InputError(f"row {empty[0] + 1} of the micrographs table has an empty {MIC}", path)
    if not names:
        raise InputError("the micrographs table is empty: nothing to pick", path)
    unique = list(dict.fromkeys(names))
    if len(unique) < len(names):
        log.warning("%s lists %d micrograph(s) more than once; each is picked once",
                    path, len(names) - len(unique))
    return unique


def output_subfolder(name: str) -> PurePosixPath:
    """Folder of a micrograph's coordinate file, relative to the job folder (RELION's rule).

    The part of the micrograph's folder after its ``<Type>/jobNNN/`` prefix
    (``MotionCorr/job002/Movies/a.mrc`` -> ``Movies``); a relative path outside any job folder
    keeps its whole folder (``Micrographs/a.mrc`` -> ``Micrographs``); absolute paths and paths
    with ``..`` give the job folder itself.
    """
    p = PurePosixPath(str(name).replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        return PurePosixPath(".")
    folders = p.parts[:-1]
    for i, part in enumerate(folders):
        if i > 0 and _JOB_PART.fullmatch(part):
            return PurePosixPath(*folders[i + 1:]) if folders[i + 1:] else PurePosixPath(".")
    return PurePosixPath(*folders) if folders else PurePosixPath(".")


def micrographs_from_star(path: str | os.PathLike,
                          project_dir: str | os.PathLike | None = None) -> list[RelionMicrograph]:
    """The micrographs of a STAR, checked to exist (relative to ``project_dir``, default cwd)."""
    project = Path(project_dir) if project_dir is not None else Path.cwd()
    out = []
    missing: list[str] = []
    for name in read_micrographs_star(path):
        p = Path(name)
        full = p if p.is_absolute() else project / p
        if not full.is_file():
            missing.append(name)
            continue
        if not is_micrograph_file(full):
            raise InputError(f"{name!r} is not a micrograph file selfpick can read (MRC, TIFF, "
                             "PNG, JPEG or NPY)", path)
        out.append(RelionMicrograph(name, full, output_subfolder(name)))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(f"{len(missing)} of {len(missing) + len(out)} micrograph(s) listed "
                         f"here do not exist, e.g. {missing[0]!r}{more} (looked relative to "
                         f"the project folder {project.resolve()})", path)
    return out


# --------------------------------------------------------------------------------------------
# Job folder, markers and nodes


def _project_relative(path: Path, project: Path) -> str:
    """``path`` as RELION writes node names: relative to the project folder when inside it."""
    absolute = path if path.is_absolute() else project / path
    try:
        rel = absolute.resolve().relative_to(project.resolve())
    except ValueError:
        return absolute.resolve().as_posix()
    return rel.as_posix()


def _touch(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as exc:
        raise os_error_to_output_error(exc, path) from exc


@contextlib.contextmanager
def external_job(job_dir: str | os.PathLike) -> Iterator[Path]:
    """Run a block as a RELION External job in ``job_dir``: exit markers as RELION expects.

    On entry, markers of an earlier run of the same job are removed (so the GUI shows this
    run as running). When the block ends normally ``RELION_JOB_EXIT_SUCCESS`` is written;
    when it raises, ``RELION_JOB_EXIT_FAILURE`` (``..._ABORTED`` for :class:`JobAborted` or
    Ctrl-C) is written and the exception goes on, so the caller can report it.
    """
    job = Path(job_dir)
    try:
        job.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error_to_output_error(exc, job) from exc
    for marker in (SUCCESS, FAILURE, ABORTED):
        with contextlib.suppress(FileNotFoundError):
            (job / marker).unlink()
    try:
        yield job
    except BaseException as exc:
        aborted = isinstance(exc, (JobAborted, KeyboardInterrupt))
        with contextlib.suppress(OSError, SelfpickError):
            if aborted:
                with contextlib.suppress(FileNotFoundError):
                    (job / ABORT_NOW).unlink()
            _touch(job / (ABORTED if aborted else FAILURE))
        raise
    _touch(job / SUCCESS)


def check_abort(job_dir: str | os.PathLike) -> None:
    """Raise :class:`JobAborted` when RELION's GUI has asked this job to stop."""
    if (Path(job_dir) / ABORT_NOW).exists():
        raise JobAborted("aborted from RELION (RELION_JOB_ABORT_NOW)")


def write_output_nodes(job_dir: str | os.PathLike, nodes: list[tuple[str, str]]) -> Path:
    """``RELION_OUTPUT_NODES.star``: ``(node name relative to the project, type label)`` rows."""
    target = Path(job_dir) / OUTPUT_NODES
    df = pd.DataFrame({
        "rlnPipeLineNodeName": pd.Series([n for n, _ in nodes], dtype=object),
        "rlnPipeLineNodeTypeLabel": pd.Series([t for _, t in nodes], dtype=object),
    })
    with atomic_path(target) as tmp:
        write_star_file({"output_nodes": df}, tmp)
    return target


# --------------------------------------------------------------------------------------------
# Picking


def relion_pick(job_dir: str | os.PathLike, in_mics: str | os.PathLike,
                model_path: str | os.PathLike, *, threshold: float | None = None,
                device: str = "auto", flip_y: bool = False, threads: int | None = None,
                skip_existing: bool = True, progress: bool = True,
                project_dir: str | os.PathLike | None = None) -> RelionPickResult:
    """Pick the micrographs of ``in_mics`` into the RELION job folder ``job_dir``.

    Writes the per-micrograph ``_autopick.star`` files, ``autopick.star`` and
    ``RELION_OUTPUT_NODES.star`` (not the exit markers: see :func:`external_job`).
    ``project_dir`` (default: the working directory) is the RELION project folder that the
    paths in ``in_mics`` and the written index are relative to. ``threads`` (RELION's
    ``--j``) sets the CPU threads and reader processes. With ``skip_existing`` (default) a
    re-run of the job picks only the micrographs whose coordinate file is missing, as
    RELION's own auto-picking does when a job is continued.
    """
    from selfpick.picking.pick import PickOptions, _per_micrograph_target, check_threshold, pick

    threshold = check_threshold(threshold)
    project = Path(project_dir) if project_dir is not None else Path.cwd()
    job = Path(job_dir)
    job_abs = job if job.is_absolute() else project / job
    job_rel = _project_relative(job, project)
    star = Path(in_mics)
    star = star if star.is_absolute() else project / star
    mics = micrographs_from_star(star, project)
    model_path = Path(model_path)
    if not model_path.is_absolute():
        model_path = project / model_path
    workers = -1
    if threads is not None and threads >= 1:
        import torch

        torch.set_num_threads(int(threads))
        workers = min(4, int(threads) - 1)
    groups: dict[PurePosixPath, list[RelionMicrograph]] = {}
    for m in mics:
        groups.setdefault(m.subfolder, []).append(m)
    result = RelionPickResult(job_dir=job, index=job / INDEX, nodes=job / OUTPUT_NODES)
    targets: dict[str, Path] = {}
    for sub, members in groups.items():
        check_abort(job_abs)
        out = job_abs / sub
        opts = PickOptions(fmt="star", threshold=threshold, device=device, flip_y=flip_y,
                           workers=workers, skip_existing=skip_existing, suffix=SUFFIX)
        if len(groups) > 1:
            log.info("micrographs in %s/", (PurePosixPath(job_rel) / sub).as_posix())
        summary = pick(model_path, [m.path for m in members], out, opts, progress=progress)
        result.n_micrographs += summary.n_micrographs
        result.n_picks += summary.n_picks
        result.n_skipped += summary.n_skipped
        by_path = {str(m.path): m.name for m in members}
        result.failed += [by_path.get(line.split("\t")[0], line.split("\t")[0])
                          for line in summary.failed]
        if sub != PurePosixPath("."):
            # pick() wrote an index of this sub-folder; the job's index below replaces it.
            with contextlib.suppress(OSError):
                (out / INDEX).unlink()
        for m in members:
            target = _per_micrograph_target(out, micrograph_name(m.path), "star", SUFFIX)
            if target.is_file():
                targets[m.name] = target
    check_abort(job_abs)
    if result.failed:
        log.warning("%d micrograph(s) could not be read and are not in %s: %s",
                    len(result.failed), INDEX, ", ".join(result.failed[:5])
                    + (" ..." if len(result.failed) > 5 else ""))
    rows = []
    for m in mics:
        if m.name in targets:
            rel = (PurePosixPath(job_rel) / m.subfolder / targets[m.name].name).as_posix()
            rows.append((m.name, rel))
    if not rows:
        raise InputError("no micrograph could be picked", star)
    relion_star.write_index(rows, job_abs / INDEX)
    # RELION 3.1 does not read the index: its Extract job takes "Input coordinates" as a
    # coords_suffix_<suffix>.star file holding the micrographs STAR's name (as its AutoPick
    # writes), and composes --coord_dir/--coord_suffix from it.
    with atomic_path(job_abs / COORDS_SUFFIX) as tmp:
        tmp.write_text(_project_relative(star, project) + "\n", encoding="utf-8")
    write_output_nodes(job_abs, [(f"{job_rel}/{INDEX}", NODE_LABEL)])
    result.rows = rows
    return result


def run_external_job(job_dir: str | os.PathLike, in_mics: str | os.PathLike,
                     model_path: str | os.PathLike, **kwargs: Any) -> RelionPickResult:
    """:func:`relion_pick` inside :func:`external_job`: outputs, nodes and exit marker."""
    with external_job(job_dir):
        return relion_pick(job_dir, in_mics, model_path, **kwargs)


__all__ = [
    "ABORTED", "FAILURE", "NODE_LABEL", "SUCCESS", "JobAborted", "RelionMicrograph",
    "RelionPickResult", "check_abort", "external_job", "micrographs_from_star",
    "output_subfolder", "read_micrographs_star", "relion_pick", "run_external_job",
    "write_output_nodes",
]
