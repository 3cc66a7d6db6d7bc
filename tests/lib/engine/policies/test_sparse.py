"""sparse-gate: decisions, labels, validation, and in a session: the compute path unchanged, the sparse path's
FLOPs counted per active tile, one-line errors for sizes it cannot tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from base.errors import ConfigError
from lib.engine.paths import COMPUTE as C
from lib.engine.paths import path_by_code
from lib.engine.policies import ObjectFrame, PolicyConfig, policy_of_label
from lib.engine.policies.sparse import SPARSE as S
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
