"""Template generator/matcher, reuse gate and delta-generator: structure, counts, shapes, semantics."""

from __future__ import annotations

import math

import pytest
import torch

from models.reuse import DeltaGenerator, ReuseGate, TemplateGenerator, TemplateMatcher, TemplateModule
from tests.numerics import EPS32, gamma


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ch_in,count", [(129, 80_320), (513, 178_624)])
def test_template_module_counts_and_keys(ch_in, count):
    module = TemplateModule(ch_in)
    assert _count(module) == count
    keys = list(module.state_dict())
    assert keys[:4] == ["Tmatching.conv_key.0.weight", "Tmatching.conv_key.0.bias",
                        "Tmatching.conv_key.1.weight", "Tmatching.conv_key.1.bias"]
    assert "Tgenerate.conv_val.2.weight" in keys and keys[-1] == "Tgenerate.conv_val.2.bias"
    assert module.Tmatching.blend[0].weight.shape == (128, 4, 5, 5)
    assert module.Tgenerate.conv_key[2].weight.shape == (64, 4, 5, 5)


def test_template_is_row_softmax_of_scaled_product():
    gen = TemplateGenerator(9).eval()
    x = _randn(2, 9, 6, 10)
    with torch.no_grad():
        template = gen(x)
        key = gen.conv_key(x).flatten(2)
        val = gen.conv_val(x).flatten(2)
    assert template.shape == (2, 64, 64)
    # a float32 softmax row: each of the 64 values carries its exp's (<= 1 ulp), the 63-term sum's and the
    # division's roundings, and the row sum 63 more: within gamma(2 * 64 + 2) of 1
    assert (template.sum(-1) - 1).abs().max() <= gamma(2 * 64 + 2)
    expected = torch.softmax(val @ key.transpose(1, 2) / math.sqrt(60), dim=-1)
    assert torch.equal(template, expected)  # the same operations (bmm, scale, softmax)


def test_matcher_shape_and_relu():
    matcher = TemplateMatcher(9).eval()
    with torch.no_grad():
        out = matcher(_randn(3, 9, 7, 11), torch.softmax(_randn(3, 64, 64, seed=1), -1))
    assert out.shape == (3, 64, 7, 11)
    assert out.min() >= 0


@pytest.mark.parametrize("size", [(30, 54), (8, 14), (3, 5)])
def test_gate_logits_shape(size):
    gate = ReuseGate().eval()
    with torch.no_grad():
        assert gate(_randn(4, 64, *size)).shape == (4, 2)


def test_gate_structure_and_bias_init():
    gate = ReuseGate()
    assert _count(gate) == 9_554
    assert list(gate.state_dict()) == [
        "1.weight", "1.bias", "2.weight", "2.bias", "2.running_mean", "2.running_var", "2.num_batches_tracked",
        "4.weight", "4.bias"]
    gate.init_bias()
    assert gate[4].bias.tolist() == pytest.approx([0.1, 2.0])
    with torch.no_grad():
        gate[4].weight.zero_()
        p_reuse = torch.softmax(gate.eval()(_randn(1, 64, 30, 54)), dim=1)[0, 0]
    # logits = the biases (0.1, 2.0) exactly; a float32 softmax (max, subtract, 2 exps of <= 1 ulp, sum, divide)
    # is within 6 u of p = 0.13 relative, i.e. 4.7e-8 absolute: below one float32 epsilon (1.19e-7)
    assert p_reuse.item() == pytest.approx(1 / (1 + math.exp(1.9)), abs=EPS32)


@pytest.mark.parametrize("h8,w8", [(30, 54), (60, 107), (7, 7)])
def test_delta_generator_grid(h8, w8):
    delta = DeltaGenerator()
    assert _count(delta) == 577
    assert list(delta.state_dict()) == ["weight", "bias"]
    with torch.no_grad():
        out = delta(_randn(2, 64, h8, w8))
    assert out.shape == (2, 1, math.ceil(h8 / 2), math.ceil(w8 / 2))
