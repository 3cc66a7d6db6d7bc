"""Reading TTVOS weights: the official training checkpoint, the project format and bare state dicts; the
backbone found from the keys; one-line errors naming the file."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from base.errors import CheckpointError
from lib.tools.checkpoint import load_ttvos, save_model, save_ttvos
from models.gfrtm import GFRTM
from models.ttvos import TTVOS

OFFICIAL = Path(__file__).resolve().parents[2] / "fixtures" / "ttvos" / "official_ttvos_hrnetv2Sv1_seed0.pth"


def _same(a: TTVOS, b: TTVOS) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_checkpoint_loads_safely_and_round_trips(tmp_path):
    model = load_ttvos(OFFICIAL)
    assert model.backbone_name == "hrnetv2Sv1" and not model.training
    save_ttvos(tmp_path / "m.pth", model, epoch=3)
    again = load_ttvos(tmp_path / "m.pth")
    _same(model, again)
    assert torch.load(tmp_path / "m.pth", weights_only=True)["kind"] == "ttvos"


@pytest.mark.parametrize("name", ["resnet18s16", "mobileNetV3Larges16", "resnet50s16", "hrnetv2Sv1"])
@pytest.mark.parametrize("prefix", ["", "vos."])
def test_bare_state_dicts_find_their_backbone(tmp_path, name, prefix):
    torch.manual_seed(0)
    model = TTVOS(name)
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, tmp_path / "s.pth")
    loaded = load_ttvos(tmp_path / "s.pth")
    assert loaded.backbone_name == name
    _same(model, loaded)


class _AverageMeter:
    """Stands for the official ``utils.stats.AverageMeter`` that the TTVOS trainer pickles into ``stats``."""

    def __init__(self):
        self.avg, self.count = 0.5, 3


def test_official_file_that_pickles_objects_needs_trust(tmp_path, monkeypatch):
    state = torch.load(OFFICIAL, weights_only=True)
    fake = types.ModuleType("utils.stats")
    _AverageMeter.__module__, _AverageMeter.__qualname__ = "utils.stats", "AverageMeter"
    fake.AverageMeter = _AverageMeter
    state["stats"] = {"loss": _AverageMeter()}
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "utils", types.ModuleType("utils"))
        patch.setitem(sys.modules, "utils.stats", fake)
        torch.save(state, tmp_path / "official.pth")
    with pytest.raises(CheckpointError, match="trust"):
        load_ttvos(tmp_path / "official.pth")
    assert load_ttvos(tmp_path / "official.pth", trust=True).backbone_name == "hrnetv2Sv1"


def test_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found") as err:
        load_ttvos(tmp_path / "missing.pth")
    assert "missing.pth" in str(err.value)
    save_model(tmp_path / "gfrtm.pth", GFRTM("resnet18"))
    with pytest.raises(CheckpointError, match="not a TTVOS") as err:
        load_ttvos(tmp_path / "gfrtm.pth")
    assert "gfrtm.pth" in str(err.value)
    state = TTVOS("hrnetv2Sv1").state_dict()
    del state["refine.deconv3.bias"]
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_ttvos(tmp_path / "short.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="text.pth"):
        load_ttvos(tmp_path / "text.pth")


def test_model_path_alone_picks_ttvos_for_the_engine(tmp_path):
    """--model PATH alone: load_inference_model sees a TTVOS file (official or project format), returns it without
    a separate backbone, with the size a project file records; G-FRTM-only flags are refused."""
    from base.errors import ConfigError
    from lib.engine.core import InferenceEngine
    from lib.tools.checkpoint import load_inference_model

    loaded = load_inference_model(OFFICIAL)
    assert isinstance(loaded.model, TTVOS) and loaded.backbone is None and loaded.size is None
    assert InferenceEngine(loaded.model, loaded.backbone).base.name == "ttvos"
    save_ttvos(tmp_path / "m.pth", loaded.model, size=[240, 432])
    again = load_inference_model(tmp_path / "m.pth")
    assert again.size == (240, 432) and load_inference_model(tmp_path / "m.pth", size=(96, 128)).size == (96, 128)
    with pytest.raises(ConfigError, match="own backbone"):
        load_inference_model(OFFICIAL, pretrained="imagenet")


def test_bundle_writes_a_small_ttvos_model_file(tmp_path, capsys):
    """``checkpoint bundle`` on a TTVOS training checkpoint: the weights, the recorded size (or --size), name /
    epoch / config / card, no optimizer; --backbone refused in one line."""
    from lib.tools.checkpoint import load_inference_model, main

    model = load_ttvos(OFFICIAL)
    save_ttvos(tmp_path / "ckpt.pth", model, name="run", epoch=7, size=[240, 432],
               optimizer={"state": {}, "param_groups": []}, config={"lr": 3e-4})
    (tmp_path / "card.json").write_text('{"data": "DAVIS 2016 train"}')
    assert main(["bundle", str(tmp_path / "ckpt.pth"), str(tmp_path / "out.pth"),
                 "--card", str(tmp_path / "card.json")]) == 0
    out = torch.load(tmp_path / "out.pth", weights_only=True)
    assert out["kind"] == "ttvos" and out["size"] == [240, 432] and out["epoch"] == 7 and "optimizer" not in out
    assert out["card"] == {"data": "DAVIS 2016 train"} and out["config"] == {"lr": 3e-4}
    _same(model, load_ttvos(tmp_path / "out.pth"))
    assert load_inference_model(tmp_path / "out.pth").size == (240, 432)
    assert main(["bundle", str(tmp_path / "ckpt.pth"), str(tmp_path / "o2.pth"), "--size", "480", "864"]) == 0
    assert torch.load(tmp_path / "o2.pth", weights_only=True)["size"] == [480, 864]
    capsys.readouterr()
    assert main(["bundle", str(OFFICIAL), str(tmp_path / "o3.pth"), "--backbone", str(OFFICIAL)]) == 2
    assert "own backbone" in capsys.readouterr().err
