"""`selfpick train` on the command line, including the original script's command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from selfpick.cli import main

ORIGINAL_FLAGS = ["--image-dir", "--coords-file", "--output-dir", "--initial-epochs",
                  "--self-training-iterations", "--retrain-epochs", "--batch-size",
                  "--learning-rate", "--device", "--multi-gpu", "--particle-radius",
                  "--positive-threshold", "--negative-threshold"]

# The tiny_config settings (conftest) that the original script had no flags for.
TINY = {"depth": 2, "width": 8, "crop_size": 64, "crops_per_epoch": 16, "downsample": 2.0,
        "val_fraction": 0.25, "seed": 0,
        # The simulated labels are complete; the original script self-trained regardless.
        "self_train_complete_labels": True}


def test_help_lists_the_original_scripts_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ORIGINAL_FLAGS + ["--particle-diameter", "--resume", "--overwrite", "--config",
                                  "--seed", "--pos-weight", "--unlabeled-dir"]:
        assert flag in text, flag


@pytest.fixture
def original_layout(tiny_data, tmp_path):
    """The original script's inputs: .png/.npy/.tif images, JSON keyed by file name."""
    from PIL import Image
    import tifffile

    from selfpick.io.micrographs import read_micrograph

    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    coords = {}
    for i, path in enumerate(tiny_data.micrographs):
        data, _ = read_micrograph(path)
        name = path.stem
        lo, hi = np.percentile(data, [0.5, 99.5])
        unit = np.clip((data - lo) / (hi - lo), 0, 1)
        kind = ["png8", "npy", "tif", "png16"][i % 4]
        if kind == "png8":
            fname = f"{name}.png"
            Image.fromarray((unit * 255).astype(np.uint8)).save(images / fname)
        elif kind == "png16":
            fname = f"{name}.png"
            Image.fromarray((unit * 65535).astype(np.uint16)).save(images / fname)
        elif kind == "npy":
            fname = f"{name}.npy"
            np.save(images / fname, data.astype(np.float32))
        else:
            fname = f"{name}.tif"
            tifffile.imwrite(images / fname, data.astype(np.float32))
        # Keyed by image file name *with* extension, as the original script expected.
        coords[fname] = [[float(x), float(y)] for x, y in tiny_data.labels[name]]
    cfile = tmp_path / "data" / "coordinates.json"
    cfile.write_text(json.dumps(coords))
    settings = tmp_path / "tiny.json"
    settings.write_text(json.dumps(TINY))
    return images, cfile, settings


def _original_command(images, cfile, out):
    return ["train", "--image-dir", str(images), "--coords-file", str(cfile),
            "--output-dir", str(out), "--initial-epochs", "1", "--self-training-iterations",
            "1", "--retrain-epochs", "1", "--batch-size", "4", "--learning-rate", "0.001",
            "--device", "cpu", "--particle-radius", "12", "--positive-threshold", "0.95",
            "--negative-threshold", "0.05"]


def test_the_original_scripts_command_line_runs_unchanged(original_layout, tiny_data, tmp_path,
                                                          capsys):
    images, cfile, settings = original_layout
    out = tmp_path / "experiments" / "v1"
    rc = main([*_original_command(images, cfile, out), "--config", str(settings)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "best stage" in captured.out
    cfg = json.loads((out / "config.json").read_text())
    # --particle-radius 12 is a diameter of 24; every image was matched despite extensions.
    assert cfg["particle_diameter"] == 24.0
    split = cfg["split"]
    assert sorted(split["train"] + split["val"]) == sorted(tiny_data.labels)
    assert split["unlabeled"] == []
    c = cfg["config"]
    assert c["train"]["learning_rate"] == 0.001 and c["train"]["batch_size"] == 4
    assert c["selftrain"]["positive_threshold"] == 0.95
    assert c["selftrain"]["negative_threshold"] == 0.05
    assert c["model"]["depth"] == 2  # from the config file
    for name in ("best_model.pt", "final_model.pt", "metrics.json", "training.log"):
        assert (out / name).is_file()
    stages = json.loads((out / "metrics.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == ["iteration_0_supervised", "iteration_1_selftrain"]
    assert stages[1]["pseudo_labels"]["positive_threshold"] == pytest.approx(0.95)


def test_config_json_records_the_command_line_main_was_given(original_layout, tmp_path):
    # selfpick.cli.main(argv) is also the programmatic entry point: config.json must hold
    # *that* command line, not whatever sys.argv of the calling process is (here: pytest's).
    images, cfile, settings = original_layout
    out = tmp_path / "exp"
    argv = [*_original_command(images, cfile, out), "--self-training-iterations", "0",
            "--config", str(settings)]
    assert main(argv) == 0
    recorded = json.loads((out / "config.json").read_text())["command_line"]
    assert recorded == ["selfpick", *argv]


@pytest.mark.parametrize("missing", ["--image-dir", "--coords-file"])
def test_missing_inputs_exit_2_with_a_clear_message(original_layout, tmp_path, capsys, missing):
    images, cfile, settings = original_layout
    out = tmp_path / "exp"
    argv = _original_command(images, cfile, out)
    i = argv.index(missing)
    del argv[i : i + 2]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # the error is one line, the last one
    assert last.startswith("selfpick train: error:") and missing in last
    # Nothing that would make a corrected rerun be refused as an "existing experiment".
    for name in ("config.json", "metrics.json", "iteration_0_supervised"):
        assert not (out / name).exists()


def test_missing_output_dir_exits_2(original_layout, capsys):
    images, cfile, _ = original_layout
    rc = main(["train", "--image-dir", str(images), "--coords-file", str(cfile)])
    err = capsys.readouterr().err
    assert rc == 2 and "--output-dir" in err.strip().splitlines()[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on GPU-less machines")
def test_multi_gpu_without_a_gpu_exits_2(original_layout, tmp_path, capsys):
    images, cfile, _ = original_layout
    rc = main([*_original_command(images, cfile, tmp_path / "exp"), "--multi-gpu"])
    assert rc == 2 and "--multi-gpu" in capsys.readouterr().err


def test_an_unknown_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--image-dirr", "x"])
    assert exc.value.code == 2
    assert "--image-dirr" in capsys.readouterr().err
