"""G-TTVOS behind the engine's seam: the base it picks, tau 1 equal to TTVOS, every policy on a tiny random
G-TTVOS at both placements, what a reused frame skips and leaves unchanged."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from base.errors import ConfigError
from lib.engine.bases.gttvos import GTTVOSBase
from lib.engine.bases.ttvos import TTVOSBase
from lib.engine.core import EngineConfig, InferenceEngine
from lib.engine.policies import PolicyConfig
from lib.evaluation.run import track_sequence
from models.gttvos import GTTVOS, PLACEMENTS
from models.ttvos import TTVOS
from tests.lib.engine.sessions import davis_video

SIZE = (64, 96)


@pytest.fixture(scope="module")
def davis_seq(tmp_path_factory):
    return davis_video(tmp_path_factory.mktemp("davis"), frames=7)


def tiny(placement: str, reuse_bias: float = 0.0) -> GTTVOS:
    """A seeded random G-TTVOS whose translator is not the identity; ``reuse_bias`` shifts the gate's logits."""
    torch.manual_seed(0)
    model = GTTVOS(placement=placement)
    with torch.no_grad():
        torch.nn.init.normal_(model.Diff_process.body[-1].weight, std=0.01)
        model.convGS[4].bias.copy_(torch.tensor([reuse_bias, 0.0]))
    return model.eval()


def run(model, seq, policy, **config):
    engine = InferenceEngine(model, config=EngineConfig(**config))
    outputs = []
    stats = track_sequence(engine, seq, policy, on_frame=outputs.append)
    return engine, stats, outputs


def test_the_engine_picks_the_most_specific_base():
    assert isinstance(InferenceEngine(tiny("frame"), count_flops=False).base, GTTVOSBase)
    assert type(InferenceEngine(TTVOS().eval(), count_flops=False).base) is TTVOSBase


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_at_tau_1_g_ttvos_gives_ttvos_masks(davis_seq, placement):
    model = tiny(placement)
    ttvos = TTVOS().eval()
    ttvos.load_state_dict(model.state_dict(), strict=False)
    _, _, ref = run(ttvos, davis_seq, PolicyConfig("always"))
    _, stats, out = run(model, davis_seq, PolicyConfig("gate", 1.0))
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(ref, out))
    assert stats.reused_object_frames == 0 and stats.tracked_object_frames > 0
    assert all(0 < p < 1 for o in stats.objects.values() for p in o.p_reuse.values())


POLICIES = [PolicyConfig("gate", 0.5), PolicyConfig("gate", -1.0), PolicyConfig.of("copy", 0.5),
            PolicyConfig.of("fusion", 0.3, tau2=0.6), PolicyConfig("oracle", 0.6), PolicyConfig.of("every-k", k=3),
            PolicyConfig.of("warp-every-k", k=3), PolicyConfig("warp-error", 0.5)]


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.label())
def test_every_policy_runs_on_g_ttvos(davis_seq, placement, policy):
    engine, stats, outputs = run(tiny(placement, reuse_bias=0.5), davis_seq, policy)
    taken = {p for o in stats.objects.values() for p in o.paths.values()}
    assert taken <= set(policy.create().paths)
    assert stats.tracked_object_frames == sum(len(o.paths) for o in stats.objects.values()) > 0
    assert all(o.labels.shape == outputs[0].labels.shape for o in outputs)
    if policy.name in ("every-k", "warp-every-k") or policy.tau < 0:
        assert stats.reused_object_frames > 0  # the schedule / tau -1 reuse whatever the gate says


def test_sparse_gate_is_refused_with_a_reason():
    engine = InferenceEngine(tiny("frame"), count_flops=False)
    with pytest.raises(ConfigError, match="takes the sparse path, which base network gttvos does not have"):
        engine.new_session(PolicyConfig("sparse-gate", 0.7))


def test_frame_placement_reused_frames_skip_the_backbone_and_keep_the_ttvos_state(davis_seq):
    """tau -1: every tracked frame reuses: only the stem and the reuse path run, and with --reuse-state keep the
    objects' TTVOS states (template, mask history, /16 features) and reuse states stay those of their start
    frame."""
    engine = InferenceEngine(tiny("frame"), config=EngineConfig(reuse_state="keep"))
    session = engine.new_session(PolicyConfig("gate", -1.0))
    first = davis_seq.objects_starting_at(0)
    session.step(davis_seq.image(0), {i: davis_seq.start_mask(i) for i in first})
    before = copy.deepcopy({i: (o.state, o.reuse) for i, o in session.objects.items()})
    components = []
    original = engine.flops.count

    def spy(component, *key):
        components.append(component)
        return original(component, *key)

    engine.flops.count = spy
    out = session.step(davis_seq.image(1))
    assert all(p.reuses for p in out.paths.values())
    assert "backbone_rest" not in components and "compute_path" not in components
    assert {"backbone_prefix", "template_matching_gate", "reuse_path"} <= set(components)
    for obj_id, (state, reuse) in before.items():
        obj = session.objects[obj_id]
        assert torch.equal(obj.state.template, state.template) and torch.equal(obj.state.prev_seg, state.prev_seg)
        assert torch.equal(obj.reuse.decoder, reuse.decoder) and obj.last_compute_index == 0


def test_a_computed_frame_after_reuses_starts_from_the_last_computed_state(davis_seq):
    """every-k 3 with --reuse-state keep: frames 1, 2 reuse, 3 computes from frame 0's TTVOS state: its masks
    equal those of a session that skipped frames 1 and 2 altogether."""
    model = tiny("frame")
    engine = InferenceEngine(model, config=EngineConfig(reuse_state="keep"), count_flops=False)
    first = {i: davis_seq.start_mask(i) for i in davis_seq.objects_starting_at(0)}
    every = engine.new_session(PolicyConfig.of("every-k", k=3))
    skip = engine.new_session(PolicyConfig("always"))
    every.step(davis_seq.image(0), first)
    skip.step(davis_seq.image(0), first)
    for index in (1, 2):
        every.step(davis_seq.image(index))
    a, b = every.step(davis_seq.image(3)), skip.step(davis_seq.image(3))
    assert all(p.computes for p in a.paths.values())
    assert np.array_equal(a.labels, b.labels)


@pytest.mark.parametrize("placement, reuse_state", [("frame", "mask"), ("s16", "mask"), ("s16", "full")])
def test_reuse_state_mask_and_full_update_the_ttvos_state_on_reused_frames(davis_seq, placement, reuse_state):
    engine = InferenceEngine(tiny(placement), config=EngineConfig(reuse_state=reuse_state), count_flops=False)
    session = engine.new_session(PolicyConfig("gate", -1.0))
    first = {i: davis_seq.start_mask(i) for i in davis_seq.objects_starting_at(0)}
    session.step(davis_seq.image(0), first)
    before = copy.deepcopy({i: o.state for i, o in session.objects.items()})
    out = session.step(davis_seq.image(1))
    assert all(p.reuses for p in out.paths.values())
    for obj_id, state in before.items():
        now = session.objects[obj_id].state
        assert not torch.equal(now.prev_seg, state.prev_seg)
        assert torch.equal(now.prev_seg[:, 2:], state.prev_seg[:, :4])  # the history moved by one mask
        assert torch.equal(now.template, state.template) == (reuse_state == "mask")
        assert session.objects[obj_id].last_compute_index == 0


def test_reuse_state_is_refused_where_it_cannot_apply():
    with pytest.raises(ConfigError, match="--reuse-state full needs G-TTVOS placement s16"):
        InferenceEngine(tiny("frame"), config=EngineConfig(reuse_state="full"))
    with pytest.raises(ConfigError, match="--reuse-state mask: base network ttvos takes keep"):
        InferenceEngine(TTVOS().eval(), config=EngineConfig(reuse_state="mask"))
    with pytest.raises(ConfigError, match="--reuse-state must be one of keep, mask, full"):
        EngineConfig(reuse_state="all")
    # the default is each base's choice: mask for G-TTVOS, keep (the only one) for the others
    assert InferenceEngine(tiny("s16"), count_flops=False).reuse_state == "mask"
    assert InferenceEngine(TTVOS().eval(), count_flops=False).reuse_state == "keep"
