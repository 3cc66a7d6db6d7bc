"""FLOP accounting with ``torch.utils.flop_counter``.

Counted as PyTorch's FlopCounterMode counts: convolutions and matrix products, 2 FLOPs per
multiply-accumulate (their backward passes too, e.g. inside the target model's Gauss-Newton/CG);
interpolation, pooling and element-wise operations are not counted (as in the spec's reference
figures).

:class:`FlopMeter` measures FLOPs over a whole evaluation run without slowing the timed loop: a
component call is run under FlopCounterMode the first time its key (component name + every shape that
determines its cost) is seen, and later calls with the same key add that measured count. Convolution
and matmul FLOPs depend on shapes only, so this is exact.

CLI: per-module GFLOPs of the full and the reuse path for one frame and one object::

    python -m lib.flops --ftext resnet18 --size 480 854 [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import defaultdict
from typing import Dict, Hashable, Iterator, Optional, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from lib.cli import run_cli


class FlopMeter:
    """Accumulates FLOPs per component over a run (see the module docstring).

    Args:
        enabled: when False, :meth:`count` does nothing (no overhead at all).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.cache: Dict[tuple, int] = {}
        self.by_component: Dict[str, int] = defaultdict(int)

    @property
    def total(self) -> int:
        return sum(self.by_component.values())

    @contextlib.contextmanager
    def count(self, component: str, *key: Hashable) -> Iterator[None]:
        """Count the FLOPs of the enclosed code under ``component``; ``key`` fixes its cost."""
        if not self.enabled:
            yield
            return
        full_key = (component, *key)
        cached = self.cache.get(full_key)
        if cached is not None:
            yield
        else:
            with FlopCounterMode(display=False) as counter:
                yield
            cached = self.cache[full_key] = counter.get_total_flops()
        self.by_component[component] += cached

    def reset_totals(self) -> None:
        """Zero the accumulated totals (the per-key cache is kept)."""
        self.by_component = defaultdict(int)


def measure(fn, *args, **kwargs) -> int:
    """FLOPs of one call ``fn(*args, **kwargs)``."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


@torch.inference_mode()
def path_flops(ftext: str = "resnet18", size: Sequence[int] = (480, 854), c_channels: int = 96,
               device: str = "cpu") -> Dict[str, object]:
    """GFLOPs of one object on one frame, per module, for the full and the reuse path.

    Random weights and inputs (FLOPs depend on shapes only). The target model's optimisation and
    the first-frame work are not part of either path (see the evaluation's gflops_per_frame for a
    whole run, which includes them).

    Returns:
        ``{"full": GFLOPs, "reuse": GFLOPs, "modules": {name: GFLOPs}, "ftext", "size"}``.
    """
    from models.backbone import FeatureExtractor
    from models.gfrtm import GFRTM
    from models.target_model import TargetModel

    h, w = size
    backbone = FeatureExtractor(ftext, "none").to(device).eval()
    model = GFRTM(ftext).to(device).eval()
    target = TargetModel(backbone.channels["layer4"], c_channels).to(device)
    image = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, device=device)
    feats = dict(backbone.forward_f8(image))
    feats.update(backbone.forward_deep(feats["layer3"]))
    score = target(feats["layer4"])
    template = model.make_template(feats["layer3"], torch.ones(1, 1, h, w, device=device))
    tpl_s = model.match(feats["layer3"], score, template)
    delta = model.delta(tpl_s)
    x16 = model.deep(score, feats["layer5"], feats["layer4"])
    pre_up = model.refiner.shallow_features(x16, score, feats["layer3"], feats["layer2"])
    giga = 1e-9
    modules = {
        "backbone_stride8": measure(backbone.forward_f8, image),
        "backbone_deep": measure(backbone.forward_deep, feats["layer3"]),
        "template_matching": measure(model.match, feats["layer3"], score, template),
        "gate": measure(model.gate_logits, tpl_s),
        "delta_generator": measure(model.delta, tpl_s),
        "target_model_apply": measure(target, feats["layer4"]),
        "refiner_deep_stages": measure(model.deep, score, feats["layer5"], feats["layer4"]),
        "refine_translator": measure(model.translate, x16, delta),
        "refiner_shallow_stages": measure(model.refiner.shallow_features, x16, score, feats["layer3"],
                                          feats["layer2"]),
        "upsampler": measure(model.refiner.project, pre_up, (h, w)),
        "first_frame_template": measure(model.make_template, feats["layer3"], torch.ones(1, 1, h, w)),
    }
    modules = {k: v * giga for k, v in modules.items()}
    shared = modules["backbone_stride8"] + modules["template_matching"] + modules["gate"]
    head = modules["refiner_shallow_stages"] + modules["upsampler"]
    full = shared + modules["backbone_deep"] + modules["target_model_apply"] + modules["refiner_deep_stages"] + head
    reuse = shared + modules["delta_generator"] + modules["refine_translator"] + head
    return {"ftext": ftext, "size": [h, w], "full": full, "reuse": reuse, "modules": modules}


def format_path_flops(result: Dict[str, object]) -> str:
    modules: Dict[str, float] = result["modules"]  # type: ignore[assignment]
    full_only = {"backbone_deep", "target_model_apply", "refiner_deep_stages"}
    reuse_only = {"delta_generator", "refine_translator"}
    lines = [f"GFLOPs per frame and object, {result['ftext']} at {result['size'][0]}x{result['size'][1]}",
             f"{'module':<26} {'GFLOPs':>9}  path"]
    for name, value in modules.items():
        where = ("full" if name in full_only else "reuse" if name in reuse_only
                 else "first frame" if name.startswith("first_frame") else "both")
        lines.append(f"{name:<26} {value:9.4f}  {where}")
    lines.append(f"{'full path':<26} {result['full']:9.2f}")
    lines.append(f"{'reuse path':<26} {result['reuse']:9.2f}   (reuse / full = "
                 f"{result['reuse'] / result['full']:.3f})")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="GFLOPs of the G-FRTM full and reuse paths (one frame, one object)")
    parser.add_argument("--ftext", default="resnet18", choices=["resnet18", "resnet101"])
    parser.add_argument("--size", type=int, nargs=2, default=[480, 854], metavar=("H", "W"))
    parser.add_argument("--c-channels", type=int, default=96, help="target-model width (evaluation: 96)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    result = path_flops(args.ftext, args.size, args.c_channels)
    print(json.dumps(result, indent=2) if args.json else format_path_flops(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
