"""End to end with a few picks on one micrograph: strip validation, pseudo-label bookkeeping
and the report all on tiny simulated data (plumbing, not accuracy)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from selfpick.targets import IGNORE
from selfpick.training.experiment import SUPERVISED, run_training

from conftest import tiny_config

pytestmark = pytest.mark.slow


def test_few_picks_on_one_micrograph_train_validate_on_a_strip_and_report(tiny_data, tmp_path):
    coords = json.loads((tiny_data.output_dir / "labels" / "coordinates.json").read_text())
    only = sorted(coords)[0]
    rng = np.random.default_rng(0)
    picks = np.asarray(coords[only])[rng.choice(len(coords[only]), size=12, replace=False)]
    cfile = tmp_path / "picks.json"
    cfile.write_text(json.dumps({only: picks.tolist()}))
    out = tmp_path / "exp"
    # (the older pseudo-background scheme here; the default is tested below)
    cfg = tiny_config(tiny_data.output_dir, out, coords_file=str(cfile),
                      self_training_iterations=1, unpicked_pixels="background",
                      student_epochs=3)
    result = run_training(cfg, progress=False)

    conf = json.loads((out / "config.json").read_text())
    y0, y1 = conf["split"]["val_regions"][only]
    assert conf["split"]["train"] == conf["split"]["val"] == [only]
    in_strip = int(np.count_nonzero((picks[:, 1] >= y0) & (picks[:, 1] < y1)))
    stage0 = result.stages[0]
    assert stage0["validation"]["particle"]["n_true"] == in_strip
    log = (out / "training.log").read_text()
    assert "held-out strip" in log
    assert "average 8 views of each micrograph" in log  # the default test-time augmentation
    # 12 of ~30 particles, a few of them in the strip: too few validation particles to tell
    # partial picks from complete ones, so the supervised stage goes on with the
    # positive-unlabelled loss unless the labels look complete, and keeps that model
    pu = stage0["positive_unlabelled"]
    if pu is None:
        assert stage0["label_completeness"] >= 0.8
    else:
        assert pu["completeness_before"] < 0.8 and pu["validation_particles"] == in_strip
        assert pu["kept"] == "positive-unlabelled" and "cannot decide" in log
    p0 = stage0["validation"]["particle"]
    assert "threshold_uncertainty" in p0
    # a strip of a few particles: the threshold sits in the middle of the uncertain range,
    # the stage is ranked on the maximum
    from selfpick.training.experiment import selection_f1
    from selfpick.training.validate import FEW_VALIDATION_PARTICLES

    assert p0["n_true"] < FEW_VALIDATION_PARTICLES and "middle" in p0["threshold_rule"]
    assert stage0["threshold"] <= p0["threshold_uncertainty"]["range"][1]
    assert selection_f1(stage0) >= p0.get("corrected", p0)["f1"]

    # nothing in the strip ever becomes a (pseudo-)label
    assert len(result.stages) == 2
    # the fresh student picks at its maximum, and says why
    stage1 = result.stages[1]
    assert stage1["training"]["student"] == "fresh"
    assert "fresh self-training student" in stage1["validation"]["particle"]["threshold_rule"]
    pl = np.load(out / "iteration_1_selftrain" / "pseudo_labels" / f"{only}.npy")
    rows = np.arange(pl.shape[0]) * conf["downsample"]
    assert np.all(pl[(rows >= y0) & (rows < y1)] == IGNORE)
    assert result.stages[1]["pseudo_labels"]["n_micrographs"] == 4
    assert "n_pseudo_particles" in result.stages[1]["pseudo_labels"]
    # background below the schedule's 0.05, and below half the supervised stage's threshold
    assert result.stages[1]["pseudo_labels"]["background_level"] == pytest.approx(
        min(0.05, 0.5 * stage0["threshold"]))
    assert result.stages[1]["pseudo_labels"]["unlabelled_prior"] is None
    assert result.stages[1]["training"]["loss"] == "focal + Dice"
    # one labelled micrograph: --student auto trains a fresh student for --student-epochs
    assert result.stages[1]["training"]["student"] == "fresh"
    assert result.stages[1]["training"]["epochs"] == cfg.selftrain.student_epochs == 3
    assert "a fresh student" in log

    from selfpick.report.html import build_report

    page = build_report(out, output=tmp_path / "report", device="cpu").read_text()
    assert "held-out strips" in page
    assert "fresh (random weights)" in page  # the student column of the pseudo-label table
    assert ("Your picks looked partial" in page) == (pu is not None)


def test_partial_picks_continue_the_supervised_stage_with_the_pu_loss(tiny_data, tmp_path,
                                                                     monkeypatch):
    from selfpick.training import experiment

    # Whatever this tiny model's completeness estimate, treat the picks as partial.
    monkeypatch.setattr(experiment, "PU_BELOW", 1.01)
    out = tmp_path / "exp"
    cfg = tiny_config(tiny_data.output_dir, out, self_training_iterations=0, pu_epochs=2)
    result = run_training(cfg, progress=False)
    pu = result.stages[0]["positive_unlabelled"]
    assert pu["epochs"] == 2 and pu["kept"] in ("positive-unlabelled", "supervised (before)")
    assert 0 <= pu["unlabelled_prior"] <= 0.5  # 0 here: the tiny labels are complete
    assert pu["validation_f1_after"] >= 0 and pu["validation_f1_before"] >= 0
    assert len(result.stages[0]["training"]) and not (out / SUPERVISED / "checkpoint_pu.pt").exists()
    assert "positive-unlabelled loss" in (out / "training.log").read_text()


def test_very_partial_picks_stop_the_supervised_epochs_early(tiny_data, tmp_path,
                                                             monkeypatch):
    from selfpick.training import experiment

    # whatever this tiny model's completeness estimate, the picks look very partial
    monkeypatch.setattr(experiment, "EARLY_SWITCH_BELOW", 1.01)
    monkeypatch.setattr(experiment, "FEW_VALIDATION_PARTICLES", 0)
    out = tmp_path / "exp"
    cfg = tiny_config(tiny_data.output_dir, out, self_training_iterations=0, initial_epochs=8,
                      pu_epochs=3)
    stage0 = run_training(cfg, progress=False).stages[0]
    # 2 of the 8 supervised epochs, then the 6 left and 3 more with the positive-unlabelled
    # loss; that model is kept
    assert stage0["training"]["epochs"] == experiment.pu_switch_epoch(8, 0.25) == 2
    pu = stage0["positive_unlabelled"]
    assert pu["after_supervised_epochs"] == 2 and pu["epochs"] == 9
    assert pu["kept"] == "positive-unlabelled"
    log = (out / "training.log").read_text()
    assert "after 2 of 8 epochs" in log and "supervised training stops here" in log
    assert "supervised (positive-unlabelled) epoch 9/9" in log
    assert "supervised epoch 3/8" not in log


def test_complete_picks_train_as_without_the_check(tiny_data, tmp_path, monkeypatch):
    """The check after a quarter of the supervised epochs must not change a stage it lets
    run: the same weights as with the positive-unlabelled epochs switched off."""
    import torch

    from selfpick.model.modelfile import load_model
    from selfpick.training import experiment

    monkeypatch.setattr(experiment, "PU_BELOW", 0.0)
    monkeypatch.setattr(experiment, "EARLY_SWITCH_BELOW", 0.0)
    monkeypatch.setattr(experiment, "FEW_VALIDATION_PARTICLES", 0)
    weights = []
    for pu_epochs in (0, 2):
        out = tmp_path / f"pu{pu_epochs}"
        cfg = tiny_config(tiny_data.output_dir, out, self_training_iterations=0,
                          initial_epochs=4, pu_epochs=pu_epochs)
        stage0 = run_training(cfg, progress=False).stages[0]
        assert stage0["positive_unlabelled"] is None and stage0["training"]["epochs"] == 4
        weights.append(load_model(out / SUPERVISED / "model.pt", "cpu").model.state_dict())
        if pu_epochs:
            assert "after 1 of 4 epochs" in (out / "training.log").read_text()
    for k, v in weights[0].items():
        assert torch.equal(v, weights[1][k]), k


@pytest.mark.parametrize("few", [True, False])
def test_few_validation_particles_run_the_pu_epochs_and_keep_them(tiny_data, tmp_path,
                                                                 monkeypatch, few):
    from selfpick.training import experiment

    # Only the few-particles rule can start the PU epochs here (labels never "clearly
    # partial", never "complete"); validation prefers the model before them.
    monkeypatch.setattr(experiment, "PU_BELOW", 0.0)
    monkeypatch.setattr(experiment, "COMPLETE_LABELS", 1.01)
    monkeypatch.setattr(experiment, "FEW_VALIDATION_PARTICLES", 10**6 if few else 0)
    scores = iter([0.9, 0.1])
    real = experiment.selection_f1
    monkeypatch.setattr(experiment, "selection_f1",
                        lambda entry: next(scores, None) or real(entry))
    out = tmp_path / "exp"
    cfg = tiny_config(tiny_data.output_dir, out, self_training_iterations=0, pu_epochs=1)
    pu = run_training(cfg, progress=False).stages[0]["positive_unlabelled"]
    if few:
        assert pu["kept"] == "positive-unlabelled"
        assert (pu["validation_f1_before"], pu["validation_f1_after"]) == (0.9, 0.1)
        assert "may be partial" in (out / "training.log").read_text()
    else:
        assert pu is None


def test_pu_epochs_can_train_on_the_micrographs_without_picks(tiny_data, tmp_path,
                                                             monkeypatch):
    from selfpick.training import experiment
    from selfpick.training.data import CropDataset

    monkeypatch.setattr(experiment, "PU_BELOW", 1.01)
    seen = []

    class Recording(CropDataset):
        def __init__(self, images, targets, *args, **kwargs):
            super().__init__(images, targets, *args, **kwargs)
            seen.append((len(images), self.weights.copy(), targets))

    monkeypatch.setattr(experiment, "CropDataset", Recording)
    coords = json.loads((tiny_data.output_dir / "labels" / "coordinates.json").read_text())
    picked = sorted(coords)[:2]
    cfile = tmp_path / "picks.json"
    cfile.write_text(json.dumps({n: coords[n][:10] for n in picked}))
    out = tmp_path / "exp"
    cfg = tiny_config(tiny_data.output_dir, out, coords_file=str(cfile),
                      self_training_iterations=0, pu_epochs=1, pu_micrographs="all")
    result = run_training(cfg, progress=False)
    pu = result.stages[0]["positive_unlabelled"]
    n_without = len(sorted(coords)) - len(picked)
    assert pu["micrographs_without_picks"] == n_without
    # supervised epochs on the picked micrographs, then the PU epochs on all of them, half of
    # the crops from those with picks; no pixel of an unpicked micrograph is ignored
    (n_sup, _, _), (n_pu, weights, targets) = seen
    assert n_pu == n_sup + n_without == pu["micrographs"]
    assert weights[:n_sup].sum() == pytest.approx(0.5) and weights.sum() == pytest.approx(1)
    assert all((t == 0).all() for t in targets[n_sup:])
    # the unpicked micrographs hold particles at the picks' density: the prior is not 0
    assert 0 < pu["unlabelled_prior"] <= 0.5
    assert f"{n_without} of them without picks" in (out / "training.log").read_text()


def test_self_training_with_unpicked_pixels_unlabelled(tiny_data, tmp_path):
    # 12 picks on one micrograph, self-training with the PU loss: no pixel is background,
    # the prior comes from the estimated particle count, and metrics.json and the log say so
    coords = json.loads((tiny_data.output_dir / "labels" / "coordinates.json").read_text())
    only = sorted(coords)[0]
    cfile = tmp_path / "picks.json"
    cfile.write_text(json.dumps({only: coords[only][:12]}))
    out = tmp_path / "exp"
    cfg = tiny_config(tiny_data.output_dir, out, coords_file=str(cfile),
                      self_training_iterations=1, unpicked_pixels="unlabelled")
    result = run_training(cfg, progress=False)
    it1 = result.stages[1]
    pl = it1["pseudo_labels"]
    assert 0.0 <= pl["unlabelled_prior"] <= 0.5 and pl["background_level"] is None
    assert it1["training"]["loss"] == "positive-unlabelled"
    # the estimated pseudo-particle precision says what it rests on
    assert pl["validation_particles"] == result.stages[0]["validation"]["particle"]["n_true"]
    assert result.stages[0]["training"]["loss"] == "focal + Dice"
    maps = [np.load(f) for f in sorted((out / "iteration_1_selftrain" / "pseudo_labels")
                                       .glob("*.npy"))]
    assert len(maps) == 4 and all(set(np.unique(m)) <= {-1, 0, 1} for m in maps)
    assert "of the unlabelled pixels taken to be particles not yet picked" in \
        (out / "training.log").read_text()

    from selfpick.report.html import build_report

    page = build_report(out, output=tmp_path / "report", device="cpu").read_text()
    assert "unlabelled pixels taken to be particles" in page
    assert f"{100 * pl['unlabelled_prior']:.1f}%" in page
