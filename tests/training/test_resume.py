"""--resume after a hard kill (SIGKILL) and after Ctrl-C (SIGINT) in the middle of a stage.

The real thing: ``python -m selfpick train`` in a subprocess, killed while
``iteration_1_selftrain/checkpoint.pt`` exists (i.e. between two epochs of a self-training
stage), then resumed. Checked against an uninterrupted run with the same seed and settings:
completed stages are not touched, at most the interrupted epoch is repeated, and the final
metrics and weights are identical.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfpick.cli import main as cli_main
from selfpick.model.modelfile import load_model

SUPERVISED, SELFTRAIN = "iteration_0_supervised", "iteration_1_selftrain"
RETRAIN_EPOCHS = 4
# Long enough to stop a run between two epochs, short enough to keep the module well under
# a minute: 128 crops of 64 px are about a third of a second per epoch on 2 cores.
CROPS_PER_EPOCH = 128
TIMEOUT = 180  # seconds; only reached when something hangs


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _flags(data_dir: Path, out: Path) -> list[str]:
    """The tiny_config settings (conftest) as command-line flags."""
    return [
        "--image-dir", str(data_dir / "micrographs"),
        "--coords-file", str(data_dir / "labels" / "coordinates.json"),
        "--output-dir", str(out),
        "--particle-diameter", "24", "--downsample", "2", "--depth", "2", "--width", "8",
        "--crop-size", "64", "--crops-per-epoch", str(CROPS_PER_EPOCH), "--batch-size", "4",
        "--initial-epochs", "3", "--retrain-epochs", str(RETRAIN_EPOCHS),
        "--self-training-iterations", "1", "--self-train-complete-labels",
        "--val-fraction", "0.25", "--seed", "0",
        "--deterministic", "--device", "cpu",
    ]


class _Run:
    """``python -m selfpick train ...`` in the background, output in files (no pipe stalls)."""

    def __init__(self, args: list[str], log_dir: Path, tag: str):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout = log_dir / f"{tag}.out"
        self.stderr = log_dir / f"{tag}.err"
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            # Ctrl-C must reach the run even when the tests themselves run in the background
            # of a non-interactive shell (nohup ... &), which starts children with SIGINT
            # ignored; Python then never turns SIGINT into KeyboardInterrupt.
            self.proc = subprocess.Popen([sys.executable, "-m", "selfpick", "train", *args],
                                         stdout=out, stderr=err, env=env, cwd=log_dir,
                                         preexec_fn=_default_sigint)

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"selfpick train did not finish in {TIMEOUT} s:\n{self.output()}")

    def finish_ok(self) -> None:
        rc = self.wait()
        assert rc == 0, self.output()

    def wait_for(self, path: Path) -> None:
        """Poll until ``path`` exists while the process is still running."""
        deadline = time.monotonic() + TIMEOUT
        while not path.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"training ended (rc {self.proc.returncode}) before {path.name} "
                            f"appeared:\n{self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{path} did not appear within {TIMEOUT} s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _hashes(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                         p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _numbers(obj):
    """metrics.json without wall-clock timings."""
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj]
    return obj


def _runs_in_log(log: str) -> list[list[str]]:
    """training.log split into the runs that appended to it (each starts 'selfpick train')."""
    runs: list[list[str]] = []
    for line in log.splitlines():
        if re.search(r" INFO selfpick train( |$)", line):
            runs.append([])
        if runs:
            runs[-1].append(line)
    return runs


def _epochs(lines: list[str], stage: str) -> list[int]:
    pat = re.compile(rf"{stage} epoch (\d+)/\d+:")
    return [int(m.group(1)) for line in lines if (m := pat.search(line))]


def _checkpoint(path: Path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["stage"] == SELFTRAIN
    return ckpt


def _assert_same_as_reference(out: Path, ref: Path) -> None:
    got = json.loads((out / "metrics.json").read_text())
    want = json.loads((ref / "metrics.json").read_text())
    assert _numbers(got) == _numbers(want)
    a = load_model(out / "final_model.pt").model.state_dict()
    b = load_model(ref / "final_model.pt").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (json.loads((out / "config.json").read_text())["split"]
            == json.loads((ref / "config.json").read_text())["split"])


def _check_interrupted_log(out: Path, ckpt_epoch: int) -> None:
    """First run: epochs 1..n; resumed run: ckpt_epoch+1..end; at most one epoch twice."""
    runs = _runs_in_log((out / "training.log").read_text())
    assert len(runs) == 2, "expected the interrupted and the resumed run in training.log"
    first, second = (_epochs(r, SELFTRAIN) for r in runs)
    n = len(first)
    assert first == list(range(1, n + 1))
    # The checkpoint holds the last epoch whose checkpoint was written: the last logged one,
    # or the one before when the run stopped between logging an epoch and saving it.
    assert ckpt_epoch in (n, n - 1) and ckpt_epoch >= 1
    assert second == list(range(ckpt_epoch + 1, RETRAIN_EPOCHS + 1))
    counts = collections.Counter(first + second)
    assert set(counts) == set(range(1, RETRAIN_EPOCHS + 1))
    repeated = {e for e, c in counts.items() if c > 1}
    assert max(counts.values()) <= 2 and repeated <= {ckpt_epoch + 1}
    # The completed supervised stage is not trained again.
    assert _epochs(runs[1], SUPERVISED) == []
    assert _epochs(runs[0], SUPERVISED) == [1, 2, 3]
    assert any("resuming" in line for line in runs[1])


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """An uninterrupted run with the same settings, started at once and awaited on use (it
    runs alongside the interrupted run of the first test)."""
    base = tmp_path_factory.mktemp("resume_reference")
    run = _Run(_flags(tiny_data.output_dir, base / "exp"), base, "reference")
    state = {"done": False}

    def result() -> Path:
        if not state["done"]:
            run.finish_ok()
            state["done"] = True
        return base / "exp"

    yield result
    run.stop()


@pytest.mark.slow
def test_resume_after_sigkill_in_the_middle_of_a_selftraining_stage(tiny_data, tmp_path,
                                                                    reference):
    out = tmp_path / "exp"
    flags = _flags(tiny_data.output_dir, out)
    run = _Run(flags, tmp_path, "killed")
    try:
        run.wait_for(out / SELFTRAIN / "checkpoint.pt")
        run.proc.send_signal(signal.SIGKILL)
        assert run.wait() == -signal.SIGKILL
    finally:
        run.stop()
    assert not (out / SELFTRAIN / "model.pt").exists(), "killed too late: the stage had ended"
    ckpt_epoch = int(_checkpoint(out / SELFTRAIN / "checkpoint.pt")["epoch"])
    assert 1 <= ckpt_epoch < RETRAIN_EPOCHS
    # What a completed stage consists of, and the experiment's settings: must not change.
    kept = {**{f"{SUPERVISED}/{k}": v for k, v in _hashes(out / SUPERVISED).items()},
            "config.json": _hashes(out)["config.json"]}
    root_before = json.loads((out / "metrics.json").read_text())
    assert [s["stage"] for s in root_before["stages"]] == [SUPERVISED]

    resumed = _Run([*flags, "--resume"], tmp_path, "resumed")
    resumed.finish_ok()

    after = {**{f"{SUPERVISED}/{k}": v for k, v in _hashes(out / SUPERVISED).items()},
             "config.json": _hashes(out)["config.json"]}
    assert after == kept  # same content and never rewritten
    root = json.loads((out / "metrics.json").read_text())
    assert root["stages"][0] == root_before["stages"][0]
    assert [s["stage"] for s in root["stages"]] == [SUPERVISED, SELFTRAIN]
    assert not (out / SELFTRAIN / "checkpoint.pt").exists()
    _check_interrupted_log(out, ckpt_epoch)
    _assert_same_as_reference(out, reference())


@pytest.mark.slow
def test_ctrl_c_keeps_the_last_checkpoint_and_resume_completes(tiny_data, tmp_path, reference):
    out = tmp_path / "exp"
    flags = _flags(tiny_data.output_dir, out)
    run = _Run(flags, tmp_path, "interrupted")
    try:
        run.wait_for(out / SELFTRAIN / "checkpoint.pt")
        run.proc.send_signal(signal.SIGINT)
        rc = run.wait()
    finally:
        run.stop()
    # selfpick.cli.main turns KeyboardInterrupt into exit code 130, with one line.
    assert rc == 130, run.output()
    assert "interrupted" in run.stderr.read_text()
    assert "Traceback" not in run.stderr.read_text()
    stage = out / SELFTRAIN
    assert not (stage / "model.pt").exists(), "interrupted too late: the stage had ended"
    ckpt = _checkpoint(stage / "checkpoint.pt")  # intact and loadable
    ckpt_epoch = int(ckpt["epoch"])
    assert 1 <= ckpt_epoch < RETRAIN_EPOCHS
    assert len(ckpt["history"]) == ckpt_epoch
    assert not list(out.rglob("*.tmp")), "an interrupted atomic write left a temporary file"

    resumed = _Run([*flags, "--resume"], tmp_path, "resumed")
    resumed.finish_ok()
    _check_interrupted_log(out, ckpt_epoch)
    _assert_same_as_reference(out, reference())


def test_resume_with_only_the_output_dir_of_a_finished_experiment_changes_nothing(
        tiny_experiment, tmp_path, capsys):
    # The documented short form, `selfpick train --output-dir exp --resume`: the experiment's
    # own settings (config.json) apply; flags not given must not fall back to the defaults
    # and retrain or extend a finished experiment.
    exp = tmp_path / "exp"
    shutil.copytree(tiny_experiment.output_dir, exp)
    stages_before = _hashes(exp / SUPERVISED) | {
        f"s1/{k}": v for k, v in _hashes(exp / SELFTRAIN).items()}
    metrics_before = _numbers(json.loads((exp / "metrics.json").read_text()))
    rc = cli_main(["train", "--output-dir", str(exp), "--resume"])
    assert rc == 0, capsys.readouterr().err
    assert not (exp / "iteration_2_selftrain").exists()
    assert _numbers(json.loads((exp / "metrics.json").read_text())) == metrics_before
    assert (_hashes(exp / SUPERVISED) | {f"s1/{k}": v for k, v in _hashes(exp / SELFTRAIN).items()}
            == stages_before)
