"""Atomic outputs and full disks.

Every file a later run trusts (model files, checkpoints, metrics, coordinate files, reports)
is written to a temporary name in the same folder and renamed into place
(:func:`selfpick.utils.atomic.atomic_path`). Checked here:

- the helper itself: an exception, an ``OSError`` or a failing rename leaves neither the
  final file nor a temporary one, and an existing file unchanged; files get the umask's
  permissions, not ``mkstemp``'s 0600;
- a model file is never seen truncated, even when its writer is killed (SIGKILL) mid-write;
- a full disk (``ENOSPC`` injected into a write, and a real, small tmpfs where one can be
  mounted) ends ``train`` and ``pick`` with exit code 2 and one message naming the file,
  leaves no truncated or temporary file, keeps what was complete, and ``--resume`` /
  ``--skip-existing`` then finish the job.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from selfpick import cli
from selfpick.errors import OutputError
from selfpick.model import modelfile
from selfpick.model.modelfile import load_model
from selfpick.utils.atomic import atomic_path, atomic_write_json, atomic_write_text

SUPERVISED, SELFTRAIN = "iteration_0_supervised", "iteration_1_selftrain"
TINY_TRAIN = ["--initial-epochs", "1", "--self-training-iterations", "1",
              "--self-train-complete-labels", "--retrain-epochs",
              "1", "--crop-size", "64", "--crops-per-epoch", "8", "--batch-size", "4",
              "--downsample", "2", "--depth", "2", "--width", "8", "--device", "cpu",
              "--particle-diameter", "24"]


def _enospc(path="") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _leftovers(folder: Path) -> list[Path]:
    """Temporary files of atomic writes (``.<name>.<random>.tmp``) anywhere below ``folder``."""
    return sorted(p for p in folder.rglob(".*.tmp"))


def _one_error_line(err: str, command: str) -> str:
    assert "Traceback" not in err and "Logging error" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(f"selfpick {command}: error:")]
    assert len(errors) == 1, err
    return errors[0]


# ----------------------------------------------------------------------------- atomic_path


def test_an_exception_inside_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old\n")
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new cont")
            raise ValueError("interrupted")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_new_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "picks.star"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("data_\n")
            assert not target.exists()  # never visible under its name while being written
            raise KeyboardInterrupt
    assert list((tmp_path / "sub").iterdir()) == []


def test_an_os_error_inside_becomes_an_output_error_naming_the_file(tmp_path):
    target = tmp_path / "model.pt"
    with pytest.raises(OutputError, match="no space left") as info:
        with atomic_path(target):
            raise _enospc()
    assert info.value.path == target
    assert list(tmp_path.iterdir()) == []


def test_a_failing_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "best_model.pt"
    target.write_bytes(b"old model")

    def refuse(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("selfpick.utils.atomic.os.replace", refuse)
    with pytest.raises(OutputError, match="cannot write") as info:
        atomic_write_text(target, "new model")
    assert info.value.path == target
    assert target.read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model.pt"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_permissions_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "metrics.json", {"f1": 1.0})
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == mode


def test_an_interrupted_model_save_leaves_no_model_file(tmp_path, monkeypatch):
    """The write dies half-way (Ctrl-C): no model.pt that --resume would take as complete."""
    from selfpick.config import Config
    from selfpick.model import modelfile
    from selfpick.model.unet import UNet

    def half_then_interrupt(path, data):
        Path(path).write_bytes(bytes(data)[: len(data) // 2])
        raise KeyboardInterrupt

    cfg = Config()
    cfg.update({"depth": 2, "width": 8})
    monkeypatch.setattr(modelfile, "_write_durably", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        modelfile.save_model(tmp_path / "model.pt", UNet.from_config(cfg.model), cfg, 24, 2, 0.5)
    assert list(tmp_path.iterdir()) == []


_KILLED_WRITER = textwrap.dedent("""
    import sys
    import time

    from selfpick.config import Config
    from selfpick.model.modelfile import save_model
    from selfpick.model.unet import UNet

    cfg = Config()
    cfg.update({"depth": 4, "width": 32})  # 30 MB: a kill lands inside a write
    model = UNet.from_config(cfg.model)
    i = 0
    while True:
        t0 = time.perf_counter()
        save_model(sys.argv[1], model, cfg, 100.0, 4.0, i / 1000, stage=f"save {i}")
        print(i, time.perf_counter() - t0, flush=True)
        i += 1
""")


def test_a_model_file_is_never_seen_truncated_when_its_writer_is_killed(tmp_path):
    """SIGKILL a process that keeps rewriting model.pt: the file under the final name always
    loads completely (only a hidden temporary file can be cut short)."""
    target = tmp_path / "model.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline().split()
        assert first and first[0] == "0", "the writer did not start"
        proc.stdout.readline()
        time.sleep(float(first[1]) / 2)  # about half-way through the third save
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()
    saved = load_model(target)  # raises ModelFileError if truncated
    assert saved.stage.startswith("save ")
    # The only other files are temporaries, under a hidden name no reader looks for.
    assert all(p.name.startswith(".model.pt.") and p.name.endswith(".tmp")
               for p in tmp_path.iterdir() if p != target)


# ----------------------------------------------------------------------------- full disk


def _train_argv(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "-q", "--image-dir", str(data_dir / "micrographs"), "--coords-file",
            str(data_dir / "labels" / "coordinates.json"), "--output-dir", str(out),
            *TINY_TRAIN, *extra]


def _check_experiment_is_consistent(out: Path) -> list[str]:
    """Whatever a failed run left must be trustworthy: every model file loads, every JSON
    parses, no temporary file is left, and the root metrics list only stages whose model is
    there. Returns the completed stages."""
    assert _leftovers(out) == []
    for model in out.rglob("*.pt"):
        if model.name != "checkpoint.pt":
            load_model(model)
        else:
            torch.load(model, map_location="cpu", weights_only=True)
    for js in out.rglob("*.json"):
        json.loads(js.read_text())
    stages = []
    if (out / "metrics.json").exists():
        stages = [s["stage"] for s in json.loads((out / "metrics.json").read_text())["stages"]]
    for s in stages:
        assert load_model(out / s / "model.pt").stage == s
    return stages


@pytest.mark.slow
def test_disk_full_at_a_stage_model_keeps_earlier_stages_and_resume_finishes(
        tiny_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "exp"
    real_write = modelfile._write_durably
    failed = []

    def full_disk_at_stage_1(path, data):
        name = str(path)
        if f"{SELFTRAIN}{os.sep}.model.pt." in name:
            Path(path).write_bytes(b"PK\x03\x04 the first bytes of a model")
            failed.append(name)
            raise _enospc(name)
        return real_write(path, data)

    monkeypatch.setattr(modelfile, "_write_durably", full_disk_at_stage_1)
    code = cli.main(_train_argv(tiny_data.output_dir, out))
    _, err = capsys.readouterr()
    assert code == 2, err
    assert failed, "the fault was never injected"
    line = _one_error_line(err, "train")
    assert "no space left" in line and str(out / SELFTRAIN / "model.pt") in line, line

    assert _check_experiment_is_consistent(out) == [SUPERVISED]
    assert not (out / SELFTRAIN / "model.pt").exists()
    assert not (out / "best_model.pt").exists() and not (out / "final_model.pt").exists()
    stage0 = (out / SUPERVISED / "model.pt").read_bytes()

    monkeypatch.setattr(modelfile, "_write_durably", real_write)  # space freed
    code = cli.main(["train", "-q", "--output-dir", str(out), "--resume"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert _check_experiment_is_consistent(out) == [SUPERVISED, SELFTRAIN]
    assert (out / SUPERVISED / "model.pt").read_bytes() == stage0  # completed: not redone
    for name in ("best_model.pt", "final_model.pt"):
        load_model(out / name)


def test_disk_full_while_caching_micrographs_leaves_nothing(tiny_data, tmp_path, monkeypatch,
                                                            capsys):
    """Before config.json exists a failed run removes what it made, so a plain rerun (no
    --resume, no --overwrite) is not refused as an existing experiment."""
    import numpy as np

    out = tmp_path / "exp"
    real_save = np.save
    calls = []

    def full_disk_at_second_image(file, arr, *args, **kwargs):
        calls.append(file)
        if len(calls) == 2:
            raise _enospc(getattr(file, "name", file))
        return real_save(file, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", full_disk_at_second_image)
    code = cli.main(_train_argv(tiny_data.output_dir, out))
    _, err = capsys.readouterr()
    assert code == 2, err
    line = _one_error_line(err, "train")
    assert "no space left" in line and str(out / "cache") in line, line
    assert not out.exists()


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory) -> Path:
    """A valid model file with random weights: enough to exercise picking's outputs."""
    from selfpick.config import Config
    from selfpick.model.modelfile import save_model
    from selfpick.model.unet import UNet

    cfg = Config()
    cfg.update({"depth": 2, "width": 8, "downsample": 2.0, "particle_diameter": 24.0})
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("untrained") / "model.pt"
    save_model(path, UNet.from_config(cfg.model), cfg, 24.0, 2.0, 0.5)
    return path


def _pick_argv(model: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return ["pick", "-q", "--model", str(model), "--images", str(images), "--output", str(out),
            "--device", "cpu", "--workers", "0", *extra]


def test_disk_full_while_picking_leaves_no_half_written_coordinate_file(
        untrained_model, tiny_data, tmp_path, monkeypatch, capsys):
    from selfpick.io.formats import relion_star

    model = untrained_model
    out = tmp_path / "picks"
    real_write = relion_star._write_text  # where the per-micrograph files are written
    written = []

    def full_disk_at_second_micrograph(path, text):
        written.append(Path(path))
        if len(written) == 2:
            Path(path).write_text(text[: len(text) // 2])
            raise _enospc(path)
        return real_write(path, text)

    monkeypatch.setattr(relion_star, "_write_text", full_disk_at_second_micrograph)
    code = cli.main(_pick_argv(model, tiny_data.output_dir / "micrographs", out))
    _, err = capsys.readouterr()
    assert code == 2, err
    line = _one_error_line(err, "pick")
    assert "no space left" in line and "sim_001_autopick.star" in line, line
    # The first micrograph's file is complete, the second's absent, no index or summary yet.
    assert sorted(p.name for p in out.iterdir()) == ["sim_000_autopick.star"]
    assert "_rlnCoordinateX" in (out / "sim_000_autopick.star").read_text()

    monkeypatch.setattr(relion_star, "_write_text", real_write)  # space freed
    code = cli.main(_pick_argv(model, tiny_data.output_dir / "micrographs", out,
                               "--skip-existing"))
    _, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads((out / "pick_summary.json").read_text())
    assert summary["n_skipped"] == 1 and summary["n_micrographs"] == 3
    assert len(list(out.glob("*_autopick.star"))) == 4 and (out / "autopick.star").is_file()


# ----------------------------------------------------------------------------- a real small disk


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a given size, mounted below tmp_path; skips where mounting is not allowed
    (not root, no CAP_SYS_ADMIN in a container, not Linux)."""
    mounted = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        if shutil.which("mount") is None or not sys.platform.startswith("linux"):
            pytest.skip("no mount command on this system")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs",
                            str(point)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode})")
        mounted.append(point)
        return point

    def resize(point: Path, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(point)], check=True)

    mount.resize = resize
    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("size", ["256k", "1m"])
def test_training_onto_a_real_full_disk(small_disk, tiny_data, capsys, size):
    """The tiny experiment needs about 1.2 MB, more while files are replaced: 256 KiB runs
    out while caching the micrographs (before config.json: nothing may be left), 1 MiB during
    self-training. The run must stop with the message and leave a consistent experiment,
    which --resume (or a plain rerun) finishes once there is room."""
    disk = small_disk(size)
    out = disk / "exp"
    code = cli.main(_train_argv(tiny_data.output_dir, out))
    _, err = capsys.readouterr()
    assert code == 2, err
    line = _one_error_line(err, "train")
    assert "no space left" in line and str(out) in line, line
    _check_experiment_is_consistent(out)
    if not (out / "config.json").exists():
        assert not out.exists()

    small_disk.resize(disk, "16m")
    code = cli.main(["train", "-q", "--output-dir", str(out), "--resume"]
                    if (out / "config.json").exists() else _train_argv(tiny_data.output_dir, out))
    _, err = capsys.readouterr()
    assert code == 0, err
    assert _check_experiment_is_consistent(out) == [SUPERVISED, SELFTRAIN]
    load_model(out / "best_model.pt")


def _fill(disk: Path) -> None:
    with open(disk / "filler", "wb", buffering=0) as fh:
        with pytest.raises(OSError):
            while True:
                fh.write(b"\0" * 4096)


def test_training_onto_a_disk_that_is_already_full(small_disk, tiny_data, capsys):
    """The first write to fail is a line of training.log: no "--- Logging error ---"
    traceback, the one message, and nothing left behind."""
    disk = small_disk("64k")
    _fill(disk)
    out = disk / "exp"
    code = cli.main(_train_argv(tiny_data.output_dir, out))
    _, err = capsys.readouterr()
    assert code == 2, err
    line = _one_error_line(err, "train")
    assert "no space left" in line and str(out) in line, line
    assert not out.exists()
    assert _leftovers(disk) == []


def test_picking_onto_a_real_full_disk(small_disk, untrained_model, tiny_data, capsys):
    disk = small_disk("64k")
    _fill(disk)
    out = disk / "picks"
    code = cli.main(_pick_argv(untrained_model, tiny_data.output_dir / "micrographs", out))
    _, err = capsys.readouterr()
    assert code == 2, err
    line = _one_error_line(err, "pick")
    assert "no space left" in line and str(out) in line, line
    assert _leftovers(disk) == []
    assert not out.exists() or list(out.iterdir()) == []


def test_many_processes_may_check_the_same_output_folder_at_once(tmp_path):
    # torchrun ranks and SLURM array tasks all start by checking the shared output folder.
    from concurrent.futures import ThreadPoolExecutor

    from selfpick.utils.atomic import ensure_writable_dir

    folder = tmp_path / "picks"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: ensure_writable_dir(folder), range(400)))
    assert list(folder.iterdir()) == []
