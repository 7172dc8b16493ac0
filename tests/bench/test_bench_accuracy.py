"""bench/accuracy.py bookkeeping: runs merged into earlier results and the README's table
(no training here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import accuracy  # noqa: E402


def _stage(f1, best, ap):
    return {"precision": f1, "recall": f1, "f1": f1, "best_f1": best, "average_precision": ap}


def _run(regime, seed, f1, date=None):
    r = {"regime": regime, "seed": seed, "train_seconds": 100.0 + seed,
         "best": _stage(f1, f1 + 0.01, f1 + 0.02), "iteration_0": _stage(f1, f1, f1),
         "best_pixel": {"precision": 0.8, "recall": 0.8, "f1": 0.8, "roc_auc": 0.9}}
    if date:
        r["date"] = date
    return r


def test_merge_keeps_other_regimes_and_seeds_and_replaces_the_rerun_ones():
    old = {"date": "2026-11-26T10:00:00",
           "runs": [_run("all", 0, 0.80), _run("all", 1, 0.82), _run("30pct", 0, 0.70)]}
    entry = accuracy.merge_runs(old, [_run("all", 0, 0.90, "2026-12-01T03:00:00")],
                                {"dataset": "x", "date": "2026-12-01T03:00:00"})
    by = {(r["regime"], r["seed"]): r for r in entry["runs"]}
    assert set(by) == {("all", 0), ("all", 1), ("30pct", 0)}
    assert by[("all", 0)]["best"]["f1"] == 0.90
    assert by[("all", 1)]["date"] == "2026-11-26T10:00:00"  # kept with its own date
    assert entry["summary"]["all"]["best_f1"][0] == pytest.approx(0.86)
    assert entry["summary"]["30pct"]["n_seeds"] == 1
    # A data set run for the first time.
    first = accuracy.merge_runs(None, [_run("all", 2, 0.85, "2026-12-01")], {"dataset": "y"})
    assert [r["seed"] for r in first["runs"]] == [2]


def test_readme_table_lists_each_real_data_set_its_dates_and_the_references(tmp_path):
    entry = accuracy.merge_runs(None, [_run("all", 0, 0.88, "2026-12-01T03:00:00"),
                                       _run("all", 1, 0.90, "2026-12-01T04:00:00")],
                                {"dataset": "x", "date": "2026-12-01T04:00:00"})
    results = {"datasets": {"10028": entry, "sim-globular": entry}}
    table = accuracy.readme_table(results)
    assert "sim-globular" not in table and "simulated" not in table
    row = next(x for x in table.splitlines() if "selfpick, all curated picks" in x)
    assert "EMPIAR-10028" in row and "(2 seeds, 2026-12-01)" in row
    assert "**0.890 ± 0.014**" in row
    assert "Topaz 0.3.20 trained on the same 6 micrographs | 0.863 | 0.876 | 0.877" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{accuracy.README_START}\nSTALE TABLE\n{accuracy.README_END}\nb\n")
    accuracy.update_readme(readme, results)
    assert "STALE TABLE" not in readme.read_text() and "EMPIAR-10028" in readme.read_text()
    readme.write_text("no markers")
    with pytest.raises(SystemExit):
        accuracy.update_readme(readme, results)
