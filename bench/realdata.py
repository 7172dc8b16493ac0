"""The real data sets the benchmarks read from ``../shared/data/real`` and their fixed splits.

Each data set is a folder of micrographs and one CryoPPP CSV of curated particle centres per
micrograph. The split is fixed by name order (train on the first ``n_train``, test on the
rest) so results compare across versions; the test micrographs are never used for training,
validation, pseudo-labels or any choice of a default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# SELFPICK_REAL_DATA points elsewhere (e.g. a copy on a GPU machine without ../shared).
REAL = Path(os.environ.get("SELFPICK_REAL_DATA") or
            Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real")


@dataclass(frozen=True)
class RealDataset:
    key: str  # short name used on the command line and in result files
    title: str
    folder: Path
    ext: str  # micrograph file suffix, with the dot
    diameter: float  # particle diameter, pixels of the micrographs
    n_train: int  # the first n_train micrographs by name train, the rest test

    @property
    def radius(self) -> float:
        """Match radius for particle-level scoring: half a diameter, original pixels."""
        return self.diameter / 2

    @property
    def coordinates(self) -> Path:
        return self.folder / "coordinates"

    def available(self) -> bool:
        return (self.folder / "micrographs").is_dir() and self.coordinates.is_dir()

    def names(self) -> list[str]:
        return sorted(p.stem for p in (self.folder / "micrographs").glob(f"*{self.ext}"))

    def split(self) -> tuple[list[str], list[str]]:
        names = self.names()
        return names[: self.n_train], names[self.n_train:]

    def micrograph(self, name: str) -> Path:
        return self.folder / "micrographs" / f"{name}{self.ext}"


DATASETS: dict[str, RealDataset] = {
    "10017": RealDataset("10017", "EMPIAR-10017 β-galactosidase (CryoSegNet JPEGs, 4096², "
                         "108 px particles), 10 train / 5 test",
                         REAL / "empiar10017_betagal_cryosegnet", ".jpg", 108, 10),
    "10028": RealDataset("10028", "EMPIAR-10028 80S ribosome (CryoPPP PNGs, 1024², 56 px "
                         "particles), 6 train / 4 test",
                         REAL / "empiar10028_ribosome80s_promptsam", ".png", 56, 6),
}
