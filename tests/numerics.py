"""Float32 error bounds for the numeric tests: derived, never measured, and the same on every CPU.

A float32 result depends on the order in which a kernel sums its products, and that order differs
between kernel families (PyTorch's ``ATEN_CPU_CAPABILITY`` default / avx2 / avx512, oneDNN's
``ONEDNN_MAX_CPU_ISA``, oneDNN on or off, the thread count). A bound that holds for one order only
is a bound on one machine. So every float32 tolerance in ``tests/`` is one of:

* **a rounding-error bound** (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1): a sum
  of n products computed in float32, in any order and with or without FMA, is within
  ``gamma(n) * sum|a_i b_i|`` of the exact value, ``gamma(n) = n u / (1 - n u)``, u = 2^-24 the unit
  roundoff (half of float32's epsilon 1.19e-7). It holds for every kernel family by construction;
  Chains of operations (a product of matrices, a network layer by layer) get the same bound from the
  absolute values of every factor (Higham 3.5), evaluated elementwise in float64 from the same inputs: an
  error divided by its bound is then at most 1, whatever the cancellation in the result;
* **a probabilistic bound** (:func:`gamma_probabilistic`) where gamma(n) exceeds 1 (bfloat16 networks);
* **a documented spread of the official code's own runs** (the fixture READMEs: the chaotic float32
  Gauss-Newton/CG);
* **float64** where two forms differ only in batching or windowing (a kernel may block them differently):
  then they agree to float64 rounding, far below any logical mistake.

Bit equality is kept only where both sides run the same operations in the same order. One float32 bound is
not derived and says so: torch.compile against eager (tests/lib/engine/test_session.py).

Float64 bounds stay tight: they only have to exceed float64 rounding (u = 1.1e-16).

Set ``REUSE_VOS_TEST_RECORD=FILE`` to append one JSON line per :func:`check` call (site, observed,
bound, the kernel settings), then ``python -m tests.numerics FILE ...`` prints the worst case per site.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import defaultdict

import torch

EPS32 = torch.finfo(torch.float32).eps  # 1.19e-7
U32 = EPS32 / 2  # unit roundoff of float32 (round to nearest)
EPS64 = torch.finfo(torch.float64).eps
# bfloat16 (autocast) against float32: bfloat16 keeps 8 significant bits, unit roundoff 2^-8. Under autocast every
# convolution rounds its input and weight to bfloat16 (accumulating in float32); the loss reaches the refiner's input
# through at most 56 convolutions on one path (4 levels of TSE 5 + RRB 3 + CAB 2 + RRB 3, the upsampler's 2, the
# template matching's 2; the frozen backbone's features are inputs), so <= 2 x 56 bf16 roundings, and the gradients
# run that chain back once more (2 x 112). The worst-case gamma_n exceeds 1 there; :func:`gamma_probabilistic`
# bounds it (independent roundings, Higham & Mary 2019). A no-op autocast would pass, so the tests also assert that
# the convolutions really ran in bfloat16.
BF16_UNIT = 2.0 ** -8
BF16_ROUNDINGS_LOSS = 2 * 56
BF16_ROUNDINGS_GRAD = 2 * 112
KERNEL_SETTINGS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS", "REUSE_VOS_TEST_MKLDNN")


def gamma(n: int, u: float = U32) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative bound of n accumulated float roundings."""
    assert n * u < 1, "accumulation too long for a first-order bound"
    return n * u / (1 - n * u)


def gamma_probabilistic(n: int, u: float, lam: float = 6.0) -> float:
    """Higham & Mary (SIAM J. Sci. Comput. 41(5), 2019), Theorem 2.4: with n independent mean-zero rounding errors
    of size <= u, a product of (1 + delta_i) is within exp(lam sqrt(n) u + n u^2 / (1 - u)) - 1 of 1 with
    probability >= 1 - 2n exp(-lam^2 (1 - u)^2 / 2) (lam 6: 1 - 3e-6 for n = 224); for n u near 1, where
    gamma(n) is useless (bfloat16 networks)."""
    return math.exp(lam * math.sqrt(n) * u + n * u * u / (1 - u)) - 1


def bilinear_weight_bound(in_size, out_size=None) -> float:
    """Bound on max|a - b| / max|x| between two float32 bilinear resizes of x (align_corners=False) that
    form their interpolation weights differently: ``F.interpolate`` from a float32 source coordinate,
    the matrix form (``models.target_model.upsample_bilinear``) from exact weights rounded once.

    Per axis of input length n the source coordinate s = (d + 0.5) n / m - 0.5 (|s| < n) takes about 3
    float32 roundings of magnitude <= n, so a weight is off by <= 3 u n + u; a weight error e moves an
    output by e |x1 - x0| <= 2 e max|x|. Each side's 4 products and 3 sums add gamma(7) max|x| (the
    output is a convex combination, so it is at most max|x|). Independent of the kernel family.
    """
    weights = sum(2 * (3 * U32 * n + U32) for n in in_size)
    return weights + 2 * gamma(7)


def bilinear_adjoint_bound(cotangent: torch.Tensor, in_size) -> torch.Tensor:
    """Elementwise bound on |a - b| between two float32 backward passes of a bilinear resize (align_corners=False)
    from ``in_size`` to the cotangent's size: ``F.interpolate``'s (a scatter) and the matrix form's
    (``models.target_model.upsample_bilinear``: rows^T g cols).

    Each is the exact adjoint R^T g C of exact weights R, C plus (i) its summation's roundings, within
    gamma(n) R^T |g| C (Higham 3.5) with n the longer accumulation of the two: H + W (the matrix products) or the
    scatter's (2H/h + 2)(2W/w + 2) contributions per input pixel; (ii) its float32 weights, each off by
    <= 3 u n_axis + u absolute (:func:`bilinear_weight_bound`) on the <= 2 taps of a row, so the terms move by
    <= e_r S_R^T |g| |C| + e_c |R|^T |g| S_C + e_r e_c S_R^T |g| S_C (S the taps' support). Twice that bounds the
    difference. Evaluated in float64.
    """
    from models.target_model import bilinear_matrix

    (h, w), (big_h, big_w) = in_size, cotangent.shape[-2:]
    rows = bilinear_matrix(h, big_h, torch.float64)  # (H, h)
    cols = bilinear_matrix(w, big_w, torch.float64)
    g = cotangent.double().abs()
    n = max(big_h + big_w, (2 * big_h // h + 2) * (2 * big_w // w + 2))
    e_r, e_c = 3 * U32 * h + U32, 3 * U32 * w + U32
    s_r, s_c = (rows > 0).double(), (cols > 0).double()
    exact = rows.T @ g @ cols
    weights = e_r * (s_r.T @ g @ cols) + e_c * (rows.T @ g @ s_c) + e_r * e_c * (s_r.T @ g @ s_c)
    return 2 * (gamma(n) * exact + weights)


def check(site: str, observed: float, bound: float) -> None:
    """Assert ``observed <= bound`` and, with ``REUSE_VOS_TEST_RECORD`` set, record both."""
    path = os.environ.get("REUSE_VOS_TEST_RECORD")
    if path:
        settings = {key: os.environ.get(key, "") for key in KERNEL_SETTINGS}
        settings["mkldnn"] = torch.backends.mkldnn.enabled
        settings["threads"] = torch.get_num_threads()
        with open(path, "a") as f:
            f.write(json.dumps({"site": site, "observed": float(observed), "bound": float(bound), **settings}) + "\n")
    assert observed <= bound, f"{site}: {observed:.3g} > bound {bound:.3g}"


def _summarise(paths: list) -> None:
    worst = defaultdict(lambda: (0.0, 0.0, 0.0, ""))
    for path in paths:
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                ratio = row["observed"] / row["bound"] if row["bound"] else 0.0
                if ratio >= worst[row["site"]][0]:
                    where = f"{row['ATEN_CPU_CAPABILITY'] or 'native'}/{row['ONEDNN_MAX_CPU_ISA'] or 'native'}" \
                            f"/mkldnn={row['mkldnn']}/threads={row['threads']}"
                    worst[row["site"]] = (ratio, row["observed"], row["bound"], where)
    print(f"{'site':70s} {'worst observed':>14s} {'bound':>10s} {'ratio':>6s}  where")
    for site in sorted(worst):
        ratio, observed, bound, where = worst[site]
        print(f"{site:70s} {observed:14.3g} {bound:10.3g} {ratio:6.2f}  {where}")


if __name__ == "__main__":
    _summarise(sys.argv[1:])
