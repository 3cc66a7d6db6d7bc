"""What CPU a measurement ran on: the vector and matrix instructions it has and the ones torch was allowed to use.

Timings on these machines differ by CPU class (AVX2 only, AVX-512, AVX-512 with AVX512_BF16 and AMX), and a run
can emulate an older class: ``ATEN_CPU_CAPABILITY=avx2`` limits ATen's own kernels, ``ONEDNN_MAX_CPU_ISA=AVX2``
oneDNN's (convolutions, matrix products). :func:`cpu_report` records both, so a table can say which it is.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Dict, List, Optional

import torch

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni")


def _cpuinfo() -> Dict[str, str]:
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return {}
    fields: Dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            break  # the first processor is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_report() -> Dict[str, object]:
    """``model``, ``flags`` (of :data:`FLAGS`, those the CPU has), ``aten_capability`` (the kernels ATen uses,
    after ``ATEN_CPU_CAPABILITY``), ``onednn_max_isa`` (the environment's cap, or None), ``cores`` and a one-line
    ``summary`` such as ``"Intel Xeon ... (AVX-512, AVX512_BF16, AMX); ATen AVX512"``."""
    info = _cpuinfo()
    flags: List[str] = [f for f in FLAGS if f in set(info.get("flags", "").split())]
    capability = torch.backends.cpu.get_cpu_capability()
    onednn: Optional[str] = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    model = info.get("model name") or platform.processor() or platform.machine()
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512_BF16", "amx_bf16": "AMX"}
    has = ", ".join(names[f] for f in names if f in flags) or "no AVX2"
    summary = f"{model} ({has}); ATen {capability}" + (f", oneDNN capped at {onednn}" if onednn else "")
    return {"model": model, "flags": flags, "aten_capability": capability, "onednn_max_isa": onednn,
            "cores": os.cpu_count(), "summary": summary}


def bf16_is_native(report: Optional[Dict[str, object]] = None) -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (AVX512_BF16 or AMX) and oneDNN may use them
    (no ``ONEDNN_MAX_CPU_ISA`` cap below them). Without, bf16 runs emulated: the shipped G-FRTM's computed frame
    measured 5.6x slower than float32 with oneDNN capped at AVX2 (``benchmarks.amp``)."""
    report = report or cpu_report()
    flags = set(report["flags"])  # type: ignore[arg-type]
    if not flags & {"avx512_bf16", "amx_bf16"}:
        return False
    cap = str(report["onednn_max_isa"] or "").upper()
    return not cap or "BF16" in cap or "AMX" in cap or cap in ("ALL", "AVX10_1_512", "AVX10_2_512")
