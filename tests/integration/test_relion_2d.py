"""selfpick's picks through RELION's reference-free 2D classification (``make relion-2d``).

Class averages are how a biologist judges a picker. This test does what a user would, on real
micrographs, with RELION's own programs:

1. train selfpick on 6 EMPIAR-10028 micrographs (80S ribosome, 1024^2 PNG, 4x binned, 56 px
   particles) with their curated picks -- a short training, a couple of minutes on 2 CPU cores;
2. ``selfpick pick`` the 4 other micrographs (never seen in training; the data set's suggested
   test split);
3. ``relion_preprocess --extract`` those picks (box 96, scaled to 64, normalised, contrast
   inverted -- RELION 3.1's Extract job);
4. ``relion_refine`` reference-free 2D classification, K = 4, 5 iterations, as RELION 3.1's
   Class2D job composes it (without CTF: the PNGs carry no CTF parameters);
5. a montage of the class averages: ``docs/images/relion_2d_classes.png`` when
   ``SELFPICK_WRITE_DOCS_IMAGES=1``, else the test's temporary folder.

It asserts that RELION finishes and writes 4 class averages of the picks, that the picks agree
with the curated labels (a loose bound: the labels are incomplete, so precision is a lower
bound) and that the average of the picked particles is centred in RELION's boxes. Marked
``relion2d``: not part of ``make test``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import starfile

from relion_helpers import (
    NO_RELION,
    RELION_PREPROCESS,
    REPO,
    RIBOSOME,
    centre_offset,
    expected_extracted,
    extract,
    image_to_mrc,
    read_particles,
    require,
    require_real,
    run,
    write_micrographs_star,
)
from selfpick import cli
from selfpick.evaluation.matching import match_picks
from selfpick.io import coords as coordio

pytestmark = [pytest.mark.relion2d, pytest.mark.realdata, pytest.mark.slow,
              pytest.mark.skipif(RELION_PREPROCESS is None, reason=NO_RELION)]

PIXEL = 5.36  # Å per pixel of the binned PNGs (data README)
DIAMETER = 56.0  # px
BOX, SCALED = 96, 64  # extraction box (original px) and its rescaled size
K, ITERATIONS = 4, 5
DOCS_IMAGE = REPO / "docs" / "images" / "relion_2d_classes.png"


def _split(data: Path) -> tuple[list[str], list[str]]:
    names = sorted(p.stem for p in (data / "micrographs").glob("*.png"))
    return names[:6], names[6:]  # the data README's split: train on the first 6


def _train_and_pick(project: Path, data: Path, train: list[str], test: list[str]) -> Path:
    (project / "train_coords").mkdir()
    for name in train:
        shutil.copy(data / "coordinates" / f"{name}.csv", project / "train_coords")
    (project / "train.txt").write_text("".join(f"Micrographs/{n}.mrc\n" for n in train))
    (project / "test.txt").write_text("".join(f"Micrographs/{n}.mrc\n" for n in test))
    cwd = os.getcwd()
    os.chdir(project)
    try:
        assert cli.main(["train", "-q", "--image-dir", "train.txt", "--coords-file",
                         "train_coords", "--particle-diameter", str(DIAMETER),
                         "--output-dir", "selfpick_exp", "--initial-epochs", "6",
                         "--crops-per-epoch", "64", "--self-training-iterations", "0",
                         "--val-fraction", "0.17", "--seed", "0"]) == 0
        assert cli.main(["pick", "-q", "--model", "selfpick_exp/best_model.pt",
                         "--images", "test.txt", "--output", "picks/Micrographs/"]) == 0
    finally:
        os.chdir(cwd)
    return project / "picks" / "Micrographs"


def _montage(classes: np.ndarray, shares: np.ndarray, n_parts: int, n_mics: int,
             target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-shares)
    fig, axes = plt.subplots(1, len(classes), figsize=(2.0 * len(classes), 2.45), dpi=150)
    for ax, k in zip(np.atleast_1d(axes), order):
        img = classes[k]
        lo, hi = np.percentile(img, [1, 99.5])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(f"class {k + 1}: {100 * shares[k]:.0f} %", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"RELION 2D classes of {n_parts} selfpick picks, {n_mics} held-out "
                 "EMPIAR-10028 micrographs", fontsize=9)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    plt.close(fig)


def test_relion_2d_classes_of_selfpick_picks(tmp_path):
    data = require_real(RIBOSOME)
    refine = require("relion_refine")
    project = tmp_path / "project"
    train, test = _split(data)
    shapes = {}
    for name in train + test:
        shapes[name] = image_to_mrc(data / "micrographs" / f"{name}.png",
                                    project / "Micrographs" / f"{name}.mrc", PIXEL).shape
    write_micrographs_star(project / "mics_test.star", [f"Micrographs/{n}.mrc" for n in test],
                           PIXEL)

    folder = _train_and_pick(project, data, train, test)

    # The picks against the curated labels of the held-out micrographs.
    n_picks = n_true = n_tp = 0
    distances = []
    picks = {}
    for name in test:
        table = starfile.read(folder / f"{name}_autopick.star", always_dict=True)[""]
        xy = table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(np.float64)
        truth = coordio.read_coordinates(data / "coordinates" / f"{name}.csv")
        match = match_picks(xy, table["rlnAutopickFigureOfMerit"].to_numpy(),
                            truth[["x", "y"]].to_numpy(np.float64), DIAMETER / 2)
        picks[name] = xy
        n_picks, n_true, n_tp = n_picks + len(xy), n_true + len(truth), n_tp + match.n_tp
        distances.append(match.distance[match.is_tp])
    recall, precision = n_tp / n_true, n_tp / max(1, n_picks)
    distance = float(np.median(np.concatenate(distances)))
    print(f"{n_picks} picks on {len(test)} held-out micrographs; against the curated labels: "
          f"recall {recall:.2f}, precision {precision:.2f} (lower bound), median distance "
          f"{distance:.1f} px")
    assert recall > 0.5 and precision > 0.5  # loose: seen 0.9+ on both

    star = extract(project, "mics_test.star", "picks/", "Extract/job005/", BOX, scale=SCALED)
    parts, images = read_particles(star, project)
    assert len(parts) == sum(expected_extracted(picks[n], shapes[n], BOX) for n in test)
    offset = centre_offset(images.mean(axis=0))  # in pixels of the scaled box
    print(f"average of the extracted picks: {offset} px (of {SCALED}) from the box centre")
    assert float(np.hypot(*offset)) <= DIAMETER / 8 * SCALED / BOX

    # As RELION 3.1's Class2D job composes it, without --ctf (no CTF for these PNGs).
    out = project / "Class2D" / "job006"
    out.mkdir(parents=True)
    angpix = PIXEL * BOX / SCALED
    mask = int(round(1.2 * DIAMETER * PIXEL))  # Å, a little larger than the particle
    run([refine, "--o", "Class2D/job006/run", "--i", star.relative_to(project),
         "--dont_combine_weights_via_disc", "--pool", "30", "--pad", "2",
         "--iter", str(ITERATIONS), "--tau2_fudge", "2", "--particle_diameter", str(mask),
         "--K", str(K), "--flatten_solvent", "--zero_mask", "--oversampling", "1",
         "--psi_step", "12", "--offset_range", "5", "--offset_step", "2", "--norm", "--scale",
         "--j", "2", "--random_seed", "0"], project, timeout=1800)

    import mrcfile

    with mrcfile.open(out / f"run_it{ITERATIONS:03d}_classes.mrcs", permissive=True) as mrc:
        classes = np.asarray(mrc.data, dtype=np.float32)
        assert abs(float(mrc.voxel_size.x) - angpix) < 0.01
    assert classes.shape == (K, SCALED, SCALED)
    assert np.isfinite(classes).all() and all(c.std() > 0 for c in classes)
    model = starfile.read(out / f"run_it{ITERATIONS:03d}_model.star", always_dict=True)
    shares = model["model_classes"]["rlnClassDistribution"].to_numpy(np.float64)
    assert len(shares) == K and abs(shares.sum() - 1) < 1e-3
    assigned = starfile.read(out / f"run_it{ITERATIONS:03d}_data.star", always_dict=True)
    assert len(assigned["particles"]) == len(parts)

    write_docs = os.environ.get("SELFPICK_WRITE_DOCS_IMAGES") == "1"
    target = DOCS_IMAGE if write_docs else tmp_path / DOCS_IMAGE.name
    _montage(classes, shares, len(parts), len(test), target)
    print(f"class distribution {np.round(shares, 3).tolist()}; montage: {target}")
    assert target.stat().st_size > 0
