"""Training data: the seeded validation split, loading a training set, and random crops."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import tiny_config
from selfpick.errors import InputError
from selfpick.targets import IGNORE
from selfpick.preprocess import Scale
from selfpick.training.data import (CropDataset, TrainingMicrograph, label_edge_margin,
                                    load_training_set, split_micrographs)

NAMES = [f"mic_{i:03d}" for i in range(40)]


# ---------------------------------------------------------------- split


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    a = split_micrographs(NAMES, 0.1, seed=3)
    assert split_micrographs(list(reversed(NAMES)), 0.1, seed=3) == a  # input order irrelevant
    assert split_micrographs(NAMES, 0.1, seed=3) == a
    others = {tuple(split_micrographs(NAMES, 0.1, seed=s)[1]) for s in range(4, 10)}
    assert any(o != tuple(a[1]) for o in others)


@pytest.mark.parametrize("n,fraction,n_val", [(40, 0.1, 4), (10, 0.1, 1), (3, 0.1, 1),
                                              (2, 0.5, 1), (5, 0.9, 4), (20, 0.25, 5)])
def test_split_sizes_and_disjointness(n, fraction, n_val):
    names = NAMES[:n]
    train, val = split_micrographs(names, fraction, seed=0)
    assert len(val) == n_val
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(names)
    assert train == sorted(train) and val == sorted(val)
    assert train  # never everything in validation


def test_split_with_one_micrograph_or_no_validation():
    assert split_micrographs(["only"], 0.5, seed=0) == (["only"], [])
    assert split_micrographs(NAMES[:5], 0.0, seed=0) == (sorted(NAMES[:5]), [])


# ---------------------------------------------------------------- load_training_set


def test_load_training_set_splits_and_targets(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data.output_dir, tmp_path / "exp")
    ts = load_training_set(cfg, cache_dir=tmp_path / "cache", progress=False)
    names = ts.split_names()
    assert len(names["val"]) == 1 and len(names["train"]) == 3 and names["unlabeled"] == []
    assert (names["train"], names["val"]) == split_micrographs(
        list(tiny_data.labels), cfg.train.val_fraction, cfg.train.seed)
    assert ts.downsample == 2.0 and ts.particle_diameter == 24.0
    for m in ts.micrographs:
        assert m.image.shape == (128, 128) and m.gt_target.shape == m.image.shape
        assert m.labelled
        np.testing.assert_allclose(m.truth, tiny_data.labels[m.name])
        assert np.count_nonzero(m.gt_target == 1) > 0


def test_micrographs_without_coordinates_and_the_unlabeled_dir_are_unlabelled(tiny_data,
                                                                              tmp_path):
    # Coordinates for 3 of the 4 micrographs; plus a separate --unlabeled-dir of 1.
    coords = json.loads((tiny_data.output_dir / "labels" / "coordinates.json").read_text())
    dropped = sorted(coords)[-1]
    del coords[dropped]
    cfile = tmp_path / "coords.json"
    cfile.write_text(json.dumps(coords))
    unl = tmp_path / "unlabeled"
    unl.mkdir()
    shutil.copy(tiny_data.micrographs[0], unl / "extra_000.mrc")
    cfg = tiny_config(tiny_data.output_dir, tmp_path / "exp", coords_file=str(cfile),
                      unlabeled_dir=str(unl), val_fraction=0.34)
    ts = load_training_set(cfg, cache_dir=None, progress=False)
    names = ts.split_names()
    assert sorted(names["unlabeled"]) == sorted([dropped, "extra_000"])
    assert len(names["val"]) == 1 and len(names["train"]) == 2
    for m in ts.subset("unlabeled"):
        assert not m.labelled and m.truth is None
        assert np.all(m.gt_target == IGNORE)  # nobody said these are empty


def test_a_name_in_both_image_dir_and_unlabeled_dir_is_refused(tiny_data, tmp_path):
    unl = tmp_path / "unlabeled"
    unl.mkdir()
    shutil.copy(tiny_data.micrographs[0], unl / tiny_data.micrographs[0].name)
    cfg = tiny_config(tiny_data.output_dir, tmp_path / "exp", unlabeled_dir=str(unl))
    with pytest.raises(InputError, match="both"):
        load_training_set(cfg, progress=False)


def test_the_cache_gives_the_same_images(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data.output_dir, tmp_path / "exp")
    first = load_training_set(cfg, cache_dir=tmp_path / "cache", progress=False)
    n_files = len(list((tmp_path / "cache").iterdir()))
    again = load_training_set(cfg, cache_dir=tmp_path / "cache", progress=False)
    assert len(list((tmp_path / "cache").iterdir())) == n_files  # read, not rebuilt
    for a, b in zip(first.micrographs, again.micrographs):
        np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))


def test_missing_image_dir_or_coords_file(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data.output_dir, tmp_path / "exp", image_dir=None)
    with pytest.raises(InputError, match="--image-dir"):
        load_training_set(cfg, progress=False)
    cfg = tiny_config(tiny_data.output_dir, tmp_path / "exp", coords_file=None)
    with pytest.raises(InputError, match="--coords-file"):
        load_training_set(cfg, progress=False)


# ---------------------------------------------------------------- CropDataset


def _images(seed=0):
    rng = np.random.default_rng(seed)
    imgs = [rng.normal(size=(40, 50)).astype(np.float32), rng.normal(size=(64, 64)).astype(
        np.float32)]
    tgts = [rng.integers(-1, 2, size=im.shape).astype(np.int8) for im in imgs]
    return imgs, tgts


def test_crops_are_reproducible_per_seed_epoch_and_index():
    imgs, tgts = _images()
    a = CropDataset(imgs, tgts, crop=16, length=8, seed=5)
    b = CropDataset(imgs, tgts, crop=16, length=8, seed=5)
    b.set_epoch(3)
    a.set_epoch(3)
    for i in (0, 7, 3):  # any order: item i of epoch e does not depend on what came before
        for x, y in zip(a[i], b[i]):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    b.set_epoch(4)
    assert not torch.equal(a[0][0], b[0][0])
    c = CropDataset(imgs, tgts, crop=16, length=8, seed=6)
    c.set_epoch(3)
    assert not torch.equal(a[0][0], c[0][0])


def test_crop_shapes_dtypes_and_values():
    imgs, tgts = _images()
    ds = CropDataset(imgs, tgts, crop=16, length=5, seed=0)
    assert len(ds) == 5
    x, t = ds[2]
    assert x.shape == t.shape == (1, 16, 16)
    assert x.dtype == t.dtype == torch.float32
    assert set(torch.unique(t).tolist()) <= {-1.0, 0.0, 1.0}


def test_augmentation_keeps_image_and_target_aligned():
    # An image that *is* its target (x10): whatever rotation/flip/jitter, bright pixels must
    # be exactly the positive target pixels.
    rng = np.random.default_rng(1)
    tgt = (rng.random((48, 48)) < 0.2).astype(np.int8)
    tgt[rng.random((48, 48)) < 0.1] = IGNORE
    img = np.where(tgt == 1, 10.0, 0.0).astype(np.float32)
    ds = CropDataset([img], [tgt], crop=24, length=32, seed=2, augment=True)
    for e in range(2):
        ds.set_epoch(e)
        for i in range(len(ds)):
            x, t = ds[i]
            np.testing.assert_array_equal((x > 5).numpy(), (t == 1).numpy())


def test_crop_larger_than_the_image_is_padded_with_ignore():
    img = np.ones((10, 12), dtype=np.float32)
    tgt = np.zeros((10, 12), dtype=np.int8)
    ds = CropDataset([img], [tgt], crop=16, length=1, seed=0, augment=False)
    x, t = ds[0]
    assert (t[0, :10, :12] == 0).all() and (t[0, 10:, :] == IGNORE).all()
    assert (t[0, :, 12:] == IGNORE).all() and (x[0, 10:, :] == 0).all()


def test_crops_per_epoch_cover_the_area_once_within_bounds():
    from selfpick.training.data import (MAX_CROPS_PER_EPOCH, MIN_CROPS_PER_EPOCH,
                                        default_crops_per_epoch)

    def mics(n, side):
        return [np.zeros((side, side), np.float32)] * n

    assert default_crops_per_epoch(mics(2, 100), 100) == MIN_CROPS_PER_EPOCH  # 2 crops' area
    assert default_crops_per_epoch(mics(100, 100), 100) == 100
    assert default_crops_per_epoch(mics(101, 99), 100) == 99  # ceil(101 * 99^2 / 100^2)
    assert default_crops_per_epoch(mics(5000, 100), 100) == MAX_CROPS_PER_EPOCH
    assert default_crops_per_epoch(mics(5000, 100), 100, maximum=10**6) == 5000


def test_crop_dataset_draws_images_by_weight():
    imgs = [np.full((32, 32), float(k), dtype=np.float32) for k in range(3)]
    tgts = [np.zeros((32, 32), dtype=np.int8) for _ in range(3)]
    ds = CropDataset(imgs, tgts, crop=16, length=200, seed=1, augment=False,
                     weights=np.array([0.0, 3.0, 1.0]))
    drawn = [int(ds[i][0][0, 0, 0]) for i in range(len(ds))]
    assert 0 not in drawn and 120 < drawn.count(1) < 180
    with pytest.raises(ValueError):
        CropDataset(imgs, tgts, crop=16, length=1, seed=0, weights=np.array([1.0, -1, 1]))


def test_crop_dataset_needs_an_image():
    with pytest.raises(ValueError):
        CropDataset([], [], crop=16, length=1, seed=0)



# ---------------------------------------------------------------- edge margin


def _mic(truth, shape=(400, 300)):
    return TrainingMicrograph("m", None, np.zeros((10, 10), np.float32), Scale(1.0, 1.0), shape,
                              None if truth is None else np.asarray(truth, float), "train")


def _spread(n, lo, shape=(400, 300), seed=0):
    """``n`` labels spread evenly over the part of a ``shape`` micrograph at least ``lo`` px
    from every edge."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    return np.c_[rng.uniform(lo, nx - 1 - lo, n), rng.uniform(lo, ny - 1 - lo, n)]


def test_edge_margin_is_the_closest_label_to_any_edge():
    # 300 wide (x), 400 high (y): distances to the right edge count from x = 299.
    many = _spread(200, 70)
    a = _mic(np.r_[many, [[60, 200]]])                      # 60 from the left
    b = _mic(np.r_[many, [[150, 351.5], [250, 100]]])       # 47.5 from the bottom, 49 right
    assert label_edge_margin([a], diameter=100) == 60
    assert label_edge_margin([a, b], diameter=100) == 47  # floored: a label at 47.5 is kept


def test_edge_margin_is_capped_at_a_diameter_and_zero_without_labels():
    centre = _mic(np.r_[_spread(100, 60), [[150, 200]]])
    assert label_edge_margin([centre], diameter=40) == 40
    assert label_edge_margin([_mic(None), _mic(np.zeros((0, 2)))], diameter=40) == 0
    assert label_edge_margin([], diameter=40) == 0
    # A label on (or, after rounding, just past) the edge means picks go right up to it.
    assert label_edge_margin([_mic([[0, 200], [150, 200]])], diameter=40) == 0
    assert label_edge_margin([_mic([[-0.4, 200]])], diameter=40) == 0


def test_edge_margin_is_not_learned_from_a_handful_of_picks():
    # Two picks leave a 60 px border of a 300 x 400 micrograph empty by chance (evenly spread
    # picks would put 1.2 there): at most a radius.
    assert label_edge_margin([_mic([[150, 200], [60, 200]])], diameter=100) == 50
    # The same border with 200 picks spread beyond it is the hand-picker's choice.
    assert label_edge_margin([_mic(np.r_[_spread(200, 70), [[60, 200]]])], diameter=100) == 60
    # Evidence adds up over micrographs: 3 x 2 picks keeping 60 px away is enough.
    two = [[150, 200], [60, 200]]
    assert label_edge_margin([_mic(two), _mic(two), _mic(two)], diameter=100) == 60


# ---------------------------------------------------------------- few labelled micrographs


def test_hold_out_strip_is_seeded_inside_and_at_least_two_diameters_high():
    from selfpick.training.data import hold_out_strip

    y0, y1 = hold_out_strip(0, (1000, 800), diameter=40, seed=3)
    assert (y0, y1) == hold_out_strip(0, (1000, 800), diameter=40, seed=3)
    assert 0 <= y0 < y1 <= 1000 and y1 - y0 == 250
    assert hold_out_strip(1, (1000, 800), 40, 3) != (y0, y1)  # each micrograph its own
    assert hold_out_strip(0, (200, 800), diameter=40, seed=3)[1] - \
        hold_out_strip(0, (200, 800), diameter=40, seed=3)[0] == 80
    assert hold_out_strip(0, (60, 800), diameter=40, seed=3) == (0.0, 60.0)


def test_one_labelled_micrograph_is_validated_on_a_held_out_strip(tiny_data, tmp_path):
    coords = json.loads((tiny_data.output_dir / "labels" / "coordinates.json").read_text())
    only = sorted(coords)[0]
    cfile = tmp_path / "coords.json"
    cfile.write_text(json.dumps({only: coords[only]}))
    cfg = tiny_config(tiny_data.output_dir, tmp_path / "exp", coords_file=str(cfile))
    ts = load_training_set(cfg, cache_dir=None, progress=False)
    (train,), (val,) = ts.subset("train"), ts.subset("val")
    assert train.name == val.name == only and len(ts.subset("unlabeled")) == 3
    assert train.image is val.image
    y0, y1 = val.region
    assert y1 - y0 >= 2 * ts.particle_diameter
    everything = np.asarray(coords[only], float)
    r = ts.particle_diameter / 2
    # validation labels: exactly those in the strip; training labels: none within a radius
    inside = (everything[:, 1] >= y0) & (everything[:, 1] < y1)
    np.testing.assert_allclose(val.truth, everything[inside])
    assert np.all((train.truth[:, 1] < y0 - r) | (train.truth[:, 1] >= y1 + r))
    assert len(train.truth) + len(val.truth) <= len(everything)
    # targets: the strip (widened by a radius) is ignored for training, only it counts for
    # validation
    rows = np.arange(train.gt_target.shape[0]) * train.scale.sy
    in_strip = (rows >= y0) & (rows < y1)
    assert np.all(train.gt_target[in_strip] == IGNORE)
    assert np.all(val.gt_target[(rows < y0 - train.scale.sy) | (rows >= y1)] == IGNORE)
    assert np.any(val.gt_target[in_strip] == 1)
    assert ts.split_names()["val_regions"] == {only: [y0, y1]}
    assert val.in_region(np.array([[5.0, y0], [5.0, y1], [5.0, y0 - 1]])).tolist() == \
        [True, False, False]


def test_whole_micrographs_validate_from_three_labelled_micrographs(tiny_data, tmp_path):
    coords = json.loads((tiny_data.output_dir / "labels" / "coordinates.json").read_text())
    cfile = tmp_path / "coords.json"
    cfile.write_text(json.dumps({k: coords[k] for k in sorted(coords)[:3]}))
    cfg = tiny_config(tiny_data.output_dir, tmp_path / "exp", coords_file=str(cfile),
                      val_fraction=0.34)
    ts = load_training_set(cfg, cache_dir=None, progress=False)
    assert "val_regions" not in ts.split_names()
    assert all(m.region is None for m in ts.micrographs)
    assert len(ts.subset("val")) == 1 and len(ts.subset("train")) == 2


def test_strips_for_one_or_two_micrographs_for_three_with_enough_picks_and_sparse_picks():
    from selfpick.training.data import STRIP_VALIDATION_PARTICLES, validate_on_strips
    from selfpick.training.validate import FEW_VALIDATION_PARTICLES

    assert STRIP_VALIDATION_PARTICLES == FEW_VALIDATION_PARTICLES
    assert validate_on_strips([50], 0.1) and validate_on_strips([25, 3], 0.1)
    # three micrographs: strips when a quarter of the picks is enough to choose a threshold
    assert validate_on_strips([65, 65, 65], 0.1)  # ~49 validation picks
    assert not validate_on_strips([25, 25, 25], 0.1)  # ~19: a whole micrograph holds 25
    assert not validate_on_strips([65] * 4, 0.1)  # four or more: whole micrographs
    assert not validate_on_strips([50], 0.0) and not validate_on_strips([], 0.1)
    # More micrographs, sparse picks on each: strips when a whole held-out micrograph would
    # carry fewer than 30 picks and the strips more (EMPIAR-10028, 10 % of every micrograph).
    assert validate_on_strips([9, 8, 9, 8, 9, 8], 0.1)  # 1 micrograph of ~9 vs ~13 in strips
    assert not validate_on_strips([65] * 10, 0.1)  # 65 on the held-out micrograph: enough
    assert not validate_on_strips([650] * 10, 0.1)  # complete labels keep whole micrographs
    assert not validate_on_strips([5, 5, 5, 5], 0.1)  # strips (5) no more than a whole one


def test_sparse_picks_on_many_micrographs_validate_on_strips(tmp_path, caplog):
    from conftest import tiny_simulation

    data = tiny_simulation(tmp_path / "sim", n=6).output_dir
    coords = json.loads((data / "labels" / "coordinates.json").read_text())
    cfile = tmp_path / "coords.json"
    cfile.write_text(json.dumps({k: v[:3] for k, v in coords.items()}))  # 3 picks on each
    cfg = tiny_config(data, tmp_path / "exp", coords_file=str(cfile), val_fraction=0.1)
    with caplog.at_level("INFO", logger="selfpick"):
        ts = load_training_set(cfg, cache_dir=None, progress=False)
    assert len(ts.subset("val")) == 6 and ts.validates_on_strips
    assert "6 labelled micrographs, so sparsely picked" in caplog.text
    assert "pick more particles per micrograph to validate on whole ones" in caplog.text


def test_a_resumed_experiment_keeps_its_kind_of_validation(tiny_data, tmp_path):
    from selfpick.training.experiment import _saved_strips

    coords = json.loads((tiny_data.output_dir / "labels" / "coordinates.json").read_text())
    three = {k: coords[k] for k in sorted(coords)[:3]}
    cfile = tmp_path / "coords.json"
    cfile.write_text(json.dumps(three))
    cfg = tiny_config(tiny_data.output_dir, tmp_path / "exp", coords_file=str(cfile))
    n = sum(len(v) for v in three.values())
    ts = load_training_set(cfg, cache_dir=None, progress=False)
    assert ("val_regions" in ts.split_names()) == (n >= 120)
    forced = load_training_set(cfg, cache_dir=None, progress=False, strips=True)
    assert sorted(forced.split_names()["val_regions"]) == sorted(three)
    whole = load_training_set(cfg, cache_dir=None, progress=False, strips=False)
    assert "val_regions" not in whole.split_names() and len(whole.subset("val")) == 1

    exp = tmp_path / "saved"
    exp.mkdir()
    assert _saved_strips(exp) is None  # nothing saved
    (exp / "config.json").write_text(json.dumps({"split": whole.split_names()}))
    assert _saved_strips(exp) is False
    (exp / "config.json").write_text(json.dumps({"split": forced.split_names()}))
    assert _saved_strips(exp) is True
