"""Target model: presets, network, pixel weights, sample memory, least-squares problem, online learner."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from base.errors import ConfigError
from models.target_model import (
    OnlineTargetModel,
    SampleMemory,
    TargetModel,
    TargetModelConfig,
    TargetModelProblem,
    apply_stencil,
    gram_stencil,
    hinge_pixel_weights,
    pixel_weight_map,
    upsample_bilinear,
)
from tests.numerics import U32, bilinear_weight_bound, check, gamma


def small_config(**changes) -> TargetModelConfig:
    """The evaluation preset with a narrow projection, for toy data."""
    return replace(TargetModelConfig.eval_fast(), c_channels=8, **changes)


def test_presets():
    train, fast, full = TargetModelConfig.train(), TargetModelConfig.eval_fast(), TargetModelConfig.eval_full()
    assert (train.c_channels, train.memory_size, train.num_aug) == (32, 20, 15)
    assert train.init_iters == (5, 10, 10, 10, 10) and train.update_iters == (10,)
    assert train.filter_reg == train.precond == (1e-5, 1e-4)
    assert train.pixel_weighting is None and train.cg_forgetting_rate == 75
    assert train.direction_forget_factor == pytest.approx(3.7e-4, rel=0.01)
    assert (fast.c_channels, fast.memory_size, fast.num_aug, fast.train_skipping) == (96, 80, 5, 8)
    assert fast.init_iters == (5, 10, 10, 10) and fast.update_iters == (5,)
    assert fast.filter_reg == fast.precond == (1e-4, 1e-2)
    assert (fast.pixel_weighting, fast.hinge_threshold, fast.memory_lr) == ("hinge", 0.1, 0.1)
    assert fast.direction_forget_factor == pytest.approx(4.807e-35, rel=1e-3)
    assert full.init_iters == (5, 10, 10, 10, 10) and full.update_iters == (10,)
    assert replace(full, init_iters=fast.init_iters, update_iters=fast.update_iters) == fast


@pytest.mark.parametrize(
    "changes", [{"pixel_weighting": "linear"}, {"update_iters": ()}, {"memory_size": 3}, {"memory_lr": 0.0}]
)
def test_invalid_config_is_a_config_error(changes):
    with pytest.raises(ConfigError):
        replace(TargetModelConfig.eval_fast(), **changes)


def test_target_model_shapes_and_state_dict_keys():
    model = TargetModel(16, 8)
    assert set(model.state_dict()) == {"project.weight", "filter.weight"}
    assert model.project.weight.shape == (8, 16, 1, 1) and model.filter.weight.shape == (1, 8, 3, 3)
    assert model(torch.randn(2, 16, 5, 7)).shape == (2, 1, 5, 7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "sizes", [((15, 27), (240, 432)), ((30, 54), (480, 854)), ((7, 5), (20, 33)), ((20, 33), (7, 5))]
)
def test_upsample_bilinear_equals_interpolate(dtype, sizes):
    (h, w), size = sizes
    x = torch.randn(3, 2, h, w, generator=torch.Generator().manual_seed(0), dtype=dtype)
    ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    out = upsample_bilinear(x, size)
    assert out.shape == ref.shape and out.dtype == dtype
    # float32: F.interpolate forms its weights from float32 source coordinates, the matrix form from exact ones
    # (bound derived in tests/numerics.bilinear_weight_bound; the former 2e-6 was reached to 0.87 with oneDNN
    # off at 480x854). float64: the same derivation with u = 1.1e-16 gives < 1e-13.
    tol = bilinear_weight_bound((h, w)) if dtype == torch.float32 else 1e-13
    check(f"upsample_bilinear vs F.interpolate {sizes} {str(dtype)[6:]} (max abs diff / max|x|)",
          ((out - ref).abs().max() / x.abs().max()).item(), tol)


def test_hinge_pixel_weights():
    labels = torch.zeros(4, 1, 20, 50)
    labels[0, :, :5, :10] = 1  # af = 0.05 < 0.1: rebalanced
    labels[1, :, :10, :] = 0.8  # af = 0.5: all ones (soft labels are binarised at 0.5)
    labels[2, :, :3, :3] = 1  # 9 pixels: too small, treated as af = tf
    labels[3, :, :10, :] = 0.4  # nothing above 0.5: all ones
    values = hinge_pixel_weights(labels, 0.1)
    af = 50 / 1000
    expected = torch.tensor([[(0.1 / af) ** 0.5, (0.9 / (1 - af)) ** 0.5], [1, 1], [1, 1], [1, 1]])
    # float32: af (1 rounding), the ratio (1), the square root (1); the float64 expectation rounded once
    assert torch.allclose(values, expected, rtol=4 * U32, atol=0)
    weight_map = pixel_weight_map(labels, values)
    assert weight_map.shape == labels.shape
    assert weight_map[0, 0, 0, 0] == values[0, 0] and weight_map[0, 0, -1, -1] == values[0, 1]


def test_memory_initial_weights_and_replacement_rule():
    memory = SampleMemory(capacity=4, learning_rate=0.1)
    memory.initialize(torch.tensor([[-1.0], [-2.0]]), torch.zeros(2, 1), torch.ones(2, 2))
    # float32 weights: each takes <= 8 roundings along the rule (set, divisions, the sums of <= 4 terms, the
    # renormalisation); the expectations, formed in float32 too, <= 6: rtol gamma(16)
    assert torch.allclose(memory.weights, torch.tensor([2 / 3, 1 / 3, 0, 0]), rtol=gamma(16), atol=0)
    assert memory.current_size == 2

    assert memory.insert(torch.tensor([[1.0]]), torch.zeros(1, 1), torch.ones(1, 2)) == 2
    first = torch.tensor([2 / 3 / 0.9, 1 / 3 / 0.9, 0.1, 0])
    assert torch.allclose(memory.weights, first / first.sum(), rtol=gamma(16), atol=0)

    previous = memory.weights.clone()
    assert memory.insert(torch.tensor([[2.0]]), torch.zeros(1, 1), torch.ones(1, 2)) == 3
    second = previous.clone()
    second[3] = previous[2] / 0.9
    assert torch.allclose(memory.weights, second / second.sum(), rtol=gamma(16), atol=0)

    # full: overwrite the argmin (slot 2, the oldest insertion)
    assert memory.insert(torch.tensor([[3.0]]), torch.zeros(1, 1), torch.ones(1, 2)) == 2
    samples, _, _, weights = memory.active()
    assert samples[:, 0].tolist() == [-1.0, -2.0, 3.0, 2.0]
    assert memory.current_size == 4 and weights.sum().item() == pytest.approx(1.0)


def test_memory_empty_or_lr_one_gives_one_hot_weights():
    empty = SampleMemory(capacity=3, learning_rate=0.1)
    assert empty.insert(torch.tensor([[5.0]]), torch.zeros(1, 1), torch.ones(1, 2)) == 0
    assert empty.weights.tolist() == [1.0, 0.0, 0.0]

    lr_one = SampleMemory(capacity=3, learning_rate=1.0)
    lr_one.initialize(torch.tensor([[-1.0], [-2.0]]), torch.zeros(2, 1), torch.ones(2, 2))
    assert lr_one.insert(torch.tensor([[7.0]]), torch.zeros(1, 1), torch.ones(1, 2)) == 0
    assert lr_one.weights.tolist() == [1.0, 0.0, 0.0]
    samples, _, _, _ = lr_one.active()
    assert samples[:, 0].tolist() == [7.0]  # slots with weight 0 are not used


def random_memory(gen, feature_size, label_size, fg_above):
    """A float64 memory (capacity 4) of 3 random 6-channel samples: (memory, x, labels, pixel-weight values)."""
    x = torch.randn(3, 6, *feature_size, generator=gen, dtype=torch.float64)
    labels = (torch.rand(3, 1, *label_size, generator=gen, dtype=torch.float64) > fg_above).double()
    values = torch.rand(3, 2, generator=gen, dtype=torch.float64) + 0.5
    memory = SampleMemory(4, 0.1, dtype=torch.float64)
    memory.initialize(x, labels, values)
    return memory, x, labels, values


def test_problem_residuals_follow_the_definition():
    gen = torch.Generator().manual_seed(0)
    memory, x, labels, values = random_memory(gen, (4, 5), (16, 20), 0.7)
    project = torch.randn(2, 6, 1, 1, generator=gen, dtype=torch.float64)
    filt = torch.randn(1, 2, 3, 3, generator=gen, dtype=torch.float64)

    data, reg_p, reg_f = TargetModelProblem(memory, (0.1, 0.2))([project, filt])
    score = F.conv2d(F.conv2d(x, project), filt, padding=1)
    up = F.interpolate(score, size=(16, 20), mode="bilinear", align_corners=False)
    weights = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64).sqrt().view(3, 1, 1, 1)
    pw = torch.where(labels > 0.5, values[:, 0].view(3, 1, 1, 1), values[:, 1].view(3, 1, 1, 1))
    assert torch.allclose(data, pw * weights * (up - labels), rtol=1e-12, atol=1e-12)  # float64
    assert torch.equal(reg_p, 0.1 * project) and torch.equal(reg_f, 0.2 * filt)

    filt6 = torch.randn(1, 6, 3, 3, generator=gen, dtype=torch.float64)
    filter_only, _ = TargetModelProblem(memory, (0.2,))([filt6])
    expected = F.interpolate(F.conv2d(x, filt6, padding=1), size=(16, 20), mode="bilinear", align_corners=False)
    assert torch.allclose(filter_only, pw * weights * (expected - labels), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sizes", [((4, 5), (16, 20)), ((7, 9), (30, 37)), ((5, 5), (5, 5))])
def test_gram_stencil_is_the_upsampling_gram_operator(sizes):
    """``apply_stencil(gram_stencil(W), s) == U^T (W * (U s))`` for bilinear U, also for non-integer scales."""
    (h, w), (big_h, big_w) = sizes
    gen = torch.Generator().manual_seed(1)
    weights_sq = torch.rand(2, 1, big_h, big_w, generator=gen, dtype=torch.float64)
    s = torch.randn(2, 1, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    up = upsample_bilinear(s, (big_h, big_w))
    (expected,) = torch.autograd.grad(up, s, weights_sq * up.detach())
    got = apply_stencil(gram_stencil(weights_sq, (h, w)), s.detach())
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("joint", [True, False])
def test_problem_normal_operator_equals_the_double_backward(joint):
    """The problem's own J^T J (stencil at the feature resolution) is the Gauss-Newton matrix the solver's
    double backward computes, and a solver run with it takes the same steps."""
    from models.gauss_newton import GaussNewtonCG

    gen = torch.Generator().manual_seed(2)
    memory, _, _, _ = random_memory(gen, (5, 7), (18, 26), 0.6)
    if joint:
        params = [torch.randn(2, 6, 1, 1, generator=gen, dtype=torch.float64),
                  torch.randn(1, 2, 3, 3, generator=gen, dtype=torch.float64)]
        regs = (0.1, 0.2)
    else:
        params, regs = [torch.randn(1, 6, 3, 3, generator=gen, dtype=torch.float64)], (0.2,)
    problem = TargetModelProblem(memory, regs)
    v = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    x_req = [p.clone().requires_grad_(True) for p in params]
    residuals = problem(x_req)
    jv = torch.autograd.functional.jvp(lambda *ps: tuple(problem(list(ps))), tuple(params), tuple(v))[1]
    expected = torch.autograd.grad(residuals, x_req, jv)
    got = problem.normal_operator(params)(v)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)

    class DoubleBackward:  # the same residuals without the problem's operator
        def __call__(self, ps):
            return problem(ps)

    steps = []
    for fn in (problem, DoubleBackward()):
        ps = [p.clone() for p in params]
        GaussNewtonCG(ps, fn, [1.0] * len(ps), 0.5).run((3, 2))
        steps.append(ps)
    for a, b in zip(*steps):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def blob_scene(seed: int, height: int = 12, width: int = 16, channels: int = 6, up: int = 4):
    """Features (1, C, h, w) whose pixels are class means + noise, labels (1, 1, up*h, up*w) and the
    label at feature resolution (1, 1, h, w). The object is a random rectangle."""
    gen = torch.Generator().manual_seed(seed)
    top, left = (int(v) for v in torch.randint(1, 5, (2,), generator=gen))
    small = torch.zeros(1, 1, height, width)
    small[..., top : top + 5, left : left + 7] = 1
    means = torch.randn(2, channels, generator=torch.Generator().manual_seed(123))
    x = means[small.long()[0, 0]].permute(2, 0, 1)[None] + 0.1 * torch.randn(1, channels, height, width, generator=gen)
    labels = F.interpolate(small, scale_factor=up, mode="nearest")
    return x, labels, small


def test_online_model_fits_a_separable_toy_and_classifies_every_pixel():
    scenes = [blob_scene(seed) for seed in range(5)]
    x = torch.cat([s[0] for s in scenes])
    y = torch.cat([s[1] for s in scenes]).to(torch.uint8)
    torch.manual_seed(0)
    online = OnlineTargetModel(TargetModel(6, 8), small_config())
    online.init(x, y)
    for seed in (10, 11):  # unseen frames
        x_new, _, small = blob_scene(seed)
        score = online.apply(x_new)
        assert torch.equal(score > 0.5, small > 0.5)


def trained_online(dtype=torch.float32, **changes) -> OnlineTargetModel:
    scenes = [blob_scene(seed) for seed in range(5)]
    x = torch.cat([s[0] for s in scenes]).to(dtype)
    y = torch.cat([s[1] for s in scenes])
    torch.manual_seed(0)
    online = OnlineTargetModel(TargetModel(6, 8), small_config(**changes), record_runs=True)
    online.init(x, y)
    return online


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_init_runs_two_stages_in_the_features_dtype(dtype):
    online = trained_online(dtype)
    assert [name for name, _ in online.records] == ["stage1", "stage2"]
    stage1, stage2 = online.records[0][1], online.records[1][1]
    assert len(stage1.b) == 4 and len(stage1.b[0]) == 2  # init_iters (5,10,10,10), project + filter
    assert len(stage2.b) == 1 and len(stage2.b[0]) == 1  # update_iters (5,), filter only
    assert torch.equal(stage1.params[-1][0], online.model.project.weight)  # projection frozen after
    assert stage1.losses[-1, 0] < 0.2 * stage1.losses[0, 0]
    assert stage2.losses[-1, 0] <= stage2.losses[0, 0]
    assert online.model.filter.weight.dtype == dtype and online.memory.weights.dtype == dtype
    assert online.memory.current_size == 5 and online.frame_count == 0


def test_apply_counts_frames_and_update_follows_the_skipping_rule():
    online = trained_online()
    x_new, labels, _ = blob_scene(20)
    filter_before = online.model.filter.weight.clone()

    assert online.apply(x_new).shape == (1, 1, 12, 16) and online.frame_count == 1
    soft = 0.9 * labels
    assert online.update(soft)  # frame 1: stored, no CG
    assert online.memory.current_size == 6
    assert torch.equal(online.memory.labels[5], soft)  # the soft mask is the stored label
    assert torch.equal(online.model.filter.weight, filter_before)
    assert len(online.records) == 2

    tiny = torch.zeros_like(labels)
    tiny[..., :3, :3] = 1.0  # 9 pixels > 0.5: skipped
    online.apply(x_new)
    assert not online.update(tiny) and online.memory.current_size == 6

    online.frame_count = 7
    online.apply(x_new)  # frame 8: CG runs
    assert online.update(labels)
    assert [name for name, _ in online.records][-1] == "update"
    assert not torch.equal(online.model.filter.weight, filter_before)


def test_training_preset_uses_unit_pixel_weights():
    online = trained_online(pixel_weighting=None)
    _, _, values, _ = online.memory.active()
    assert torch.equal(values, torch.ones_like(values))


def test_state_dict_round_trip_reproduces_scores():
    online = trained_online()
    x_new, _, _ = blob_scene(30)
    copy = TargetModel(6, 8)
    copy.load_state_dict(online.model.state_dict())
    with torch.no_grad():
        assert torch.equal(copy(x_new), online.apply(x_new))
