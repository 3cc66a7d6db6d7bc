"""float32 against bf16 on a real model and real frames, in alternating rounds of one process.

::

    python -m benchmarks.amp                                   # the shipped G-FRTM on the bundled blackswan
    python -m benchmarks.amp --model weights/gttvos_hrnet_dv2016_cpu.pth --frames 30 --rounds 3 --json OUT

Per precision (float32, ``--amp bf16``) one inference engine on the model (at its recorded size unless
``--size``); each round runs, for each precision in turn, the same ``--frames`` frames of one DAVIS sequence
through a fresh session: with every frame computed (``always``; G-FRTM's target-model update included every
8th frame, as in use) and, for G-FRTM, with every frame warped by optical flow (``warp-every-k``, learned
correction: no network runs). Reported: the median and mean milliseconds of the tracked frames (the first
frame's initialisation excluded) over all rounds, the bf16 speed-up, and how far the bf16 masks are from the
float32 ones (mean IoU over the frames). Rounds alternate, so background load hits both precisions alike; the
CPU line says which instructions it ran on (emulate an AVX2-only CPU with ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2``). Where the CPU has neither AVX512_BF16 nor AMX, bf16 runs emulated and is slower.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from base.errors import ConfigError
from base.io import atomic_write_json
from lib.tools.cli import SHIPPED_MODEL, apply_threads, run_cli
from lib.tools.cpu import cpu_report

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "samples" / "davis2016-sample"
PRECISIONS = (None, "bf16")


def _label(amp: Optional[str]) -> str:
    return amp or "float32"


def run_amp_benchmark(model_path: str = str(SHIPPED_MODEL), davis_root: str = str(SAMPLE),
                      sequence: str = "blackswan", frames: int = 25, rounds: int = 2, size=None,
                      threads: Optional[int] = None) -> Dict[str, object]:
    """Measure (see the module doc); returns the JSON-ready result."""
    from dataset.davis import DAVISDataset
    from lib.engine.core import EngineConfig, InferenceEngine
    from lib.engine.policies import PolicyConfig
    from lib.tools.checkpoint import load_inference_model

    if frames < 2 or rounds < 1:
        raise ConfigError(f"need --frames >= 2 and --rounds >= 1, got {frames} and {rounds}")
    apply_threads(threads)
    loaded = load_inference_model(model_path, size=size)
    ds = DAVISDataset(davis_root, year=2016, split="val" if Path(davis_root, "ImageSets/2016/val.txt").is_file()
                      else "train", sequences=[sequence])
    seq = ds.sequence(sequence)
    images = [seq.image(i) for i in range(min(frames, len(seq)))]
    first = {obj: seq.start_mask(obj) for obj in seq.objects_starting_at(0)}
    engines = {amp: InferenceEngine(loaded.model, loaded.backbone, EngineConfig(size=loaded.size, amp=amp),
                                    count_flops=False) for amp in PRECISIONS}
    paths = {"compute": PolicyConfig("always")}
    if engines[None].base.name == "gfrtm":
        paths["warp"] = PolicyConfig.of("warp-every-k", k=10 ** 6)
    times: Dict[str, Dict[str, List[float]]] = {p: {_label(a): [] for a in PRECISIONS} for p in paths}
    labels: Dict[str, Dict[str, List[np.ndarray]]] = {p: {} for p in paths}
    for _ in range(rounds):
        for path, policy in paths.items():
            for amp, engine in engines.items():
                session = engine.new_session(policy)
                out_labels = []
                for k, image in enumerate(images):
                    start = time.perf_counter()
                    out = session.step(image, first if k == 0 else None)
                    if k > 0:
                        times[path][_label(amp)].append(time.perf_counter() - start)
                    out_labels.append(out.labels > 0)
                labels[path][_label(amp)] = out_labels
    result: Dict[str, object] = {
        "model": str(model_path), "base": engines[None].base.name, "size": list(loaded.size or ()),
        "sequence": sequence, "frames": len(images), "rounds": rounds, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "cpu": cpu_report(),
        "layout": {_label(a): "NHWC" if e.channels_last else "NCHW" for a, e in engines.items()}, "paths": {}}
    for path in paths:
        stats = {name: {"median_ms": 1e3 * float(np.median(t)), "mean_ms": 1e3 * float(np.mean(t))}
                 for name, t in times[path].items()}
        ious = [float((a & b).sum() / max(1, (a | b).sum())) for a, b in
                zip(labels[path]["float32"][1:], labels[path]["bf16"][1:])]
        result["paths"][path] = {**stats, "speedup_median": stats["float32"]["median_ms"] / stats["bf16"]["median_ms"],
                                 "speedup_mean": stats["float32"]["mean_ms"] / stats["bf16"]["mean_ms"],
                                 "mask_iou_bf16_vs_float32": float(np.mean(ious))}
    return result


def format_result(result: Dict[str, object]) -> str:
    lines = [f"{result['base']} {result['model']} at {'x'.join(map(str, result['size'])) or 'the frames size'}, "
             f"{result['sequence']} frames 1-{result['frames'] - 1}, {result['rounds']} alternating rounds, "
             f"{result['threads']} threads",
             f"CPU: {result['cpu']['summary']}",
             f"layouts: {', '.join(f'{k} {v}' for k, v in result['layout'].items())}",
             f"{'frames':10s} {'float32 ms':>22s} {'bf16 ms':>22s} {'speed-up':>17s} {'mask IoU':>9s}",
             f"{'':10s} {'median / mean':>22s} {'median / mean':>22s} {'median / mean':>17s} {'bf16-fp32':>9s}"]
    for path, row in result["paths"].items():
        f32, b16 = row["float32"], row["bf16"]
        lines.append(f"{path:10s} {f32['median_ms']:10.1f} / {f32['mean_ms']:9.1f} {b16['median_ms']:10.1f} / "
                     f"{b16['mean_ms']:9.1f} {row['speedup_median']:7.2f}x / {row['speedup_mean']:5.2f}x "
                     f"{row['mask_iou_bf16_vs_float32']:9.4f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="model file (default: the shipped G-FRTM)")
    parser.add_argument("--davis-root", default=str(SAMPLE), help="a DAVIS 2016 root (default: the bundled sample)")
    parser.add_argument("--sequence", default="blackswan")
    parser.add_argument("--frames", type=int, default=25, help="frames per run (the first initialises)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="network size (default: the model's recorded one)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the result as JSON")
    args = parser.parse_args(argv)
    result = run_amp_benchmark(args.model, args.davis_root, args.sequence, args.frames, args.rounds, args.size,
                               args.threads)
    print(format_result(result))
    if args.json:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
