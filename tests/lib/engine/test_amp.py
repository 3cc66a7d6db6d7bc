"""bf16 and int8 inference (``EngineConfig(amp="bf16")``, ``int8_backbone``): each base network runs on
bf16-weight copies (the caller's networks untouched) in its amp layout; an int8 backbone is G-FRTM's alone; the
shipped G-FRTM's masks stay those of float32."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.davis import DAVISDataset
from lib.engine.core import EngineConfig, InferenceEngine
from lib.engine.policies import PolicyConfig
from lib.evaluation.run import track_sequence
from lib.tools.checkpoint import load_inference_model
from lib.tools.cli import SHIPPED_MODEL
from tests.lib.engine.sessions import davis_video, seeded_networks

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "data" / "samples" / "davis2016-sample"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return davis_video(tmp_path_factory.mktemp("davis"), frames=4)


def test_gfrtm_runs_bf16_copies_and_leaves_the_callers_networks(video):
    model, backbone = seeded_networks()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = InferenceEngine(model, backbone, EngineConfig(amp="bf16"))
    assert engine.model is not model and engine.backbone is not backbone
    assert engine.channels_last  # G-FRTM's layout under amp
    assert engine.model.refiner.project.conv1.weight.dtype == torch.bfloat16
    assert all(v.dtype == torch.float32 or not v.is_floating_point() for v in model.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not InferenceEngine(model, backbone, EngineConfig()).channels_last  # float32: NCHW as before
    stats = track_sequence(engine, video, PolicyConfig("gate", 0.5))
    assert stats.frames == len(video) and stats.tracked_object_frames > 0


@pytest.mark.parametrize("kind", ["ttvos", "gttvos"])
def test_the_ttvos_bases_run_in_bf16(video, kind):
    if kind == "ttvos":
        from models.ttvos import TTVOS
        model, policy = TTVOS("hrnetv2Sv1"), PolicyConfig("always")
    else:
        from models.gttvos import GTTVOS
        model, policy = GTTVOS("hrnetv2Sv1"), PolicyConfig("gate", 0.5)
    torch.manual_seed(0)
    engine = InferenceEngine(model, None, EngineConfig(amp="bf16"))
    assert next(p for n, p in engine.model.named_parameters() if n.endswith("weight") and p.dim() == 4).dtype \
        == torch.bfloat16
    outputs = []
    track_sequence(engine, video, policy, on_frame=outputs.append)
    assert len(outputs) == len(video) and all(o.labels.shape == outputs[0].labels.shape for o in outputs)


@pytest.mark.slow
def test_the_shipped_model_in_bf16_gives_the_float32_masks():
    """blackswan, 8 frames at the shipped 360x640: the bf16 masks agree with float32's to IoU > 0.98 per frame
    (held-out and bundled val J&F moved by 0.0004 and 0.0003 when measured, README)."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    loaded = load_inference_model(SHIPPED_MODEL)
    seq = DAVISDataset(SAMPLE, year=2016, split="val", sequences=["blackswan"]).sequence("blackswan")
    seq = dataclasses.replace(seq, frames=seq.frames[:8], image_files=seq.image_files[:8])
    labels = {}
    for amp in (None, "bf16"):
        engine = InferenceEngine(loaded.model, loaded.backbone, EngineConfig(size=loaded.size, amp=amp),
                                 count_flops=False)
        outputs = []
        track_sequence(engine, seq, PolicyConfig("gate", 1.0), on_frame=outputs.append)
        labels[amp] = [np.asarray(o.labels) > 0 for o in outputs]
    for a, b in zip(labels[None][1:], labels["bf16"][1:]):
        assert (a & b).sum() / (a | b).sum() > 0.98


def test_an_int8_backbone_engine_runs_and_ttvos_is_refused(video):
    from models.ttvos import TTVOS

    model, backbone = seeded_networks()
    engine = InferenceEngine(model, backbone, EngineConfig(int8_backbone=True))
    assert getattr(engine.backbone, "int8", False) and not getattr(backbone, "int8", False)
    stats = track_sequence(engine, video, PolicyConfig("gate", 0.5))
    assert stats.frames == len(video)
    both = InferenceEngine(model, backbone, EngineConfig(int8_backbone=True, amp="bf16"))  # int8 backbone, bf16 rest
    assert track_sequence(both, video, PolicyConfig("always")).frames == len(video)
    with pytest.raises(Exception, match="int8-backbone quantizes G-FRTM's frozen backbone"):
        InferenceEngine(TTVOS("hrnetv2Sv1"), None, EngineConfig(int8_backbone=True))


@pytest.mark.slow
def test_the_shipped_model_with_an_int8_backbone_keeps_its_masks():
    """blackswan, 8 frames at 360x640, the int8 backbone calibrated on the bundled rollerblade: IoU > 0.95 with
    the float32 masks (held-out and bundled val J&F moved by +0.0008 and -0.0007 when measured, README)."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    loaded = load_inference_model(SHIPPED_MODEL)
    seq = DAVISDataset(SAMPLE, year=2016, split="val", sequences=["blackswan"]).sequence("blackswan")
    seq = dataclasses.replace(seq, frames=seq.frames[:8], image_files=seq.image_files[:8])
    labels = {}
    for int8 in (False, True):
        engine = InferenceEngine(loaded.model, loaded.backbone, EngineConfig(size=loaded.size, int8_backbone=int8),
                                 count_flops=False)
        outputs = []
        track_sequence(engine, seq, PolicyConfig("gate", 1.0), on_frame=outputs.append)
        labels[int8] = [np.asarray(o.labels) > 0 for o in outputs]
    for a, b in zip(labels[False][1:], labels[True][1:]):
        assert (a & b).sum() / (a | b).sum() > 0.95


def test_missing_or_empty_calibration_folders_are_one_line_errors(tmp_path):
    from base.errors import DatasetError

    model, backbone = seeded_networks()
    with pytest.raises(DatasetError, match="calibration frames are missing"):
        InferenceEngine(model, backbone, EngineConfig(int8_backbone=True, int8_calibration=str(tmp_path / "no")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no frames"):
        InferenceEngine(model, backbone, EngineConfig(int8_backbone=True, int8_calibration=str(tmp_path / "empty")))
