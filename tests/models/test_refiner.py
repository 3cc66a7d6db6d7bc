"""SegmentationNetwork: structure, parameter counts, split API and shapes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from models.backbone import FEATURE_CHANNELS
from models.refiner import (
    LAYERS,
    SegmentationNetwork,
    Upsampler,
    bicubic_up2,
    channel_taps,
    resize,
    sum_shifted_taps,
)
from tests.numerics import U32, check, gamma

HEIGHT, WIDTH = 64, 112

TSE_PARAMS = {
    "resnet18": {"layer5": 150_676, "layer4": 134_292, "layer3": 126_100, "layer2": 122_004},
    "resnet101": {"layer5": 248_980, "layer4": 183_444, "layer3": 150_676, "layer2": 134_292},
}
REFINER_PARAMS = {"resnet18": 1_619_057, "resnet101": 1_803_377}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def refiner() -> SegmentationNetwork:
    torch.manual_seed(0)
    return SegmentationNetwork(FEATURE_CHANNELS["resnet18"]).eval()


def _score(batch: int, grid: tuple, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 1, *grid, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ftext", ["resnet18", "resnet101"])
def test_parameter_counts(ftext):
    net = SegmentationNetwork(FEATURE_CHANNELS[ftext])
    assert _count(net) == REFINER_PARAMS[ftext]
    assert {L: _count(net.TSE[L]) for L in LAYERS} == TSE_PARAMS[ftext]
    for L in LAYERS:
        assert _count(net.RRB1[L]) == _count(net.RRB2[L]) == 78_080
        assert _count(net.CAB[L]) == 12_416
    assert _count(net.Diff_process) == 392_928
    assert _count(net.project) == 18_753


def test_structure_matches_official_names(refiner):
    assert [name for name, _ in refiner.named_children()] == ["TSE", "RRB1", "CAB", "RRB2", "Diff_process",
                                                              "project"]
    for block in (refiner.TSE, refiner.RRB1, refiner.CAB, refiner.RRB2):
        assert list(block.keys()) == ["layer5", "layer4", "layer3", "layer2"]
    keys = list(refiner.state_dict())
    assert keys[0] == "TSE.layer5.reduce.0.weight"
    assert "Diff_process.conv_multi.convBlend.weight" in keys and "Diff_process.postRBB.bblock.3.weight" in keys
    assert keys[-4:] == ["project.conv1.weight", "project.conv1.bias", "project.conv2.weight", "project.conv2.bias"]
    assert refiner.Diff_process.conv_multi.conv3.dilation == (3, 3)
    assert refiner.Diff_process.conv_multi.conv3.padding == (3, 3)


def test_split_api_shapes_and_full_path(refiner, random_features, feature_grid):
    feats = random_features(batch=2, height=HEIGHT, width=WIDTH)
    grid = feature_grid(HEIGHT, WIDTH)
    score16 = _score(2, grid["layer4"])
    with torch.no_grad():
        x16 = refiner.deep(score16, feats["layer5"], feats["layer4"])
        assert x16.shape == (2, 64, *grid["layer4"])
        translated = refiner.translate(x16, _score(2, grid["layer4"], seed=2))
        assert translated.shape == x16.shape
        pre_up = refiner.shallow_features(x16, score16, feats["layer3"], feats["layer2"])
        assert pre_up.shape == (2, 64, *grid["layer2"])
        logits = refiner.shallow(x16, score16, feats["layer3"], feats["layer2"], (HEIGHT, WIDTH))
        assert logits.shape == (2, 1, HEIGHT, WIDTH)
        assert torch.equal(refiner.project(pre_up, (HEIGHT, WIDTH)), logits)
        assert torch.equal(refiner(score16, feats, (HEIGHT, WIDTH)), logits)


def test_shared_features_equal_per_object_runs(refiner, random_features, feature_grid):
    """Features of one frame (batch 1) shared by two objects' scores give the per-object results."""
    # In float64: a batch of 2 and two batches of 1 run the same network, which a kernel may block (and so sum)
    # differently, so they agree to float64 rounding, far below any sharing mistake (a feature paired with the
    # wrong score, a broadcast over the wrong axis).
    net = copy.deepcopy(refiner).double()
    feats = {k: v.double() for k, v in random_features(batch=1, height=HEIGHT, width=WIDTH).items()}
    scores = _score(2, feature_grid(HEIGHT, WIDTH)["layer4"]).double()
    with torch.no_grad():
        shared = net(scores, feats, (HEIGHT, WIDTH))
        separate = torch.cat([net(scores[i:i + 1], feats, (HEIGHT, WIDTH)) for i in range(2)])
    check("refiner float64: 2 objects sharing the features vs each alone (rel-to-max)",
          ((shared - separate).abs().max() / separate.abs().max()).item(), 1e-12)


def test_precomputed_reductions_give_the_same_logits(refiner, random_features, feature_grid):
    """``reduce_shallow`` once, then each object's ``shallow`` with it: bit for bit the logits of ``shallow``
    computing its own reductions, and the raw features are then not read at all."""
    feats = random_features(batch=1, height=HEIGHT, width=WIDTH)
    grid = feature_grid(HEIGHT, WIDTH)
    with torch.no_grad():
        reduced = refiner.reduce_shallow(feats["layer3"], feats["layer2"])
        assert {k: tuple(v.shape) for k, v in reduced.items()} == {"layer3": (1, 64, *grid["layer3"]),
                                                                   "layer2": (1, 64, *grid["layer2"])}
        for seed in (1, 2):
            score16 = _score(1, grid["layer4"], seed=seed)
            x16 = refiner.deep(score16, feats["layer5"], feats["layer4"])
            own = refiner.shallow(x16, score16, feats["layer3"], feats["layer2"], (HEIGHT, WIDTH))
            shared = refiner.shallow(x16, score16, torch.full_like(feats["layer3"], float("nan")),
                                     torch.full_like(feats["layer2"], float("nan")), (HEIGHT, WIDTH), reduced)
            assert torch.equal(own, shared)


def test_gradients_reach_every_parameter(random_features, feature_grid):
    torch.manual_seed(0)
    net = SegmentationNetwork(FEATURE_CHANNELS["resnet18"]).train()
    feats = random_features(batch=2, height=32, width=48)
    grid = feature_grid(32, 48)
    score16 = _score(2, grid["layer4"])
    x16 = net.translate(net.deep(score16, feats["layer5"], feats["layer4"]), _score(2, grid["layer4"], 3))
    net.shallow(x16, score16, feats["layer3"], feats["layer2"], (32, 48)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_resize_skips_same_size_and_is_bilinear():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    assert resize(x, (3, 4)) is x
    up = resize(x, (6, 8))
    assert torch.equal(up, torch.nn.functional.interpolate(x, (6, 8), mode="bilinear", align_corners=False))


def test_sum_shifted_taps_by_hand():
    # 3x3 kernel, one channel of ones: each output counts its in-image neighbours (zero padding), + bias 0.5
    out = sum_shifted_taps(channel_taps(torch.ones(1, 1, 3, 4), torch.ones(1, 1, 3, 3)), torch.tensor([0.5]))
    expected = torch.tensor([[4, 6, 6, 4], [6, 9, 9, 6], [4, 6, 6, 4]]) + 0.5
    assert torch.equal(out, expected.view(1, 1, 3, 4))


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("shape", [(2, 7, 9, 13), (1, 3, 1, 2), (1, 4, 2, 1)])
def test_channel_taps_then_shifted_sum_is_the_convolution(k, shape):
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    weight = torch.randn(1, shape[1], k, k, generator=gen, dtype=torch.float64)
    bias = torch.randn(1, generator=gen, dtype=torch.float64)
    expected = torch.nn.functional.conv2d(x, weight, bias, padding=k // 2)
    torch.testing.assert_close(sum_shifted_taps(channel_taps(x, weight), bias), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sum_shifted_taps(channel_taps(x, weight)), expected - bias, rtol=1e-12, atol=1e-12)
    # float32: each output sums n = C k^2 products and the bias, in an order of the kernel's choosing, from
    # inputs rounded to float32 (2 more roundings per product): within gamma(n + 2) * sum|x w| + |b| of the
    # exact float64 value in any order (tests/numerics.py), elementwise
    got32 = sum_shifted_taps(channel_taps(x.float(), weight.float()), bias.float()).double()
    magnitude = F.conv2d(x.abs(), weight.abs(), bias.abs(), padding=k // 2)
    bound = gamma(shape[1] * k * k + 1 + 2) * magnitude
    check(f"channel taps + shifted sum float32, k={k} {shape}: error / gamma bound",
          ((got32 - expected).abs() / bound).max().item(), 1.0)


@pytest.mark.parametrize("image_size", [(32, 56), (29, 51), (40, 60)])  # 4x the input, smaller, larger
def test_upsampler_equals_the_architecture_order(image_size):
    """Summing the last conv's channels before the resamplings (forward) gives forward_plain's logits."""
    torch.manual_seed(0)
    up = Upsampler().double()
    x = torch.randn(2, 64, 8, 14, dtype=torch.float64, requires_grad=True)
    out, plain = up(x, image_size), up.forward_plain(x, image_size)
    assert out.shape == (2, 1, *image_size)
    scale = plain.abs().max()
    assert (out - plain).abs().max() <= 1e-12 * scale
    grads = torch.autograd.grad(out.square().sum(), [x, *up.parameters()])
    grads_plain = torch.autograd.grad(plain.square().sum(), [x, *up.parameters()])
    for g, gp in zip(grads, grads_plain):
        assert (g - gp).abs().max() <= 1e-12 * gp.abs().max()
    up32, x32 = up.float(), x.detach().float()
    with torch.no_grad():
        error = (up32(x32, image_size).double() - plain).abs()
    bound = upsampler_float32_bound(up, x.detach(), image_size) + 1e-12 * scale  # + the float64 reference's own
    check(f"upsampler float32 vs float64 {image_size} (error / running bound)", (error / bound).max().item(), 1.0)


def upsampler_float32_bound(up: Upsampler, x: torch.Tensor, image_size) -> torch.Tensor:
    """Elementwise bound on |Upsampler.forward in float32 - the exact value| (a running error bound, Higham 3.5
    step by step, evaluated in float64 with absolute weights): x rounded to float32 (u |x|); the bicubic 2x steps
    (two 5-tap passes: gamma(10) |K| |y|); conv1 (9 x 64 products, the bias, the weights' float32 rounding:
    gamma(9 x 64 + 2)); the ReLU (1-Lipschitz); the 32-channel tap sums (gamma(33)); the bicubic step; the
    bilinear resize (4 products, 3 sums: gamma(7), plus each weight off by <= 3 u n + u per axis,
    tests/numerics.bilinear_weight_bound, on <= 2 taps per axis, times the channel's largest input); the shifted
    sum of 9 planes and the bias (gamma(10)). Each step also carries the previous error through |its operator|."""
    import models.refiner as refiner_module

    taps = refiner_module.BICUBIC_TAPS

    def bicubic_abs(v):
        try:
            refiner_module.BICUBIC_TAPS = tuple(tuple(abs(t) for t in phase) for phase in taps)
            return bicubic_up2(v)
        finally:
            refiner_module.BICUBIC_TAPS = taps

    w1, b1 = up.conv1.weight.detach().double().abs(), up.conv1.bias.detach().double().abs()
    w2, b2 = up.conv2.weight.detach().double().abs(), up.conv2.bias.detach().double().abs()
    m = x.double().abs()
    e = U32 * m
    m = bicubic_abs(m)
    e = bicubic_abs(e) + gamma(10) * m
    m = F.conv2d(m, w1, b1, padding=1)
    e = F.conv2d(e, w1, padding=1) + gamma(9 * w1.shape[1] + 2) * m
    m, e = channel_taps(m, w2), channel_taps(e, w2) + gamma(w2.shape[1] + 1) * channel_taps(m, w2)
    m = bicubic_abs(m)
    e = bicubic_abs(e) + gamma(10) * m
    h, w = m.shape[-2:]
    weight_error = 2 * (3 * U32 * h + U32) + 2 * (3 * U32 * w + U32)
    largest = m.amax(dim=(-2, -1), keepdim=True)
    m = resize(m, image_size)
    e = resize(e, image_size) + gamma(7) * m + weight_error * largest
    m = sum_shifted_taps(m, b2)
    return sum_shifted_taps(e) + gamma(10) * m
