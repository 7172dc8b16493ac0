"""bench/fewpicks.py bookkeeping: budgets drawn from curated picks, summaries over draws and the
Markdown tables the README quotes (no training here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import fewpicks  # noqa: E402
from realdata import RealDataset  # noqa: E402


def _stage(f1, best, ap):
    return {"precision": f1, "recall": f1, "f1": f1, "best_f1": best, "average_precision": ap}


def _run(seed, z, c, budget="B1"):
    return {"budget": budget, "seed": seed, "picks": 195, "train_seconds": 400.0 + seed,
            "iteration_0": _stage(*z), "chosen": _stage(*c), "last": _stage(*c)}


def test_summary_gain_is_per_draw_chosen_minus_supervised():
    runs = [_run(0, (0.80, 0.81, 0.80), (0.84, 0.85, 0.83)),
            _run(1, (0.76, 0.77, 0.75), (0.78, 0.80, 0.79))]
    row = fewpicks.summarise(runs)["B1"]
    assert row["n_seeds"] == 2
    assert row["gain_f1"][0] == pytest.approx(0.03)
    assert row["gain_average_precision"][0] == pytest.approx(0.035)
    assert row["gain_best_f1"][1] == pytest.approx(np.std([0.04, 0.03], ddof=1))
    assert row["train_seconds"] == [400.5, 401.0]


def test_markdown_file_has_every_data_set_its_references_and_the_gain_table():
    runs = [_run(0, (0.80, 0.81, 0.80), (0.84, 0.85, 0.83))]
    entry = {"dataset": "EMPIAR-10017 test", "date": "2026-11-29", "machine": {"cpus": 2},
             "train_args": [], "runs": runs, "summary": fewpicks.summarise(runs)}
    md = fewpicks.markdown_file({"datasets": {"10017": entry}})
    assert "## EMPIAR-10017 test" in md
    assert "| B1 | 195 | chosen | 0.840 ± 0.000 |" in md
    assert "| B1 | 1 draw(s) | 0.040 ± 0.000 | 0.040 ± 0.000 | 0.030 ± 0.000 |" in md
    assert "Topaz 0.3.20" in md


def test_budget_draw_depends_on_the_seed_and_keeps_curated_rows(tmp_path):
    folder = tmp_path / "ds"
    (folder / "micrographs").mkdir(parents=True)
    (folder / "coordinates").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        (folder / "micrographs" / f"m{i}.png").write_bytes(b"")
        pd.DataFrame({"X-Coordinate": rng.integers(0, 1000, 40),
                      "Y-Coordinate": rng.integers(0, 1000, 40), "Diameter": 56}).to_csv(
            folder / "coordinates" / f"m{i}.csv", index=False)
    ds = RealDataset("x", "x", folder, ".png", 56, 5)
    a = fewpicks.write_budget(tmp_path / "a", ds, "B1", 0)
    b = fewpicks.write_budget(tmp_path / "b", ds, "B1", 0)
    assert a == b and a["picks"] == 75 and a["unlabelled_micrographs"] == 2
    assert all(n in {f"m{i}" for i in range(5)} for n in a["labelled_micrographs"])
    for name in a["labelled_micrographs"]:
        drawn = pd.read_csv(tmp_path / "a" / f"{name}.csv")
        full = pd.read_csv(folder / "coordinates" / f"{name}.csv")
        assert len(drawn) == 25
        assert len(drawn.merge(full)) == 25  # every drawn pick is a curated one
    draws = {tuple(fewpicks.write_budget(tmp_path / f"s{s}", ds, "B1", s)["labelled_micrographs"])
             for s in range(6)}
    assert len(draws) > 1
    every = fewpicks.write_budget(tmp_path / "all", ds, "all", 0)
    assert every["picks"] == 200 and every["unlabelled_micrographs"] == 0
    # B1-all: B1's micrographs of the same seed, every particle on them labelled.
    full = fewpicks.write_budget(tmp_path / "b1all", ds, "B1-all", 0)
    assert full["labelled_micrographs"] == a["labelled_micrographs"]
    assert full["picks"] == 120 and full["unlabelled_micrographs"] == 2
    one = fewpicks.write_budget(tmp_path / "b2", ds, "B2", 0)
    one_full = fewpicks.write_budget(tmp_path / "b2all", ds, "B2-all", 0)
    assert one_full["labelled_micrographs"] == one["labelled_micrographs"]
    assert one["picks"] == 25 and one_full["picks"] == 40


def test_update_docs_replaces_only_the_marked_block(tmp_path):
    runs = [_run(0, (0.80, 0.81, 0.80), (0.84, 0.85, 0.83))]
    entry = {"dataset": "EMPIAR-10017 test", "date": "2026-11-29", "machine": {"cpus": 2},
             "train_args": [], "runs": runs, "summary": fewpicks.summarise(runs)}
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Top\nbefore\n{fewpicks.START}\nold table\n{fewpicks.END}\nafter\n")
    fewpicks.update_docs(doc, {"datasets": {"10017": entry}})
    text = doc.read_text()
    assert text.startswith("# Top\nbefore\n") and text.endswith(f"{fewpicks.END}\nafter\n")
    assert "old table" not in text and "#### EMPIAR-10017 test" in text
    assert "| B1 | 195 | chosen | 0.840 ± 0.000 |" in text
    doc.write_text("no markers")
    with pytest.raises(SystemExit):
        fewpicks.update_docs(doc, {"datasets": {"10017": entry}})


def test_readme_table_has_each_budget_the_gain_and_the_all_labels_row(tmp_path):
    runs = [_run(0, (0.80, 0.81, 0.80), (0.84, 0.85, 0.83)),
            _run(1, (0.76, 0.77, 0.75), (0.78, 0.80, 0.79)),
            _run(0, (0.70, 0.72, 0.70), (0.75, 0.78, 0.74), budget="B2")]
    entry = {"dataset": "EMPIAR-10017 test (JPEGs)", "runs": runs,
             "summary": fewpicks.summarise(runs)}
    acc = {"datasets": {"10017": {"summary": {"all": {
        "n_seeds": 3, "best_f1": [0.889, 0.002], "best_best_f1": [0.890, 0.001],
        "best_average_precision": [0.921, 0.001], "train_seconds": [473.0, 490.0]}}}}}
    table = fewpicks.readme_table({"datasets": {"10017": entry}}, acc)
    lines = table.splitlines()
    b1 = next(x for x in lines if "B1: 195 picks on 3 micrographs" in x)
    assert "| EMPIAR-10017 test | " in b1 and "| 2 | **0.810 ± 0.042** |" in b1
    assert "+0.035 ± 0.007 / +0.035 ± 0.007" in b1
    assert any("B2: 195 picks on 1 micrograph" in x and "+0.060 / +0.040" in x for x in lines)
    assert any("every curated particle" in x and "0.889 ± 0.002" in x for x in lines)
    assert any("Topaz 0.3.20" in x for x in lines)
    # Without accuracy results there is no all-labels row; the README block is replaced.
    assert "every curated particle" not in fewpicks.readme_table({"datasets": {"10017": entry}})
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{fewpicks.README_START}\nSTALE TABLE\n{fewpicks.README_END}\nrest\n")
    fewpicks.update_readme(readme, {"datasets": {"10017": entry}}, acc)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{fewpicks.README_END}\nrest\n")
    assert "STALE TABLE" not in text and "B1: 195 picks" in text
    readme.write_text("no markers")
    with pytest.raises(SystemExit):
        fewpicks.update_readme(readme, {"datasets": {"10017": entry}})
