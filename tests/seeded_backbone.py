"""The official fixtures' seeded random backbone, bit for bit, on every CPU.

The fixtures were made with ``torch.manual_seed(seed); torchvision.models.resnet18(weights=None)`` and
record the content hash of that state dict. torchvision initialises every convolution with
``kaiming_normal_``, and PyTorch's CPU ``normal_`` turns the (kernel-independent) uniform draws into normal
values with Box-Muller in float32 arithmetic whose ``log``/``cos``/``sin`` and rounding order depend on the
kernel family: the draw differs in the last bits between ``ATEN_CPU_CAPABILITY`` default, avx2 and avx512,
and which of them matches a fixture depends on the machine that made it. A test that draws the backbone in
process therefore sees the fixture's weights on some CPUs only.

So the exact weights are rebuilt the same way everywhere:

1. :func:`canonical_resnet_state` draws the network under the seed with the same uniform numbers (the
   generator is consumed exactly as ``normal_`` consumes it) and Box-Muller written once, in NumPy float32
   arithmetic with correctly rounded float64 ``log``/``sqrt``/``cos``/``sin`` (no kernel family involved);
2. a stored correction (``tests/fixtures/backbones/<ftext>_seed<S>_<hash16>.int8.xz``, or the same name in the
   fixture's own folder) holds, per float32 value in sorted key order, the difference in units in the last
   place between the fixture's weight and the canonical one (|d| <= 4, 86 % zeros);
3. the sum is checked against the fixture's content hash. A missing correction or a hash mismatch fails the
   test with what to do; it never skips.

``python -m tests.seeded_backbone --seed 0 --ftext resnet18 --sha256 HASH`` writes the correction on a machine
whose in-process draw has the fixture's hash (it refuses otherwise).
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import math
import sys
from pathlib import Path
from typing import Dict, Iterable, Optional

import numpy as np
import torch
import torchvision

CORRECTIONS_DIR = Path(__file__).parent / "fixtures" / "backbones"
_BUILDERS = {"resnet18": torchvision.models.resnet18, "resnet50": torchvision.models.resnet50,
             "resnet101": torchvision.models.resnet101}


def content_sha256(state: Dict[str, torch.Tensor]) -> str:
    """The fixtures' content hash of a state dict: for each key in sorted order, the key then the raw tensor bytes."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().numpy().tobytes())
    return digest.hexdigest()


def _box_muller16(uniform: np.ndarray, std: np.float32) -> np.ndarray:
    """PyTorch's ``normal_fill_16`` on blocks of 16 float32 uniforms: u1 = 1 - u[j], u2 = u[j + 8],
    r = sqrt(-2 log u1), theta = 2 pi u2 (a float32 product), out[j] = r cos(theta) std, out[j + 8] = r sin(theta) std.
    Every elementary function is evaluated in float64 and rounded once to float32."""
    f32 = np.float32
    blocks = uniform.reshape(-1, 16)
    u1, u2 = (f32(1) - blocks[:, :8]), blocks[:, 8:]
    log = np.log(u1.astype(np.float64)).astype(f32)
    radius = np.sqrt((f32(-2) * log).astype(np.float64)).astype(f32)
    theta = (f32(2 * math.pi) * u2).astype(np.float64)
    cos, sin = np.cos(theta).astype(f32), np.sin(theta).astype(f32)
    return np.concatenate([(radius * cos) * std, (radius * sin) * std], axis=1).reshape(-1)


def canonical_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """``tensor.normal_(0, std)`` for a contiguous float32 tensor of >= 16 values, consuming the global generator
    exactly as PyTorch's CPU kernel does (one uniform per value, 16 more for a partial last block)."""
    n = tensor.numel()
    assert tensor.dtype == torch.float32 and tensor.is_contiguous() and n >= 16, "the kernel's vector path only"
    uniform = torch.rand(n, dtype=torch.float32).numpy()
    std32 = np.float32(std)
    out = np.empty(n, dtype=np.float32)
    whole = n - n % 16
    out[:whole] = _box_muller16(uniform[:whole], std32)
    if n % 16:  # the kernel redraws the last 16 values
        out[n - 16:] = _box_muller16(torch.rand(16, dtype=torch.float32).numpy(), std32)
    with torch.no_grad():
        tensor.copy_(torch.from_numpy(out).view_as(tensor))
    return tensor


def _kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    assert generator is None
    fan = torch.nn.init._calculate_correct_fan(tensor, mode)
    return canonical_normal_(tensor, torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan))


def _draw(ftext: str, seed: int, canonical: bool) -> Dict[str, torch.Tensor]:
    """The torchvision network's state under ``seed`` without ``fc.*`` (the backbone drops it)."""
    original = torch.nn.init.kaiming_normal_
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if canonical:
            torch.nn.init.kaiming_normal_ = _kaiming_normal_
        try:
            net = _BUILDERS[ftext](weights=None)
        finally:
            torch.nn.init.kaiming_normal_ = original
    return {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}


def canonical_resnet_state(ftext: str, seed: int) -> Dict[str, torch.Tensor]:
    """The kernel-independent draw of step 1 (module docstring)."""
    return _draw(ftext, seed, canonical=True)


def _float_keys(state: Dict[str, torch.Tensor]) -> Iterable[str]:
    return [k for k in sorted(state) if state[k].dtype == torch.float32]


def correction_name(ftext: str, seed: int, sha256: str) -> str:
    return f"{ftext}_seed{seed}_{sha256[:16]}.int8.xz"


def make_correction(ftext: str, seed: int, exact: Dict[str, torch.Tensor]) -> bytes:
    """The ulp differences exact - canonical as xz-compressed int8 (sorted float32 keys, row-major)."""
    canonical = canonical_resnet_state(ftext, seed)
    parts = []
    for key in _float_keys(exact):
        a = exact[key].contiguous().numpy().view(np.int32).astype(np.int64)
        b = canonical[key].contiguous().numpy().view(np.int32).astype(np.int64)
        diff = (a - b).reshape(-1)
        assert np.abs(diff).max(initial=0) <= 127, f"{key}: canonical draw off by {np.abs(diff).max()} ulps"
        parts.append(diff.astype(np.int8))
    return lzma.compress(np.concatenate(parts).tobytes(), preset=9 | lzma.PRESET_EXTREME)


def apply_correction(ftext: str, seed: int, data: bytes) -> Dict[str, torch.Tensor]:
    canonical = canonical_resnet_state(ftext, seed)
    diff = np.frombuffer(lzma.decompress(data), dtype=np.int8).astype(np.int32)
    keys = list(_float_keys(canonical))
    assert diff.size == sum(canonical[k].numel() for k in keys), "the correction does not fit this network"
    offset, state = 0, dict(canonical)
    for key in keys:
        value = canonical[key].contiguous()
        n = value.numel()
        bits = value.numpy().reshape(-1).view(np.int32) + diff[offset:offset + n]
        state[key] = torch.from_numpy(bits.view(np.float32).reshape(tuple(value.shape)).copy())
        offset += n
    return state


def fixture_backbone_state(ftext: str, seed: int, sha256: str,
                           folders: Iterable[Path] = ()) -> Dict[str, torch.Tensor]:
    """The fixture's exact backbone weights (torchvision keys, no ``fc``); raises AssertionError with what to do
    when they cannot be rebuilt. The in-process draw is used when it already has the hash."""
    drawn = _draw(ftext, seed, canonical=False)
    if content_sha256(drawn) == sha256:
        return drawn
    name = correction_name(ftext, seed, sha256)
    for folder in [*folders, CORRECTIONS_DIR]:
        path = Path(folder) / name
        if path.is_file():
            state = apply_correction(ftext, seed, path.read_bytes())
            got = content_sha256(state)
            assert got == sha256, (f"{path}: the corrected canonical draw has content hash {got[:16]}..., the fixture "
                                   f"{sha256[:16]}...: the canonical draw changed (torchvision's init or PyTorch's "
                                   "normal_ kernel); remake the correction (python -m tests.seeded_backbone)")
            return state
    raise AssertionError(
        f"the fixture's backbone (seed {seed}, {ftext}, content hash {sha256[:16]}...) is not this process's draw and "
        f"no correction {name} exists in {[str(f) for f in folders] + [str(CORRECTIONS_DIR)]}: make one with "
        f"`python -m tests.seeded_backbone --seed {seed} --ftext {ftext} --sha256 {sha256}` on a CPU whose draw has "
        "the hash (try ATEN_CPU_CAPABILITY=default, avx2, avx512)")


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description="write the correction of a fixture's seeded backbone")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--ftext", default="resnet18", choices=sorted(_BUILDERS))
    p.add_argument("--sha256", required=True, help="the fixture's backbone_content_sha256")
    p.add_argument("--out", type=Path, default=CORRECTIONS_DIR)
    args = p.parse_args(argv)
    exact = _draw(args.ftext, args.seed, canonical=False)
    if content_sha256(exact) != args.sha256:
        print("this process's draw does not have that hash: run it under another ATEN_CPU_CAPABILITY", file=sys.stderr)
        return 2
    data = make_correction(args.ftext, args.seed, exact)
    assert content_sha256(apply_correction(args.ftext, args.seed, data)) == args.sha256
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / correction_name(args.ftext, args.seed, args.sha256)
    path.write_bytes(data)
    print(f"{path}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
