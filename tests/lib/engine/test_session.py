"""The inference engine and its sessions: gate decisions switch paths, policies, mid-video objects, determinism,
the network size, and the session API itself (inputs, errors, cloning)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from base.errors import ConfigError
from dataset.synthetic import generate_youtubevos
from dataset.youtubevos import YouTubeVOSDataset
from lib.engine.aggregation import soft_aggregate
from lib.engine.bases.gfrtm import GFRTMBase
from lib.engine.core import EngineConfig, InferenceEngine
from lib.engine.paths import COMPUTE, COPY, TRANSLATE
from lib.engine.policies import PolicyConfig
from lib.evaluation.run import track_sequence
from tests.lib.engine.sessions import counting, davis_video, run_policy, seeded_networks


@pytest.fixture(scope="module")
def davis_seq(tmp_path_factory):
    return davis_video(tmp_path_factory.mktemp("davis"))


@pytest.fixture(scope="module")
def networks():
    return seeded_networks()


run = run_policy


def test_tau_one_never_reuses_and_equals_always(networks, davis_seq):
    assert len(davis_seq.object_ids) >= 2
    _, gate_stats, gate_out = run(networks, davis_seq, PolicyConfig("gate", 1.0))
    _, always_stats, always_out = run(networks, davis_seq, PolicyConfig("always"))
    assert gate_stats.reused_object_frames == 0 == always_stats.reused_object_frames
    assert gate_stats.tracked_object_frames == (len(davis_seq) - 1) * len(davis_seq.object_ids)
    for a, b in zip(gate_out, always_out):
        np.testing.assert_array_equal(a.labels, b.labels)
    # the gate's probabilities were computed for tau = 1, not for "always"
    assert gate_out[1].p_reuse and not always_out[1].p_reuse


def test_negative_tau_always_reuses_after_first_frame(networks, davis_seq):
    _, stats, out = run(networks, davis_seq, PolicyConfig("gate", -1.0))
    assert stats.reused_object_frames == stats.tracked_object_frames == (len(davis_seq) - 1) * len(
        davis_seq.object_ids)
    assert out[0].paths == {}  # the first frame only initialises
    assert all(p is TRANSLATE for o in out[1:] for p in o.paths.values())


@pytest.mark.parametrize("p_gate, expect", [(0.0, COMPUTE), (1.0, TRANSLATE)])
def test_forced_gate_switches_modules(networks, davis_seq, monkeypatch, p_gate, expect):
    model, backbone = networks
    calls = {"deep_backbone": 0, "to_layer4": 0, "translate": 0, "deep_refiner": 0}

    def spy(name, fn):
        return counting(calls, name, fn)

    monkeypatch.setattr(model, "reuse_probability", lambda logits: torch.full((logits.shape[0],), p_gate))
    monkeypatch.setattr(backbone, "forward_deep", spy("deep_backbone", backbone.forward_deep))
    monkeypatch.setattr(backbone, "forward_layer4", spy("to_layer4", backbone.forward_layer4))
    monkeypatch.setattr(model, "translate", spy("translate", model.translate))
    monkeypatch.setattr(model, "deep", spy("deep_refiner", model.deep))
    _, stats, out = run(networks, davis_seq, PolicyConfig("gate", 0.5))
    tracked = len(davis_seq) - 1
    n_obj = len(davis_seq.object_ids)
    assert {p for o in out[1:] for p in o.paths.values()} == {expect}
    init_deep_refiner = n_obj  # Test_Init on the first frame, once per object
    init_deep_backbone = 1  # the first frame; each object's synthetic copies stop at stride 16 (layer4)
    init_to_layer4 = n_obj * (EngineConfig().target.num_aug - 1)  # the original sample reuses the frame's
    if expect is COMPUTE:
        # deep backbone once per tracked frame (shared by the objects), never once per object
        assert calls == {"deep_backbone": init_deep_backbone + tracked, "to_layer4": init_to_layer4,
                         "translate": 0, "deep_refiner": init_deep_refiner + tracked * n_obj}
    else:
        assert calls == {"deep_backbone": init_deep_backbone, "to_layer4": init_to_layer4,
                         "translate": tracked * n_obj, "deep_refiner": init_deep_refiner}


@pytest.mark.parametrize("tau", [1.0, -1.0])
def test_shallow_reductions_once_per_frame(networks, davis_seq, monkeypatch, tau):
    """The refiner's frame-only shallow reductions run once per tracked frame, shared by its objects on either
    path, and are counted in the FLOPs once per frame."""
    model, _ = networks
    calls = []
    original = model.reduce_shallow
    monkeypatch.setattr(model, "reduce_shallow", lambda *a: calls.append(1) or original(*a))
    tracker, stats, _ = run(networks, davis_seq, PolicyConfig("gate", tau))
    tracked = len(davis_seq) - 1
    assert len(davis_seq.object_ids) >= 2 and len(calls) == tracked
    assert tracker.flops.by_component["refiner_reduce"] == tracked * tracker.flops.cache[("refiner_reduce", (64, 96))]


def test_strict_threshold(networks, davis_seq, monkeypatch):
    model, _ = networks
    monkeypatch.setattr(model, "reuse_probability", lambda logits: torch.full((logits.shape[0],), 0.7))
    _, stats, _ = run(networks, davis_seq, PolicyConfig("gate", 0.7))
    assert stats.reused_object_frames == 0  # reuse iff P_gate > tau, strictly


def test_copy_every_k_and_oracle_policies(networks, davis_seq):
    _, stats, out = run(networks, davis_seq, PolicyConfig("copy", -1.0))
    assert all(p is COPY for o in out[1:] for p in o.paths.values())
    for frame in out[1:]:  # copying the previous probability keeps the first frame's labels
        np.testing.assert_array_equal(frame.labels, out[0].labels)
    _, stats, out = run(networks, davis_seq, PolicyConfig.of("every-k", k=2))
    obj = davis_seq.object_ids[0]
    assert "".join(o.paths[obj].code for o in out[1:]) == "TCTCT"[: len(out) - 1]
    _, stats, out = run(networks, davis_seq, PolicyConfig("oracle", tau=-1.0))
    assert stats.reused_object_frames == stats.tracked_object_frames
    _, stats, out = run(networks, davis_seq, PolicyConfig("oracle", tau=1.0))
    assert stats.reused_object_frames == 0


def test_oracle_needs_ground_truth_everywhere(networks, tmp_path):
    root = generate_youtubevos(tmp_path / "yt", seed=1, size=(48, 64), num_train=1, num_valid=1, frames=(11, 11))
    seq = YouTubeVOSDataset(root, "valid").sequence(YouTubeVOSDataset(root, "valid").names[0])
    with pytest.raises(ConfigError, match="oracle needs ground truth"):
        run(networks, seq, PolicyConfig("oracle", 0.5))


def test_mid_video_objects(networks, tmp_path):
    root = generate_youtubevos(tmp_path / "yt", seed=0, size=(48, 64), num_train=1, num_valid=2, frames=(16, 16))
    ds = YouTubeVOSDataset(root, "valid_all")
    seq = next(s for s in (ds.sequence(n) for n in ds.names) if len({s.start_index(o) for o in s.object_ids}) > 1)
    late = max(seq.object_ids, key=seq.start_index)
    start = seq.start_index(late)
    _, stats, out = run(networks, seq, PolicyConfig("gate", 1.0))
    assert all(late not in o.labels for o in out[:start])  # absent before its first frame
    # on its first frame the new object's given mask wins over the older objects
    np.testing.assert_array_equal(out[start].labels == late, seq.start_mask(late).astype(bool))
    assert min(stats.objects[late].paths) == start + 1
    assert stats.objects[late].start_index == start


def test_deterministic_under_seed(networks, davis_seq):
    """The same seed gives the same masks and gate probabilities; another seed (other target-model initial
    weights and first-frame augmentation) gives other gate probabilities, so the seed is really used."""
    a = run(networks, davis_seq, PolicyConfig("gate", 0.5), seed=5)[2]
    b = run(networks, davis_seq, PolicyConfig("gate", 0.5), seed=5)[2]
    c = run(networks, davis_seq, PolicyConfig("gate", 0.5), seed=6)[2]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.labels, y.labels)
        assert x.p_reuse == y.p_reuse
    assert any(x.p_reuse != z.p_reuse for x, z in zip(a, c))


def test_flops_counted_per_component(networks, davis_seq):
    tracker, stats, _ = run(networks, davis_seq, PolicyConfig("gate", 1.0))
    comps = tracker.flops.by_component
    assert {"backbone_stride8", "backbone_deep", "object_init", "compute_path", "template_matching_gate"} <= set(comps)
    assert "reuse_path" not in comps
    frames = len(davis_seq)
    per_frame = tracker.flops.cache[("backbone_stride8", (64, 96))]
    assert comps["backbone_stride8"] == per_frame * frames
    # the matching's count holds the matching alone (the backbone, run on first use, is counted apart)
    assert tracker.flops.cache[("template_matching_gate", (64, 96))] < 0.1 * per_frame


def test_soft_aggregation_sums_to_one():
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 20, 30, generator=gen)
    labels, masks = soft_aggregate(probs)
    p = probs.clamp(1e-7, 1 - 1e-7)
    full = torch.cat([(1 - p).min(0, keepdim=True).values, p])
    scores = torch.softmax(full / (1 - full), 0)
    assert torch.equal(masks.sum(0), scores.max(0).values)  # only the winning channel keeps its score
    assert torch.equal(labels, scores.argmax(0))
    one = torch.tensor([[[0.2, 0.5, 0.51, 0.9]]])
    assert soft_aggregate(one)[0].tolist() == [[0, 0, 1, 1]]  # one object: label iff p > 0.5


def test_network_size_round_trip_to_the_original_resolution(networks, davis_seq, monkeypatch):
    """EngineConfig.size (evaluate.py / demo.py --size H W): the networks see H x W frames; the labels come at
    the original size from the object probabilities upsampled bilinearly and merged there."""
    import cv2
    import torch.nn.functional as F

    model, backbone = networks
    tracker = InferenceEngine(model, backbone, EngineConfig(size=(32, 48)))
    seen, init_masks = [], []
    frame_features, init_object = tracker.base.frame_features, tracker.base.init_object
    monkeypatch.setattr(tracker.base, "frame_features", lambda image: seen.append(tuple(image.shape)) or
                        frame_features(image))

    def spy_init(obj_id, index, image, mask, feats):
        init_masks.append(mask)
        return init_object(obj_id, index, image, mask, feats)

    monkeypatch.setattr(tracker.base, "init_object", spy_init)
    outputs = []
    track_sequence(tracker, davis_seq, PolicyConfig("gate", 0.7), on_frame=outputs.append)
    probs = [{k: v.clone() for k, v in out.result.probs.items()} for out in outputs]
    height, width = davis_seq.image_size()
    assert set(seen) == {(1, 3, 32, 48)}
    start = davis_seq.start_mask(davis_seq.object_ids[0]).astype(np.uint8)
    assert np.array_equal(init_masks[0], cv2.resize(start, (48, 32), interpolation=cv2.INTER_NEAREST))
    for out, frame_probs in zip(outputs, probs):
        assert out.labels.shape == (height, width)
        assert all(p.shape == (32, 48) for p in frame_probs.values())
        full = out.probabilities()
        assert sorted(full) == sorted(frame_probs) and all(p.shape == (height, width) for p in full.values())
        ids = sorted(frame_probs)
        up = F.interpolate(torch.stack([frame_probs[i] for i in ids])[:, None], (height, width), mode="bilinear",
                           align_corners=False)[:, 0].clamp(0, 1)
        labels, _ = soft_aggregate(up)
        expected = np.array([0] + ids, dtype=np.uint8)[labels.numpy()]
        np.testing.assert_array_equal(out.labels, expected)
    # the native size is the default path, bit for bit
    _, _, native = run(networks, davis_seq, PolicyConfig("gate", 0.7))
    _, _, same = run(networks, davis_seq, PolicyConfig("gate", 0.7), size=(height, width))
    for a, b in zip(native, same):
        np.testing.assert_array_equal(a.labels, b.labels)
    with pytest.raises(ConfigError, match="--size"):
        EngineConfig(size=(16, 48))


def test_frames_resized_back_merge_at_the_networks_size_only_when_needed(networks, davis_seq, monkeypatch):
    """At a network size other than the frame's, a frame where no object computed skips the merge at the
    networks' size (its labels come from the maps at the frame's size); the merge runs when the result's labels
    or merged maps are asked for, and skipping it changes no output."""
    model, backbone = networks

    def track(force: bool):
        engine = InferenceEngine(model, backbone, EngineConfig(size=(32, 48)))
        if force:
            monkeypatch.setattr(engine.base, "needs_merged", lambda obj, computed: True)
        outputs = []
        track_sequence(engine, davis_seq, PolicyConfig.of("warp-every-k", k=3), on_frame=outputs.append)
        return engine, outputs

    engine, lazy = track(force=False)
    _, forced = track(force=True)
    # the first frame (objects start: nothing computes, G-FRTM's states learn at their initialisation) and warps
    skipped = {out.index for out in lazy if not any(p.computes for p in out.paths.values())}
    assert 0 in skipped and 1 < len(skipped) < len(lazy)  # both kinds of frame
    for out, ref in zip(lazy, forced):
        np.testing.assert_array_equal(out.labels, ref.labels)
        assert not ref.result.merge_pending
        assert out.result.merge_pending == (out.index in skipped)
        labels, merged = engine.base.aggregate(None, out.result.probs)
        torch.testing.assert_close(out.result.labels, labels, rtol=0, atol=0)  # merged on first use
        assert not out.result.merge_pending and sorted(out.result.merged) == sorted(merged)
        for obj_id in merged:
            torch.testing.assert_close(out.result.merged[obj_id], ref.result.merged[obj_id], rtol=0, atol=0)


# --- the session API on plain arrays -----------------------------------------------------------


@pytest.fixture(scope="module")
def clip(davis_seq):
    """(frames as RGB arrays, the first frame's map of object ids) of the 2-object sequence."""
    frames = [davis_seq.image(i) for i in range(len(davis_seq))]
    ids = np.zeros(frames[0].shape[:2], np.uint8)
    for obj_id in davis_seq.object_ids:
        ids[davis_seq.start_mask(obj_id) > 0] = obj_id
    return frames, ids


def _engine(networks):
    return InferenceEngine(*networks, EngineConfig())


def test_a_session_takes_an_id_map_or_masks_by_id_and_arrays_or_tensors(networks, clip, davis_seq):
    frames, ids = clip
    by_map = _engine(networks).new_session(PolicyConfig("gate", 0.5))
    by_dict = _engine(networks).new_session(PolicyConfig("gate", 0.5))
    expected = track_sequence(_engine(networks), davis_seq, PolicyConfig("gate", 0.5))
    first = by_map.step(frames[0], ids)
    assert first.paths == {} and sorted(by_map.objects) == list(davis_seq.object_ids)
    by_dict.step(torch.from_numpy(frames[0]), {i: ids == i for i in davis_seq.object_ids})
    for index, frame in enumerate(frames[1:], start=1):
        a, b = by_map.step(frame), by_dict.step(torch.from_numpy(frame))
        assert a.index == index and set(a.paths) == set(davis_seq.object_ids)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.p_reuse == b.p_reuse
    assert by_map.stats.objects.keys() == expected.objects.keys()
    for obj_id, history in expected.objects.items():  # a dataset-free session decides as track_sequence does
        assert by_map.stats.objects[obj_id].paths == history.paths


def test_frames_without_objects_give_empty_labels_and_objects_join_later(networks, clip):
    frames, ids = clip
    session = _engine(networks).new_session(PolicyConfig("gate", 1.0))
    empty = session.step(frames[0])
    assert not empty.labels.any() and empty.paths == {} and empty.result is None
    session.step(frames[1], {1: ids == 1})
    out = session.step(frames[2], {2: ids == 2})
    assert set(out.paths) == {1} and (out.labels == 2).any()  # object 2 starts here: its mask, no path yet
    out = session.step(frames[3])
    assert set(out.paths) == {1, 2}
    session.remove_object(1)
    out = session.step(frames[4])
    assert set(out.paths) == {2} and not (out.labels == 1).any()
    assert session.stats.objects[1].start_index == 1 and max(session.stats.objects[1].paths) == 3


@pytest.mark.parametrize("image, masks, message", [
    (np.zeros((64, 96), np.uint8), None, "must be an .H, W, 3. uint8 RGB array"),
    (np.zeros((64, 96, 3), np.float32), None, "must be an .H, W, 3. uint8 RGB array"),
    (None, {1: np.ones((32, 96), bool)}, "mask of object 1 has shape"),
    (None, {1: np.zeros((64, 96), bool)}, "mask of object 1 is empty"),
    (None, {300: np.ones((64, 96), bool)}, "object ids are 1..255"),
    (None, np.zeros((64, 96), np.uint8), "has no object"),
])
def test_bad_session_input_is_a_config_error(networks, clip, image, masks, message):
    frames, _ = clip
    session = _engine(networks).new_session()
    with pytest.raises(ConfigError, match=message):
        session.step(frames[0] if image is None else image, masks)


def test_an_object_id_cannot_start_twice(networks, clip):
    frames, ids = clip
    session = _engine(networks).new_session()
    session.step(frames[0], {1: ids == 1})
    with pytest.raises(ConfigError, match="object 1 is already tracked"):
        session.step(frames[1], {1: ids == 1})
    with pytest.raises(ConfigError, match="object 7 is not in the session"):
        session.remove_object(7)


def test_clones_are_independent_and_may_take_another_policy(networks, clip):
    frames, ids = clip
    session = _engine(networks).new_session(PolicyConfig("gate", 1.0))
    session.step(frames[0], ids)
    twin, reusing = session.clone(), session.clone(PolicyConfig("gate", -1.0))
    applied = session.objects[1].target.frame_count
    a = session.step(frames[1])
    assert session.objects[1].target.frame_count == applied + 1  # the computed frame applied the target model
    assert twin.objects[1].target.frame_count == applied and twin.index == 1  # the clone did not move
    b = twin.step(frames[1])
    np.testing.assert_array_equal(a.labels, b.labels)
    assert all(p is COMPUTE for p in a.paths.values())
    assert all(p is TRANSLATE for p in reusing.step(frames[1]).paths.values())
    assert reusing.policy_config.tau == -1.0 and session.policy_config.tau == 1.0


def test_compile_config_is_checked():
    assert EngineConfig(compile=("refiner", "backbone", "refiner")).compile == ("refiner", "backbone")
    with pytest.raises(ConfigError, match="--compile takes backbone, refiner; got gpu"):
        EngineConfig(compile=("gpu",))


@pytest.mark.slow
def test_compiled_engine_equals_eager_and_times_first_calls(networks, davis_seq, tmp_path, monkeypatch):
    """torch.compile of the backbone and the refiner: the same masks as eager (logits up to rounding), the first
    call per shape timed into compile_seconds, and no recompilation for a second video of the same size.

    The decisions are forced (every-2: compute, translate, compute, ...), so both paths run compiled and the two
    runs take the same paths: a random gate sits at P_gate 0.5 +- 0.02, where the compiled and eager gate logits,
    equal only up to rounding, could decide differently.

    Inductor's on-disk cache is the test's own: kernels cached by a run at the machine's ISA were found reused
    under ATEN_CPU_CAPABILITY=avx2 on an AVX-512 CPU (make test-kernels), and gave NaN logits."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model, backbone = networks
    policy = PolicyConfig.of("every-k", k=2)
    eager_engine, _, eager = run(networks, davis_seq, policy)
    engine = InferenceEngine(model, backbone, EngineConfig(compile=("backbone", "refiner")))
    compiled = []
    track_sequence(engine, davis_seq, policy, on_frame=compiled.append)
    assert engine.compile_seconds > 0 and eager_engine.compile_seconds == 0
    for a, b in zip(eager, compiled):
        assert a.paths == b.paths
        for obj_id, logits in a.result.logits.items():
            # Not derived: inductor fuses the elementwise ops around oneDNN's convolutions, reassociates reductions
            # (pooling, softmax) and uses its own vectorised exp/sigmoid, a few ulps per op over ~70 layers with no
            # closed-form bound; 1e-4 is about 100x the spread measured here (compiled vs eager logits).
            torch.testing.assert_close(b.result.logits[obj_id], logits, rtol=1e-4, atol=1e-4)
    assert {p for out in compiled for p in out.paths.values()} == {COMPUTE, TRANSLATE}
    first = engine.compile_seconds
    track_sequence(engine, davis_seq, policy)
    assert engine.compile_seconds == first


def test_online_target_update_stores_each_objects_merged_soft_mask(networks, tmp_path, monkeypatch):
    """The engine's online target-model update, two objects: after every computed frame each object's memory gets
    the frame's projected features with that object's merged soft mask (soft aggregation over both objects, not
    its own probability) at the networks' image size, and CG runs exactly on the frames whose count is a multiple
    of ``train_skipping``."""
    from models.target_model import MIN_OBJECT_PIXELS, OnlineTargetModel, TargetModelConfig

    seq = davis_video(tmp_path, frames=7)
    ids = seq.object_ids[:2]
    stored, solved = [], []
    update, run_stage = OnlineTargetModel.update, OnlineTargetModel._run

    def spy_update(self, soft_mask):
        size = self.memory.current_size
        kept = update(self, soft_mask)
        stored.append((self, soft_mask.clone(), self.frame_count, kept, size))
        return kept

    def spy_run(self, stage, solver, cg_iters):
        solved.append((self, stage, self.frame_count))
        return run_stage(self, stage, solver, cg_iters)

    def annotation_logits(self, ctx, obj, x16, score, reduced):  # confident masks, so that the memory takes them
        gt = torch.from_numpy(seq.annotation(seq.frames[ctx.index]) == obj.obj_id).float()
        return (6 * gt - 3)[None, None].to(x16.dtype)

    monkeypatch.setattr(OnlineTargetModel, "update", spy_update)
    monkeypatch.setattr(OnlineTargetModel, "_run", spy_run)
    monkeypatch.setattr(GFRTMBase, "run_shallow", annotation_logits)
    model, backbone = networks
    target = dataclasses.replace(TargetModelConfig.eval_fast(), train_skipping=2)
    engine = InferenceEngine(model, backbone, EngineConfig(target=target))
    session = engine.new_session(PolicyConfig("gate", 1.0))
    session.step(seq.image(0), {i: seq.start_mask(i) for i in ids})
    targets = {session.objects[i].target: i for i in ids}
    assert [stage for _, stage, _ in solved] == ["stage1", "stage2"] * 2  # the first frame initialises both
    solved.clear()
    for index in range(1, len(seq)):
        before = len(stored)
        out = session.step(seq.image(index))
        merged = out.result.merged
        frame_stores = stored[before:]
        assert sorted(targets[t] for t, *_ in frame_stores) == sorted(ids)  # one update per object and frame
        own = {i: out.result.probs[i] for i in ids}
        for t, mask, count, kept, size in frame_stores:
            obj_id = targets[t]
            assert mask.shape == (1, 1, *seq.image(index).shape[:2]) == (1, 1, *merged[obj_id].shape)
            assert torch.equal(mask[0, 0], merged[obj_id])  # the merged soft mask, bit for bit
            assert not torch.equal(mask[0, 0], own[obj_id])  # which soft aggregation changes
            assert count == index + 1  # the learner counts the first frame as 1, then one per applied frame
            assert kept == (int((mask > 0.5).sum()) >= MIN_OBJECT_PIXELS)  # too small a mask is not stored
            if kept:
                memory = t.memory
                assert torch.equal(memory.labels[memory._previous_slot], mask) and memory.current_size == size + 1
    assert all(kept for *_, kept, _ in stored)
    expected = [(targets[t], count) for t, _, count, kept, _ in stored if kept and count % 2 == 0]
    assert expected
    assert sorted((targets[t], count) for t, stage, count in solved if stage == "update") == sorted(expected)
    assert all(stage == "update" for _, stage, _ in solved)
