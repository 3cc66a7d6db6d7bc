"""Sparse refinement: everything active equals the dense refiner, nothing active is the previous output, the
inactive tiles keep the previous maps, the change map, and FLOPs per tile."""

from __future__ import annotations

import copy

import pytest
import torch

from base.errors import ConfigError
from lib.engine.sparse import STATE_KEYS, change_tiles, check_size, shallow_dense, shallow_sparse, tile_grid
from lib.tools.flops import measure
from models.gfrtm import GFRTM

H, W, TILE = 64, 96, 16  # a 4 x 6 grid of tiles


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = GFRTM("resnet18").eval()
    with torch.no_grad():  # random logits are nearly flat (~ -0.04); spread them so that differences show
        model.refiner.project.conv2.weight.mul_(100)
    return model


def double_features(random_features):
    return lambda **kwargs: {k: v.double() for k, v in random_features(**kwargs).items()}


def frame_inputs(model, random_features, seed, dtype=torch.float32):
    feats = random_features(height=H, width=W, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    score = torch.randn(1, 1, *feats["layer4"].shape[-2:], generator=gen).to(dtype)
    x16 = model.deep(score, feats["layer5"], feats["layer4"])
    return x16, score, feats["layer3"], feats["layer2"], (H, W), model.reduce_shallow(feats["layer3"], feats["layer2"])


def test_dense_with_state_is_the_shallow_refiner_bit_for_bit(model, random_features):
    with torch.inference_mode():
        x16, score, l3, l2, size, reduced = frame_inputs(model, random_features, 1)
        logits, state = shallow_dense(model, x16, score, l3, l2, size, reduced)
        assert torch.equal(logits, model.shallow(x16, score, l3, l2, size))
        assert set(state) == set(STATE_KEYS) and torch.equal(state["logits"], logits)


def test_all_tiles_active_equals_the_dense_refiner(model, random_features):
    """Whatever the previous maps were: every tile recomputed gives the dense result (up to rounding), so the
    halos cover the receptive fields and the border windows reproduce the layers' own padding. In float64: the
    windows are convolved in other blocks than the whole map, so they agree to float64 rounding, far below a
    missing halo pixel or a wrong border."""
    net = copy.deepcopy(model).double()

    def inputs(seed):
        x16, score, l3, l2, size, reduced = frame_inputs(net, double_features(random_features), seed, torch.float64)
        return x16, score, l3, l2, size, reduced

    with torch.inference_mode():
        _, previous = shallow_dense(net, *inputs(1))
        x16, score, l3, l2, size, reduced = inputs(2)
        dense, dense_state = shallow_dense(net, x16, score, l3, l2, size, reduced)
        for tile in (TILE, 32):
            active = torch.ones(tile_grid(size, tile), dtype=torch.bool)
            sparse, state = shallow_sparse(net, x16, score, l3, l2, size, reduced, previous, active, tile)
            for key in STATE_KEYS:
                torch.testing.assert_close(state[key], dense_state[key], rtol=1e-12, atol=1e-12)
            for key in STATE_KEYS:  # the previous frame was another
                assert (previous[key] - dense_state[key]).abs().max() > 1e-3 * (1 + dense_state[key].abs().max())


def test_no_tile_active_is_the_previous_output_and_inactive_tiles_keep_it(model, random_features):
    with torch.inference_mode():
        _, previous = shallow_dense(model, *frame_inputs(model, random_features, 1))
        inputs = frame_inputs(model, random_features, 2)
        none = torch.zeros(tile_grid((H, W), TILE), dtype=torch.bool)
        logits, state = shallow_sparse(model, *inputs, previous, none, TILE)
        assert torch.equal(logits, previous["logits"])
        assert all(torch.equal(state[k], previous[k]) for k in STATE_KEYS if k.endswith(".out") or k == "logits")
        some = none.clone()
        some[1, 2] = some[3, 5] = True
        logits, _ = shallow_sparse(model, *inputs, previous, some, TILE)
        changed = (logits != previous["logits"])[0, 0]
        tiles = changed.reshape(H // TILE, TILE, W // TILE, TILE).any(dim=(1, 3))
        assert torch.equal(tiles, some)  # exactly the active tiles changed


def test_change_map_marks_changed_tiles_and_the_mask_boundary():
    gen = torch.Generator().manual_seed(0)
    previous = torch.randint(0, 256, (1, 3, H, W), dtype=torch.uint8, generator=gen)
    image = previous.clone()
    image[..., 20:28, 40:44] = 255 - image[..., 20:28, 40:44]  # inside tile (1, 2)
    prob = torch.zeros(H, W)
    active = change_tiles(image, previous, prob, TILE, 0.05)
    assert active.shape == (4, 6) and active.nonzero().tolist() == [[1, 2]]
    assert not change_tiles(image, previous, prob, TILE, 0.2).any()  # 32 of 256 pixels changed: below 0.2
    prob[40:64, 0:20] = 1.0  # a mask whose boundary passes tiles (2, 0), (2, 1), (3, 1); (3, 0) is all inside
    boundary = change_tiles(previous, previous, prob, TILE, 0.05)
    assert sorted(map(tuple, boundary.nonzero().tolist())) == [(2, 0), (2, 1), (3, 1)]


def test_flops_grow_by_one_tile_per_active_tile(model, random_features):
    """What the meter counts is what runs: each further interior tile adds the same FLOPs, and all tiles cost
    more than the dense refiner only by their halos."""
    with torch.inference_mode():
        _, previous = shallow_dense(model, *frame_inputs(model, random_features, 1))
        inputs = frame_inputs(model, random_features, 2)
        grid = tile_grid((H, W), TILE)
        counts = []
        for n in range(4):
            active = torch.zeros(grid, dtype=torch.bool)
            active[1, 1:1 + n] = True
            counts.append(measure(shallow_sparse, model, *inputs, previous, active, TILE))
        per_tile = counts[2] - counts[1]
        assert per_tile > 0 and counts[3] - counts[2] == per_tile and counts[1] - counts[0] == per_tile
        dense = measure(shallow_dense, model, *inputs)
        assert counts[0] < 0.05 * dense  # nothing active: the channel attention alone


def test_sizes_are_checked():
    check_size((240, 432), 64)
    with pytest.raises(ConfigError, match="multiple of 8, got 480x854"):
        check_size((480, 854), 64)
    with pytest.raises(ConfigError, match="--sparse-tile must be a positive multiple of 8"):
        check_size((240, 432), 12)
