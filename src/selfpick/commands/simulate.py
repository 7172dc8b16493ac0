"""Write a synthetic cryo-EM data set with exact ground truth (demo and test data).

Each micrograph holds projections of one random 3-D molecule at random orientations, filtered
by a CTF with its own defocus, on ice with a thickness gradient, sometimes with a carbon edge and
ice contaminants (never in the truth), under noise at the given SNR. Written: micrographs (MRC
with pixel size by default), the complete truth and a partial label set (--label-fraction) as
JSON, STAR and CryoPPP CSV, a preview PNG and simulation.json with every parameter.

--preset picks one of a panel of data sets with the variety of real ones (hollow shells,
elongated or small particles, raw 16-bit counts, crowded and sparse fields, carbon edges,
8-bit PNG); flags given explicitly override the preset's values.

examples:
  selfpick simulate --output sim
  selfpick simulate --output sim --n-micrographs 20 --label-fraction 0.3 --seed 7
  selfpick simulate --output easy --snr 0.3 --diameter 60 --size 2048
  selfpick simulate --output rings --preset shell --n-micrographs 20
  selfpick simulate --output raw --preset raw16 --dose 40     # preset, one setting changed
  selfpick simulate --output rods --shape elongated --diameter 90 --coverage 0.1
  selfpick simulate --output sim --overwrite     # replace a simulated data set in sim/

layout:
  micrographs/sim_000.mrc ...        labels/coordinates.json  (partial labels, same formats)
  truth/coordinates.json             labels/particles.star
  truth/particles.star               labels/csv/sim_000.csv ...
  truth/csv/sim_000.csv ...          preview.png   simulation.json
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("selfpick")

# Flags whose value goes into SimulationConfig under the same name (dest -> field).
_FIELDS = ("n_micrographs", "size", "diameter", "pixel_size", "snr", "label_fraction", "seed",
           "shape", "coverage", "min_distance", "pixel_type", "dose_per_pixel", "file_format",
           "carbon_probability", "ice_gradient", "contaminants", "in_plane_fraction",
           "hot_pixels")


def add_args(parser: argparse.ArgumentParser) -> None:
    from selfpick.simulate import (
        FILE_FORMATS,
        HOT_PIXEL_DOSES,
        PIXEL_TYPES,
        SHAPES,
        SIMULATED_PANEL,
        SimulationConfig,
        describe_preset,
    )

    d = SimulationConfig()
    # Every setting defaults to None here: "not given", so the preset's value (or the
    # SimulationConfig default) applies; the help shows the plain defaults.
    parser.add_argument("--output", "-o", required=True, metavar="DIR",
                        help="folder to write the data set into (must be new or empty, "
                        "unless --overwrite)")
    presets = "; ".join(describe_preset(name) for name in SIMULATED_PANEL)
    presets = presets.replace("%", "%%")  # argparse formats help with %
    parser.add_argument("--preset", choices=list(SIMULATED_PANEL), metavar="NAME",
                        help=f"start from a named data set of the panel ({presets}); flags "
                        "given explicitly override it (default: globular)")
    parser.add_argument("--n-micrographs", "-n", type=int, metavar="N",
                        help=f"number of micrographs (default {d.n_micrographs})")
    parser.add_argument("--size", type=int, metavar="PX",
                        help=f"micrograph width and height in pixels (default {d.size}; "
                        "preset small: 2048)")
    parser.add_argument("--diameter", type=float, metavar="PX",
                        help=f"particle diameter in pixels; for --shape elongated the length, "
                        f"the longest dimension (default {d.diameter:g})")
    parser.add_argument("--pixel-size", type=float, metavar="A",
                        help=f"Å per pixel, written to the MRC headers and used by the CTF "
                        f"(default {d.pixel_size:g})")
    parser.add_argument("--snr", type=float, metavar="X",
                        help="signal-to-noise ratio: power of the CTF-filtered particle image "
                        "inside the particle disks / noise variance per pixel "
                        f"(default {d.snr:g}: hard, like real data)")
    parser.add_argument("--label-fraction", type=float, metavar="F",
                        help="share of the true particles in the partial label set in labels/, "
                        f"as a hurried hand-picker would give; in (0, 1] (default "
                        f"{d.label_fraction:g})")
    parser.add_argument("--seed", type=int, metavar="S",
                        help=f"random seed; the same seed gives identical files (default "
                        f"{d.seed})")
    parser.add_argument("--shape", choices=list(SHAPES),
                        help="particle shape: globular, shell (hollow sphere, projects to a "
                        "ring) or elongated (3:1 rod of domains) (default globular)")
    parser.add_argument("--coverage", type=float, metavar="F",
                        help="share of the free ice covered by particle disks, in (0, 0.5]: "
                        f"0.04 sparse, 0.5 crowded (default {d.coverage:g})")
    parser.add_argument("--min-distance", type=float, metavar="D",
                        help="closest approach of particles that are not touching pairs, in "
                        f"diameters (default {d.min_distance:g})")
    parser.add_argument("--in-plane-fraction", type=float, metavar="F",
                        help="share of particles lying flat, long axis in the image plane "
                        f"(default {d.in_plane_fraction:g}: all orientations uniform)")
    parser.add_argument("--pixel-type", choices=list(PIXEL_TYPES),
                        help="float32 (noise units) or electron counts as a counting detector "
                        "gives them: uint16 (MRC mode 6) or int16 (mode 1) (default float32)")
    parser.add_argument("--dose", dest="dose_per_pixel", type=float, metavar="E",
                        help="electrons per pixel of empty ice, for --pixel-type uint16/int16 "
                        f"(default {d.dose_per_pixel:g})")
    parser.add_argument("--hot-pixels", type=float, metavar="SHARE",
                        help="share of detector pixels that are hot, for uint16/int16: they "
                        f"read {HOT_PIXEL_DOSES:g} doses, at the same places in every "
                        "micrograph (default 0)")
    parser.add_argument("--format", dest="file_format", choices=list(FILE_FORMATS),
                        help="micrograph files: mrc, or png (8-bit grey levels like CryoPPP's "
                        "exports; 16-bit for uint16 counts) (default mrc)")
    parser.add_argument("--carbon-probability", type=float, metavar="P",
                        help="chance that a micrograph shows a carbon edge "
                        f"(default {d.carbon_probability:g})")
    parser.add_argument("--ice-gradient", type=float, metavar="X",
                        help="peak-to-peak of the smooth ice-thickness background, in noise "
                        f"standard deviations (default {d.ice_gradient:g})")
    parser.add_argument("--contaminants", type=float, metavar="X",
                        help="mean number of ice contaminants per 25.6 x 25.6 diameters "
                        f"(default {d.contaminants:g})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the simulated data set in a non-empty --output folder "
                        "(other files there are kept)")


def main(args: argparse.Namespace) -> int:
    from selfpick.simulate import preset_config, simulate_dataset

    given = {name: getattr(args, name, None) for name in _FIELDS}
    cfg = preset_config(args.preset or "globular", **given)
    result = simulate_dataset(cfg, args.output, overwrite=args.overwrite, progress=True,
                              preset=args.preset)
    mics = result.metadata["micrographs"]
    defoci = [m["defocus_um"] for m in mics]
    n_carbon = sum(1 for m in mics if m["carbon_edge"] is not None)
    n_cont = sum(len(m["contaminants"]) for m in mics)
    log.info(
        "Simulated %d micrographs of %dx%d px (%.3g Å/px, %s %s%s) in %.1f s into %s: %d %s "
        "particles of %.3g px diameter (%d labelled, fraction %.3g), SNR %.3g, defocus "
        "%.2f-%.2f µm, %d with a carbon edge, %d contaminants. Truth in %s/truth, labels in "
        "%s/labels, preview %s.",
        len(mics), cfg.size, cfg.size, cfg.pixel_size, cfg.pixel_type, cfg.file_format.upper(),
        f", preset {args.preset}" if args.preset else "", result.seconds, result.output_dir,
        result.n_particles, cfg.shape, cfg.diameter, result.n_labels, cfg.label_fraction,
        cfg.snr, min(defoci), max(defoci), n_carbon, n_cont, result.output_dir,
        result.output_dir, result.preview if result.preview is not None else "not written",
    )
    return 0
