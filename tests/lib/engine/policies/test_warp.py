"""warp-every-k and warp-error: decisions, labels, and in a session: no network on warp frames, the target
model learns only on computed frames, one flow per key frame shared by its objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from base.errors import CheckpointError, ConfigError
from lib.engine.bases.gfrtm import GFRTMBase
from lib.engine.core import EngineConfig, InferenceEngine
from lib.engine.paths import COMPUTE as C
from lib.engine.paths import path_by_code
from lib.engine.policies import ObjectFrame, PolicyConfig, policy_of_label
from lib.engine.policies import warp as warp_policies
from lib.engine.policies.warp import WARP as W
from lib.engine.warp import FLOW_SCALE, dis_flops, warp_object_flops
from lib.evaluation.run import sequence_record, speed_and_reuse
from lib.tools.checkpoint import save_warp_corrector
from models.warp_corrector import PROB_EPS, WarpCorrector
from tests.lib.engine.sessions import counting, davis_video, run_policy, seeded_networks
from tests.numerics import U32, gamma


@pytest.mark.parametrize("k, since, expected", [(1, 1, C), (3, 1, W), (3, 2, W), (3, 3, C)])
def test_warp_every_k_schedule(decide, k, since, expected):
    assert decide(PolicyConfig.of("warp-every-k", k=k), since=since) is expected


def test_labels_flags_and_validation():
    # the learned correction is the default; labels name the correction (none for the guided filter, as before)
    assert PolicyConfig.of("warp-every-k", k=3).label() == "warp-every-3-learned"
    assert PolicyConfig.of("warp-every-k", k=3, refine="guided").label() == "warp-every-3"
    assert PolicyConfig.of("warp-every-k", k=3, refine="none").label() == "warp-every-3-none"
    assert PolicyConfig("warp-error", 0.9).label() == "warp-error-learned"
    for label, name in (("warp-every-3", "warp-every-k"), ("warp-every-3-none", "warp-every-k"),
                        ("warp-error-none", "warp-error"), ("every-3", "every-k")):
        assert policy_of_label(label).name == name
    assert policy_of_label("warp-every-3").point_label("warp-every-3-none") == "k=3"
    assert path_by_code("W") is W and W.reuses
    with pytest.raises(ConfigError, match="--warp-refine must be one of guided, learned, none"):
        PolicyConfig.of("warp-error", 0.9, refine="bilateral")
    with pytest.raises(ConfigError, match="--every-k >= 1"):
        PolicyConfig.of("warp-every-k", k=0)
    for name in ("warp-every-k", "warp-error"):
        cls = PolicyConfig(name).policy_class
        assert not cls.needs_matching and not cls.needs_gate


def test_warp_error_warps_iff_confidence_above_tau():
    policy = PolicyConfig("warp-error", 0.95).create()
    frame = dict(obj_id=1, index=2, frames_since_compute=1)
    assert policy.decide(ObjectFrame(**frame, cue=0.96)) is W
    assert policy.decide(ObjectFrame(**frame, cue=0.95)) is C  # strict, as the gate


@pytest.fixture(scope="module")
def davis_seq(tmp_path_factory):
    return davis_video(tmp_path_factory.mktemp("davis"), frames=7)


@pytest.fixture(scope="module")
def networks():
    return seeded_networks()


run = run_policy


def test_warp_frames_run_no_network_and_share_the_flow(networks, davis_seq, monkeypatch):
    model, backbone = networks
    calls = {"frame_features": 0, "update_target": 0, "match": 0, "flow": 0}

    def spy(name, fn):
        return counting(calls, name, fn)

    monkeypatch.setattr(GFRTMBase, "frame_features", spy("frame_features", GFRTMBase.frame_features))
    monkeypatch.setattr(GFRTMBase, "update_target", spy("update_target", GFRTMBase.update_target))
    monkeypatch.setattr(GFRTMBase, "match", spy("match", GFRTMBase.match))
    monkeypatch.setattr(warp_policies, "dis_flow", spy("flow", warp_policies.dis_flow))
    _, stats, out = run(networks, davis_seq, PolicyConfig.of("warp-every-k", k=3))
    n_obj, frames = len(davis_seq.object_ids), len(davis_seq)
    assert n_obj >= 2
    computed = [i for i in range(1, frames) if i % 3 == 0]  # frames 3 and 6
    for o in out[1:]:
        assert set(o.paths.values()) == {C if o.index in computed else W}
        if o.index not in computed:
            assert o.result.logits == {}  # no network output on a warp frame
    warp_frames = frames - 1 - len(computed)
    assert calls == {"frame_features": 1 + len(computed), "update_target": n_obj * len(computed), "match": 0,
                     "flow": warp_frames}  # the objects share their key frame, so one flow per warp frame
    assert stats.reused_object_frames == warp_frames * n_obj
    for o in out[1:]:
        assert np.isin(o.labels, [0] + list(davis_seq.object_ids)).all()


def test_warp_error_at_tau_one_computes_every_frame_like_always(networks, davis_seq):
    _, _, warp_out = run(networks, davis_seq, PolicyConfig("warp-error", 1.0))
    _, _, always_out = run(networks, davis_seq, PolicyConfig("always"))
    for a, b in zip(warp_out, always_out):
        assert set(a.paths.values()) <= {C}
        np.testing.assert_array_equal(a.labels, b.labels)
    _, stats, out = run(networks, davis_seq, PolicyConfig("warp-error", -1.0))
    assert stats.reused_object_frames == stats.tracked_object_frames
    assert {p for o in out[1:] for p in o.paths.values()} == {W}


def test_warp_needs_the_frames(networks):
    """A session fed backbone features (no image) cannot warp: a one-line error, not a crash."""
    engine = InferenceEngine(*networks, EngineConfig())
    session = engine.new_session(PolicyConfig.of("warp-every-k", k=3))
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    mask = np.zeros((64, 96), np.uint8)
    mask[16:48, 24:72] = 1
    session.step(image, {1: mask})
    feats = engine.base.frame_features(engine.frame_tensor(image))
    with pytest.raises(ConfigError, match="the warp path needs the frame itself"):
        session.step_features(feats, (64, 96))


# The identity corrector's probability against the clamped warp: the logit log p - log1p(-p) (|logit| <= 6.91 at
# PROB_EPS 1e-3) takes 3 roundings, the softmax-weighted 9-tap sum gamma(2 * 9 + 3) more (the other taps weigh
# e^-100), the sigmoid back 2 u; the sigmoid's slope is <= 1/4.
IDENTITY_ROUND_TRIP = 0.25 * gamma(3 + 2 * 9 + 3) * 6.91 + 2 * U32


def identity_corrector(path):
    """A corrector file whose module returns the warped map itself (all kernel weight on the centre tap)."""
    corrector = WarpCorrector()
    with torch.no_grad():
        corrector.head.bias[corrector.kernel ** 2 // 2] = 100.0
    save_warp_corrector(path, corrector)
    return str(path)


def test_learned_refinement_labels_and_a_missing_or_wrong_file(tmp_path):
    path = identity_corrector(tmp_path / "c.pth")
    assert PolicyConfig.of("warp-every-k", k=2, refine="learned", corrector=path).label() == "warp-every-2-learned"
    assert PolicyConfig.of("warp-error", 0.9, refine="learned", corrector=path).label() == "warp-error-learned"
    for label, name in (("warp-every-2-learned", "warp-every-k"), ("warp-error-learned", "warp-error")):
        assert policy_of_label(label).name == name
    missing = tmp_path / "none.pth"
    with pytest.raises(CheckpointError, match="warp-corrector weights not found") as err:
        PolicyConfig.of("warp-every-k", k=2, refine="learned", corrector=str(missing))
    assert str(missing) in str(err.value)
    torch.save({"format": "reuse-vos", "model": {}}, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="not a warp-corrector file"):
        PolicyConfig.of("warp-every-k", k=2, refine="learned", corrector=str(tmp_path / "model.pth"))
    # the corrector is only read for --warp-refine learned
    PolicyConfig.of("warp-every-k", k=2, refine="guided", corrector=str(missing))


def test_learned_refinement_runs_the_corrector_on_warp_frames(networks, davis_seq, tmp_path):
    """An identity corrector gives the uncorrected warp (clamped as the logit is), frame by frame."""
    path = identity_corrector(tmp_path / "c.pth")
    _, _, learned = run(networks, davis_seq, PolicyConfig.of("warp-every-k", k=3, refine="learned", corrector=path))
    _, _, plain = run(networks, davis_seq, PolicyConfig.of("warp-every-k", k=3, refine="none"))
    for a, b in zip(learned[1:], plain[1:]):
        assert a.paths == b.paths
        if set(a.paths.values()) != {W}:
            continue
        for obj, prob in a.result.probs.items():
            expected = b.result.probs[obj].clamp(PROB_EPS, 1 - PROB_EPS)
            torch.testing.assert_close(prob, expected, rtol=0, atol=IDENTITY_ROUND_TRIP)


def test_warp_frames_count_the_flow_and_record_their_error(networks, davis_seq, tmp_path):
    engine, stats, out = run(networks, davis_seq, PolicyConfig.of("warp-every-k", k=3, refine="guided"))
    warp_frames = [o.index for o in out[1:] if set(o.paths.values()) == {W}]
    flows = engine.flops.by_component["warp_flow"]
    small = (-(-64 // FLOW_SCALE), -(-96 // FLOW_SCALE))
    assert flows == len(warp_frames) * dis_flops(small) > 0  # one flow per warp frame, shared by the objects
    n_obj = len(davis_seq.object_ids)
    assert engine.flops.by_component["warp_object"] == n_obj * len(warp_frames) * warp_object_flops(
        (64, 96), small, "guided")
    assert "warp_correction" not in engine.flops.by_component
    for obj in stats.objects.values():
        assert sorted(obj.measures["warp_error"]) == warp_frames and "cue" not in obj.measures
    assert 0 <= speed_and_reuse([sequence_record(stats)])["warp_error_mean"] <= 1
    learned, _, _ = run(networks, davis_seq, PolicyConfig.of("warp-every-k", k=3, refine="learned",
                                                               corrector=identity_corrector(tmp_path / "c.pth")))
    convs = learned.flops.by_component["warp_correction"]
    assert convs > n_obj * len(warp_frames) * 2 * 9 * 64 * 96  # the CNN's convolutions and the per-pixel kernel
    _, stats, _ = run(networks, davis_seq, PolicyConfig("warp-error", 0.9))
    for obj in stats.objects.values():
        assert set(obj.measures["cue"]) == set(obj.paths)  # the policy's confidence, on every tracked frame


def test_flow_flops_grow_with_the_frame():
    assert 0 < dis_flops((60, 108)) < dis_flops((120, 216)) < dis_flops((240, 432))
    assert warp_object_flops((240, 432), (60, 108), "none") < warp_object_flops((240, 432), (60, 108), "guided")
