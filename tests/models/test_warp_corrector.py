"""The warp corrector: shapes at any size, close to the identity at initialisation, a per-pixel kernel that
really re-samples the warped map, gradients to every parameter."""

from __future__ import annotations

import math

import pytest
import torch

from models.warp_corrector import CENTRE_BIAS, WarpCorrector, prob_to_logit
from tests.numerics import gamma


def inputs(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    prob = torch.zeros(2, 1, h, w)
    prob[:, :, h // 4: 3 * h // 4, w // 3: 2 * w // 3] = 1
    return torch.rand(2, 3, h, w, generator=g), torch.rand(2, 3, h, w, generator=g), prob


@pytest.mark.parametrize("size", [(37, 53), (64, 96), (5, 3)])
def test_any_size_gives_logits_of_the_map_size(size):
    out = WarpCorrector()(*inputs(*size))
    assert out.shape == (2, 1, *size) and torch.isfinite(out).all()


def test_at_initialisation_it_keeps_the_warped_mask():
    corrector = WarpCorrector()
    image, warped, prob = inputs(48, 64)
    logits = corrector(image, warped, prob)
    assert torch.equal(logits > 0, prob > 0.5)
    flat = torch.full((1, 1, 20, 30), 0.8)  # a constant map: any normalised kernel returns it
    # softmax weights summing to 1 up to their roundings (exps, the 9-term sum, the divisions) and the 9-term
    # weighted sum: within gamma(2 * 9 + 3) |logit|; the bounded additive logit is 0 at initialisation
    logit = prob_to_logit(flat)
    out = corrector(torch.rand(1, 3, 20, 30), torch.rand(1, 3, 20, 30), flat)
    assert ((out - logit).abs() <= gamma(2 * 9 + 3) * logit.abs()).all()
    assert corrector.head.bias[corrector.kernel ** 2 // 2] == CENTRE_BIAS


def test_a_kernel_on_one_tap_shifts_the_map_by_the_dilation():
    corrector = WarpCorrector(kernel=3, dilation=2)
    with torch.no_grad():
        corrector.head.bias.zero_()
        corrector.head.bias[5] = 50.0  # tap (row 1, column 2): out(y, x) = logit(y, x + 2)
    image, warped, prob = inputs(32, 40)
    logit = prob_to_logit(prob)
    out = corrector(image, warped, prob)
    # the other 8 taps weigh <= e^-50 each (softmax of logits 50 vs ~0): out = logit(y, x + 2) (1 +- gamma(2 * 9 + 3))
    # + 8 e^-50 max|logit|
    bound = gamma(2 * 9 + 3) * logit[..., 2:].abs() + 8 * math.exp(-50) * logit.abs().max()
    assert ((out[..., :-2] - logit[..., 2:]).abs() <= bound).all()


def test_the_additive_logit_is_bounded_and_every_parameter_learns():
    corrector = WarpCorrector(max_residual=3.0)
    with torch.no_grad():
        corrector.head.bias[-1] = 1e6
    image, warped, prob = inputs(24, 24)
    out = corrector(image, warped, prob)
    assert (out - corrector(image, warped, prob)).abs().max() == 0
    assert (out <= prob_to_logit(prob).max() + 3.0 + 1e-4).all()
    corrector = WarpCorrector()
    with torch.no_grad():
        corrector.head.weight.normal_(0, 0.1)
    corrector(image, warped, prob).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in corrector.parameters())


def test_bad_kernel_is_refused():
    with pytest.raises(ValueError, match="odd"):
        WarpCorrector(kernel=4)


def test_channels_last_computes_the_same_function():
    torch.manual_seed(4)
    corrector = WarpCorrector().eval()
    for p in corrector.parameters():
        p.data.normal_(0, 0.2)
    image, warped, prob = torch.rand(1, 3, 45, 70), torch.rand(1, 3, 45, 70), torch.rand(1, 1, 45, 70)
    with torch.no_grad():
        plain = corrector(image, warped, prob)
        corrector.channels_last = True
        fast = corrector(image, warped, prob)
    assert fast.is_contiguous() and fast.shape == plain.shape
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
