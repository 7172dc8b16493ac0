"""The simulator: determinism, placement, labels, detectability, contaminants, output layout."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from selfpick.errors import OutputError, SelfpickError
from selfpick.simulate import (
    SimulationConfig,
    choose_labels,
    disk_mask,
    lowpass,
    make_molecule,
    micrograph_rng,
    simulate_dataset,
    simulate_micrograph,
)

# Small data sets keep the file tests fast; the image-statistics tests use the defaults.
SMALL = SimulationConfig(n_micrographs=2, size=256, diameter=24.0, seed=5)


def _sim(cfg: SimulationConfig, i: int):
    return simulate_micrograph(micrograph_rng(cfg.seed, i), cfg, i, make_molecule(cfg))


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _disk_means(image: np.ndarray, xy: np.ndarray, radius: float) -> np.ndarray:
    """Mean of ``image`` inside a disk of ``radius`` px around each centre (centres >= radius
    from the edge)."""
    h = int(np.ceil(radius))
    off = np.arange(-h, h + 1)
    dy, dx = np.meshgrid(off, off, indexing="ij")
    inside = dy**2 + dx**2 <= radius**2
    c = np.rint(xy).astype(int)
    return image[c[:, 1, None] + dy[inside][None], c[:, 0, None] + dx[inside][None]].mean(axis=1)


# --------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_identical_files(tmp_path):
    from selfpick.io.coords import read_coordinates

    a = simulate_dataset(SMALL, tmp_path / "a")
    b = simulate_dataset(SMALL, tmp_path / "b")
    da, db = _digests(a.output_dir), _digests(b.output_dir)
    assert da.keys() == db.keys()
    differ = sorted(k for k in da if da[k] != db[k])
    assert differ == []
    for part in ("truth", "labels"):
        sa = read_coordinates(a.output_dir / part / "particles.star")
        sb = read_coordinates(b.output_dir / part / "particles.star")
        assert sa.equals(sb)
    c = simulate_dataset(replace(SMALL, seed=6), tmp_path / "c")
    assert (c.output_dir / "micrographs/sim_000.mrc").read_bytes() != \
        (a.output_dir / "micrographs/sim_000.mrc").read_bytes()


def test_micrograph_depends_only_on_seed_and_index():
    cfg = replace(SMALL, n_micrographs=1)
    img1, xy1, _ = _sim(cfg, 1)
    img2, xy2, _ = _sim(replace(SMALL, n_micrographs=5, label_fraction=0.3), 1)
    np.testing.assert_array_equal(img1, img2)
    np.testing.assert_array_equal(xy1, xy2)


# --------------------------------------------------------------------------------------------
# Placement


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_truth_inside_image_spaced_and_crowded(seed):
    cfg = SimulationConfig(seed=seed)
    img, xy, extras = _sim(cfg, 0)
    assert img.shape == (cfg.size, cfg.size) and img.dtype == np.float32
    assert np.isfinite(img).all()
    r = cfg.diameter / 2
    assert xy.shape[1] == 2 and len(xy) == extras["n_particles"]
    assert (xy >= r).all() and (xy <= cfg.size - 1 - r).all()

    # Crowded: the disks cover about `coverage` of the free area (free of carbon).
    free = 1.0 - extras["carbon_mask"].mean()
    covered = len(xy) * np.pi * r**2 / (cfg.size**2 * free)
    assert 0.6 * cfg.coverage < covered < 1.2 * cfg.coverage

    # Ordinary particles keep min_distance; the few touching ones are closer but not merged.
    touching = extras["touching"]
    nn = cKDTree(xy).query(xy, k=2)[0][:, 1] / cfg.diameter
    assert nn[~touching].min() >= cfg.min_distance - 1e-9
    assert 1 <= touching.sum() <= 0.1 * len(xy)
    assert nn[touching].min() >= cfg.touch_distance[0] - 1e-9
    assert nn[touching].max() < cfg.min_distance


def test_contaminants_and_carbon_are_not_in_the_truth():
    cfg = SimulationConfig(seed=3, contaminants=8.0, carbon_probability=1.0)
    img, xy, extras = _sim(cfg, 0)
    assert len(extras["contaminants"]) >= 3 and extras["carbon_edge"] is not None
    r = cfg.diameter / 2
    # No particle disk touches a contaminant or the carbon.
    disks = disk_mask(img.shape, xy, r)
    assert not (disks & extras["contaminant_mask"]).any()
    assert not (disks & extras["carbon_mask"]).any()
    # ... and the contaminants are there to be seen: much darker than the ice around them.
    ice = ~(extras["contaminant_mask"] | extras["carbon_mask"] | disk_mask(img.shape, xy, 2 * r))
    smooth = lowpass(img, cfg.diameter / 8)
    assert smooth[extras["contaminant_mask"]].mean() < smooth[ice].mean() - 1.0
    assert smooth[extras["carbon_mask"]].mean() < smooth[ice].mean()


# --------------------------------------------------------------------------------------------
# Image statistics


def test_snr_and_noise_units_are_as_documented():
    """snr = mean square of the CTF-filtered particle image inside the disks / noise variance;
    the noise variance is 1. The random draws do not depend on snr, so two images that differ
    only in snr differ exactly by the scaled particle signal."""
    cfg = SimulationConfig(seed=4, carbon_probability=0.0, contaminants=0.0, ice_gradient=0.0)
    lo, hi = 0.05, 0.2  # hi = 4 lo, so signal(lo) = image(hi) - image(lo)
    img_lo, xy, _ = _sim(replace(cfg, snr=lo), 0)
    img_hi, xy_hi, _ = _sim(replace(cfg, snr=hi), 0)
    np.testing.assert_array_equal(xy, xy_hi)
    signal = img_hi.astype(np.float64) - img_lo
    disks = disk_mask(img_lo.shape, xy, cfg.diameter / 2)
    assert np.mean(signal[disks] ** 2) == pytest.approx(lo, rel=1e-3)
    # Noise: what remains without the particle signal, away from the particles.
    noise = img_lo - signal
    far = ~disk_mask(img_lo.shape, xy, cfg.diameter)
    assert noise[far].var() == pytest.approx(1.0, abs=0.03)


def test_truth_particles_are_detectable_at_default_snr():
    """Acceptance: the low-pass filtered image is darker inside particle disks than in the
    background, by a clear margin, in every micrograph of `simulate --seed 1`.

    Low-pass: Gaussian, sigma = diameter / 8. Per particle, the mean inside its disk; per
    background sample (random points at least a diameter from every particle, off carbon and
    contaminants), the mean inside a disk of the same size. Full disks (radius d/2): Welch
    t > 3. Core disks (radius d/4, the positive target of training): effect size
    (difference of means / pooled standard deviation) > 1.5 -- a single particle stands out.
    Measured with the defaults: full-disk t 6-18, core effect size 2.2-3.5.
    """
    cfg = SimulationConfig(seed=1)
    molecule = make_molecule(cfg)
    r = cfg.diameter / 2
    probe = np.random.default_rng(0).uniform(r + 1, cfg.size - r - 2, size=(4000, 2))
    for i in range(4):
        img, xy, extras = simulate_micrograph(micrograph_rng(cfg.seed, i), cfg, i, molecule)
        smooth = lowpass(img, cfg.diameter / 8)
        blocked = extras["carbon_mask"] | extras["contaminant_mask"]
        pr = np.rint(probe).astype(int)
        ok = ~blocked[pr[:, 1], pr[:, 0]]
        ok &= cKDTree(xy).query(probe)[0] >= cfg.diameter
        background = probe[ok]
        assert len(background) > 100
        for radius, check in ((r, "t"), (r / 2, "effect")):
            p = _disk_means(smooth, xy, radius)
            b = _disk_means(smooth, background, radius)
            diff = b.mean() - p.mean()  # particles are dark: positive
            if check == "t":
                t = diff / np.sqrt(p.var(ddof=1) / len(p) + b.var(ddof=1) / len(b))
                assert t > 3.0, f"micrograph {i}: full-disk t = {t:.2f}"
            else:
                effect = diff / np.sqrt((p.var(ddof=1) + b.var(ddof=1)) / 2)
                assert effect > 1.5, f"micrograph {i}: core effect size = {effect:.2f}"


# --------------------------------------------------------------------------------------------
# Labels and files


def test_choose_labels_fraction_and_nesting():
    truth = np.random.default_rng(0).uniform(0, 100, size=(50, 2))
    small = choose_labels(truth, 0.2, np.random.default_rng(1))
    large = choose_labels(truth, 0.6, np.random.default_rng(1))
    assert len(small) == 10 and len(large) == 30
    assert set(small) <= set(large)
    assert len(choose_labels(truth[:2], 0.1, np.random.default_rng(1))) == 1  # never none
    assert len(choose_labels(truth, 1.0, np.random.default_rng(1))) == 50


def test_dataset_layout_and_partial_labels(tmp_path):
    from selfpick.io.coords import read_coordinates
    from selfpick.io.micrographs import read_micrograph

    cfg = replace(SMALL, n_micrographs=3, label_fraction=0.4, pixel_size=1.5)
    res = simulate_dataset(cfg, tmp_path / "sim")
    out = res.output_dir
    names = ["sim_000", "sim_001", "sim_002"]
    for n in names:
        data, px = read_micrograph(out / "micrographs" / f"{n}.mrc")
        assert data.shape == (cfg.size, cfg.size) and px == pytest.approx(1.5)
        for part in ("truth", "labels"):
            assert (out / part / "csv" / f"{n}.csv").is_file()
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left

    meta = json.loads((out / "simulation.json").read_text())
    assert meta["config"]["seed"] == cfg.seed and meta["selfpick_version"]
    assert [m["name"] for m in meta["micrographs"]] == names
    truth = read_coordinates(out / "truth" / "coordinates.json")
    labels = read_coordinates(out / "labels" / "coordinates.json")
    for m in meta["micrographs"]:
        lo, hi = cfg.defocus_um
        assert lo <= m["defocus_um"] <= hi
        t = truth[truth.micrograph == m["name"]][["x", "y"]].to_numpy()
        lab = labels[labels.micrograph == m["name"]][["x", "y"]].to_numpy()
        assert len(t) == m["n_particles"] == len(res.truth[m["name"]])
        np.testing.assert_allclose(t, res.truth[m["name"]])
        # Every micrograph gets labels: a subset of the truth of the requested size.
        assert len(lab) == m["n_labels"] == max(1, round(0.4 * len(t)))
        assert {tuple(p) for p in lab} <= {tuple(p) for p in t}
    # The three formats agree (CryoPPP CSV stores whole pixels).
    star = read_coordinates(out / "truth" / "particles.star")
    np.testing.assert_allclose(star[["x", "y"]].to_numpy(), truth[["x", "y"]].to_numpy(),
                               atol=1e-5)
    csv = read_coordinates(out / "truth" / "csv", fmt="cryoppp")
    assert len(csv) == len(truth)
    for n in names:
        a = np.sort(csv[csv.micrograph == n][["x", "y"]].to_numpy(), axis=0)
        b = np.sort(truth[truth.micrograph == n][["x", "y"]].to_numpy(), axis=0)
        np.testing.assert_allclose(a, b, atol=0.5 + 1e-9)


def test_label_fraction_changes_no_pixel(tmp_path):
    a = simulate_dataset(replace(SMALL, label_fraction=0.3), tmp_path / "a")
    b = simulate_dataset(replace(SMALL, label_fraction=0.7), tmp_path / "b")
    for name in a.truth:
        assert (a.output_dir / "micrographs" / f"{name}.mrc").read_bytes() == \
            (b.output_dir / "micrographs" / f"{name}.mrc").read_bytes()
        small = {tuple(p) for p in a.labels[name]}
        assert small <= {tuple(p) for p in b.labels[name]}


# --------------------------------------------------------------------------------------------
# Errors and overwriting


@pytest.mark.parametrize(
    "change",
    [dict(n_micrographs=0), dict(size=90, diameter=24.0), dict(label_fraction=0.0),
     dict(label_fraction=1.5), dict(snr=0.0), dict(pixel_size=-1.0), dict(diameter=3.0)],
)
def test_bad_settings_are_user_errors_and_write_nothing(tmp_path, change):
    out = tmp_path / "sim"
    with pytest.raises(SelfpickError):
        simulate_dataset(replace(SMALL, **change), out)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "sim"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError):
        simulate_dataset(SMALL, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    simulate_dataset(replace(SMALL, n_micrographs=3), out, overwrite=True)
    res = simulate_dataset(SMALL, out, overwrite=True)  # fewer micrographs than before
    assert sorted(p.name for p in (out / "micrographs").iterdir()) == ["sim_000.mrc", "sim_001.mrc"]
    assert (out / "notes.txt").read_text() == "mine"
    assert len(res.micrographs) == 2 and all(p.is_file() for p in res.micrographs)


def test_failure_midway_leaves_no_output(tmp_path, monkeypatch):
    import selfpick.simulate as sim

    real = sim.simulate_micrograph

    def failing(rng, cfg, index, molecule=None):
        if index == 1:
            raise RuntimeError("boom")
        return real(rng, cfg, index, molecule)

    monkeypatch.setattr(sim, "simulate_micrograph", failing)
    with pytest.raises(RuntimeError):
        sim.simulate_dataset(SMALL, tmp_path / "sim")
    assert os.listdir(tmp_path) == []
