"""Write a synthetic cryo-EM data set with exact ground truth (demo and test data).

Each micrograph holds projections of one random 3-D molecule at random orientations, filtered
by a CTF with its own defocus, on ice with a thickness gradient, sometimes with a carbon edge and
ice contaminants (never in the truth), under noise at the given SNR. Written: MRC micrographs
(with pixel size), the complete truth and a partial label set (--label-fraction) as JSON, STAR
and CryoPPP CSV, a preview PNG and simulation.json with every parameter.

examples:
  selfpick simulate --output sim
  selfpick simulate --output sim --n-micrographs 20 --label-fraction 0.3 --seed 7
  selfpick simulate --output easy --snr 0.3 --diameter 60 --size 2048
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


def add_args(parser: argparse.ArgumentParser) -> None:
    from selfpick.simulate import SimulationConfig

    d = SimulationConfig()
    parser.add_argument("--output", "-o", required=True, metavar="DIR",
                        help="folder to write the data set into (must be new or empty, "
                        "unless --overwrite)")
    parser.add_argument("--n-micrographs", "-n", type=int, default=d.n_micrographs, metavar="N",
                        help=f"number of micrographs (default {d.n_micrographs})")
    parser.add_argument("--size", type=int, default=d.size, metavar="PX",
                        help=f"micrograph width and height in pixels (default {d.size})")
    parser.add_argument("--diameter", type=float, default=d.diameter, metavar="PX",
                        help=f"particle diameter in pixels (default {d.diameter:g})")
    parser.add_argument("--pixel-size", type=float, default=d.pixel_size, metavar="A",
                        help=f"Å per pixel, written to the MRC headers and used by the CTF "
                        f"(default {d.pixel_size:g})")
    parser.add_argument("--snr", type=float, default=d.snr, metavar="X",
                        help="signal-to-noise ratio: power of the CTF-filtered particle image "
                        "inside the particle disks / noise variance per pixel "
                        f"(default {d.snr:g}: hard, like real data)")
    parser.add_argument("--label-fraction", type=float, default=d.label_fraction, metavar="F",
                        help="share of the true particles in the partial label set in labels/, "
                        f"as a hurried hand-picker would give; in (0, 1] (default "
                        f"{d.label_fraction:g})")
    parser.add_argument("--seed", type=int, default=d.seed, metavar="S",
                        help=f"random seed; the same seed gives identical files (default "
                        f"{d.seed})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the simulated data set in a non-empty --output folder "
                        "(other files there are kept)")


def main(args: argparse.Namespace) -> int:
    from selfpick.simulate import SimulationConfig, simulate_dataset

    cfg = SimulationConfig(
        n_micrographs=args.n_micrographs,
        size=args.size,
        diameter=args.diameter,
        pixel_size=args.pixel_size,
        snr=args.snr,
        label_fraction=args.label_fraction,
        seed=args.seed,
    )
    result = simulate_dataset(cfg, args.output, overwrite=args.overwrite, progress=True)
    mics = result.metadata["micrographs"]
    defoci = [m["defocus_um"] for m in mics]
    n_carbon = sum(1 for m in mics if m["carbon_edge"] is not None)
    n_cont = sum(len(m["contaminants"]) for m in mics)
    log.info(
        "Simulated %d micrographs of %dx%d px (%.3g Å/px) in %.1f s into %s: %d particles of "
        "%.3g px diameter (%d labelled, fraction %.3g), SNR %.3g, defocus %.2f-%.2f µm, "
        "%d with a carbon edge, %d contaminants. Truth in %s/truth, labels in %s/labels, "
        "preview %s.",
        len(mics), cfg.size, cfg.size, cfg.pixel_size, result.seconds, result.output_dir,
        result.n_particles, cfg.diameter, result.n_labels, cfg.label_fraction, cfg.snr,
        min(defoci), max(defoci), n_carbon, n_cont, result.output_dir, result.output_dir,
        result.preview if result.preview is not None else "not written",
    )
    return 0
