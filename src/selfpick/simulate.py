"""Synthetic cryo-EM micrographs with exact ground truth: the project's demo and test data.

What a simulated micrograph contains, in the order it is made:

1. **Particles.** One random "molecule" per data set -- 3-D Gaussian pseudo-atoms grouped in
   domains or subunits, in 2-3 conformations -- is rotated to a uniformly random orientation
   for every particle (or, for ``in_plane_fraction`` of them, to a side view lying flat) and
   projected along z (sum of 2-D Gaussians). Its ``shape``:

   - ``"globular"`` (default): a few dozen atoms filling an ellipsoid, pulled into 3-4 lobes;
     a hinge swings the smallest domain between conformations.
   - ``"shell"``: a hollow spherical shell of evenly spread subunits (a virus capsid,
     apoferritin), inner radius about 0.65 of the outer one. Every projection is a ring: the
     middle holds about half the projected mass of the rim. Conformations breathe.
   - ``"elongated"``: a 3:1 rod of 4-6 domains in a slightly wavy row (a filament fragment,
     an elongated complex); ``diameter`` is its **length**, the longest dimension, and its
     width is a third of that. Conformations bend it in the middle.

   For every shape all atoms lie within ``diameter / 2 - 1.5 sigma`` of the centre, so every
   projection fits inside the circle of ``diameter``. The **truth centre** of a particle is the
   projection of its centre of mass, which is the centre of mass of its projected density
   (for "globular", of the first conformation: the hinge moves the others' by under a pixel).
   Centres are placed Poisson-disk-like (at least ``min_distance`` diameters apart) until the
   particle disks (diameter ``diameter``) cover ``coverage`` of the free ice -- 0.3 by default,
   0.04 for a sparse field, 0.5 for a crowded one; a share ``touching_fraction`` of particles
   touch a neighbour (``touch_distance`` diameters apart); every centre is at least a radius
   from the image edge, and none lies on carbon or on a contaminant.
2. **Carbon edge** (with probability ``carbon_probability``): beyond a gently curved boundary
   (the rim of a hole in the carbon film) the image is darker and grainier; no particles there.
3. **Contaminants**: irregular, strongly dark blobs (ice crystals, ethane droplets), 0.6 to 2.5
   particle diameters across. They are *not* particles and are never in the truth.
4. **Contrast transfer function** applied to all specimen density at once: per-micrograph
   defocus (``defocus_um``), small astigmatism, spherical aberration, amplitude contrast and a
   B-factor envelope. It gives particles the dark core, bright halo and Fresnel fringes of real
   defocused images; the ice itself contributes CTF-filtered "structural" noise (Thon rings).
5. **Ice thickness gradient**: a smooth, low-frequency background (a ramp plus a few long waves).
6. **Shot noise**: white Gaussian noise -- or, for counts (``pixel_type`` "uint16" or
   "int16"), Poisson-distributed electron counts (see below).

Contrast is negative as in real data: positive projected mass makes the image darker.

**Signal-to-noise ratio.** ``snr`` is the mean square of the noise-free, CTF-filtered particle
image over the pixels inside the particle disks (radius = diameter / 2 around every true centre),
divided by the variance per pixel of all noise (shot + structural). The particle image is zero in
empty ice, so this is signal power against noise power at the pixel size of the micrograph.
Images are in units of that noise: the noise standard deviation is 1 and empty ice averages about
0 (plus the ice gradient); they carry no electron-count scale. For an elongated particle the
disk holds much empty ice, so its own pixels carry more signal than a globular particle's at
the same ``snr``.

**Pixel values and files.** ``pixel_type="float32"`` (default) writes the image above as a
float32 MRC (mode 2). ``"uint16"`` (MRC mode 6) and ``"int16"`` (mode 1) write what a counting
detector's summed frames hold instead: ``counts = Poisson(dose + g * x)`` with ``x`` the
noise-free image in noise units (particles, CTF-filtered ice structure, carbon, contaminants,
ice gradient), ``dose = dose_per_pixel`` and ``g = sqrt(dose / (1 - structural_noise))``, so
``(counts - dose) / g`` is again in noise standard deviations and the SNR definition holds
(recorded per micrograph as ``counts_per_noise_sd``); ``hot_pixels`` adds uncorrected
detector defects that read :data:`HOT_PIXEL_DOSES` doses at the same places in every
micrograph. Counts use the same random draws as the float image up to the shot noise. ``file_format="png"`` writes PNG instead of MRC: float32
images as 8-bit grey levels (median -/+ 5 robust standard deviations -> 0..255, as in
CryoPPP's PNG exports), uint16 counts as 16-bit grey; PNG carries no pixel size.

**The panel.** :data:`SIMULATED_PANEL` names presets with the variety of real data sets
(globular, shell, elongated, small, raw16, crowded, sparse, carbon, png8, each differing
from the default in one respect; and faint, hard in several at once); :func:`simulate_preset`
writes one (``selfpick simulate --preset``) and :func:`write_panel_preview` draws a crop of
each (``docs/images/simulated_panel.png``).

Units: coordinates and lengths in pixels of the micrograph (``x`` = column, ``y`` = row, the
centre of pixel ``data[r, c]`` is at ``(x, y) = (c, r)``), pixel size in Å, defocus in µm
(underfocus positive), Cs in mm, B-factor in Å².

Reproducibility: everything derives from ``seed`` through :class:`numpy.random.SeedSequence`;
micrograph ``i`` depends only on ``seed`` and ``i`` (not on how many are made), the molecule only
on ``seed`` (and its shape settings), and the partial labels use their own stream, so changing ``label_fraction`` changes
no pixel and the labels for a smaller fraction are a subset of those for a larger one. The
shape, in-plane, count and file options draw random numbers only when they are switched on, so
the default settings give the same data as before they existed.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfpick import __version__
from selfpick.errors import OutputError, SelfpickError

log = logging.getLogger("selfpick")

#: Sub-folders and files of the output layout; ``--overwrite`` replaces exactly these.
OUTPUT_ITEMS = ("micrographs", "truth", "labels", "preview.png", "simulation.json")

# How carbon and contaminants look, in noise standard deviations; chosen by eye against real
# micrographs (carbon: a darker, grainier band with a bright Fresnel fringe at its edge; ice
# contaminants: nearly black blobs with a fringe).
_CARBON_PHASE = 2.0  # phase step of the film, through the CTF -> edge fringe
_CARBON_GRAIN = 0.7  # extra amorphous-carbon structure noise (std, after the CTF)
_CARBON_DARKENING = 0.3  # amplitude loss on carbon
_CONTAMINANT_PHASE = 3.0
_CONTAMINANT_DARKENING = 2.5
# Particle disks keep this far (px) from the soft edges of carbon and contaminants.
_CLEARANCE = 3.0

#: Particle shape families (``SimulationConfig.shape``).
SHAPES = ("globular", "shell", "elongated")
#: Pixel types of the written micrographs (``SimulationConfig.pixel_type``).
PIXEL_TYPES = ("float32", "uint16", "int16")
#: Micrograph file formats (``SimulationConfig.file_format``).
FILE_FORMATS = ("mrc", "png")

# Streams of the root SeedSequence (spawn order is part of the reproducibility contract).
_STREAM_MOLECULE, _STREAM_MICROGRAPHS, _STREAM_LABELS = 0, 1, 2


@dataclass
class SimulationConfig:
    """Every setting of a simulated data set.

    Lengths are in pixels of the micrograph unless the name says otherwise.
    """

    n_micrographs: int = 8
    size: int = 1024  # micrographs are size x size pixels
    diameter: float = 40.0  # particle diameter, pixels
    pixel_size: float = 2.0  # Å per pixel (written to the MRC header)
    snr: float = 0.08  # see the module docstring for the exact definition
    label_fraction: float = 1.0  # share of true particles in the partial label set, in (0, 1]
    coverage: float = 0.30  # share of the free image area covered by particle disks (density)
    min_distance: float = 0.95  # closest approach of ordinary particles, in diameters
    touching_fraction: float = 0.03  # share of particles placed as touching pairs
    touch_distance: tuple[float, float] = (0.8, 0.9)  # centre distance of touching pairs, diameters
    defocus_um: tuple[float, float] = (1.0, 3.0)  # per-micrograph underfocus range, µm
    astigmatism_um: float = 0.05  # largest defocus difference between the two axes, µm
    voltage_kv: float = 300.0
    cs_mm: float = 2.7  # spherical aberration
    amplitude_contrast: float = 0.07
    bfactor: float = 100.0  # envelope exp(-B k^2 / 4), Å^2
    structural_noise: float = 0.3  # share of the noise variance that is CTF-filtered ice
    ice_gradient: float = 0.25 # peak-to-peak of the smooth background, noise standard deviations
    carbon_probability: float = 0.3  # chance that a micrograph shows a carbon edge
    # Mean number of contaminant blobs per area of 25.6 x 25.6 particle diameters (a default
    # 1024 px micrograph); they are 0.6-2.5 diameters across.
    contaminants: float = 1.5
    n_atoms: int = 60  # Gaussian pseudo-atoms of a globular molecule (shells/rods: at least)
    n_conformations: int = 3
    seed: int = 0
    # Shape family of the molecule (see the module docstring): "globular", "shell" (hollow
    # spherical shell, projects to a ring) or "elongated" (a 3:1 rod of domains; `diameter` is
    # its length, its longest dimension).
    shape: str = "globular"
    # Share of particles whose long axis (the molecule's x axis) lies in the image plane, within
    # about 10 degrees, as elongated particles lie flat in thin ice; the others are uniformly
    # random. 0 = all uniformly random.
    in_plane_fraction: float = 0.0
    # Pixel values: "float32" (noise standard deviations, see the module docstring), or
    # electron counts as a counting detector's summed frames give them, "uint16" (MRC mode 6)
    # or "int16" (MRC mode 1), at `dose_per_pixel` electrons per pixel.
    pixel_type: str = "float32"
    dose_per_pixel: float = 30.0  # mean electron count per pixel of empty ice (counts only)
    # Share of detector pixels that are hot (uncorrected defects; counts only): they read
    # HOT_PIXEL_DOSES times the dose in every micrograph, at the same places (the detector's).
    hot_pixels: float = 0.0
    # Micrograph files: "mrc", or "png" (float32 -> 8-bit grey levels as in CryoPPP's PNG
    # exports; uint16 -> 16-bit PNG).
    file_format: str = "mrc"

    def validate(self) -> None:
        """Raise :class:`SelfpickError` for settings that cannot make a sensible data set."""
        if int(self.n_micrographs) < 1:
            raise SelfpickError(f"--n-micrographs must be at least 1 (got {self.n_micrographs})")
        if not self.diameter > 0 or not math.isfinite(self.diameter):
            raise SelfpickError(f"--diameter must be a positive number of pixels "
                                f"(got {self.diameter})")
        if self.diameter < 6:
            raise SelfpickError(f"--diameter {self.diameter:g} px is too small to draw a "
                                "particle; use at least 6 px")
        if int(self.size) < 4 * self.diameter:
            raise SelfpickError(
                f"--size {self.size} px is too small for particles of {self.diameter:g} px: "
                f"a micrograph must be at least 4 diameters ({math.ceil(4 * self.diameter)} px) "
                "across"
            )
        if not 0.0 < self.label_fraction <= 1.0:
            raise SelfpickError(f"--label-fraction must be in (0, 1] (got {self.label_fraction})")
        if not self.snr > 0 or not math.isfinite(self.snr):
            raise SelfpickError(f"--snr must be a positive number (got {self.snr})")
        if not self.pixel_size > 0 or not math.isfinite(self.pixel_size):
            raise SelfpickError(f"--pixel-size must be a positive number of Å (got "
                                f"{self.pixel_size})")
        if not 0.0 < self.coverage <= 0.5:
            raise SelfpickError(f"--coverage must be in (0, 0.5] (got {self.coverage})")
        lo, hi = self.defocus_um
        if not 0.0 < lo <= hi:
            raise SelfpickError(f"defocus range must satisfy 0 < low <= high (got {lo}, {hi})")
        if not 0.0 <= self.structural_noise < 1.0:
            raise SelfpickError("structural_noise must be in [0, 1)")
        if not 0.0 <= self.carbon_probability <= 1.0:
            raise SelfpickError(f"--carbon-probability must be in [0, 1] "
                                f"(got {self.carbon_probability})")
        if not self.ice_gradient >= 0 or not math.isfinite(self.ice_gradient):
            raise SelfpickError(f"--ice-gradient must be >= 0 (got {self.ice_gradient})")
        if self.contaminants < 0:
            raise SelfpickError(f"--contaminants must be >= 0 (got {self.contaminants})")
        if int(self.seed) < 0:
            raise SelfpickError(f"--seed must be >= 0 (got {self.seed})")
        if self.shape not in SHAPES:
            raise SelfpickError(f"--shape must be one of {', '.join(SHAPES)} "
                                f"(got {self.shape!r})")
        if not 0.0 <= self.in_plane_fraction <= 1.0:
            raise SelfpickError(f"--in-plane-fraction must be in [0, 1] "
                                f"(got {self.in_plane_fraction})")
        if not 0.0 < self.min_distance <= 3.0:
            raise SelfpickError(f"--min-distance must be in (0, 3] diameters "
                                f"(got {self.min_distance})")
        if not 0.0 < self.touch_distance[0] <= self.touch_distance[1]:
            raise SelfpickError(f"touch_distance must satisfy 0 < low <= high "
                                f"(got {self.touch_distance})")
        if not 0.0 <= self.touching_fraction <= 0.5:
            raise SelfpickError(f"touching_fraction must be in [0, 0.5] "
                                f"(got {self.touching_fraction})")
        if self.pixel_type not in PIXEL_TYPES:
            raise SelfpickError(f"--pixel-type must be one of {', '.join(PIXEL_TYPES)} "
                                f"(got {self.pixel_type!r})")
        if self.file_format not in FILE_FORMATS:
            raise SelfpickError(f"--format must be one of {', '.join(FILE_FORMATS)} "
                                f"(got {self.file_format!r})")
        if self.file_format == "png" and self.pixel_type == "int16":
            raise SelfpickError("--format png holds unsigned pixels: use --pixel-type uint16 "
                                "(or float32 for 8-bit grey levels), not int16")
        if not 0.0 <= self.hot_pixels <= 0.01:
            raise SelfpickError(f"--hot-pixels is a share of the pixels, in [0, 0.01] "
                                f"(got {self.hot_pixels})")
        if self.hot_pixels and self.pixel_type == "float32":
            raise SelfpickError("--hot-pixels are a counting detector's: use --pixel-type "
                                "uint16 or int16")
        if not 0.0 < self.dose_per_pixel <= 5000.0 or not math.isfinite(self.dose_per_pixel):
            raise SelfpickError(f"--dose must be in (0, 5000] electrons per pixel, so counts "
                                f"fit in 16 bits (got {self.dose_per_pixel})")


#: What a hot pixel reads, in doses (``SimulationConfig.hot_pixels``).
HOT_PIXEL_DOSES = 20.0


def hot_pixel_indices(shape: tuple[int, int], share: float, seed: int) -> np.ndarray:
    """Flat indices of the hot pixels of a detector of ``shape`` ``(ny, nx)``: ``share`` of
    them, the same for every micrograph of a data set (they follow ``seed`` only)."""
    n = int(round(share * shape[0] * shape[1]))
    rng = np.random.default_rng([int(seed), 0x407])
    return rng.choice(shape[0] * shape[1], size=n, replace=False)


@dataclass
class Molecule:
    """A random 3-D density of Gaussian pseudo-atoms.

    ``coords`` has shape ``(n_conformations, n_atoms, 3)`` in pixels, centred on the centre of
    mass (of the first conformation for "globular", of each for "shell" and "elongated", whose
    long axis is x); ``weights`` shape ``(n_atoms,)`` (relative mass); ``sigma`` is the atom
    width in pixels.
    Every atom lies within ``diameter / 2 - 1.5 sigma`` of the centre, so every projection fits
    inside the particle circle.
    """

    coords: np.ndarray
    weights: np.ndarray
    sigma: float


@dataclass
class SimulationResult:
    """What :func:`simulate_dataset` wrote.

    ``truth`` and ``labels`` map micrograph name -> ``(N, 2)`` float array of centres
    ``(x, y)`` in pixels. ``truth_file`` / ``labels_file`` are the JSON coordinate files
    (``truth/particles.star`` and ``truth/csv/`` hold the same), ``diameter`` the particle
    diameter in pixels (for "elongated" particles their length).
    """

    output_dir: Path
    micrographs: list[Path]
    truth: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    preview: Path | None
    metadata: dict[str, Any]
    seconds: float = 0.0
    config: SimulationConfig | None = None

    @property
    def n_particles(self) -> int:
        return int(sum(len(v) for v in self.truth.values()))

    @property
    def n_labels(self) -> int:
        return int(sum(len(v) for v in self.labels.values()))

    @property
    def diameter(self) -> float:
        return float(self.metadata["config"]["diameter"])

    @property
    def pixel_size(self) -> float:
        return float(self.metadata["config"]["pixel_size"])

    @property
    def micrograph_dir(self) -> Path:
        return self.output_dir / "micrographs"

    @property
    def truth_file(self) -> Path:
        return self.output_dir / "truth" / "coordinates.json"

    @property
    def labels_file(self) -> Path:
        return self.output_dir / "labels" / "coordinates.json"


# --------------------------------------------------------------------------------------------
# Random generators


def _root(seed: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(int(seed))


def micrograph_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of micrograph ``index``: depends on ``seed`` and ``index`` only."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(_STREAM_MICROGRAPHS, int(index)))
    return np.random.default_rng(ss)


def _labels_rng(seed: int, index: int) -> np.random.Generator:
    ss = np.random.SeedSequence(int(seed), spawn_key=(_STREAM_LABELS, int(index)))
    return np.random.default_rng(ss)


def micrograph_names(n: int) -> list[str]:
    """``sim_000``, ``sim_001``, ... (more digits when n > 1000)."""
    width = max(3, len(str(max(n - 1, 0))))
    return [f"sim_{i:0{width}d}" for i in range(n)]


# --------------------------------------------------------------------------------------------
# The molecule and its projections


def make_molecule(cfg: SimulationConfig) -> Molecule:
    """Build the data set's molecule of ``cfg.shape`` from ``cfg.seed`` (same seed -> same
    molecule)."""
    rng = np.random.default_rng(np.random.SeedSequence(int(cfg.seed),
                                                       spawn_key=(_STREAM_MOLECULE,)))
    if cfg.shape == "shell":
        return _shell_molecule(rng, cfg)
    if cfg.shape == "elongated":
        return _elongated_molecule(rng, cfg)
    radius = cfg.diameter / 2.0
    sigma = max(1.0, cfg.diameter / 14.0)
    n_atoms = max(4, int(cfg.n_atoms))
    r_lim = radius - 1.5 * sigma  # atom centres stay here: projections fit in the circle
    # A globular complex fills its sphere: atoms uniform in an ellipsoid (axes 1, 0.9, 0.75 of
    # the radius, so the outline changes with orientation), then pulled part-way towards the
    # nearest of 3-4 domain centres, which makes lobes and grooves instead of a featureless ball.
    direction = rng.normal(size=(n_atoms, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    atoms = direction * rng.uniform(0, 1, size=(n_atoms, 1)) ** (1 / 3) * r_lim
    atoms *= np.array([1.0, 0.9, 0.75])
    n_dom = int(rng.integers(3, 5))
    dom_centres = rng.normal(size=(n_dom, 3))
    dom_centres *= (0.5 * r_lim) / np.linalg.norm(dom_centres, axis=1, keepdims=True)
    which = np.argmin(((atoms[:, None, :] - dom_centres[None]) ** 2).sum(-1), axis=1)
    atoms += 0.35 * (dom_centres[which] - atoms)
    weights = rng.uniform(0.6, 1.4, size=n_atoms)
    atoms -= np.average(atoms, axis=0, weights=weights)
    atoms *= r_lim / np.linalg.norm(atoms, axis=1).max()
    dom_sizes = np.bincount(which, minlength=n_dom)

    # Conformations: the smallest domain swings about the molecule's centre by a hinge angle.
    confs = [atoms]
    hinge_dom = int(np.argmin(np.where(dom_sizes > 0, dom_sizes, n_atoms + 1)))
    moving = which == hinge_dom
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    for k in range(1, max(1, int(cfg.n_conformations))):
        angle = math.radians(12.0) * (1 if k % 2 else -1) * ((k + 1) // 2)
        rot = _axis_angle_matrix(axis, angle)
        c = atoms.copy()
        c[moving] = c[moving] @ rot.T
        # Keep inside the sphere after the swing.
        c *= min(1.0, r_lim / np.linalg.norm(c, axis=1).max())
        confs.append(c)
    return Molecule(np.asarray(confs, dtype=np.float64), weights.astype(np.float64), sigma)


def _fit_and_centre(atoms: np.ndarray, weights: np.ndarray, r_lim: float) -> np.ndarray:
    """Move the centre of mass to the origin, then shrink (never grow) so that every atom is
    within ``r_lim`` of it."""
    atoms = atoms - np.average(atoms, axis=0, weights=weights)
    return atoms * min(1.0, r_lim / np.linalg.norm(atoms, axis=1).max())


def _shell_molecule(rng: np.random.Generator, cfg: SimulationConfig) -> Molecule:
    """A hollow spherical shell (a virus capsid, apoferritin): subunits of a few atoms each,
    spread evenly over a sphere, the wall from about 0.65 of the outer radius to the outer
    radius (apoferritin: 8 and 12 nm diameters).

    Atoms are narrower than a globular molecule's (``diameter / 20``) so the wall stays
    thin. Every projection is a ring: the line of sight crosses the wall face-on in the middle
    (about half the projected mass of the rim) and grazes it at the rim. Conformations breathe:
    the radius shrinks by 1.5 % per step.
    """
    radius = cfg.diameter / 2.0
    sigma = max(1.0, cfg.diameter / 20.0)
    r_lim = radius - 1.5 * sigma
    r_in = min(0.65 * radius + sigma, r_lim)  # atom centres between r_in and r_lim
    r_mid = 0.5 * (r_in + r_lim)
    # Subunits about 3 atom widths apart; a Fibonacci lattice spreads them evenly.
    n_sub = int(np.clip(round(4 * math.pi * r_mid**2 / (3.0 * sigma) ** 2), 12, 400))
    per_sub = max(4, math.ceil(int(cfg.n_atoms) / n_sub))
    k = np.arange(n_sub) + 0.5
    polar = np.arccos(1 - 2 * k / n_sub)
    azim = math.pi * (1 + 5**0.5) * k
    sub = np.stack([np.cos(azim) * np.sin(polar), np.sin(azim) * np.sin(polar),
                    np.cos(polar)], axis=1)
    sub = sub @ random_rotations(rng, 1)[0].T
    # Atoms of a subunit: spread along the surface around its centre, anywhere in the wall.
    atoms = sub[:, None, :] * r_mid + rng.normal(scale=sigma, size=(n_sub, per_sub, 3))
    direction = atoms / np.linalg.norm(atoms, axis=2, keepdims=True)
    atoms = (direction * rng.uniform(r_in, r_lim, size=(n_sub, per_sub, 1))).reshape(-1, 3)
    weights = rng.uniform(0.6, 1.4, size=len(atoms))
    atoms = _fit_and_centre(atoms, weights, r_lim)
    confs = [atoms * (1.0 - 0.015 * k) for k in range(max(1, int(cfg.n_conformations)))]
    return Molecule(np.asarray(confs, dtype=np.float64), weights.astype(np.float64), sigma)


def _elongated_molecule(rng: np.random.Generator, cfg: SimulationConfig) -> Molecule:
    """A rod of 4-6 domains in a slightly wavy row along x: a filament fragment, a
    coiled-coil protein, an elongated complex. About 3:1: ``diameter`` is the length (the
    longest dimension), the width is a third of it. Atoms are narrower than a globular
    molecule's (``diameter / 24``) so the thin rod still shows its domains. Conformations bend
    the rod at a domain boundary near the middle by 8 degrees per step."""
    d = cfg.diameter
    sigma = max(1.0, d / 24.0)
    r_lim = d / 2.0 - 1.5 * sigma
    half_w = max(0.5 * sigma, d / 6.0 - 1.5 * sigma)  # lateral reach of atom centres
    n_dom = int(rng.integers(4, 7))
    per_dom = max(20, math.ceil(int(cfg.n_atoms) / n_dom))
    half_len = r_lim / n_dom  # domains tile [-r_lim, r_lim] along x
    centres = np.zeros((n_dom, 3))
    centres[:, 0] = -r_lim + half_len * (2 * np.arange(n_dom) + 1)
    centres[:, 1:] = np.clip(rng.normal(scale=0.3 * half_w, size=(n_dom, 2)),
                             -0.5 * half_w, 0.5 * half_w)
    # Atoms uniform in an ellipsoid around each domain centre, overlapping its neighbours a
    # little: a continuous rod with shallow grooves between rounded domains.
    direction = rng.normal(size=(n_dom, per_dom, 3))
    direction /= np.linalg.norm(direction, axis=2, keepdims=True)
    reach = rng.uniform(0, 1, size=(n_dom, per_dom, 1)) ** (1 / 3)
    atoms = centres[:, None, :] + direction * reach * np.array([1.25 * half_len, half_w, half_w])
    domain = np.repeat(np.arange(n_dom), per_dom)
    atoms = atoms.reshape(-1, 3)
    lateral = np.linalg.norm(atoms[:, 1:], axis=1, keepdims=True)
    atoms[:, 1:] *= np.minimum(1.0, half_w / np.maximum(lateral, 1e-9))
    atoms[:, 0] = np.clip(atoms[:, 0], -r_lim, r_lim)
    weights = rng.uniform(0.6, 1.4, size=len(atoms))
    atoms = _fit_and_centre(atoms, weights, r_lim)
    hinge_x = 0.5 * float(atoms[domain == n_dom // 2 - 1, 0].mean()
                          + atoms[domain == n_dom // 2, 0].mean())
    moving = domain >= n_dom // 2
    bend = rng.normal(size=3)
    bend[0] = 0.0
    bend /= np.linalg.norm(bend)
    confs = [atoms]
    for k in range(1, max(1, int(cfg.n_conformations))):
        angle = math.radians(8.0) * (1 if k % 2 else -1) * ((k + 1) // 2)
        pivot = np.array([hinge_x, 0.0, 0.0])
        c = atoms.copy()
        c[moving] = (c[moving] - pivot) @ _axis_angle_matrix(bend, angle).T + pivot
        confs.append(_fit_and_centre(c, weights, r_lim))
    return Molecule(np.asarray(confs, dtype=np.float64), weights.astype(np.float64), sigma)


def _axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 3, 3)`` rotation matrices, uniform over SO(3) (normalised Gaussian quaternions)."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)


def in_plane_rotations(rng: np.random.Generator, n: int, tilt_deg: float = 10.0) -> np.ndarray:
    """``(n, 3, 3)`` rotations that keep the molecule's x axis near the image plane: a random
    spin about x, a tilt out of the plane (normal, ``tilt_deg`` standard deviation), a
    uniformly random direction in the plane -- side views, as rods lying flat in thin ice."""
    def rot(axis: int, angle: np.ndarray) -> np.ndarray:
        c, s = np.cos(angle), np.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        m = np.zeros((len(angle), 3, 3))
        m[:, axis, axis] = 1.0
        m[:, i, i], m[:, i, j], m[:, j, i], m[:, j, j] = c, -s, s, c
        return m

    spin = rng.uniform(0, 2 * math.pi, size=n)
    tilt = rng.normal(0, math.radians(tilt_deg), size=n)
    turn = rng.uniform(0, 2 * math.pi, size=n)
    return rot(2, turn) @ rot(1, tilt) @ rot(0, spin)


def render_particles(
    shape: tuple[int, int],
    xy: np.ndarray,
    molecule: Molecule,
    rotations: np.ndarray,
    conformations: np.ndarray,
    scales: np.ndarray | None = None,
) -> np.ndarray:
    """Projected mass of particles at centres ``xy`` (``(N, 2)``, pixels) into an image.

    Each particle is the sum over atoms of 2-D Gaussians at the rotated atoms' (x, y). A
    Gaussian is separable, so a particle's patch is ``Gy^T diag(w) Gx`` -- one batched matrix
    product for all particles -- and patches are summed into the image with ``bincount``
    (patches of neighbours overlap). Returns ``float32`` of ``shape`` (ny, nx), positive.
    """
    ny, nx = shape
    n = len(xy)
    out = np.zeros(ny * nx, dtype=np.float64)
    if n == 0:
        return out.reshape(ny, nx).astype(np.float32)
    sigma = molecule.sigma
    half = int(math.ceil(np.abs(molecule.coords).max() + 4 * sigma))
    p = 2 * half + 1
    grid = np.arange(p, dtype=np.float64)
    inv = -0.5 / sigma**2
    weights = np.broadcast_to(molecule.weights, (n, molecule.weights.size)).astype(np.float32)
    if scales is not None:
        weights = weights * np.asarray(scales, dtype=np.float32)[:, None]
    # Chunks of particles bound the temporaries (a 4k micrograph holds thousands of particles).
    for s in range(0, n, 512):
        sl = slice(s, min(n, s + 512))
        c_xy = xy[sl]
        atoms = molecule.coords[conformations[sl]]  # (n, A, 3)
        rotated = np.einsum("nij,naj->nai", rotations[sl], atoms)  # (n, A, 3)
        origin = np.floor(c_xy).astype(np.int64) - half  # (n, 2): first column / row of patch
        # Atom positions relative to the patch origin, in pixels.
        ax = c_xy[:, 0, None] + rotated[:, :, 0] - origin[:, 0, None]  # (n, A)
        ay = c_xy[:, 1, None] + rotated[:, :, 1] - origin[:, 1, None]
        gx = np.exp(inv * (grid[None, None, :] - ax[:, :, None]) ** 2).astype(np.float32)
        gy = np.exp(inv * (grid[None, None, :] - ay[:, :, None]) ** 2).astype(np.float32)
        w = weights[sl]
        patches = np.matmul((gy * w[:, :, None]).transpose(0, 2, 1), gx)  # (n, rows, cols)
        rows = origin[:, 1, None, None] + np.arange(p)[None, :, None]
        cols = origin[:, 0, None, None] + np.arange(p)[None, None, :]
        rows, cols = np.broadcast_arrays(rows, cols)
        ok = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
        out += np.bincount(rows[ok] * nx + cols[ok], weights=patches[ok], minlength=ny * nx)
    return out.reshape(ny, nx).astype(np.float32)


def disk_mask(shape: tuple[int, int], xy: np.ndarray, radius: float) -> np.ndarray:
    """Boolean ``(ny, nx)`` mask of pixels within ``radius`` of any centre in ``xy`` (N, 2)."""
    ny, nx = shape
    mask = np.zeros(ny * nx, dtype=bool)
    if len(xy) == 0:
        return mask.reshape(ny, nx)
    h = int(math.ceil(radius)) + 1
    off = np.arange(-h, h + 1)
    base = np.rint(xy).astype(np.int64)
    rows = base[:, 1, None, None] + off[None, :, None]
    cols = base[:, 0, None, None] + off[None, None, :]
    rows, cols = np.broadcast_arrays(rows, cols)
    d2 = (cols - xy[:, 0, None, None]) ** 2 + (rows - xy[:, 1, None, None]) ** 2
    ok = (d2 <= radius**2) & (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    mask[rows[ok] * nx + cols[ok]] = True
    return mask.reshape(ny, nx)


# --------------------------------------------------------------------------------------------
# Optics


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV."""
    v = voltage_kv * 1e3
    return 12.2643 / math.sqrt(v * (1.0 + 0.978466e-6 * v))


def ctf_rfft(
    shape: tuple[int, int],
    pixel_size: float,
    defocus_u_um: float,
    defocus_v_um: float,
    astig_angle: float,
    cfg: SimulationConfig,
) -> np.ndarray:
    """CTF times envelope on the ``rfft2`` grid of ``shape``: ``float32 (ny, nx // 2 + 1)``.

    ``H = -(sqrt(1 - A^2) sin chi + A cos chi) exp(-B k^2 / 4)`` with
    ``chi = pi lambda dz k^2 - pi/2 Cs lambda^3 k^4`` and ``dz`` the defocus along the
    frequency's direction (underfocus positive). The leading minus makes positive mass dark at
    underfocus, as in real micrographs. ``astig_angle`` in radians from the x axis.
    """
    ny, nx = shape
    lam = electron_wavelength(cfg.voltage_kv)
    kx = np.fft.rfftfreq(nx, d=pixel_size)[None, :]
    ky = np.fft.fftfreq(ny, d=pixel_size)[:, None]
    k2 = kx**2 + ky**2
    theta = np.arctan2(ky, kx)
    dz = 1e4 * (0.5 * (defocus_u_um + defocus_v_um)
                + 0.5 * (defocus_u_um - defocus_v_um) * np.cos(2 * (theta - astig_angle)))
    cs = cfg.cs_mm * 1e7
    chi = math.pi * lam * dz * k2 - 0.5 * math.pi * cs * lam**3 * k2**2
    a = cfg.amplitude_contrast
    h = -(math.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)) * np.exp(-cfg.bfactor * k2 / 4)
    return h.astype(np.float32)


def _rfft_power_mean(h: np.ndarray, nx: int) -> float:
    """Mean of |H|^2 over the full 2-D frequency grid, from its ``rfft`` half: the variance
    gain of filtering unit white noise with H."""
    wts = np.full(h.shape[1], 2.0)
    wts[0] = 1.0
    if nx % 2 == 0:
        wts[-1] = 1.0
    return float(((h.astype(np.float64) ** 2) * wts[None, :]).sum() / (h.shape[0] * nx))


# --------------------------------------------------------------------------------------------
# Scene: carbon, contaminants, placement


def _carbon(rng: np.random.Generator, size: int) -> dict[str, float]:
    """A hole rim: carbon lies outside a circle much larger than the image."""
    hole_r = float(rng.uniform(1.5, 3.0) * size)
    angle = float(rng.uniform(0, 2 * math.pi))
    # Distance from the image centre to the rim along `angle`: the carbon covers a strip of
    # roughly 10-30 % of the image on that side.
    reach = float(rng.uniform(0.2, 0.4) * size)
    c = (size - 1) / 2.0
    cx = c - math.cos(angle) * (hole_r - reach)
    cy = c - math.sin(angle) * (hole_r - reach)
    return {"centre_x": cx, "centre_y": cy, "hole_radius": hole_r, "angle": angle}


def _contaminants(rng: np.random.Generator, cfg: SimulationConfig) -> list[dict[str, Any]]:
    size = int(cfg.size)
    lam = cfg.contaminants * (size / (25.6 * cfg.diameter)) ** 2
    n = int(rng.poisson(lam))
    out = []
    for _ in range(n):
        radius = float(rng.uniform(0.3, 1.25) * cfg.diameter)  # 0.6-2.5 diameters across
        amps = rng.uniform(0, 0.12, size=4) / np.arange(1, 5) ** 0.5  # lobes k = 2..5
        phases = rng.uniform(0, 2 * math.pi, size=4)
        out.append({
            "x": float(rng.uniform(0, size - 1)),
            "y": float(rng.uniform(0, size - 1)),
            "radius": radius,
            "lobe_amplitudes": amps.tolist(),
            "lobe_phases": phases.tolist(),
            "darkness": float(rng.uniform(0.7, 1.3)),
        })
    return out


def _contaminant_reach(c: dict[str, Any]) -> float:
    """Largest distance from a contaminant's centre to its boundary, pixels."""
    return c["radius"] * (1.0 + float(np.sum(c["lobe_amplitudes"])))


def _render_contaminants(shape: tuple[int, int], conts: list[dict[str, Any]]) -> np.ndarray:
    """Soft mask in [0, 1] of all contaminants, ``float32 (ny, nx)``."""
    from scipy.special import expit

    ny, nx = shape
    m = np.zeros(shape, dtype=np.float32)
    for c in conts:  # a handful per micrograph; each is vectorised over its window
        reach = _contaminant_reach(c) + 3
        r0, r1 = max(0, int(c["y"] - reach)), min(ny, int(c["y"] + reach) + 2)
        c0, c1 = max(0, int(c["x"] - reach)), min(nx, int(c["x"] + reach) + 2)
        if r0 >= r1 or c0 >= c1:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
        dx, dy = xx - c["x"], yy - c["y"]
        rho = np.hypot(dx, dy)
        th = np.arctan2(dy, dx)
        edge = np.full_like(rho, c["radius"])
        for k, (a, ph) in enumerate(zip(c["lobe_amplitudes"], c["lobe_phases"]), start=2):
            edge += c["radius"] * a * np.cos(k * th + ph)
        # A soft edge 1 px wide (sharp but not aliased), and thicker towards the middle like a
        # droplet or a crystal seen from above, so the blob is not a flat black cut-out.
        blob = expit(edge - rho)
        blob *= 0.6 + 0.4 * np.sqrt(np.clip(1.0 - (rho / edge) ** 2, 0.0, 1.0))
        m[r0:r1, c0:c1] = np.maximum(m[r0:r1, c0:c1], blob * c["darkness"])
    return m


def _excluded(xy: np.ndarray, cfg: SimulationConfig, carbon: dict | None,
              conts: list[dict[str, Any]]) -> np.ndarray:
    """Which candidate centres (N, 2) lie on carbon or on/next to a contaminant."""
    radius = cfg.diameter / 2.0
    bad = np.zeros(len(xy), dtype=bool)
    if carbon is not None:
        d = np.hypot(xy[:, 0] - carbon["centre_x"], xy[:, 1] - carbon["centre_y"])
        bad |= d > carbon["hole_radius"] - radius - _CLEARANCE
    for c in conts:
        d = np.hypot(xy[:, 0] - c["x"], xy[:, 1] - c["y"])
        bad |= d < _contaminant_reach(c) + radius + _CLEARANCE
    return bad


def place_particles(
    rng: np.random.Generator,
    cfg: SimulationConfig,
    carbon: dict | None = None,
    contaminants: list[dict[str, Any]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Particle centres: ``(xy (N, 2) float pixels, touching (N,) bool)``.

    Ordinary particles are at least ``min_distance`` diameters apart (random sequential
    addition in vectorised batches: a batch's candidates too close to accepted particles are
    dropped, and of two candidates too close to each other the later one). Then about
    ``touching_fraction`` of the particles get a partner ``touch_distance`` diameters away
    which is otherwise as free as the rest. All centres are at least a radius + 1 px from the
    edge and off carbon and contaminants.
    """
    from scipy.spatial import cKDTree

    conts = contaminants or []
    size = int(cfg.size)
    d = float(cfg.diameter)
    margin = d / 2.0 + 1.0
    dmin = cfg.min_distance * d
    lo, hi = margin, size - 1 - margin

    # Free area (rough Monte-Carlo estimate) sets how many particles make `coverage`.
    probe = rng.uniform(lo, hi, size=(4000, 2))
    free = 1.0 - _excluded(probe, cfg, carbon, conts).mean()
    area = (hi - lo) ** 2 * free
    target = int(round(cfg.coverage * area / (math.pi * (d / 2) ** 2)))
    n_pairs = int(round(target * cfg.touching_fraction / 2))
    n_main = max(0, target - 2 * n_pairs)

    accepted = np.zeros((0, 2))
    for _ in range(60):
        need = n_main - len(accepted)
        if need <= 0:
            break
        cand = rng.uniform(lo, hi, size=(max(64, 3 * need), 2))
        cand = cand[~_excluded(cand, cfg, carbon, conts)]
        if len(accepted) and len(cand):
            dist, _ = cKDTree(accepted).query(cand, k=1, distance_upper_bound=dmin)
            cand = cand[~np.isfinite(dist)]
        if len(cand) > 1:
            pairs = cKDTree(cand).query_pairs(dmin, output_type="ndarray")
            drop = np.zeros(len(cand), dtype=bool)
            drop[pairs.max(axis=1)] = True
            cand = cand[~drop]
        accepted = np.concatenate([accepted, cand[:need]])
    touching = np.zeros(len(accepted), dtype=bool)

    if n_pairs and len(accepted):
        # For a few random particles, try 12 directions for a partner and keep the first that
        # is at least dmin from every particle but its buddy, inside the image and on free ice.
        buddies = rng.permutation(len(accepted))[: min(len(accepted), 3 * n_pairs)]
        n_dir = 12
        ang = rng.uniform(0, 2 * math.pi, size=(len(buddies), 1)) \
            + np.arange(n_dir)[None, :] * (2 * math.pi / n_dir)
        dist = rng.uniform(*cfg.touch_distance, size=(len(buddies), 1)) * d
        px = accepted[buddies, 0, None] + dist * np.cos(ang)
        py = accepted[buddies, 1, None] + dist * np.sin(ang)
        cand = np.stack([px.ravel(), py.ravel()], axis=1)
        ok = (cand >= lo).all(1) & (cand <= hi).all(1) & ~_excluded(cand, cfg, carbon, conts)
        nn, idx = cKDTree(accepted).query(cand, k=2)
        owner = np.repeat(buddies, n_dir)
        # nearest must be the buddy (it is closer than dmin), second nearest far enough
        ok &= (idx[:, 0] == owner) & (nn[:, 1] >= dmin)
        ok = ok.reshape(len(buddies), n_dir)
        has = ok.any(axis=1)
        first = ok.argmax(axis=1)
        partners = cand.reshape(len(buddies), n_dir, 2)[np.arange(len(buddies)), first][has]
        pb = buddies[has]
        # Partners must not crowd each other either (buddies are distinct by construction).
        if len(partners) > 1:
            pairs = cKDTree(partners).query_pairs(dmin, output_type="ndarray")
            drop = np.zeros(len(partners), dtype=bool)
            drop[pairs.max(axis=1)] = True
            partners, pb = partners[~drop], pb[~drop]
        partners, pb = partners[:n_pairs], pb[:n_pairs]
        touching[pb] = True
        accepted = np.concatenate([accepted, partners])
        touching = np.concatenate([touching, np.ones(len(partners), dtype=bool)])
    return accepted, touching


def _ice_background(
    rng: np.random.Generator, shape: tuple[int, int], amplitude: float
) -> np.ndarray:
    """Smooth background of peak-to-peak about ``amplitude``: a ramp plus a few long waves.

    Thicker ice scatters more, so it is darker; built from separable cosines (no FFT needed).
    """
    ny, nx = shape
    x = np.arange(nx, dtype=np.float32) / max(nx, ny)
    y = np.arange(ny, dtype=np.float32) / max(nx, ny)
    ang = rng.uniform(0, 2 * math.pi)
    bg = math.cos(ang) * (x[None, :] - 0.5) + math.sin(ang) * (y[:, None] - 0.5)
    bg = bg.astype(np.float32)
    for _ in range(4):
        fx, fy = rng.uniform(-1.2, 1.2, size=2)  # cycles per image: long waves only
        ph = rng.uniform(0, 2 * math.pi)
        a = rng.uniform(0.1, 0.3)
        cx = np.cos(2 * math.pi * fx * x + ph).astype(np.float32)
        sx = np.sin(2 * math.pi * fx * x + ph).astype(np.float32)
        cy = np.cos(2 * math.pi * fy * y).astype(np.float32)
        sy = np.sin(2 * math.pi * fy * y).astype(np.float32)
        bg += a * (cy[:, None] * cx[None, :] - sy[:, None] * sx[None, :])
    span = float(bg.max() - bg.min())
    if span > 0:
        bg *= amplitude / span
    return bg - bg.mean()


# --------------------------------------------------------------------------------------------
# One micrograph


def simulate_micrograph(
    rng: np.random.Generator,
    cfg: SimulationConfig,
    index: int = 0,
    molecule: Molecule | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Simulate one micrograph.

    Parameters
    ----------
    rng:
        The micrograph's generator (:func:`micrograph_rng` gives the data set's one for
        ``index``); every random choice of the micrograph comes from it.
    cfg:
        Settings; ``cfg.size`` gives the shape.
    index:
        Position in the data set (recorded in ``extras``; the caller names the file).
    molecule:
        The particle density; default :func:`make_molecule` of ``cfg`` (built once per data set
        by :func:`simulate_dataset`).

    Returns
    -------
    image:
        ``float32 (size, size)``, noise standard deviation about 1, particles dark; or, with
        ``cfg.pixel_type`` "uint16" / "int16", electron counts of that type (module docstring).
    truth_xy:
        ``float64 (N, 2)`` particle centres ``(x, y)`` in pixels.
    extras:
        Facts about the micrograph: defocus (µm; mean, U, V) and astigmatism angle, particle
        count, the carbon edge (None or its circle) and contaminants (centre, radius, shape),
        all JSON-ready; plus ``touching`` (``(N,)`` bool: particles of touching pairs),
        ``carbon_mask`` and ``contaminant_mask`` (``(ny, nx)`` bool), which are not written.
    """
    from scipy import fft as sfft
    from scipy.special import expit

    molecule = molecule if molecule is not None else make_molecule(cfg)
    size = int(cfg.size)
    shape = (size, size)
    workers = max(1, min(4, os.cpu_count() or 1))

    # Optics of this micrograph.
    df = float(rng.uniform(*cfg.defocus_um))
    astig = float(rng.uniform(0, cfg.astigmatism_um))
    astig_angle = float(rng.uniform(0, math.pi))
    df_u, df_v = df + astig / 2, df - astig / 2
    h = ctf_rfft(shape, cfg.pixel_size, df_u, df_v, astig_angle, cfg)

    # Scene.
    carbon = _carbon(rng, size) if rng.random() < cfg.carbon_probability else None
    conts = _contaminants(rng, cfg)
    xy, touching = place_particles(rng, cfg, carbon, conts)
    n = len(xy)
    rots = random_rotations(rng, n)
    if cfg.in_plane_fraction > 0:  # no draws otherwise: other settings keep their pixels
        flat = rng.random(n) < cfg.in_plane_fraction
        rots[flat] = in_plane_rotations(rng, int(flat.sum()))
    confs = rng.integers(0, len(molecule.coords), size=n)
    # Occupancy / local ice: particles are not all equally strong.
    scales = rng.uniform(0.85, 1.15, size=n)
    mass = render_particles(shape, xy, molecule, rots, confs, scales)

    # Particle signal through the CTF, scaled to the requested SNR (noise variance is 1).
    signal = sfft.irfft2(sfft.rfft2(mass, workers=workers) * h, s=shape, workers=workers)
    disks = disk_mask(shape, xy, cfg.diameter / 2.0)
    power = float(np.mean(signal[disks].astype(np.float64) ** 2)) if n else 0.0
    gain = math.sqrt(cfg.snr / power) if power > 0 else 0.0
    signal *= np.float32(gain)

    # Everything else that scatters: ice structure (CTF-filtered noise), carbon (a phase step
    # with amorphous grain), contaminants (a phase step). All in noise units.
    yy = np.arange(size, dtype=np.float32)[:, None]
    xx = np.arange(size, dtype=np.float32)[None, :]
    if carbon is not None:
        dist = np.sqrt((xx - np.float32(carbon["centre_x"])) ** 2
                       + (yy - np.float32(carbon["centre_y"])) ** 2)
        dist -= np.float32(carbon["hole_radius"])  # > 0 on carbon
        carbon_m = expit(dist / np.float32(1.5)).astype(np.float32)
    else:
        carbon_m = np.zeros(shape, dtype=np.float32)
    cont_m = _render_contaminants(shape, conts)
    gain_h = _rfft_power_mean(h, size)
    grain = rng.standard_normal(shape, dtype=np.float32)
    grain *= (math.sqrt(cfg.structural_noise) + _CARBON_GRAIN * carbon_m) \
        / np.float32(math.sqrt(gain_h))
    phase = grain + np.float32(_CARBON_PHASE) * carbon_m + np.float32(_CONTAMINANT_PHASE) * cont_m
    scatter = sfft.irfft2(sfft.rfft2(phase, workers=workers) * h, s=shape, workers=workers)

    # Amplitude terms (electrons scattered out of the aperture): thick carbon and ice
    # crystals are darker on average, not only at their edges.
    image = signal + scatter
    image -= np.float32(_CARBON_DARKENING) * carbon_m + np.float32(_CONTAMINANT_DARKENING) * cont_m
    image += _ice_background(rng, shape, cfg.ice_gradient)
    counts_per_sd = None
    if cfg.pixel_type == "float32":
        shot = rng.standard_normal(shape, dtype=np.float32)
        image += shot * np.float32(math.sqrt(1.0 - cfg.structural_noise))
        image = image.astype(np.float32, copy=False)
    else:
        # Electron counts: the noise-free image modulates the dose, Poisson draws make the
        # shot noise (it replaces the Gaussian one, so the noise variance is the same in
        # units of counts_per_sd; see the module docstring).
        counts_per_sd = math.sqrt(cfg.dose_per_pixel / (1.0 - cfg.structural_noise))
        lam = np.clip(cfg.dose_per_pixel + counts_per_sd * image.astype(np.float64), 0, None)
        top = np.iinfo(np.dtype(cfg.pixel_type)).max
        counts = rng.poisson(lam)
        if cfg.hot_pixels:
            counts.flat[hot_pixel_indices(shape, cfg.hot_pixels, cfg.seed)] = \
                round(HOT_PIXEL_DOSES * cfg.dose_per_pixel)
        image = np.minimum(counts, top).astype(cfg.pixel_type)

    extras: dict[str, Any] = {
        "index": int(index),
        "defocus_um": df,
        "defocus_u_um": df_u,
        "defocus_v_um": df_v,
        "astigmatism_angle_deg": math.degrees(astig_angle),
        "n_particles": int(n),
        "n_touching": int(touching.sum()),
        "touching": touching,
        "carbon_edge": carbon,
        "contaminants": conts,
        "signal_gain": gain,
        "snr": float(cfg.snr) if power > 0 else 0.0,
        "counts_per_noise_sd": counts_per_sd,
        "carbon_mask": carbon_m > 0.5,
        "contaminant_mask": cont_m > 0.05,
    }
    return image, xy, extras


def choose_labels(truth_xy: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A hurried hand-picker's labels: a random ``fraction`` of the truth, at least one.

    Returns indices into ``truth_xy`` in increasing order. The order of picking comes from a
    permutation, so the labels for a smaller fraction are a subset of those for a larger one.
    """
    n = len(truth_xy)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = min(n, max(1, int(round(fraction * n))))
    return np.sort(rng.permutation(n)[:k])


# --------------------------------------------------------------------------------------------
# The data set


def simulate_dataset(
    cfg: SimulationConfig,
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    progress: bool = False,
    preset: str | None = None,
) -> SimulationResult:
    """Simulate ``cfg.n_micrographs`` micrographs and write the data set to ``output_dir``.

    ``preset`` is only recorded in ``simulation.json`` (:func:`simulate_preset` passes it).

    Layout::

        micrographs/sim_000.mrc ...   float32 MRC, voxel size = cfg.pixel_size (Å); uint16 or
                                      int16 counts with cfg.pixel_type; .png with
                                      cfg.file_format "png" (see write_micrograph_file)
        truth/coordinates.json        every particle, {"sim_000": [[x, y], ...]}
        truth/particles.star          every particle, one STAR with rlnMicrographName
        truth/csv/sim_000.csv         every particle, CryoPPP CSV per micrograph
        labels/...                    the partial labels (cfg.label_fraction), same formats
        preview.png                   first micrograph, low-pass filtered, truth and labels
        simulation.json               settings, per-micrograph defocus and counts, version

    Everything is written into a hidden staging folder next to ``output_dir`` and moved into
    place at the end, so a failed or interrupted run leaves no partial data set. An existing,
    non-empty ``output_dir`` is refused (:class:`OutputError`) unless ``overwrite``; then the
    items above are replaced and anything else in the folder is kept.
    """
    cfg.validate()
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise OutputError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError("the output folder exists and is not empty (use --overwrite to "
                          "replace a simulated data set there)", out)
    t0 = time.perf_counter()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = out.parent / f".{out.name}.simulating-{os.getpid()}"
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir()
    except OSError as exc:
        from selfpick.utils.atomic import os_error_to_output_error

        raise os_error_to_output_error(exc, out) from exc
    try:
        result = _simulate_into(cfg, stage, progress, preset)
        _move_into_place(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    result.output_dir = out
    result.micrographs = [out / p.relative_to(stage) for p in result.micrographs]
    result.preview = None if result.preview is None else out / result.preview.relative_to(stage)
    result.seconds = time.perf_counter() - t0
    return result


def _move_into_place(stage: Path, out: Path) -> None:
    try:
        if not out.exists():
            os.replace(stage, out)
            return
        for item in OUTPUT_ITEMS:
            target = out / item
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            src = stage / item
            if src.exists():
                os.replace(src, target)
        shutil.rmtree(stage, ignore_errors=True)
    except OSError as exc:
        from selfpick.utils.atomic import os_error_to_output_error

        raise os_error_to_output_error(exc, out) from exc


def _simulate_into(cfg: SimulationConfig, out: Path, progress: bool,
                   preset: str | None = None) -> SimulationResult:
    import pandas as pd
    from tqdm import tqdm

    from selfpick.io.coords import make_picks, write_coordinates, write_per_micrograph
    from selfpick.utils.atomic import atomic_write_json

    molecule = make_molecule(cfg)
    names = micrograph_names(int(cfg.n_micrographs))
    truth: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    paths: list[Path] = []
    per_mic: list[dict[str, Any]] = []
    first: tuple[np.ndarray, dict[str, Any]] | None = None
    (out / "micrographs").mkdir(parents=True)
    bar = tqdm(names, desc="simulate", unit="micrograph", disable=None if progress else True)
    for i, name in enumerate(bar):
        image, xy, extras = simulate_micrograph(micrograph_rng(cfg.seed, i), cfg, i, molecule)
        path = out / "micrographs" / f"{name}.{cfg.file_format}"
        write_micrograph_file(path, image, cfg,
                              label=f"selfpick {__version__} simulate seed={cfg.seed} {name}")
        paths.append(path)
        truth[name] = xy
        labels[name] = xy[choose_labels(xy, cfg.label_fraction, _labels_rng(cfg.seed, i))]
        if first is None:
            first = (image, extras)
        info = {k: v for k, v in extras.items()
                if k not in ("touching", "carbon_mask", "contaminant_mask")}
        info["name"] = name
        info["file"] = f"micrographs/{name}.{cfg.file_format}"
        info["n_labels"] = int(len(labels[name]))
        per_mic.append(info)

    for folder, table in (("truth", truth), ("labels", labels)):
        picks = pd.concat(
            [make_picks(name, xy, diameter=cfg.diameter) for name, xy in table.items()],
            ignore_index=True,
        )
        write_coordinates(picks, out / folder / "coordinates.json", "json")
        write_coordinates(picks, out / folder / "particles.star", "star")
        write_per_micrograph(picks, out / folder / "csv", "cryoppp")

    preview = out / "preview.png"
    assert first is not None
    try:
        write_preview(preview, first[0], truth[names[0]], labels[names[0]], cfg,
                      title=f"{names[0]}  defocus {first[1]['defocus_um']:.2f} µm")
    except SelfpickError:
        raise
    except Exception as exc:  # a figure is never worth losing the data set for
        log.warning("could not draw the preview (%s: %s)", type(exc).__name__, exc)
        preview = None

    metadata = {
        "selfpick_version": __version__,
        "preset": preset,
        "config": dataclasses.asdict(cfg),
        "units": {"coordinates": "pixels (x = column, y = row)", "diameter": "pixels",
                  "pixel_size": "Å/pixel", "defocus": "µm, underfocus positive",
                  "image": _image_units(cfg)},
        "truth_centre": "projection of the particle's centre of mass (= centre of mass of "
                        "its projected density)",
        "snr_definition": "mean square of the CTF-filtered particle image inside the particle "
                          "disks / variance of all noise per pixel",
        "molecule": {"n_atoms": int(molecule.weights.size),
                     "n_conformations": int(len(molecule.coords)),
                     "atom_sigma_px": molecule.sigma},
        "n_particles": int(sum(len(v) for v in truth.values())),
        "n_labels": int(sum(len(v) for v in labels.values())),
        "micrographs": per_mic,
    }
    atomic_write_json(out / "simulation.json", metadata)
    return SimulationResult(out, paths, truth, labels, preview, metadata, config=cfg)


# --------------------------------------------------------------------------------------------
# Micrograph files


def _image_units(cfg: SimulationConfig) -> str:
    if cfg.pixel_type != "float32":
        kind = "16-bit PNG" if cfg.file_format == "png" else f"{cfg.pixel_type} MRC"
        return (f"electron counts ({kind}), {cfg.dose_per_pixel:g} per pixel of empty ice on "
                "average, Poisson; (counts - dose) / counts_per_noise_sd is in noise standard "
                "deviations; particles dark")
    if cfg.file_format == "png":
        return ("8-bit grey levels: 0 and 255 = median -/+ 5 robust noise standard deviations "
                "of the micrograph; particles dark")
    return "noise standard deviations; particles dark"


def to_uint8(image: np.ndarray, spread: float = 5.0) -> np.ndarray:
    """8-bit grey levels as exported PNG micrographs have them (CryoPPP): a linear stretch of
    the median -/+ ``spread`` robust standard deviations (1.4826 x median absolute deviation)
    to 0..255, clipped, so noise spans many grey levels and only carbon, ice crystals and
    outliers saturate."""
    img = np.asarray(image, dtype=np.float32)
    med = float(np.median(img))
    sd = 1.4826 * float(np.median(np.abs(img - med))) or float(img.std()) or 1.0
    lo = med - spread * sd
    scaled = (img - np.float32(lo)) * np.float32(255.0 / (2 * spread * sd))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def write_micrograph_file(path: str | os.PathLike, image: np.ndarray, cfg: SimulationConfig,
                          label: str = "selfpick") -> None:
    """Write one simulated micrograph as ``cfg`` says, atomically and byte-reproducibly.

    - MRC, float32 image: mode 2 (:func:`selfpick.io.micrographs.write_mrc`);
    - MRC, uint16 / int16 counts: mode 6 / mode 1, the same header (pixel size, one label);
    - PNG, float32 image: 8-bit grey (:func:`to_uint8`); PNG, uint16 counts: 16-bit grey.
    """
    from selfpick.io.micrographs import write_mrc
    from selfpick.utils.atomic import atomic_path, atomic_write_bytes

    if cfg.file_format == "png":
        from PIL import Image

        arr = np.ascontiguousarray(image)
        # 2-D uint16 -> mode "I;16", uint8 -> "L" (Pillow picks the mode from the dtype).
        if arr.dtype == np.uint16:
            im = Image.fromarray(arr.astype("<u2"))
        elif arr.dtype.kind == "f":
            im = Image.fromarray(to_uint8(arr))
        else:
            raise ValueError(f"a PNG micrograph holds uint8 or uint16, not {arr.dtype}")
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        atomic_write_bytes(path, buf.getvalue())
        return
    if image.dtype == np.float32:
        write_mrc(path, image, pixel_size=cfg.pixel_size, label=label)
        return
    import mrcfile

    arr = np.ascontiguousarray(image)
    if arr.dtype not in (np.uint16, np.int16):
        raise ValueError(f"a counts MRC holds uint16 or int16, not {arr.dtype}")
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(arr)  # uint16 -> mode 6, int16 -> mode 1
            mrc.voxel_size = float(cfg.pixel_size)
            mrc.header.label[0] = label.encode("ascii", "replace")[:80]
            mrc.header.nlabl = 1


# --------------------------------------------------------------------------------------------
# The panel of presets: the variety of real data sets

#: Named presets: overrides of :class:`SimulationConfig` defaults. Each changes one thing
#: about the default ("globular") data set, so a benchmark across the panel shows which kind
#: of data a default of selfpick handles badly. ``size`` is the micrograph side the preset is
#: meant for; callers may pass a smaller one (at least 4 diameters).
SIMULATED_PANEL: dict[str, dict[str, Any]] = {
    # A ~150 kDa globular complex, 40 px at 2 Å/px, 1k micrographs: the default data set.
    "globular": {},
    # Apoferritin / a small capsid: 120 Å hollow shell at 1.5 Å/px, projects to a ring.
    "shell": {"shape": "shell", "diameter": 80.0, "pixel_size": 1.5, "snr": 0.04},
    # A 3:1 rod of domains 64 px long (21 px wide), mostly lying flat in the ice.
    "elongated": {"shape": "elongated", "diameter": 64.0, "in_plane_fraction": 0.7,
                  "min_distance": 0.8, "snr": 0.03},
    # A ~50 kDa protein, 28 px at 1.8 Å/px in 2k micrographs, at low SNR.
    "small": {"diameter": 28.0, "size": 2048, "pixel_size": 1.8, "snr": 0.05},
    # Summed counting-detector frames: uint16 electron counts (30 e/px), low SNR, defocus
    # 1.5-3.5 µm, in MRC mode 6.
    "raw16": {"pixel_type": "uint16", "dose_per_pixel": 30.0, "snr": 0.05,
              "defocus_um": (1.5, 3.5)},
    # A concentrated sample: disks cover about half the ice (a little less is reached),
    # neighbours 0.8 diameters apart, 15 % in touching (overlapping) pairs.
    "crowded": {"coverage": 0.5, "min_distance": 0.8, "touching_fraction": 0.15,
                "touch_distance": (0.65, 0.78)},
    # A dilute sample: disks cover 4 % of the ice (about 30 particles per micrograph).
    "sparse": {"coverage": 0.04},
    # Every micrograph at a hole's edge: carbon, a strong ice-thickness gradient, more ice
    # contamination.
    "carbon": {"carbon_probability": 1.0, "ice_gradient": 1.5, "contaminants": 3.0},
    # 8-bit PNG micrographs, as CryoPPP ships them (grey levels, no pixel size).
    "png8": {"file_format": "png"},
    # Unlike the others, several hard things at once, as in issue 17's hidden protein (raw,
    # very noisy 16-bit micrographs, small particles): 32 px particles in uint16 counts at
    # 10 electrons per pixel and SNR 0.02, with a few hot detector pixels.
    "faint": {"diameter": 32.0, "pixel_size": 1.5, "pixel_type": "uint16",
              "dose_per_pixel": 10.0, "snr": 0.02, "defocus_um": (1.0, 3.0),
              "hot_pixels": 2e-5},
}

#: What each preset stands for (its settings are in :data:`SIMULATED_PANEL`).
PRESET_NOTES: dict[str, str] = {
    "globular": "the default data set, a ~150 kDa globular complex",
    "shell": "hollow spherical shells, apoferritin-like rings",
    "elongated": "3:1 rods of domains, most lying flat",
    "small": "a ~50 kDa protein in 2k micrographs at low SNR",
    "raw16": "summed counting-detector frames: uint16 electron counts (MRC mode 6), low SNR",
    "crowded": "a concentrated sample, many touching particles",
    "sparse": "a dilute sample, about 30 particles per micrograph",
    "carbon": "a carbon edge on every micrograph, strong ice gradient, more contaminants",
    "png8": "8-bit PNG micrographs like CryoPPP's exports",
    "faint": "small particles in raw counts at very low SNR, with hot pixels (hard)",
}


def describe_preset(name: str) -> str:
    """``"name: note (setting=value ...)"`` -- the note and the exact overrides of a preset."""
    def show(v: Any) -> str:
        if isinstance(v, tuple):
            return "-".join(show(x) for x in v)
        return f"{v:g}" if isinstance(v, float) else str(v)

    values = " ".join(f"{k}={show(v)}" for k, v in SIMULATED_PANEL[name].items())
    return f"{name}: {PRESET_NOTES.get(name, '')} ({values or 'no changes'})"


def preset_config(name: str, **overrides: Any) -> SimulationConfig:
    """The :class:`SimulationConfig` of preset ``name`` with ``overrides`` applied on top
    (``None`` values are ignored, so unset command-line flags keep the preset's value)."""
    if name not in SIMULATED_PANEL:
        raise SelfpickError(f"unknown preset {name!r}; choose one of "
                            f"{', '.join(SIMULATED_PANEL)}")
    fields = {f.name for f in dataclasses.fields(SimulationConfig)}
    values = {**SIMULATED_PANEL[name], **{k: v for k, v in overrides.items() if v is not None}}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise SelfpickError(f"not a simulation setting: {', '.join(unknown)}")
    return SimulationConfig(**values)


def simulate_preset(
    name: str,
    output_dir: str | os.PathLike,
    n_micrographs: int | None = None,
    size: int | None = None,
    seed: int = 0,
    label_fraction: float = 1.0,
    overwrite: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> SimulationResult:
    """Write preset ``name``'s data set (:data:`SIMULATED_PANEL`) to ``output_dir``.

    ``n_micrographs`` and ``size`` default to the preset's (8 and usually 1024 px); any other
    :class:`SimulationConfig` field can be overridden by keyword. The result names the
    micrographs (``result.micrographs``), the truth (``result.truth_file``, and
    ``result.truth`` in memory), the partial labels (``result.labels_file``) and the particle
    diameter (``result.diameter``, pixels).
    """
    cfg = preset_config(name, n_micrographs=n_micrographs, size=size, seed=seed,
                        label_fraction=label_fraction, **overrides)
    return simulate_dataset(cfg, output_dir, overwrite=overwrite, progress=progress,
                            preset=name)


def write_panel_preview(
    path: str | os.PathLike,
    names: list[str] | None = None,
    seed: int = 0,
    marks: bool = False,
    dpi: int = 150,
) -> None:
    """A montage of one crop per preset (micrograph 0 of each, at the preset's own size):
    about 10 particle diameters square, low-pass filtered and stretched as
    :func:`write_preview` does (``marks``: true centres as green circles). The "carbon" crop
    is chosen to show the edge. PNG, ``dpi`` (a 3 x 3 panel is 10 x 10.7 inches).

    ``docs/images/simulated_panel.png`` is ``write_panel_preview(path, dpi=100)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import EllipseCollection
    from matplotlib.figure import Figure

    from selfpick.utils.atomic import atomic_write_bytes

    names = list(names or SIMULATED_PANEL)
    ncol = min(3, len(names))
    nrow = math.ceil(len(names) / ncol)
    fig = Figure(figsize=(3.3 * ncol, 3.55 * nrow), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrow, ncol)).ravel()
    # Room at the top (inches, whatever the number of rows) for the title above the first
    # row's own titles.
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.6 / (3.55 * nrow),
                        wspace=0.03, hspace=0.12)
    for ax in axes:
        ax.set_axis_off()
    for ax, name in zip(axes, names):
        cfg = preset_config(name, n_micrographs=1, seed=seed)
        image, xy, extras = simulate_micrograph(micrograph_rng(seed, 0), cfg, 0,
                                                make_molecule(cfg))
        view = np.asarray(image, dtype=np.float32)
        if cfg.file_format == "png" and image.dtype == np.float32:
            view = to_uint8(image).astype(np.float32)  # what the file holds
        crop = int(min(cfg.size, max(256, round(10 * cfg.diameter))))
        r0, c0 = _panel_window(extras["carbon_mask"], crop, 0.3 if name == "carbon" else 0.0)
        win = lowpass(view, max(1.0, cfg.diameter / 12.0))[r0:r0 + crop, c0:c0 + crop]
        # Grey levels from the ice in the hole: carbon may clip to black.
        hole = ~extras["carbon_mask"][r0:r0 + crop, c0:c0 + crop]
        lo, hi = _display_range(win[hole] if hole.mean() > 0.2 else win)
        ax.imshow(win, cmap="gray", vmin=lo, vmax=hi, interpolation="antialiased")
        if marks:
            inside = ((xy[:, 0] >= c0) & (xy[:, 0] < c0 + crop)
                      & (xy[:, 1] >= r0) & (xy[:, 1] < r0 + crop))
            ax.add_collection(EllipseCollection(
                cfg.diameter, cfg.diameter, 0, units="xy",
                offsets=xy[inside] - [c0, r0], offset_transform=ax.transData,
                facecolors="none", edgecolors="lime", linewidths=0.5))
        ax.set_title(f"{name}: d {cfg.diameter:g} px, crop {crop} of {cfg.size} px",
                     fontsize=7)
    fig.suptitle(f"selfpick simulate --preset NAME (micrograph 0, seed {seed}; low-pass "
                 "filtered, particles dark)", fontsize=8, y=1 - 0.12 / (3.55 * nrow),
                 va="top")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


def _panel_window(carbon: np.ndarray, crop: int, target: float) -> tuple[int, int]:
    """Top-left corner of the ``crop``-square window whose carbon share is closest to
    ``target`` (ties: nearest the middle)."""
    size = carbon.shape[0]
    if crop >= size:
        return 0, 0
    starts = np.linspace(0, size - crop, 9).round().astype(int)
    best, best_key = (0, 0), None
    for r in starts:
        for c in starts:
            share = float(carbon[r:r + crop, c:c + crop].mean())
            off = abs(r - (size - crop) / 2) + abs(c - (size - crop) / 2)
            key = (round(abs(share - target), 2), off)
            if best_key is None or key < best_key:
                best, best_key = (int(r), int(c)), key
    return best


# --------------------------------------------------------------------------------------------
# Preview


def lowpass(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass, ``sigma`` in pixels; ``float32`` of the same shape."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(image, dtype=np.float32), sigma, mode="reflect")


def _display_range(view: np.ndarray) -> tuple[float, float]:
    """Grey-scale limits around the ice (median +- 4.5 robust sd): carbon and ice crystals may
    clip to black, as they do on a microscope screen, instead of washing out the particles."""
    view = np.asarray(view, dtype=np.float32)
    med = float(np.median(view))
    sd = 1.4826 * float(np.median(np.abs(view - med))) or float(view.std()) or 1.0
    return med - 4.5 * sd, med + 4.5 * sd


def write_preview(
    path: str | os.PathLike,
    image: np.ndarray,
    truth_xy: np.ndarray,
    label_xy: np.ndarray,
    cfg: SimulationConfig,
    title: str = "",
) -> None:
    """PNG (150 dpi): the micrograph low-pass filtered and binned to about 1024 px, twice --
    plain, and with true particles (green circles) and labelled ones (orange dots)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import EllipseCollection
    from matplotlib.figure import Figure

    from selfpick.utils.atomic import atomic_write_bytes

    ny, nx = image.shape
    b = max(1, int(math.ceil(max(ny, nx) / 1024)))
    # Low-pass to about a tenth of a particle: what a person squinting at a micrograph sees.
    smooth = lowpass(image, max(1.0, cfg.diameter / 12.0))
    view = smooth[: ny // b * b, : nx // b * b].reshape(ny // b, b, nx // b, b).mean(axis=(1, 3))
    lo, hi = _display_range(view)

    fig = Figure(figsize=(2 * view.shape[1] / 150 + 0.4, view.shape[0] / 150 + 0.5), dpi=150)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.02)
    d = cfg.diameter / b
    for ax, marked in zip(axes, (False, True)):
        ax.imshow(view, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_axis_off()
        if marked and len(truth_xy):
            ax.add_collection(EllipseCollection(
                d, d, 0, units="xy", offsets=truth_xy / b, offset_transform=ax.transData,
                facecolors="none", edgecolors="lime", linewidths=0.6))
            if len(label_xy):
                ax.scatter(label_xy[:, 0] / b, label_xy[:, 1] / b, s=4, c="orange",
                           linewidths=0)
    axes[0].set_title(f"{title}  (low-pass filtered)", fontsize=8)
    axes[1].set_title(f"truth: {len(truth_xy)} (green circles)   labels: {len(label_xy)} "
                      "(orange dots)", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    atomic_write_bytes(path, buf.getvalue())
