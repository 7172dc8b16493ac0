"""Config: flat/nested keys, files, validation, and the precedence flags > file > defaults."""

from __future__ import annotations

import json

import pytest

from selfpick.cli import build_parser
from selfpick.cli import main as cli_main
from selfpick.config import Config, config_from_args, load_config_file
from selfpick.errors import InputError


def _train_args(*argv):
    return build_parser().parse_args(["train", *argv])


# ---------------------------------------------------------------- update


def test_defaults_match_the_spec():
    c = Config()
    assert (c.loss.focal_weight, c.loss.dice_weight) == (0.7, 0.3)
    assert (c.loss.focal_alpha, c.loss.focal_gamma) == (0.25, 2.0)
    assert c.train.val_fraction == 0.1
    assert (c.selftrain.positive_threshold, c.selftrain.negative_threshold) == (0.95, 0.05)


def test_flat_and_nested_keys():
    c = Config()
    c.update({"initial_epochs": 5, "depth": 2})
    c.update({"train": {"learning_rate": 0.01}, "selftrain": {"pseudo_label_mode": "pixel"}})
    assert c.train.initial_epochs == 5 and c.model.depth == 2
    assert c.train.learning_rate == 0.01 and c.selftrain.pseudo_label_mode == "pixel"


def test_dashes_work_like_underscores():
    c = Config()
    c.update({"initial-epochs": 4, "train": {"batch-size": 3}, "self-training-iterations": 3})
    assert (c.train.initial_epochs, c.train.batch_size) == (4, 3)
    assert c.selftrain.self_training_iterations == 3


def test_int_is_accepted_for_float_and_stored_as_float():
    c = Config()
    c.update({"learning_rate": 1, "particle_diameter": 100})
    assert c.train.learning_rate == 1.0 and isinstance(c.train.learning_rate, float)
    assert isinstance(c.data.particle_diameter, float)


def test_round_trip_through_a_dict():
    c = Config()
    c.update({"depth": 2, "pos_weight": 3.0, "unlabeled_dir": "x", "deterministic": True})
    assert Config.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.flat()["pos_weight"] == 3.0


# ---------------------------------------------------------------- errors


def test_unknown_key_names_the_file_and_lists_known_keys(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("initial_epochs: 3\ninital_epochs: 4\n")
    with pytest.raises(InputError) as exc:
        Config.from_dict(load_config_file(path), source=path)
    msg = str(exc.value)
    assert str(path) in msg and "inital_epochs" in msg
    assert "initial_epochs" in msg and "batch_size" in msg  # known settings are listed


def test_unknown_key_in_a_section_and_a_key_in_the_wrong_section():
    with pytest.raises(InputError, match="nonsense"):
        Config().update({"train": {"nonsense": 1}}, source="x.json")
    with pytest.raises(InputError, match="depth"):
        Config().update({"train": {"depth": 2}}, source="x.json")  # depth is a model setting


@pytest.mark.parametrize("key,value", [("initial_epochs", "five"), ("initial_epochs", 2.5),
                                       ("initial_epochs", True), ("learning_rate", "fast"),
                                       ("deterministic", "yes"), ("deterministic", 1),
                                       ("image_dir", 3), ("batch_size", None)])
def test_wrong_type_is_an_input_error(key, value):
    with pytest.raises(InputError) as exc:
        Config().update({key: value}, source="cfg.json")
    assert key in str(exc.value) and "cfg.json" in str(exc.value)


def test_none_is_fine_for_optional_settings():
    c = Config()
    c.update({"pos_weight": 2.0})
    c.update({"pos_weight": None, "particle_diameter": None})
    assert c.loss.pos_weight is None


@pytest.mark.parametrize("key,value", [("norm", "layer"), ("pseudo_label_mode", "boxes"),
                                       ("downsample_method", "bicubic"),
                                       ("threshold_schedule", "cosine")])
def test_choices_are_enforced(key, value):
    with pytest.raises(InputError, match="must be one of"):
        Config().update({key: value})


def test_choices_are_enforced_on_the_command_line(capsys):
    with pytest.raises(SystemExit) as exc:
        _train_args("--norm", "layer")
    assert exc.value.code == 2
    assert "--norm" in capsys.readouterr().err


# ---------------------------------------------------------------- files


def test_yaml_and_json_files_flat_and_nested(tmp_path):
    y = tmp_path / "a.yml"
    y.write_text("initial-epochs: 7\nmodel:\n  depth: 2\n  width: 8\nlearning_rate: 0.002\n")
    j = tmp_path / "b.json"
    j.write_text(json.dumps({"train": {"initial_epochs": 7, "learning_rate": 0.002},
                             "depth": 2, "width": 8}))
    a = Config.from_dict(load_config_file(y), source=y)
    b = Config.from_dict(load_config_file(j), source=j)
    assert a == b
    assert (a.train.initial_epochs, a.model.depth, a.model.width) == (7, 2, 8)


@pytest.mark.parametrize("name,text,match", [
    ("bad.json", "{not json", "cannot parse"),
    ("bad.yaml", "a: [1, 2\n", "cannot parse"),
    ("list.yaml", "- 1\n- 2\n", "mapping"),
])
def test_unreadable_config_files_name_the_file(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=match) as exc:
        load_config_file(path)
    assert str(path) in str(exc.value)


def test_missing_and_empty_config_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_config_file(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config_file(empty) == {}


def test_an_experiments_config_json_loads_back(tiny_experiment):
    path = tiny_experiment.output_dir / "config.json"
    saved = json.loads(path.read_text())
    cfg = Config.from_dict(load_config_file(path), source=path)
    assert cfg.to_dict() == saved["config"]
    assert (cfg.model.depth, cfg.model.width, cfg.train.crop_size) == (2, 8, 64)
    # It is also accepted as a --config file for a new run.
    args = _train_args("--config", str(path), "--seed", "5")
    again = config_from_args(args, load_config_file(path), source=str(path))
    assert again.train.seed == 5 and again.model == cfg.model


def test_unknown_key_in_a_config_file_via_the_cli_exits_2(tmp_path, capsys):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"initial_epochs": 2, "pos_wieght": 3}))
    rc = cli_main(["train", "--config", str(path), "--output-dir", str(tmp_path / "exp")])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(path) in err and "pos_wieght" in err and "pos_weight" in err
    assert not (tmp_path / "exp").exists()  # refused before anything was written


# ---------------------------------------------------------------- precedence


def test_flags_override_the_file_which_overrides_defaults(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("initial_epochs: 3\nbatch_size: 2\ntrain:\n  seed: 11\n")
    args = _train_args("--config", str(path), "--initial-epochs", "7", "--depth", "2")
    cfg = config_from_args(args, load_config_file(path), source=str(path))
    assert cfg.train.initial_epochs == 7  # flag beats file
    assert cfg.train.batch_size == 2 and cfg.train.seed == 11  # file beats default
    assert cfg.model.depth == 2  # flag beats default
    assert cfg.train.learning_rate == Config().train.learning_rate  # default


def test_flags_not_given_do_not_reset_file_values(tmp_path):
    # argparse defaults must not silently override the file (flags use SUPPRESS).
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"deterministic": True, "amp": False, "norm": "none"}))
    cfg = config_from_args(_train_args(), load_config_file(path), source=str(path))
    assert cfg.train.deterministic is True and cfg.train.amp is False
    assert cfg.model.norm == "none"
    cfg = config_from_args(_train_args("--no-deterministic"), load_config_file(path))
    assert cfg.train.deterministic is False


def test_aliases_and_original_flags():
    args = _train_args("--images", "imgs", "--coords", "c.json", "--output", "out",
                       "--particle-radius", "10", "--positive-threshold", "0.9",
                       "--negative-threshold", "0.1", "--multi-gpu")
    cfg = config_from_args(args)
    assert (cfg.data.image_dir, cfg.data.coords_file, cfg.train.output_dir) == (
        "imgs", "c.json", "out")
    assert cfg.data.particle_radius == 10.0 and cfg.train.multi_gpu is True
    assert (cfg.selftrain.positive_threshold, cfg.selftrain.negative_threshold) == (0.9, 0.1)
