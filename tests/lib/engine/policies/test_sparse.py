"""sparse-gate: decisions, labels, validation, and in a session: the compute path unchanged, the sparse path's
FLOPs counted per active tile, one-line errors for sizes it cannot tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from base.errors import CheckpointError, ConfigError
from lib.engine.core import EngineConfig, InferenceEngine
from lib.engine.paths import COMPUTE as C
from lib.engine.paths import path_by_code
from lib.engine.policies import ObjectFrame, PolicyConfig, policy_of_label
from lib.engine.policies.sparse import REFERENCE, paste_tiles
from lib.engine.policies.sparse import SPARSE as S
from lib.evaluation.run import sequence_record, speed_and_reuse
from lib.tools.checkpoint import save_tile_gate
from models.tile_gate import TileGate
from tests.lib.engine.sessions import davis_video, run_policy, seeded_networks


def test_decisions_labels_and_validation(decide):
    config = PolicyConfig("sparse-gate", 0.7)
    assert decide(config, 0.71) is S and decide(config, 0.7) is C  # strict, as the gate
    assert config.label() == "sparse-gate-0.02" and config.params["tile"] == 64
    assert PolicyConfig.of("sparse-gate", 0.7, threshold=0.1, tile=32).label() == "sparse-gate-0.1-t32"
    for label in ("sparse-gate-0.02", "sparse-gate-0.1-t32", "sparse-gate-1e-05"):
        assert policy_of_label(label).name == "sparse-gate"
    assert path_by_code("S") is S and S.reuses
    cls = config.policy_class
    assert cls.needs_gate and cls.keeps_shallow_state
    with pytest.raises(ConfigError, match="--sparse-threshold >= 0"):
        PolicyConfig.of("sparse-gate", 0.7, threshold=-0.1)
    with pytest.raises(ConfigError, match="--sparse-tile must be a positive multiple of 8"):
        PolicyConfig.of("sparse-gate", 0.7, tile=20)
    assert config.create().decide(ObjectFrame(1, 1, 1, p_gate=1.0)) is S


@pytest.fixture(scope="module")
def davis_seq(tmp_path_factory):
    return davis_video(tmp_path_factory.mktemp("davis"))


@pytest.fixture(scope="module")
def networks():
    return seeded_networks()


run = run_policy


def test_tau_one_computes_like_the_gate(networks, davis_seq):
    _, _, sparse = run(networks, davis_seq, PolicyConfig("sparse-gate", 1.0))
    _, _, gate = run(networks, davis_seq, PolicyConfig("gate", 1.0))
    for a, b in zip(sparse, gate):
        np.testing.assert_array_equal(a.labels, b.labels)
        for obj_id, logits in b.result.logits.items() if b.result else ():
            assert torch.equal(a.result.logits[obj_id], logits)  # the state-keeping shallow run is the same


def test_sparse_frames_count_their_active_tiles(networks, davis_seq):
    engine, stats, out = run(networks, davis_seq, PolicyConfig.of("sparse-gate", -1.0, threshold=0.0, tile=16))
    assert {p for o in out[1:] for p in o.paths.values()} == {S}
    assert stats.reused_object_frames == stats.tracked_object_frames
    keys = [k for k in engine.flops.cache if k[0] == "sparse_path"]
    assert keys and all(k[1] == (64, 96) and k[4] == 16 for k in keys)
    # the object's first tracked frame follows its first frame, which ran no shallow stages: dense; and with
    # threshold 0 every tile of a (noisy) synthetic frame changes: above a third of the tiles, dense too
    assert {k[2] for k in keys} == {False}
    few, _, _ = run(networks, davis_seq, PolicyConfig.of("sparse-gate", -1.0, threshold=1.0, tile=16))
    tiled = [k for k in few.flops.cache if k[0] == "sparse_path" and k[2]]
    assert tiled and all(k[3] <= 24 / 3 for k in tiled)  # only mask-boundary tiles (if any), at most a third
    assert few.flops.by_component["sparse_path"] < engine.flops.by_component["sparse_path"]


def test_a_size_it_cannot_tile_is_a_one_line_error(networks, davis_seq):
    with pytest.raises(ConfigError, match="the sparse path needs a network size that is a multiple of 8"):
        run(networks, davis_seq, PolicyConfig("sparse-gate", -1.0), size=(60, 90))


def test_sparse_frames_record_their_active_tile_fraction(networks, davis_seq):
    _, stats, out = run(networks, davis_seq, PolicyConfig.of("sparse-gate", -1.0, threshold=1.0, tile=16))
    for obj in stats.objects.values():
        fractions = obj.measures["active_tiles"]
        assert set(fractions) == set(obj.paths)  # every tracked frame took the sparse path
        assert fractions[min(fractions)] == 1.0  # the first one runs dense: all tiles
        assert all(0 <= f <= 1 for f in fractions.values())
    record = sequence_record(stats)
    means = speed_and_reuse([record])
    values = [v for o in record["objects"].values() for v in o["measures"]["active_tiles"].values()]
    assert means["active_tiles_mean"] == pytest.approx(np.mean(values)) and means["active_tiles_mean"] < 1


def constant_gate(path, logit: float, tile: int = 16) -> str:
    """A tile-gate file whose every decision is ``logit`` (> 0: compute every tile; < 0: none)."""
    gate = TileGate(tile=tile)
    with torch.no_grad():
        for p in gate.parameters():
            p.zero_()
        gate.net[-1].bias.fill_(logit)
    save_tile_gate(path, gate)
    return str(path)


def test_learned_selection_labels_and_files(tmp_path):
    path = constant_gate(tmp_path / "g.pth", 1.0)
    config = PolicyConfig.of("sparse-gate", 0.7, select="learned", tile_gate=path, tile=16)
    assert config.label() == "sparse-gate-learned-t16" and policy_of_label("sparse-gate-learned").name == "sparse-gate"
    with pytest.raises(ConfigError, match="trained for 16-pixel tiles; pass --sparse-tile 16"):
        PolicyConfig.of("sparse-gate", 0.7, select="learned", tile_gate=path, tile=32)
    with pytest.raises(CheckpointError, match="tile-gate weights not found"):
        PolicyConfig.of("sparse-gate", 0.7, select="learned", tile_gate=str(tmp_path / "none.pth"), tile=16)
    with pytest.raises(ConfigError, match="--sparse-select must be one of change, learned"):
        PolicyConfig.of("sparse-gate", 0.7, select="random")


def test_a_gate_that_computes_nothing_keeps_the_previous_output(networks, davis_seq, tmp_path):
    engine, stats, out = run(networks, davis_seq, PolicyConfig.of(
        "sparse-gate", -1.0, select="learned", tile_gate=constant_gate(tmp_path / "g.pth", -1.0), tile=16))
    assert {p for o in out[1:] for p in o.paths.values()} == {S}
    for obj in stats.objects.values():
        fractions = [obj.measures["active_tiles"][i] for i in sorted(obj.paths)]
        assert fractions[0] == 1.0 and set(fractions[1:]) == {0.0}  # the first runs dense (no previous maps)
    for prev, cur in zip(out[1:], out[2:]):
        for obj_id, logits in cur.result.logits.items():
            assert torch.equal(logits, prev.result.logits[obj_id])
    assert engine.flops.by_component["tile_gate"] > 0
    _, _, every = run(networks, davis_seq, PolicyConfig.of(
        "sparse-gate", -1.0, select="learned", tile_gate=constant_gate(tmp_path / "a.pth", 1.0), tile=16))
    _, _, dense = run(networks, davis_seq, PolicyConfig.of("sparse-gate", -1.0, threshold=0.0, tile=16))
    for a, b in zip(every, dense):  # every tile computed: the dense shallow stages, as the change rule at 0 here
        np.testing.assert_array_equal(a.labels, b.labels)


def test_paste_tiles_takes_the_active_tiles_from_the_image():
    reference = torch.zeros(1, 3, 40, 56, dtype=torch.uint8)
    image = torch.full_like(reference, 7)
    active = torch.zeros(3, 4, dtype=torch.bool)  # 16-px tiles; the last row and column are partial (8 px)
    active[0, 0] = active[2, 3] = True
    out = paste_tiles(reference, image, active, 16)
    assert (out[..., :16, :16] == 7).all() and (out[..., 32:, 48:] == 7).all()
    assert int((out == 7).sum()) == 3 * (16 * 16 + 8 * 8)


def test_reused_tiles_remember_the_image_their_maps_came_from(networks, davis_seq, tmp_path):
    """With the learned gate computing nothing, every tile keeps the maps of the object's first tracked frame
    (run dense): its change is then measured against that frame, not the previous one."""
    model, backbone = networks
    engine = InferenceEngine(model, backbone, EngineConfig())
    session = engine.new_session(PolicyConfig.of("sparse-gate", -1.0, select="learned", tile=16,
                                                 tile_gate=constant_gate(tmp_path / "g.pth", -1.0)))
    first = {}
    for index in range(4):
        new = {o: davis_seq.start_mask(o) for o in davis_seq.objects_starting_at(index)}
        session.step(davis_seq.image(index), new or None)
        for obj_id, obj in session.objects.items():
            if obj.shallow_state is not None:
                first.setdefault(obj_id, obj.shallow_image)
    for obj_id, obj in session.objects.items():
        assert obj.shallow_image is not first[obj_id]  # the sparse frames moved on ...
        assert torch.equal(obj.shallow_state[REFERENCE], first[obj_id])  # ... but no tile was recomputed
