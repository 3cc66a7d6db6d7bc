"""Float32 error bounds for the numeric tests: derived, never guessed, and the same on every CPU.

A float32 result depends on the order in which a kernel sums its products, and that order differs
between kernel families (PyTorch's ``ATEN_CPU_CAPABILITY`` default / avx2 / avx512, oneDNN's
``ONEDNN_MAX_CPU_ISA``, oneDNN on or off, the thread count). A bound that holds for one order only
is a bound on one machine. So every float32 tolerance in ``tests/`` is one of:

* **a rounding-error bound** (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1): a sum
  of n products computed in float32, in any order and with or without FMA, is within
  ``gamma(n) * sum|a_i b_i|`` of the exact value, ``gamma(n) = n u / (1 - n u)``, u = 2^-24 the unit
  roundoff (half of float32's epsilon 1.19e-7). It holds for every kernel family by construction;
* **a measured worst case times a stated margin**, where an operation chains several roundings
  (a network, an interpolation with float32 weights): the worst value over the kernel families
  above, recorded with :func:`check` (``REUSE_VOS_TEST_RECORD``), times the margin given at the site.

Float64 bounds stay tight: they only have to exceed float64 rounding (u = 1.1e-16).

Set ``REUSE_VOS_TEST_RECORD=FILE`` to append one JSON line per :func:`check` call (site, observed,
bound, the kernel settings), then ``python -m tests.numerics FILE ...`` prints the worst case per site.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict

import torch

EPS32 = torch.finfo(torch.float32).eps  # 1.19e-7
U32 = EPS32 / 2  # unit roundoff of float32 (round to nearest)
EPS64 = torch.finfo(torch.float64).eps
KERNEL_SETTINGS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS", "REUSE_VOS_TEST_MKLDNN")


def gamma(n: int, u: float = U32) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative bound of n accumulated float roundings."""
    assert n * u < 1, "accumulation too long for a first-order bound"
    return n * u / (1 - n * u)


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
