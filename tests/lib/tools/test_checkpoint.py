"""Checkpoint loading (all accepted formats), safety without trust, conversion CLI, error reporting."""

from __future__ import annotations

import collections
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from base.errors import CheckpointError, ConfigError
from lib.tools.checkpoint import (
    OFFICIAL_SAFE_PICKLE,
    OfficialObject,
    build_model_from_checkpoint,
    frtm_keys,
    load_model_weights,
    main,
    save_model,
)
from models.gfrtm import GFRTM
from tests.cli import call

REPO = Path(__file__).resolve().parents[3]
FIXTURE_DIR = Path(os.environ.get("OFFICIAL_FIXTURE_DIR", REPO / "tests" / "fixtures" / "official"))


def _model(ftext: str = "resnet18", seed: int = 0) -> GFRTM:
    torch.manual_seed(seed)
    net = GFRTM(ftext)
    with torch.no_grad():  # make BN buffers non-default so that a load is visible
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_()
    return net


def _assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _AverageMeter:
    """Mimics the official ``lib.utils.AverageMeter`` (pickled under that module name)."""

    def __init__(self):
        self.val, self.avg, self.sum, self.count = np.float64(0.25), np.float64(0.5), 1.5, 3


class _ExplodingModule(types.ModuleType):
    """Stands in for the official ``lib.utils`` at load time: any attribute access fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the loader imported official code (lib.utils.{name})")


def _write_official(path: Path, net: GFRTM, monkeypatch, legacy: bool = False) -> None:
    """An official-format training checkpoint whose stats pickle a class of module ``lib.utils``
    (``legacy``: torch's pre-1.6 non-zip serialisation)."""
    fake = types.ModuleType("lib.utils")
    _AverageMeter.__module__, _AverageMeter.__qualname__ = "lib.utils", "AverageMeter"
    fake.AverageMeter = _AverageMeter
    stats = collections.defaultdict(_AverageMeter)
    stats["stats/loss"], stats["stats/lr"] = _AverageMeter(), _AverageMeter()
    groups = [{"params": list(getattr(net, name).parameters()), "weight_decay": wd}
              for name, wd in (("convGS", 0.0), ("Tmatching", 1e-5), ("Convert_Diff", 1e-5), ("refiner", 1e-5))]
    optimizer = torch.optim.Adam(groups, lr=5e-4, amsgrad=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=127, gamma=0.1)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "lib.utils", fake)
        torch.save({"name": "All_RN18", "epoch": 7, "stats": stats, "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, path,
                   _use_new_zipfile_serialization=not legacy)


@pytest.fixture
def official_file(tmp_path, monkeypatch):
    net = _model()
    path = tmp_path / "All_RN18_ep0007.pth"
    _write_official(path, net, monkeypatch)
    monkeypatch.setitem(sys.modules, "lib.utils", _ExplodingModule("lib.utils"))
    return path, net


def test_official_checkpoint_refused_without_trust(official_file):
    path, _ = official_file
    with pytest.raises(CheckpointError) as err:
        load_model_weights(path)
    message = str(err.value)
    assert str(path) in message and "pickles Python objects" in message and "--trust-checkpoint" in message
    with pytest.raises(CheckpointError, match="trust"):
        build_model_from_checkpoint(path)


def test_official_checkpoint_with_trust_loads_strictly(official_file):
    path, net = official_file
    state, info = load_model_weights(path, trust=True)
    _assert_same_state(state, net.state_dict())
    assert (info.container, info.kind, info.ftext, info.num_keys, info.trusted) == \
        ("official", "gfrtm", "resnet18", 189, True)
    assert info.dropped == ("stats", "optimizer", "scheduler")
    assert info.extra == {"name": "All_RN18", "epoch": 7}
    model, report = build_model_from_checkpoint(path, trust=True)
    _assert_same_state(model.state_dict(), net.state_dict())
    assert not model.training and "189 keys" in report


def test_legacy_serialisation_official_checkpoint(tmp_path, monkeypatch):
    net = _model(seed=4)
    path = tmp_path / "legacy.pth"
    _write_official(path, net, monkeypatch, legacy=True)
    monkeypatch.setitem(sys.modules, "lib.utils", _ExplodingModule("lib.utils"))
    with pytest.raises(CheckpointError, match="pickles Python objects"):
        load_model_weights(path)
    state, info = load_model_weights(path, trust=True)
    assert info.trusted and info.kind == "gfrtm"
    _assert_same_state(state, net.state_dict())


def test_unknown_non_official_class_fails_even_with_trust(tmp_path, monkeypatch):
    class Thing:
        pass

    Thing.__module__, Thing.__qualname__ = "no_such_package_xyz", "Thing"
    fake = types.ModuleType("no_such_package_xyz")
    fake.Thing = Thing
    path = tmp_path / "thing.pth"
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "no_such_package_xyz", fake)
        torch.save({"model": GFRTM().state_dict(), "extra": Thing()}, path)
    with pytest.raises(CheckpointError, match="even with trust.*no_such_package_xyz"):
        load_model_weights(path, trust=True)


def test_official_stats_become_placeholders(official_file):
    path, _ = official_file
    obj = torch.load(path, weights_only=False, pickle_module=OFFICIAL_SAFE_PICKLE)
    meter = obj["stats"]["stats/loss"]
    assert isinstance(meter, OfficialObject) and type(meter).__name__ == "AverageMeter"
    assert meter.state["avg"] == 0.5


def test_convert_round_trip(official_file, tmp_path, capsys):
    path, net = official_file
    out = tmp_path / "converted.pth"
    assert main(["convert", str(path), str(out), "--trust-checkpoint"]) == 0
    printed = capsys.readouterr().out
    assert "189 keys" in printed and "resnet18" in printed and "stats, optimizer, scheduler" in printed
    payload = torch.load(out, weights_only=True)
    assert payload["format"] == "reuse-vos" and payload["source_epoch"] == 7
    state, info = load_model_weights(out)
    assert (info.container, info.trusted, info.dropped) == ("reuse-vos", False, ())
    _assert_same_state(state, net.state_dict())


def test_convert_cli_error_is_one_line(official_file, tmp_path):
    path, _ = official_file
    from lib.tools.checkpoint import main

    proc = call(main, "convert", path, tmp_path / "o.pth")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert str(path) in proc.stderr and "--trust-checkpoint" in proc.stderr
    assert not (tmp_path / "o.pth").exists()


def test_fixture_checkpoint_loads_weights_only():
    files = sorted(FIXTURE_DIR.glob("official_rn18_seed*.pth"))
    if not files:
        pytest.skip(f"no official_rn18_seed*.pth in {FIXTURE_DIR}")
    state, info = load_model_weights(files[0])
    assert (info.container, info.kind, info.ftext, info.num_keys, info.trusted) == \
        ("official", "gfrtm", "resnet18", 189, False)
    model, _ = build_model_from_checkpoint(files[0], ftext="resnet18")
    _assert_same_state(model.state_dict(), state)


@pytest.mark.parametrize("ftext", ["resnet18", "resnet101"])
def test_save_model_and_bare_state_dict(tmp_path, ftext):
    net = _model(ftext, seed=1)
    save_model(tmp_path / "own.pth", net, epoch=3, note="x", history=[1.0, 2.0])
    payload = torch.load(tmp_path / "own.pth", weights_only=True)
    assert payload["epoch"] == 3 and payload["ftext"] == ftext
    model, _ = build_model_from_checkpoint(tmp_path / "own.pth")
    assert model.ftext == ftext
    _assert_same_state(model.state_dict(), net.state_dict())
    torch.save(net.state_dict(), tmp_path / "bare.pth")
    state, info = load_model_weights(tmp_path / "bare.pth")
    assert (info.container, info.ftext) == ("state_dict", ftext)
    _assert_same_state(state, net.state_dict())


def test_save_model_refuses_non_plain_extras(tmp_path):
    with pytest.raises(TypeError, match="extra"):
        save_model(tmp_path / "x.pth", GFRTM(), stats=_AverageMeter())
    with pytest.raises(ValueError, match="reserved"):
        save_model(tmp_path / "x.pth", GFRTM(), model=1)
    assert not (tmp_path / "x.pth").exists()


def test_frtm_checkpoint_initialises_refiner(tmp_path):
    source = _model(seed=2)
    frtm = {k: v for k, v in source.state_dict().items() if k in set(frtm_keys("resnet18"))}
    assert len(frtm) == 140
    torch.save({"name": "rn18_all", "epoch": 260, "model": frtm}, tmp_path / "frtm.pth")
    _, info = load_model_weights(tmp_path / "frtm.pth")
    assert (info.kind, info.num_keys) == ("frtm", 140)
    torch.manual_seed(5)
    fresh = GFRTM().state_dict()
    torch.manual_seed(5)
    model, report = build_model_from_checkpoint(tmp_path / "frtm.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(value, frtm[key] if key in frtm else fresh[key]), key
    assert "FRTM" in report and "refiner.Diff_process" in report and "convGS" in report and "49 keys" in report


@pytest.mark.parametrize("content", [b"", b"hello world\n", os.urandom(2048)], ids=["empty", "text", "random"])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read the file as a PyTorch checkpoint") as err:
        load_model_weights(path, trust=True)
    assert str(path) in str(err.value)


def test_truncated_file(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(GFRTM().state_dict(), good)
    path = tmp_path / "truncated.pth"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        load_model_weights(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model_weights(tmp_path / "none.pth")


def test_wrong_shapes_and_keys(tmp_path):
    state = GFRTM().state_dict()
    bad = dict(state)
    bad["Convert_Diff.weight"] = torch.zeros(1, 64, 5, 5)
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"wrong shapes: Convert_Diff.weight \(1, 64, 5, 5\)") as err:
        build_model_from_checkpoint(tmp_path / "shape.pth")
    assert "shape.pth" in str(err.value)
    missing = {k: v for k, v in state.items() if not k.startswith("convGS.")}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="missing keys: convGS.1.weight"):
        load_model_weights(tmp_path / "missing.pth")
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="unexpected keys: extra.weight"):
        load_model_weights(tmp_path / "extra.pth")
    torch.save({"model": {"a": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a G-FRTM or FRTM state dict"):
        load_model_weights(tmp_path / "other.pth")
    torch.save({"weights": [1, 2]}, tmp_path / "nomodel.pth")
    with pytest.raises(CheckpointError, match="no model weights"):
        load_model_weights(tmp_path / "nomodel.pth")


def test_ftext_mismatch(tmp_path):
    torch.save(GFRTM("resnet18").state_dict(), tmp_path / "rn18.pth")
    with pytest.raises(ConfigError, match="resnet101"):
        build_model_from_checkpoint(tmp_path / "rn18.pth", ftext="resnet101")


def _backbone_file(path: Path) -> dict:
    """A torchvision-format ResNet-18 state dict that differs from the random seed-0 draw."""
    from models.backbone import FeatureExtractor

    state = FeatureExtractor("resnet18", "none").resnet.state_dict()
    torch.manual_seed(3)
    state = {k: (v + 0.01 * torch.randn_like(v)) if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, path)
    return state


def test_bundle_embeds_backbone_and_size_and_loads_weights_only(tmp_path, capsys):
    """A bundle needs no flag beyond the path: its backbone (float16) and inference size come with it."""
    from lib.tools.checkpoint import BACKBONE_KEY, RANDOM_BACKBONE_WARNING, load_inference_model

    net = _model()
    save_model(tmp_path / "trained.pth", net, name="run", epoch=3, optimizer={"state": {}}, config={"lr": 1e-3})
    backbone = _backbone_file(tmp_path / "resnet.pth")
    assert main(["bundle", str(tmp_path / "trained.pth"), str(tmp_path / "ship.pth"), "--backbone",
                 str(tmp_path / "resnet.pth"), "--size", "240", "432"]) == 0
    assert "ship.pth" in capsys.readouterr().out
    raw = torch.load(tmp_path / "ship.pth", weights_only=True)
    assert raw["size"] == [240, 432] and raw["epoch"] == 3 and raw["name"] == "run" and "optimizer" not in raw
    assert raw["backbone_source"] == "resnet.pth"
    assert all(v.dtype == torch.float16 for v in raw[BACKBONE_KEY].values() if v.is_floating_point())

    loaded = load_inference_model(tmp_path / "ship.pth")
    _assert_same_state(loaded.model.state_dict(), net.state_dict())
    assert loaded.pretrained == "embedded" and loaded.size == (240, 432)
    for key, value in loaded.backbone.resnet.state_dict().items():
        if value.is_floating_point():
            assert value.dtype == torch.float32
            torch.testing.assert_close(value, backbone[key].half().float(), rtol=0, atol=0)
    assert any("inference size 240x432" in m for m in loaded.messages)
    # explicit choices override what the file records
    other = load_inference_model(tmp_path / "ship.pth", pretrained="none", size=(120, 216))
    assert other.pretrained == "none" and other.size == (120, 216)
    assert RANDOM_BACKBONE_WARNING in other.messages and any("replaces the backbone" in m for m in other.messages)
    # a plain checkpoint records neither: ImageNet by default (offline: the one-line error), native size
    plain = load_inference_model(tmp_path / "trained.pth", pretrained="none")
    assert plain.size is None
    with pytest.raises(ConfigError, match="no backbone weights"):
        load_inference_model(tmp_path / "trained.pth", pretrained="embedded")


def test_bundle_refuses_a_wrong_backbone_and_bad_size(tmp_path):
    from lib.tools.checkpoint import bundle

    save_model(tmp_path / "trained.pth", _model())
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="do not match torchvision's architecture"):
        bundle(tmp_path / "trained.pth", tmp_path / "out.pth", backbone=tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="--size H W must both be >= 32"):
        bundle(tmp_path / "trained.pth", tmp_path / "out.pth", size=(16, 432))
    assert not (tmp_path / "out.pth").exists()
