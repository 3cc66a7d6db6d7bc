"""The fixtures' seeded random backbone rebuilt without the CPU's kernels (tests/seeded_backbone.py)."""

from __future__ import annotations

import lzma

import pytest
import torch
import torchvision

from tests.seeded_backbone import (
    CORRECTIONS_DIR,
    apply_correction,
    canonical_resnet_state,
    content_sha256,
    correction_name,
    fixture_backbone_state,
)

FIXTURE_SHA = "bd30fa36199dda54a74c67d6174164fb8c1d05eacaee2e80f3a25e2d107bc4a5"  # official fixtures, seed 0


@pytest.fixture(scope="module")
def canonical():
    return canonical_resnet_state("resnet18", 0)


def test_the_canonical_draw_is_the_kernels_draw_up_to_rounding(canonical):
    """The emulated Box-Muller consumes the generator as PyTorch does: every value is this process's own draw
    (whatever its kernel family) up to the transform's rounding, and the exact constants are equal. The kernels
    round log, cos, sin and 2 pi u in their own ways (the scalar one forms the angle in double): a value moves by
    a few ulps, by up to r |d theta| std ~ 4 x 2 pi 2^-24 std where cos or sin is near 0; a generator consumed out
    of step would move it by about std."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        drawn = {k: v for k, v in torchvision.models.resnet18(weights=None).state_dict().items()
                 if not k.startswith("fc.")}
    assert sorted(drawn) == sorted(canonical)
    for key, value in drawn.items():
        if value.dtype != torch.float32 or key.startswith("bn") or ".bn" in key:
            assert torch.equal(value, canonical[key]), key
            continue
        std = value.std().item()
        assert (value - canonical[key]).abs().max().item() <= 1e-5 * std, key


def test_the_stored_correction_gives_the_fixture_hash_on_this_cpu():
    data = (CORRECTIONS_DIR / correction_name("resnet18", 0, FIXTURE_SHA)).read_bytes()
    assert content_sha256(apply_correction("resnet18", 0, data)) == FIXTURE_SHA
    assert content_sha256(fixture_backbone_state("resnet18", 0, FIXTURE_SHA)) == FIXTURE_SHA


def test_a_wrong_correction_or_an_unknown_hash_fails_with_what_to_do(tmp_path, monkeypatch):
    data = bytearray(lzma.decompress((CORRECTIONS_DIR / correction_name("resnet18", 0, FIXTURE_SHA)).read_bytes()))
    data[12345] = (data[12345] + 1) % 256  # one weight one ulp off
    (tmp_path / correction_name("resnet18", 0, FIXTURE_SHA)).write_bytes(lzma.compress(bytes(data)))
    import tests.seeded_backbone as seeded

    draw = seeded._draw
    monkeypatch.setattr(seeded, "_draw", lambda ftext, seed, canonical: draw(ftext, seed, canonical)
                        if canonical else {"x": torch.zeros(1)})  # a CPU whose own draw differs
    with pytest.raises(AssertionError, match="remake the correction"):
        fixture_backbone_state("resnet18", 0, FIXTURE_SHA, [tmp_path])
    with pytest.raises(AssertionError, match="python -m tests.seeded_backbone --seed 0"):
        fixture_backbone_state("resnet18", 0, "0" * 64)
