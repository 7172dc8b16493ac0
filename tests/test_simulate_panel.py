"""The simulator's panel of presets: particle shapes, density, electron counts, PNG files.

Every preset runs tiny here (1-2 micrographs of a few hundred pixels); the properties that make
each preset what it is are checked on the noise-free renders or on the written files.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial import cKDTree

from selfpick.errors import SelfpickError
from selfpick.simulate import (
    PRESET_NOTES,
    SIMULATED_PANEL,
    SimulationConfig,
    disk_mask,
    in_plane_rotations,
    make_molecule,
    micrograph_rng,
    preset_config,
    random_rotations,
    render_particles,
    simulate_dataset,
    simulate_micrograph,
    simulate_preset,
    write_panel_preview,
)


def _tiny_size(name: str) -> int:
    """The smallest micrograph side the preset's particles allow (4 diameters), >= 256."""
    return max(256, int(np.ceil(4 * preset_config(name).diameter)))


def _centre_of_mass(img: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(img.shape)
    return np.array([(img * cols).sum(), (img * rows).sum()]) / img.sum()


def _radial_profile(img: np.ndarray, centre: np.ndarray, edges: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(img.shape)
    rho = np.hypot(cols - centre[0], rows - centre[1])
    return np.array([img[(rho >= a) & (rho < b)].mean() for a, b in zip(edges[:-1], edges[1:])])


# --------------------------------------------------------------------------------------------
# Every preset, tiny


@pytest.mark.parametrize("name", list(SIMULATED_PANEL))
def test_every_preset_writes_a_valid_tiny_data_set(tmp_path, name):
    from selfpick.io.coords import read_coordinates
    from selfpick.io.micrographs import read_micrograph

    size = _tiny_size(name)
    res = simulate_preset(name, tmp_path / name, n_micrographs=2, size=size, seed=3,
                          label_fraction=0.5)
    cfg = res.config
    assert cfg is not None and cfg.size == size and cfg.seed == 3
    for key, value in SIMULATED_PANEL[name].items():
        if key != "size":
            assert getattr(cfg, key) == value
    assert res.diameter == cfg.diameter
    meta = json.loads((res.output_dir / "simulation.json").read_text())
    assert meta["preset"] == name and meta["config"]["shape"] == cfg.shape

    suffix = ".png" if cfg.file_format == "png" else ".mrc"
    assert [p.name for p in res.micrographs] == [f"sim_000{suffix}", f"sim_001{suffix}"]
    assert res.micrograph_dir == res.output_dir / "micrographs"
    for p in res.micrographs:
        data, _ = read_micrograph(p)  # selfpick reads every kind it writes
        assert data.shape == (size, size) and np.isfinite(data).all() and data.std() > 0

    truth = read_coordinates(res.truth_file)
    labels = read_coordinates(res.labels_file)
    assert len(truth) == res.n_particles > 0 and len(labels) == res.n_labels > 0
    r = cfg.diameter / 2
    for m in meta["micrographs"]:
        xy = res.truth[m["name"]]
        # Inside the image, at least a radius from the edges ...
        assert (xy >= r).all() and (xy <= size - 1 - r).all()
        # ... and off carbon: the whole particle disk is inside the hole.
        edge = m["carbon_edge"]
        if edge is not None:
            d = np.hypot(xy[:, 0] - edge["centre_x"], xy[:, 1] - edge["centre_y"])
            assert (d <= edge["hole_radius"] - r).all()
        for c in m["contaminants"]:
            assert (np.hypot(xy[:, 0] - c["x"], xy[:, 1] - c["y"]) > c["radius"] + r).all()


def test_presets_are_documented_and_valid():
    assert "globular" in SIMULATED_PANEL and SIMULATED_PANEL["globular"] == {}
    for name in ("shell", "elongated", "small", "raw16", "crowded", "sparse", "carbon"):
        assert name in SIMULATED_PANEL
    for name in SIMULATED_PANEL:
        assert PRESET_NOTES[name]
        preset_config(name).validate()
    with pytest.raises(SelfpickError, match="unknown preset"):
        preset_config("fibrils")
    with pytest.raises(SelfpickError, match="not a simulation setting"):
        preset_config("shell", colour="blue")
    # Explicit values override the preset; None means "not given".
    cfg = preset_config("shell", diameter=64.0, snr=None)
    assert cfg.shape == "shell" and cfg.diameter == 64.0
    assert cfg.snr == SIMULATED_PANEL["shell"]["snr"]


def test_small_preset_is_small_particles_in_large_micrographs():
    cfg = preset_config("small")
    assert 24 <= cfg.diameter <= 32 and 1024 <= cfg.size <= 2048
    assert cfg.snr < SimulationConfig().snr


def test_preset_micrograph_depends_only_on_seed_and_index():
    cfg = preset_config("elongated", size=256, seed=4, n_micrographs=1)
    a, xa, _ = simulate_micrograph(micrograph_rng(4, 1), cfg, 1, make_molecule(cfg))
    cfg5 = replace(cfg, n_micrographs=5, label_fraction=0.2)
    b, xb, _ = simulate_micrograph(micrograph_rng(4, 1), cfg5, 1, make_molecule(cfg5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(xa, xb)


# --------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("shape", ["globular", "shell", "elongated"])
def test_every_shape_fits_its_circle_and_is_centred_on_its_truth(shape):
    d = 48.0
    cfg = SimulationConfig(shape=shape, diameter=d, seed=2)
    mol = make_molecule(cfg)
    r_lim = d / 2 - 1.5 * mol.sigma
    assert np.linalg.norm(mol.coords, axis=2).max() <= r_lim + 1e-9
    com = np.average(mol.coords, axis=1, weights=mol.weights)  # (n_conformations, 3)
    assert np.abs(com[0]).max() < 1e-9
    if shape != "globular":  # globular: the hinge moves the others' by under a pixel
        assert np.abs(com).max() < 1e-9
    # The projected density's centre of mass is the truth centre, in every orientation.
    rng = np.random.default_rng(0)
    n = 6
    xy = np.array([[60.3 + 120 * k, 60.7] for k in range(n)])
    rots = random_rotations(rng, n)
    confs = np.arange(n) % len(mol.coords)
    img = render_particles((121, 120 * n + 1), xy, mol, rots, confs)
    for k in range(n):
        patch = img[:, 120 * k: 120 * (k + 1) + 1]
        tol = 0.05 if shape != "globular" or confs[k] == 0 else 1.0
        np.testing.assert_allclose(_centre_of_mass(patch) + [120 * k, 0], xy[k], atol=tol)


def test_shell_projects_to_a_ring():
    """Noise-free: the middle of a shell's projection is lighter (less mass) than its rim, in
    every orientation, and the mass sits in a ring around the middle."""
    d = 60.0
    cfg = SimulationConfig(shape="shell", diameter=d, seed=1)
    mol = make_molecule(cfg)
    rng = np.random.default_rng(3)
    size = 81
    c = np.array([40.0, 40.0])
    edges = np.linspace(0, d / 2, 11)
    for k, rot in enumerate(random_rotations(rng, 8)):
        img = render_particles((size, size), c[None], mol, rot[None],
                               np.array([k % len(mol.coords)]))
        prof = _radial_profile(img, c, edges)
        centre, rim = prof[:2].mean(), prof.max()
        assert centre < 0.75 * rim, f"orientation {k}: centre {centre:.3g}, rim {rim:.3g}"
        assert np.argmax(prof) >= 5  # the densest annulus is in the outer half
    # A globular particle of the same size is densest in the middle.
    glob = make_molecule(replace(cfg, shape="globular"))
    img = render_particles((size, size), c[None], glob, np.eye(3)[None], np.array([0]))
    prof = _radial_profile(img, c, edges)
    assert prof[:2].mean() > prof[5:].max()


def test_elongated_is_a_3_to_1_rod_as_long_as_the_diameter():
    d = 60.0
    for seed in range(3):
        mol = make_molecule(SimulationConfig(shape="elongated", diameter=d, seed=seed))
        atoms = mol.coords[0]
        # 3-D: full extent (atom centres + 1.5 sigma each side) along the long axis (x) vs
        # across it.
        length = np.ptp(atoms[:, 0]) + 3 * mol.sigma
        width = max(np.ptp(atoms[:, 1]), np.ptp(atoms[:, 2])) + 3 * mol.sigma
        assert 0.85 * d <= length <= d + 1e-9
        assert 2.5 <= length / width <= 3.6
    # Lying flat, its projection is elongated: principal second moments about 3:1 in extent.
    cfg = SimulationConfig(shape="elongated", diameter=d, seed=0)
    mol = make_molecule(cfg)
    rots = in_plane_rotations(np.random.default_rng(1), 4)
    for k in range(4):
        img = render_particles((81, 81), np.array([[40.0, 40.0]]), mol, rots[k:k + 1],
                               np.array([0]))
        rows, cols = np.indices(img.shape)
        cx, cy = _centre_of_mass(img)
        w = img / img.sum()
        cov = np.array([[(w * (cols - cx) ** 2).sum(), (w * (cols - cx) * (rows - cy)).sum()],
                        [(w * (cols - cx) * (rows - cy)).sum(), (w * (rows - cy) ** 2).sum()]])
        ev = np.linalg.eigvalsh(cov)
        assert np.sqrt(ev[1] / ev[0]) > 2.2


def test_in_plane_rotations_keep_the_x_axis_near_the_plane():
    rots = in_plane_rotations(np.random.default_rng(0), 500)
    np.testing.assert_allclose(rots @ rots.transpose(0, 2, 1), np.broadcast_to(np.eye(3),
                               rots.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rots), 1.0, atol=1e-12)
    tilt = np.degrees(np.arcsin(np.abs(rots[:, 2, 0])))  # z component of the rotated x axis
    assert np.median(tilt) < 10 and tilt.max() < 45
    uniform = random_rotations(np.random.default_rng(0), 500)
    assert np.median(np.degrees(np.arcsin(np.abs(uniform[:, 2, 0])))) > 20


def test_new_options_are_user_errors(tmp_path):
    base = SimulationConfig(n_micrographs=1, size=256, diameter=24.0)
    for change in (dict(shape="cube"), dict(pixel_type="uint8"), dict(file_format="tiff"),
                   dict(file_format="png", pixel_type="int16"), dict(dose_per_pixel=0.0),
                   dict(dose_per_pixel=1e5), dict(in_plane_fraction=1.5),
                   dict(min_distance=0.0), dict(coverage=0.7), dict(hot_pixels=0.5),
                   dict(hot_pixels=1e-4)):  # float32: hot pixels are a detector's
        with pytest.raises(SelfpickError):
            simulate_dataset(replace(base, **change), tmp_path / "sim")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Density


def test_crowded_has_more_particles_per_area_than_sparse():
    per_area = {}
    for name in ("sparse", "globular", "crowded"):
        cfg = preset_config(name, size=512, diameter=32.0, seed=1, carbon_probability=0.0,
                            contaminants=0.0)
        mol = make_molecule(cfg)
        counts = [len(simulate_micrograph(micrograph_rng(1, i), cfg, i, mol)[1])
                  for i in range(2)]
        per_area[name] = np.mean(counts) / 512**2
        cover = per_area[name] * np.pi * (cfg.diameter / 2) ** 2
        assert 0.6 * cfg.coverage < cover < 1.1 * cfg.coverage, name
    assert per_area["crowded"] > 1.4 * per_area["globular"] > 1.4 * 5 * per_area["sparse"]


def test_crowded_preset_has_close_and_touching_neighbours():
    cfg = preset_config("crowded", size=512, diameter=32.0, seed=2)
    img, xy, extras = simulate_micrograph(micrograph_rng(2, 0), cfg, 0, make_molecule(cfg))
    nn = cKDTree(xy).query(xy, k=2)[0][:, 1] / cfg.diameter
    assert nn[~extras["touching"]].min() >= cfg.min_distance - 1e-9
    assert np.median(nn) < 1.1
    assert extras["touching"].mean() > 0.05


def test_carbon_preset_always_shows_an_edge_and_keeps_particles_off_it():
    cfg = preset_config("carbon", size=384, diameter=32.0, seed=5)
    mol = make_molecule(cfg)
    for i in range(2):
        img, xy, extras = simulate_micrograph(micrograph_rng(5, i), cfg, i, mol)
        assert extras["carbon_edge"] is not None and extras["carbon_mask"].any()
        disks = disk_mask(img.shape, xy, cfg.diameter / 2)
        assert not (disks & extras["carbon_mask"]).any()
        assert not (disks & extras["contaminant_mask"]).any()


# --------------------------------------------------------------------------------------------
# Pixel types and files


def test_raw16_writes_uint16_electron_counts(tmp_path):
    import mrcfile

    res = simulate_preset("raw16", tmp_path / "raw", n_micrographs=1, size=256,
                          diameter=24.0, seed=2, carbon_probability=0.0, contaminants=0.0)
    cfg = res.config
    with mrcfile.open(res.micrographs[0], permissive=True) as mrc:
        assert int(mrc.header.mode) == 6 and mrc.data.dtype == np.uint16
        counts = np.asarray(mrc.data, dtype=np.float64)
        assert float(mrc.voxel_size.x) == pytest.approx(cfg.pixel_size)
    assert counts.min() >= 0
    # Electron counts: mean about the dose, Poisson-like spread, far from float noise units.
    assert counts.mean() == pytest.approx(cfg.dose_per_pixel, rel=0.05)
    g = res.metadata["micrographs"][0]["counts_per_noise_sd"]
    assert g == pytest.approx(np.sqrt(cfg.dose_per_pixel / (1 - cfg.structural_noise)))
    far = ~disk_mask(counts.shape, res.truth["sim_000"], cfg.diameter)
    assert counts[far].var() / g**2 == pytest.approx(1.0, abs=0.15)
    # Counts differ from the float image only in the shot noise: the same scene, so in noise
    # units the difference is two independent shot noises, variance 2 (1 - structural_noise)
    # (unrelated images would differ by variance 2).
    flt, xy, ex = simulate_micrograph(micrograph_rng(2, 0), replace(cfg, pixel_type="float32"),
                                      0, make_molecule(cfg))
    np.testing.assert_array_equal(xy, res.truth["sim_000"])
    diff = (counts - cfg.dose_per_pixel) / g - flt
    assert diff.var() == pytest.approx(2 * (1 - cfg.structural_noise), rel=0.08)


def test_hot_pixels_sit_at_the_same_places_in_every_micrograph():
    from selfpick.simulate import HOT_PIXEL_DOSES

    cfg = SimulationConfig(n_micrographs=2, size=256, diameter=24.0, pixel_type="uint16",
                           hot_pixels=1e-3, seed=4)
    hot = []
    for i in range(2):
        img, _, _ = simulate_micrograph(micrograph_rng(4, i), cfg, i, make_molecule(cfg))
        hot.append(set(np.flatnonzero(img == round(HOT_PIXEL_DOSES * cfg.dose_per_pixel))))
    n = round(1e-3 * 256 * 256)
    assert min(len(hot[0]), len(hot[1])) >= n  # (a Poisson count may reach the value too)
    assert len(hot[0] & hot[1]) == n


def test_int16_counts_are_mrc_mode_1(tmp_path):
    import mrcfile

    cfg = SimulationConfig(n_micrographs=1, size=256, diameter=24.0, pixel_type="int16",
                           dose_per_pixel=50.0)
    res = simulate_dataset(cfg, tmp_path / "sim")
    with mrcfile.open(res.micrographs[0], permissive=True) as mrc:
        assert int(mrc.header.mode) == 1 and mrc.data.dtype == np.int16
        assert np.asarray(mrc.data).mean() == pytest.approx(50.0, rel=0.05)


def test_png_files_are_8_bit_for_float_and_16_bit_for_counts(tmp_path):
    from PIL import Image

    from selfpick.io.micrographs import read_micrograph

    a = simulate_preset("png8", tmp_path / "p8", n_micrographs=1, size=256, diameter=24.0)
    with Image.open(a.micrographs[0]) as im:
        assert im.mode == "L"
        grey = np.array(im)
    assert grey.dtype == np.uint8 and 0 < np.median(grey) < 255 and np.unique(grey).size > 64
    b = simulate_preset("raw16", tmp_path / "p16", n_micrographs=1, size=256, diameter=24.0,
                        file_format="png")
    with Image.open(b.micrographs[0]) as im:
        assert im.mode == "I;16"
    data, px = read_micrograph(b.micrographs[0])
    assert px is None and data.mean() == pytest.approx(b.config.dose_per_pixel, rel=0.05)
    # Same seed, same scene: the PNG data set's truth is the MRC data set's.
    c = simulate_preset("globular", tmp_path / "mrc", n_micrographs=1, size=256, diameter=24.0)
    np.testing.assert_array_equal(a.truth["sim_000"], c.truth["sim_000"])


@pytest.mark.parametrize("name", ["raw16", "png8", "shell"])
def test_same_seed_gives_identical_preset_files(tmp_path, name):
    size = _tiny_size(name)
    a = simulate_preset(name, tmp_path / "a", n_micrographs=1, size=size, seed=9)
    b = simulate_preset(name, tmp_path / "b", n_micrographs=1, size=size, seed=9)
    assert a.micrographs[0].read_bytes() == b.micrographs[0].read_bytes()
    assert a.truth_file.read_bytes() == b.truth_file.read_bytes()


def test_panel_preview_is_a_png(tmp_path):
    out = tmp_path / "panel.png"
    write_panel_preview(out, names=["sparse", "shell"], marks=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
