"""TTVOS behind the engine's seam: the session (frame loop, odds aggregation on the padded canvas, state updates)
against the official fixture, from its features and from the real frames; padding; the policies it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from base.errors import ConfigError
from base.io import read_image_rgb, read_index_png
from lib.engine.bases.ttvos import TTVOSBase, TTVOSObject, required_padding
from lib.engine.core import EngineConfig, InferenceEngine
from lib.engine.paths import COMPUTE
from lib.engine.policies import PolicyConfig
from lib.tools.checkpoint import load_ttvos
from tests.equivalence.test_ttvos import FIXTURE_DIR, TIE, assert_abs, assert_rel

ROOT = Path(__file__).resolve().parents[4]
SAMPLE = ROOT / "data" / "samples" / "davis2016-sample"


@pytest.fixture(scope="module")
def fixture():
    load = lambda name: torch.load(FIXTURE_DIR / name, map_location="cpu", weights_only=True)  # noqa: E731
    return load("inputs.pt"), load("outputs.pt"), load_ttvos(sorted(FIXTURE_DIR.glob("official_ttvos_*.pth"))[0])


def _feats(inputs, t):
    return {k: inputs[f"feat.f{t}.{k}"] for k in ("s16", "s8", "s4") if f"feat.f{t}.{k}" in inputs}


def _check_masks(labels, ref, logits, what):
    differ = labels.cpu() != ref.view_as(labels).to(labels.dtype)
    margin = logits[0, 0].abs().cpu()  # the object's logit over the background's
    assert int((differ & (margin >= TIE)).sum()) == 0, f"{what}: mask pixels differ away from a tie"
    assert int(differ.sum()) <= 10, what


def test_the_engine_picks_the_ttvos_base(fixture):
    engine = InferenceEngine(fixture[2])
    assert isinstance(engine.base, TTVOSBase) and engine.backbone is None
    with pytest.raises(ConfigError, match="own backbone"):
        InferenceEngine(fixture[2], torch.nn.Identity())


def test_a_session_from_the_official_features_follows_the_official_state(fixture):
    """Frame 0 started from its stored features, frames 1..N-1 through the session: logits, merged labels and the
    state after every frame (mask history, template) as the official run."""
    inputs, outputs, model = fixture
    meta = outputs["__meta__"]
    engine = InferenceEngine(model, count_flops=False)
    session = engine.new_session(PolicyConfig("always"))
    mask = inputs["mask0"][0, 0].numpy()
    obj = engine.base.init_object(1, 0, inputs["images"][:1], mask, _feats(inputs, 0))
    assert_abs(obj.state.template, outputs["init.gc"], "init gc")
    session.add_object(obj)
    size = (meta["H"], meta["W"])
    for t in meta["frames"][1:]:
        result = session.step_features(_feats(inputs, t), size)
        assert result.paths == {1: COMPUTE}
        if f"f{t}.segscore" in outputs:
            ref = outputs[f"f{t}.segscore"]
            assert_rel(result.logits[1], ref[:, 1:2] - ref[:, 0:1], f"frame {t} logit", tol=4e-5)
        _check_masks(result.labels, outputs["segs"][t], result.logits[1], f"frame {t}")
        state = session.objects[1].state
        assert_abs(state.prev_seg, outputs[f"f{t}.prev_seg"], f"frame {t} prev_seg")
        assert_abs(state.template, outputs[f"f{t}.gc"], f"frame {t} gc")


@pytest.mark.skipif(not (SAMPLE / "JPEGImages/480p/car-shadow").is_dir(), reason="bundled sample missing")
def test_a_session_on_the_real_frames_gives_the_official_masks(fixture):
    """The fixture's own frames (car-shadow 0-4 at 240x432: INTER_AREA, nearest mask) read and resized by the
    session: the same backbone features, states and masks (only the default fixture is car-shadow)."""
    inputs, outputs, model = fixture
    meta = outputs["__meta__"]
    if meta["sequence"] != "car-shadow":
        pytest.skip("another fixture: its frames are not bundled")
    engine = InferenceEngine(model, config=EngineConfig(size=(meta["H"], meta["W"])), count_flops=False)
    session = engine.new_session(PolicyConfig("always"))
    frames = sorted((SAMPLE / "JPEGImages/480p/car-shadow").glob("*.jpg"))[:len(meta["frames"])]
    first_mask = read_index_png(SAMPLE / "Annotations/480p/car-shadow/00000.png") > 0
    for t, path in enumerate(frames):
        out = session.step(read_image_rgb(path), {1: first_mask} if t == 0 else None)
        if t == 0:
            assert_rel(session.objects[1].state.prev_s16, inputs["feat.f0.s16"], "frame 0 s16")
            continue
        _check_masks(out.result.labels, outputs["segs"][t], out.result.logits[1], f"frame {t}")
        assert_abs(session.objects[1].state.template, outputs[f"f{t}.gc"], f"frame {t} gc")
        assert out.labels.shape == (480, 854)


@pytest.mark.parametrize("size, padding", [((480, 854), (5, 5, 0, 0)), ((240, 432), (0, 0, 0, 0)),
                                           ((37, 53), (6, 5, 6, 5))])
def test_padding_is_the_official_split(size, padding):
    assert required_padding(*size) == padding


def test_any_size_and_two_objects_run_and_merge():
    torch.manual_seed(0)
    from models.ttvos import TTVOS

    engine = InferenceEngine(TTVOS("hrnetv2Sv1"), count_flops=True)
    session = engine.new_session(PolicyConfig("always"))
    rng = np.random.default_rng(0)
    masks = np.zeros((50, 70), np.uint8)
    masks[5:20, 5:30], masks[25:45, 35:65] = 1, 2
    for t in range(3):
        out = session.step(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8), masks if t == 0 else None)
        assert out.labels.shape == (50, 70) and set(np.unique(out.labels)) <= {0, 1, 2}
    assert all(isinstance(o, TTVOSObject) for o in session.objects.values())
    assert set(engine.flops.by_component) >= {"backbone", "compute_path", "state_update"}


@pytest.mark.parametrize("policy", [PolicyConfig("gate", 0.7), PolicyConfig.of("every-k", k=2),
                                    PolicyConfig("sparse-gate", 0.7)])
def test_policies_that_need_a_gate_or_reuse_path_are_refused(fixture, policy):
    engine = InferenceEngine(fixture[2], count_flops=False)
    with pytest.raises(ConfigError, match="ttvos"):
        engine.new_session(policy)


def test_ttvos_runs_channels_last_by_default_and_both_layouts_agree(fixture):
    """The engine runs TTVOS on NHWC tensors with its backbone's BatchNorms folded unless told otherwise (faster on
    the CPU) and G-FRTM on NCHW; both give the same logits as plain NCHW up to float rounding and the same masks."""
    import copy

    from models.backbone import FeatureExtractor
    from models.gfrtm import GFRTM

    model = fixture[2]
    nhwc = InferenceEngine(copy.deepcopy(model), config=EngineConfig(size=(240, 432)), count_flops=False)
    nchw = InferenceEngine(copy.deepcopy(model), config=EngineConfig(size=(240, 432), channels_last=False,
                                                                     fold_bn=False), count_flops=False)
    assert nhwc.channels_last and not nchw.channels_last
    weight = nhwc.model.backbone.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert not InferenceEngine(GFRTM("resnet18"), FeatureExtractor("resnet18", "none"), count_flops=False).channels_last
    # the backbone's BatchNorms are folded on the engine's copy (EngineConfig.fold_bn), never in the given model
    assert isinstance(nhwc.model.backbone.bn1, torch.nn.Identity)
    assert isinstance(model.backbone.bn1, torch.nn.BatchNorm2d)
    plain = InferenceEngine(copy.deepcopy(model), config=EngineConfig(fold_bn=False), count_flops=False)
    assert isinstance(plain.model.backbone.bn1, torch.nn.BatchNorm2d)
    frames = sorted((SAMPLE / "JPEGImages/480p/car-shadow").glob("*.jpg"))[:3]
    first_mask = read_index_png(SAMPLE / "Annotations/480p/car-shadow/00000.png") > 0
    sessions = [e.new_session(PolicyConfig("always")) for e in (nhwc, nchw)]
    for t, path in enumerate(frames):
        image = read_image_rgb(path)
        a, b = (s.step(image, {1: first_mask} if t == 0 else None) for s in sessions)
        if t:
            assert_abs(a.result.logits[1], b.result.logits[1], f"frame {t} logits")
            assert int((a.labels != b.labels).sum()) <= 10
