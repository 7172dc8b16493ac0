"""selfpick model files: complete, safe to load (weights_only), clear errors when not usable."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from selfpick.config import Config
from selfpick.errors import InputError, ModelFileError
from selfpick.model.modelfile import FORMAT_VERSION, load_model, model_payload, save_model
from selfpick.model.unet import UNet


def _config() -> Config:
    cfg = Config()
    cfg.update({"depth": 2, "width": 4, "downsample": 2.5, "clip_sigma": 4.0})
    return cfg


def _trained_looking_model(cfg: Config) -> UNet:
    """A model whose weights and BatchNorm statistics differ from a fresh one's."""
    torch.manual_seed(0)
    net = UNet.from_config(cfg.model)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 1, 16, 16) * 2 + 0.3)  # moves the running statistics
    return net.eval()


@pytest.fixture
def saved(tmp_path):
    cfg = _config()
    net = _trained_looking_model(cfg)
    path = tmp_path / "model.pt"
    save_model(path, net, cfg, particle_diameter=24.0, downsample=2.5, threshold=0.37,
               min_distance=0.4, stage="iteration_1_selftrain",
               metrics={"f1": np.float64(0.8), "counts": np.array([1, 2])})
    return path, net, cfg


class _RunsCodeWhenUnpickled:
    """Unpickling this calls ``open(marker, "w")``: it creates a file (harmless, detectable)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_save_then_load_gives_identical_outputs_and_metadata(saved):
    path, net, cfg = saved
    loaded = load_model(path)
    assert not loaded.model.training  # ready for inference
    x = torch.randn(2, 1, 32, 24)
    with torch.no_grad():
        # Loaded models are channels-last: a different summation order, same numbers to 1e-5.
        torch.testing.assert_close(loaded.model(x), net(x), rtol=0, atol=1e-5)
    assert loaded.config == cfg
    assert loaded.particle_diameter == 24.0
    assert loaded.downsample == 2.5
    assert loaded.threshold == pytest.approx(0.37)
    assert loaded.min_distance == pytest.approx(0.4)
    assert loaded.stage == "iteration_1_selftrain"
    assert loaded.metrics == {"f1": 0.8, "counts": [1, 2]}  # numpy made plain
    assert loaded.radius_model_px == pytest.approx(24.0 / 2 / 2.5)
    assert loaded.created and loaded.selfpick_version


def test_model_file_loads_with_plain_torch_weights_only(saved):
    # The SPEC's promise: anyone can open the file with torch.load(..., weights_only=True).
    path, _, _ = saved
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format"] == "selfpick-model"
    assert payload["format_version"] == FORMAT_VERSION
    assert isinstance(payload["state_dict"], dict)
    assert payload["config"]["model"]["depth"] == 2


def test_load_model_asks_torch_for_weights_only(saved, monkeypatch):
    path, _, _ = saved
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_model(path)
    assert calls == [True]


def test_save_is_atomic_and_leaves_no_temporary_files(saved):
    path, _, _ = saved
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


# torch warns that plain pickle's protocol is unusual: expected here.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_file_crafted_to_run_code_is_refused_and_the_code_does_not_run(tmp_path, writer):
    marker = tmp_path / "code_ran.txt"
    # First make sure the payload really would run code under an unsafe load.
    probe = tmp_path / "probe.txt"
    pickle.loads(pickle.dumps(_RunsCodeWhenUnpickled(probe)))
    assert probe.exists()

    path = tmp_path / "evil.pt"
    payload = {"format": "selfpick-model", "format_version": FORMAT_VERSION,
               "state_dict": _RunsCodeWhenUnpickled(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    with pytest.raises(ModelFileError) as exc:
        load_model(path)
    assert not marker.exists(), "loading the model file ran code"
    assert str(path) in str(exc.value)
    assert isinstance(exc.value, InputError)  # the CLI turns it into exit code 2


def test_a_torch_file_without_our_header_is_not_a_selfpick_model(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": UNet(depth=1, width=4).state_dict()}, path)
    with pytest.raises(ModelFileError, match="not a selfpick model"):
        load_model(path)
    # A bare state_dict (what most PyTorch projects save) and a tensor too.
    torch.save(UNet(depth=1, width=4).state_dict(), path)
    with pytest.raises(ModelFileError, match="not a selfpick model"):
        load_model(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(ModelFileError, match="not a selfpick model"):
        load_model(path)


def test_a_newer_format_version_is_refused_naming_the_version(tmp_path):
    cfg = _config()
    payload = model_payload(UNet.from_config(cfg.model), cfg, 24.0, 2.5, 0.5)
    payload["format_version"] = 99
    path = tmp_path / "future.pt"
    torch.save(payload, path)
    with pytest.raises(ModelFileError) as exc:
        load_model(path)
    msg = str(exc.value)
    assert "99" in msg and str(FORMAT_VERSION) in msg and str(path) in msg


def test_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        load_model(path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.02])
def test_a_truncated_file_is_refused(saved, tmp_path, keep):
    path, _, _ = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: max(1, int(len(data) * keep))])
    with pytest.raises(ModelFileError) as exc:
        load_model(cut)
    assert str(cut) in str(exc.value)


@pytest.mark.parametrize("content", [b"these are not weights\n", b"hello world " * 100,
                                     b"PK\x03\x04 not really a zip", bytes(range(256)) * 4])
def test_a_file_that_is_not_a_model_is_refused_with_a_clear_message(tmp_path, content):
    # Whatever a user passes as --model, the answer is a ModelFileError (exit 2), never a
    # traceback from inside torch's unpickler.
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as exc:
        load_model(path)
    assert str(path) in str(exc.value)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    cfg = _config()
    payload = model_payload(UNet.from_config(cfg.model), cfg, 24.0, 2.5, 0.5)
    payload["config"]["model"]["width"] = 8  # the stored weights are for width 4
    path = tmp_path / "inconsistent.pt"
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="damaged or inconsistent"):
        load_model(path)


def test_a_model_saved_before_the_skip_setting_loads_as_the_concatenating_unet(tmp_path):
    # Model files written by selfpick 0.1 have no "skip" in their config and concatenating
    # decoder weights; they must keep working after the default changed to "add".
    cfg = _config()
    cfg.update({"skip": "concat"})
    net = _trained_looking_model(cfg)
    payload = model_payload(net, cfg, particle_diameter=24.0, downsample=2.5, threshold=0.4,
                            min_distance=0.5)
    del payload["config"]["model"]["skip"]
    path = tmp_path / "old.pt"
    torch.save(payload, path)
    loaded = load_model(path)
    assert loaded.config.model.skip == "concat"
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), net(x), rtol=0, atol=1e-5)


def test_loading_for_inference_folds_batchnorm_and_loading_for_training_keeps_it(saved):
    path, net, _ = saved
    has_bn = lambda m: any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # noqa: E731
    assert not has_bn(load_model(path).model)  # the default: picking, evaluation, reports
    trainable = load_model(path, inference=False).model
    assert has_bn(trainable)
    assert set(trainable.state_dict()) == set(net.state_dict())  # resumable weights
