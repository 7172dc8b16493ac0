"""Picking end to end through the library: accuracy, every output format, thresholds, flips,
edge margins and shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from selfpick.errors import SelfpickError
from selfpick.evaluation.metrics import particle_metrics
from selfpick.io import coords as coordio
from selfpick.io.micrographs import micrograph_name
from selfpick.model.modelfile import load_model
from selfpick.picking.pick import (
    KEEP_ALL_FLOOR,
    PickOptions,
    parse_shard,
    pick,
    pick_micrograph,
    select_shard,
    shard_from_environment,
)

# Largest change of x or of y a format may make when read back: integer corners (.box) and
# whole pixels (CryoPPP) round to 0.5 px; Topaz keeps 2 decimals; the rest keep 6.
TOLERANCE = {"box": 0.5 + 1e-6, "cryoppp": 0.5 + 1e-6, "topaz": 0.005 + 1e-6}
SCORED = {"star", "cbox", "topaz", "csv", "json"}


@pytest.fixture(scope="module")
def model_path(tiny_experiment) -> Path:
    return tiny_experiment.output_dir / "best_model.pt"


@pytest.fixture(scope="module")
def saved(model_path):
    return load_model(model_path, inference=True)


@pytest.fixture(scope="module")
def reference(model_path, tiny_data, tmp_path_factory) -> dict[str, pd.DataFrame]:
    """``pick`` of every tiny micrograph in the full-precision CSV format: what every other
    output must reproduce. (Made by ``pick`` itself, with its own thread settings: the
    model's threshold is the score of one of its validation picks, so a pick can sit exactly
    at the threshold, where float rounding of another thread count would decide.)"""
    out = tmp_path_factory.mktemp("reference")
    pick(model_path, tiny_data.micrographs, out, _opts(fmt="csv"), progress=False)
    table = coordio.read_coordinates(out / "picks.csv", "csv", allow_empty=True)
    names = [micrograph_name(p) for p in tiny_data.micrographs]
    return {n: table[table["micrograph"] == n].reset_index(drop=True) for n in names}


def test_pick_agrees_with_pick_micrograph(saved, reference, tiny_data):
    # The folder pipeline and the one-micrograph function find the same particles; only
    # picks within float rounding of the threshold may differ.
    threshold = saved.threshold
    for p in tiny_data.micrographs:
        one = pick_micrograph(saved, p)
        want = reference[micrograph_name(p)]
        sure = [t[t["score"] >= threshold + 1e-4].reset_index(drop=True) for t in (one, want)]
        _assert_same_centres(sure[0], sure[1], 1e-3, True, micrograph_name(p))
        borderline = sum(int((t["score"] < threshold + 1e-4).sum()) for t in (one, want))
        assert abs(len(one) - len(want)) <= borderline


def _opts(**kw) -> PickOptions:
    kw.setdefault("device", "cpu")
    kw.setdefault("workers", 0)  # in-process: 2 shared cores, and faster for 4 tiny images
    return PickOptions(**kw)


def _assert_same_centres(got: pd.DataFrame, want: pd.DataFrame, tol: float, scores: bool,
                         label: str) -> None:
    """Same number of picks, each expected centre matched one-to-one within ``tol`` in x and y."""
    assert len(got) == len(want), f"{label}: {len(got)} picks read back, {len(want)} picked"
    if len(want) == 0:
        return
    g = got[["x", "y"]].to_numpy()
    w = want[["x", "y"]].to_numpy()
    d = np.abs(w[:, None, :] - g[None, :, :]).max(-1)  # larger of |dx| and |dy|
    nearest = d.argmin(axis=1)
    assert len(set(nearest.tolist())) == len(w), f"{label}: picks do not pair one-to-one"
    worst = d[np.arange(len(w)), nearest].max()
    assert worst <= tol, f"{label}: a centre moved by {worst:.4f} px (allowed {tol})"
    if scores:
        np.testing.assert_allclose(got["score"].to_numpy()[nearest], want["score"].to_numpy(),
                                   rtol=1e-4, atol=1e-6, err_msg=label)


# ------------------------------------------------------------------------------ accuracy


@pytest.fixture(scope="module")
def trained_picker(tiny_data, tmp_path_factory) -> Path:
    """A tiny model trained long enough to be accurate (~5 s on one core).

    The shared ``tiny_experiment`` is trained for 2 epochs only, to test plumbing: its
    precision on these micrographs is about 0.7, which says nothing about the picker. Six
    epochs of 32 crops give a model whose picks can be held to a real standard.
    """
    from conftest import tiny_config

    from selfpick.training.experiment import run_training

    out = tmp_path_factory.mktemp("picker") / "exp"
    run_training(tiny_config(tiny_data.output_dir, out, initial_epochs=6, crops_per_epoch=32,
                             self_training_iterations=0), progress=False)
    return out / "best_model.pt"


def _assert_recovers_the_particles(saved, tiny_data) -> None:
    """Precision and recall above 0.85 at the model's threshold, matching within a quarter
    of the particle diameter: a pick must sit on the particle, not next to it."""
    items = []
    for path in tiny_data.micrographs:
        picks = pick_micrograph(saved, path)
        name = micrograph_name(path)
        items.append((name, picks[["x", "y"]].to_numpy(), picks["score"].to_numpy(),
                      tiny_data.truth[name]))
    m = particle_metrics(items, radius=saved.particle_diameter / 4, threshold=saved.threshold)
    assert m["recall"] > 0.85, m
    assert m["precision"] > 0.85, m


@pytest.mark.slow
def test_trained_model_recovers_the_simulated_particles(trained_picker, tiny_data):
    _assert_recovers_the_particles(load_model(trained_picker), tiny_data)


@pytest.mark.slow
def test_a_network_with_input_stride_2_is_chosen_trained_and_picks_as_well(tiny_data, tmp_path):
    # Particles 24 px across with a 12-px working grid: the automatic stride is 2, so the
    # micrographs stay at full size (24 px per particle) and the network sees them through
    # 2x2 blocks. The model file must say so, and picking must be as good as at stride 1.
    from conftest import tiny_config

    from selfpick.training.experiment import run_training

    out = tmp_path / "exp"
    run_training(tiny_config(tiny_data.output_dir, out, downsample=0.0, target_particle_px=12,
                             initial_epochs=6, crops_per_epoch=32, self_training_iterations=0),
                 progress=False)
    saved = load_model(out / "best_model.pt")
    assert saved.config.model.input_stride == 2
    assert saved.downsample == 1.0
    assert saved.model.multiple == 2 * 2**saved.config.model.depth
    _assert_recovers_the_particles(saved, tiny_data)


def test_tiny_model_puts_a_candidate_on_nearly_every_particle(saved, tiny_data):
    # Even the barely trained shared model has a local maximum on almost every particle
    # (ranking, not localisation, is what 2 epochs lack). All candidates (threshold 0) within
    # a quarter diameter: checks the whole chain of coordinate mappings (downsampling, model
    # grid, sub-pixel peaks, back to original pixels) independently of the model's quality.
    items = []
    for path in tiny_data.micrographs:
        picks = pick_micrograph(saved, path, threshold=0.0)
        name = micrograph_name(path)
        items.append((name, picks[["x", "y"]].to_numpy(), picks["score"].to_numpy(),
                      tiny_data.truth[name]))
    m = particle_metrics(items, radius=saved.particle_diameter / 4, threshold=None)
    assert m["recall"] > 0.95, m


# ------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("fmt", coordio.FORMATS)
def test_every_output_format_reads_back_to_the_picked_centres(fmt, model_path, tiny_data,
                                                              reference, tmp_path):
    out = tmp_path / fmt
    summary = pick(model_path, tiny_data.micrographs, out, _opts(fmt=fmt), progress=False)
    assert summary.n_micrographs == len(tiny_data.micrographs)
    assert summary.n_picks == sum(len(t) for t in reference.values())
    ext = coordio.FORMAT_EXTENSIONS[fmt]
    tol = TOLERANCE.get(fmt, 1e-3)
    if fmt in ("box", "cbox", "cryoppp"):
        tables = {name: coordio.read_coordinates(out / f"{name}{ext}", fmt, allow_empty=True)
                  for name in reference}
    else:
        # star: through RELION's index (autopick.star -> <name>_autopick.star files);
        # csv/topaz/json: the one combined file.
        source = out / ("autopick.star" if fmt == "star" else f"picks{ext}")
        table = coordio.read_coordinates(source, fmt, allow_empty=True)
        matched, report = coordio.match_coordinates(table, list(reference))
        assert not report.unmatched_coord_names
        tables = {name: matched.get(name, coordio.empty_picks()) for name in reference}
    for name, want in reference.items():
        _assert_same_centres(tables[name], want, tol, fmt in SCORED, f"{fmt}/{name}")


def test_star_output_is_relion_autopick_layout(model_path, tiny_data, reference, tmp_path):
    # Read with starfile directly, not through selfpick's reader: what RELION would see.
    out = tmp_path / "star"
    pick(model_path, tiny_data.micrographs, out, _opts(fmt="star"), progress=False)
    index = starfile.read(out / "autopick.star", always_dict=True,
                          parse_as_string=["rlnMicrographName", "rlnMicrographCoordinates"])
    assert list(index) == ["coordinate_files"]
    rows = index["coordinate_files"]
    assert [Path(p).name for p in rows["rlnMicrographName"]] == \
        [p.name for p in sorted(tiny_data.micrographs)]
    for name, want in reference.items():
        per_mic = out / f"{name}_autopick.star"
        assert str(per_mic) in rows["rlnMicrographCoordinates"].tolist()
        df = starfile.read(per_mic, always_dict=True)[""]
        assert {"rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit"} <= set(df)
        np.testing.assert_allclose(df["rlnCoordinateX"], want["x"], atol=1e-5)
        np.testing.assert_allclose(df["rlnCoordinateY"], want["y"], atol=1e-5)
        np.testing.assert_allclose(df["rlnAutopickFigureOfMerit"], want["score"], atol=1e-5)


def test_single_file_star_names_each_micrograph(model_path, tiny_data, reference, tmp_path):
    out = tmp_path / "single"
    pick(model_path, tiny_data.micrographs, out, _opts(fmt="star", single_file=True),
         progress=False)
    table = coordio.read_coordinates(out / "picks.star", "star")
    assert set(table["micrograph"]) == {n for n, t in reference.items() if len(t)}
    for name, want in reference.items():
        _assert_same_centres(table[table["micrograph"] == name], want, 1e-3, True, name)


# ------------------------------------------------------------------------------ options


def test_threshold_zero_keeps_more_picks_all_scored(model_path, tiny_data, reference, tmp_path,
                                                    saved):
    out = tmp_path / "all"
    pick(model_path, tiny_data.micrographs, out, _opts(fmt="csv", threshold=0.0), progress=False)
    table = coordio.read_coordinates(out / "picks.csv", "csv")
    n_default = sum(len(t) for t in reference.values())
    assert len(table) > n_default
    scores = table["score"].to_numpy()
    assert np.isfinite(scores).all() and (scores >= KEEP_ALL_FLOOR - 1e-9).all()
    # The default picks are exactly the candidates at or above the model's threshold.
    for name, want in reference.items():
        mine = table[(table["micrograph"] == name) & (table["score"] >= saved.threshold)]
        _assert_same_centres(mine, want, 1e-3, True, name)


def test_explicit_threshold_is_respected(model_path, tiny_data, reference, tmp_path):
    all_scores = np.concatenate([t["score"].to_numpy() for t in reference.values()])
    t = float(np.median(all_scores))
    out = tmp_path / "thr"
    summary = pick(model_path, tiny_data.micrographs, out, _opts(fmt="csv", threshold=t),
                   progress=False)
    table = coordio.read_coordinates(out / "picks.csv", "csv")
    assert (table["score"] >= t - 1e-6).all()
    assert summary.n_picks == int((all_scores >= t).sum())


def test_flip_y_writes_height_minus_one_minus_y(model_path, tiny_data, reference, tmp_path):
    from selfpick.io.micrographs import read_micrograph

    out = tmp_path / "flip"
    pick(model_path, tiny_data.micrographs, out, _opts(fmt="csv", flip_y=True), progress=False)
    table = coordio.read_coordinates(out / "picks.csv", "csv")
    for path in tiny_data.micrographs:
        name = micrograph_name(path)
        height = read_micrograph(path)[0].shape[0]
        want = reference[name].copy()
        want["y"] = height - 1 - want["y"]
        _assert_same_centres(table[table["micrograph"] == name], want, 1e-3, True, name)


def test_edge_margin_is_respected_in_original_pixels(model_path, tiny_data, tmp_path):
    margin = 30.0
    out = tmp_path / "edge"
    pick(model_path, tiny_data.micrographs, out,
         _opts(fmt="csv", threshold=0.0, edge_margin=margin), progress=False)
    table = coordio.read_coordinates(out / "picks.csv", "csv")
    assert len(table) > 0
    n = 256  # tiny micrographs are 256 x 256
    assert (table["x"] >= margin).all() and (table["x"] <= n - 1 - margin).all()
    assert (table["y"] >= margin).all() and (table["y"] <= n - 1 - margin).all()


def test_the_models_own_edge_margin_applies_unless_overridden(model_path, tiny_data, tmp_path,
                                                             saved):
    margin = saved.edge_margin
    assert margin > 0  # learned from the tiny labels (the simulator keeps a radius inside)
    n = 256
    tables = {}
    for label, kw in (("model", {}), ("none", {"edge_margin": 0.0})):
        pick(model_path, tiny_data.micrographs, tmp_path / label,
             _opts(fmt="csv", threshold=0.0, **kw), progress=False)
        tables[label] = coordio.read_coordinates(tmp_path / label / "picks.csv", "csv")
    t = tables["model"]
    assert len(t) > 0
    assert ((t["x"] >= margin) & (t["x"] <= n - 1 - margin)).all()
    assert ((t["y"] >= margin) & (t["y"] <= n - 1 - margin)).all()
    u = tables["none"]
    near = (np.minimum(u["x"], n - 1 - u["x"]) < margin) | (np.minimum(u["y"], n - 1 - u["y"])
                                                           < margin)
    assert near.any()  # with every candidate kept, some lie in the margin
    # The margin drops candidates before the suppression, so the picks inside mostly stay the
    # same (a candidate in the margin no longer suppresses a neighbour just inside, which may
    # then suppress another).
    key = lambda df: set(zip(df["micrograph"], df["x"].round(2), df["y"].round(2)))  # noqa: E731
    assert len(key(u[~near]) & key(t)) >= 0.9 * int((~near).sum())


def test_min_distance_is_respected_in_original_pixels(model_path, tiny_data, tmp_path, saved):
    out = tmp_path / "md"
    pick(model_path, tiny_data.micrographs, out, _opts(fmt="csv", threshold=0.0, min_distance=0.8),
         progress=False)
    table = coordio.read_coordinates(out / "picks.csv", "csv")
    limit = 0.8 * saved.particle_diameter
    for _, g in table.groupby("micrograph"):
        xy = g[["x", "y"]].to_numpy()
        d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
        # The distance holds on the model grid; mapping back multiplies by the (exact,
        # isotropic) downsampling factor, so it holds in original pixels too.
        assert d.min() >= limit - 1e-6


# ------------------------------------------------------------------------------ shards


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_shards_cover_every_micrograph_exactly_once(n):
    paths = [Path(f"/data/Movies/mic_{i:03d}.mrc") for i in (7, 1, 4, 0, 6, 2, 5)]
    shares = [select_shard(paths, (i, n)) for i in range(n)]
    flat = [p for share in shares for p in share]
    assert sorted(flat) == sorted(paths)  # every one, none twice
    assert len(flat) == len(set(flat))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced
    assert select_shard(paths, None) == paths


def test_shard_order_does_not_depend_on_the_input_order():
    # Each machine lists the files itself; the split must agree whatever order they come in.
    paths = [Path(f"mic_{i}.mrc") for i in range(6)]
    assert select_shard(paths, (1, 3)) == select_shard(list(reversed(paths)), (1, 3))


@pytest.mark.parametrize("text", ["2/2", "3/2", "-1/2", "0/0", "a/b", "1", "1/2/3"])
def test_bad_shard_specifications_are_refused(text):
    with pytest.raises(SelfpickError, match="--shard"):
        parse_shard(text)


def test_shard_parsing_and_torchrun_environment(monkeypatch):
    assert parse_shard("0/4") == (0, 4)
    assert parse_shard(" 3 / 4 ") == (3, 4)
    assert parse_shard(None) is None and parse_shard("") is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert shard_from_environment() == (2, 4)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert shard_from_environment() is None


def test_picking_leaves_one_core_to_its_threads_and_restores_the_setting(
        model_path, tiny_data, tmp_path, monkeypatch):
    import torch

    from selfpick.picking import pick as pick_module

    seen = []
    real = pick_module.predict_probabilities

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(pick_module, "predict_probabilities", spy)
    monkeypatch.setattr(pick_module.os, "cpu_count", lambda: 4)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        pick(model_path, tiny_data.micrographs, tmp_path / "out", _opts(), progress=False)
        assert seen and set(seen) == {3}  # the network ran on cores - 1 threads
        assert torch.get_num_threads() == 4  # and the caller's setting is back
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("batch_size", [2, 3])
def test_batches_of_micrographs_give_the_same_picks(model_path, tiny_data, reference, tmp_path,
                                                    batch_size):
    out = tmp_path / "batched"
    summary = pick(model_path, tiny_data.micrographs, out,
                   _opts(fmt="csv", batch_size=batch_size), progress=False)
    assert summary.n_micrographs == len(reference)
    table = coordio.read_coordinates(out / "picks.csv", "csv", allow_empty=True)
    for name, want in reference.items():
        got = table[table["micrograph"] == name]
        _assert_same_centres(got, want, 1e-3, True, f"batch {batch_size}/{name}")


@pytest.mark.parametrize("workers", [0, 2])
def test_preprocessing_with_torch_on_the_device_gives_the_same_picks(
        model_path, saved, tiny_data, reference, tmp_path, workers):
    # What a GPU does by default (here on the CPU): read on threads, downsample with torch.
    out = tmp_path / "device"
    summary = pick(model_path, tiny_data.micrographs, out,
                   _opts(fmt="csv", preprocess_on="device", workers=workers, batch_size=2),
                   progress=False)
    assert summary.n_micrographs == len(reference)
    table = coordio.read_coordinates(out / "picks.csv", "csv", allow_empty=True)
    for name, want in reference.items():
        got = table[table["micrograph"] == name].reset_index(drop=True)
        # Float rounding of another FFT may move a pick lying exactly at the threshold.
        sure = [t[t["score"] >= saved.threshold + 1e-4].reset_index(drop=True)
                for t in (got, want)]
        _assert_same_centres(sure[0], sure[1], 1e-3, True, f"device/{name}")


def test_preprocessing_on_the_device_is_chosen_for_gpus_and_refused_where_unsupported(saved):
    import copy
    import dataclasses

    import torch

    from selfpick.picking.pick import _preprocess_on_device

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert _preprocess_on_device("auto", gpu, saved)
    assert not _preprocess_on_device("auto", cpu, saved)
    assert _preprocess_on_device("device", cpu, saved)
    assert not _preprocess_on_device("cpu", gpu, saved)
    with pytest.raises(SelfpickError, match="preprocess-on"):
        _preprocess_on_device("sideways", cpu, saved)
    config = copy.deepcopy(saved.config)
    config.preprocess.downsample_method = "area"
    area = dataclasses.replace(saved, config=config)
    assert not _preprocess_on_device("auto", gpu, area)  # a GPU falls back to the CPU path
    with pytest.raises(SelfpickError, match="area downsampling.*--preprocess-on cpu"):
        _preprocess_on_device("device", gpu, area)


def test_an_unusable_preprocess_choice_is_refused_before_any_output(model_path, tiny_data,
                                                                     tmp_path):
    with pytest.raises(SelfpickError, match="preprocess-on"):
        pick(model_path, tiny_data.micrographs, tmp_path / "out",
             _opts(preprocess_on="sideways"), progress=False)
    assert not (tmp_path / "out").exists()


def test_batch_size_below_one_is_refused(model_path, tiny_data, tmp_path):
    with pytest.raises(SelfpickError, match="batch-size"):
        pick(model_path, tiny_data.micrographs, tmp_path / "out", _opts(batch_size=0),
             progress=False)
    assert not (tmp_path / "out").exists()


def test_batches_keep_one_size_together_and_unreadable_micrographs_alone():
    from selfpick.picking.pick import _batches

    def item(i, shape=None, error=None):
        image = None if error else np.zeros(shape, np.float32)
        return {"index": i, "image": image, "error": error}

    items = [item(0, (4, 4)), item(1, (4, 4)), item(2, error="bad file"), item(3, (4, 4)),
             item(4, (6, 6)), item(5, (6, 6)), item(6, (6, 6))]
    groups = [[it["index"] for it in g] for g in _batches(items, 2)]
    assert groups == [[0, 1], [2], [3], [4, 5], [6]]
    assert [[it["index"] for it in g] for g in _batches(items, 1)] == [[i] for i in range(7)]


def test_the_model_s_views_are_used_and_tta_can_be_changed(model_path, tiny_data, reference,
                                                           saved, tmp_path):
    # Training validated with the default number of views and saved it with the model, so
    # plain picking averages that many; --tta 1 gives other scores, and bad values are
    # refused before any output is made.
    from selfpick.config import Config

    assert saved.tta == Config().pick.tta == 8
    out = tmp_path / "one_view"
    pick(model_path, tiny_data.micrographs, out, _opts(fmt="csv", tta=1, threshold=0.0),
         progress=False)
    one = coordio.read_coordinates(out / "picks.csv", "csv")
    import json

    assert json.loads((out / "pick_summary.json").read_text())["views_averaged"] == 1
    name = micrograph_name(tiny_data.micrographs[0])
    mine = one[one["micrograph"] == name]
    want = reference[name]
    near = [float(np.min(np.hypot(*(mine[["x", "y"]].to_numpy() - r).T))) for r in
            want[["x", "y"]].to_numpy()]
    same_place = [i for i, d in enumerate(near) if d < 1.0]
    assert same_place, "one view found none of the picks of eight"
    scores_one = mine[["x", "y", "score"]].to_numpy()
    diffs = [abs(scores_one[np.argmin(np.hypot(*(scores_one[:, :2] - want.loc[i, ["x", "y"]]
                                                  .to_numpy(float)).T)), 2]
                 - want.loc[i, "score"]) for i in same_place]
    assert max(diffs) > 1e-4
    bad = tmp_path / "bad"
    with pytest.raises(SelfpickError, match="--tta 3"):
        pick(model_path, tiny_data.micrographs, bad, _opts(fmt="csv", tta=3), progress=False)
    assert not bad.exists()


def test_models_saved_before_tta_existed_pick_with_one_view():
    from selfpick.config import Config

    old = Config().to_dict()
    del old["pick"]["tta"]
    assert Config.from_saved(old).pick.tta == 1
    assert Config.from_saved(Config().to_dict()).pick.tta == 8
