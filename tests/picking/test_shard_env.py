"""torchrun-launched picking: each rank (``RANK``/``WORLD_SIZE``) picks the share that
``--shard RANK/WORLD_SIZE`` would, so the two ways of splitting a data set are interchangeable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import starfile

from selfpick.io.micrographs import micrograph_name
from selfpick.picking.pick import PickOptions, pick


@pytest.fixture(scope="module")
def model_path(tiny_experiment) -> Path:
    return tiny_experiment.output_dir / "best_model.pt"


def _index_names(path: Path) -> list[str]:
    table = starfile.read(path, always_dict=True, parse_as_string=["rlnMicrographName"])
    return [micrograph_name(p) for p in table["coordinate_files"]["rlnMicrographName"]]


def _pick(model_path, mics, out, shard=None):
    opts = PickOptions(device="cpu", workers=0, shard=shard)
    return pick(model_path, mics, out, opts, progress=False)


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("world", [2, 3])
def test_torchrun_ranks_pick_the_same_shares_as_shard_flags(model_path, tiny_data, tmp_path,
                                                            no_torchrun_env, world):
    mics = tiny_data.output_dir / "micrographs"
    by_env, by_flag = tmp_path / "env", tmp_path / "flag"
    for rank in range(world):
        no_torchrun_env.setenv("RANK", str(rank))
        no_torchrun_env.setenv("WORLD_SIZE", str(world))
        _pick(model_path, mics, by_env)
        no_torchrun_env.delenv("RANK")
        no_torchrun_env.delenv("WORLD_SIZE")
        _pick(model_path, mics, by_flag, shard=(rank, world))
    shares = []
    for rank in range(world):
        tag = f"_shard{rank}of{world}"
        env_names = _index_names(by_env / f"autopick{tag}.star")
        assert env_names == _index_names(by_flag / f"autopick{tag}.star")
        summary = json.loads((by_env / f"pick_summary{tag}.json").read_text())
        assert summary["shard"] == [rank, world]
        assert summary["n_micrographs"] == len(env_names)
        shares.append(set(env_names))
    # Disjoint and complete, and every per-micrograph file is identical either way.
    all_names = {micrograph_name(p) for p in tiny_data.micrographs}
    assert sum(len(s) for s in shares) == len(all_names) and set().union(*shares) == all_names
    for name in all_names:
        f = f"{name}_autopick.star"
        assert (by_env / f).read_text() == (by_flag / f).read_text()


def test_shard_flag_wins_over_the_environment(model_path, tiny_data, tmp_path,
                                              no_torchrun_env):
    no_torchrun_env.setenv("RANK", "1")
    no_torchrun_env.setenv("WORLD_SIZE", "2")
    out = tmp_path / "picks"
    _pick(model_path, tiny_data.output_dir / "micrographs", out, shard=(0, 3))
    assert (out / "autopick_shard0of3.star").is_file()
    assert not (out / "autopick_shard1of2.star").exists()


def test_a_single_process_world_picks_everything(model_path, tiny_data, tmp_path,
                                                 no_torchrun_env):
    no_torchrun_env.setenv("RANK", "0")
    no_torchrun_env.setenv("WORLD_SIZE", "1")
    out = tmp_path / "picks"
    summary = _pick(model_path, tiny_data.output_dir / "micrographs", out)
    assert summary.n_micrographs == len(tiny_data.micrographs)
    assert (out / "autopick.star").is_file()


@pytest.mark.slow
def test_picking_launched_by_torchrun(model_path, tiny_data, tmp_path):
    """The real launcher: ``torchrun --nproc_per_node 2 -m selfpick pick ...``."""
    out = tmp_path / "picks"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "--", "selfpick", "pick", "-q", "--model", str(model_path),
         "--images", str(tiny_data.output_dir / "micrographs"), "--output", str(out),
         "--device", "cpu", "--workers", "0"],
        capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    first = _index_names(out / "autopick_shard0of2.star")
    second = _index_names(out / "autopick_shard1of2.star")
    names = {micrograph_name(p) for p in tiny_data.micrographs}
    assert not set(first) & set(second) and set(first) | set(second) == names
    assert {p.name[: -len("_autopick.star")] for p in out.glob("*_autopick.star")} == names
