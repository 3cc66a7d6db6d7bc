"""FLOP accounting with ``torch.utils.flop_counter``.

Counted as PyTorch's FlopCounterMode counts: convolutions and matrix products, 2 FLOPs per
multiply-accumulate (their backward passes too, e.g. inside the target model's Gauss-Newton/CG);
interpolation, pooling and element-wise operations are not counted (as in the spec's reference
figures). One consequence: the official upsampler's bicubic steps are polyphase convolutions (four
4x4 depthwise filters per step), which its counter counts; here they are two 5-tap depthwise
convolutions per step (:func:`models.refiner.bicubic_up2`), which count less. ``path_flops`` reports
both counts (0.34 GFLOPs apart at 480x854).

:class:`FlopMeter` measures FLOPs over a whole evaluation run without slowing the timed loop: a
component call is run under FlopCounterMode the first time its key (component name + every shape that
determines its cost) is seen, and later calls with the same key add that measured count. Convolution
and matmul FLOPs depend on shapes only, so this is exact.

CLI: per-module GFLOPs of the full and the reuse path for one frame and one object::

    python -m lib.tools.flops --ftext resnet18 --size 480 854 [--json] [--device meta|cpu|cuda]
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

from base.errors import ConfigError
from lib.tools.cli import add_backbone_flags, run_cli


class FlopMeter:
    """Accumulates FLOPs per component over a run (see the module docstring).

    Args:
        enabled: when False, :meth:`count` does nothing (no overhead at all).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.cache: Dict[tuple, int] = {}
        self.by_component: Dict[str, int] = defaultdict(int)
        self._active: Optional[str] = None  # the component being counted

    @property
    def total(self) -> int:
        return sum(self.by_component.values())

    @contextlib.contextmanager
    def count(self, component: str, *key: Hashable) -> Iterator[None]:
        """Count the FLOPs of the enclosed code under ``component``; ``key`` fixes its cost."""
        if not self.enabled:
            yield
            return
        if self._active is not None:  # the outer count would hold the inner one's FLOPs too
            raise RuntimeError(f"FLOP count {component!r} inside count {self._active!r}: counts must not nest")
        full_key = (component, *key)
        cached = self.cache.get(full_key)
        self._active = component
        try:
            if cached is not None:
                yield
            else:
                with FlopCounterMode(display=False) as counter:
                    yield
                cached = self.cache[full_key] = counter.get_total_flops()
        finally:
            self._active = None
        self.by_component[component] += cached

    def add(self, component: str, flops: int) -> None:
        """Add ``flops`` counted outside torch (e.g. OpenCV's optical flow, estimated from its algorithm)."""
        if self.enabled:
            self.by_component[component] += int(flops)

    def reset_totals(self) -> None:
        """Zero the accumulated totals (the per-key cache is kept)."""
        self.by_component = defaultdict(int)


def measure(fn, *args, **kwargs) -> int:
    """FLOPs of one call ``fn(*args, **kwargs)``."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def polyphase_bicubic_flops(channels: int, height: int, width: int) -> int:
    """FLOPs the official code's counter sees for one 2x bicubic upsampling of (channels, height, width).

    The official upsampler implements each 2x bicubic step as a fixed polyphase filter: four depthwise
    4x4 convolutions (one per output phase) over the input padded by 2, each with an output of
    (height + 1) x (width + 1). 2 FLOPs per multiply-accumulate.
    """
    return 4 * 2 * 16 * channels * (height + 1) * (width + 1)


@torch.inference_mode()
def path_flops(ftext: str = "resnet18", size: Sequence[int] = (480, 854), c_channels: int = 96,
               device: str = "meta") -> Dict[str, object]:
    """GFLOPs of one object on one frame, per module, for the full and the reuse path.

    Random weights and inputs: FLOPs depend on shapes only, so the default ``device="meta"`` counts
    without computing anything (same counts as on a real device, in well under a second at 480x854).
    The target model's optimisation and the first-frame work are not part of either path (see the
    evaluation's gflops_per_frame for a whole run, which includes them).

    Returns:
        ``{"ftext", "size", "full": GFLOPs, "reuse": GFLOPs, "modules": {name: GFLOPs},
        "official_count": {"upsampler", "full", "reuse"}}``; ``official_count`` is what the official
        code's counter gives: the upsampler's bicubic filters counted as its polyphase convolutions
        (see :func:`polyphase_bicubic_flops`), the only module whose count differs.
    """
    from models.backbone import FeatureExtractor
    from models.gfrtm import GFRTM
    from models.refiner import bicubic_up2
    from models.target_model import TargetModel

    h, w = size
    with torch.device(device):
        backbone = FeatureExtractor(ftext, "none").eval()
        model = GFRTM(ftext).eval()
        target = TargetModel(backbone.channels["layer4"], c_channels)
        image = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8)
        first_mask = torch.ones(1, 1, h, w)
    feats = dict(backbone.forward_f8(image))
    feats.update(backbone.forward_deep(feats["layer3"]))
    score = target(feats["layer4"])
    template = model.make_template(feats["layer3"], first_mask)
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
        "first_frame_template": measure(model.make_template, feats["layer3"], first_mask),
    }
    modules = {k: v * giga for k, v in modules.items()}
    shared = modules["backbone_stride8"] + modules["template_matching"] + modules["gate"]
    head = modules["refiner_shallow_stages"] + modules["upsampler"]
    full = shared + modules["backbone_deep"] + modules["target_model_apply"] + modules["refiner_deep_stages"] + head
    reuse = shared + modules["delta_generator"] + modules["refine_translator"] + head
    # The official counter sees its polyphase bicubic filters; ours are counted as they run here.
    _, up_channels, up_h, up_w = pre_up.shape
    with torch.device(device):
        mid = torch.zeros(1, up_channels // 2, 2 * up_h, 2 * up_w)
    ours = measure(bicubic_up2, pre_up) + measure(bicubic_up2, mid)
    theirs = polyphase_bicubic_flops(up_channels, up_h, up_w) + polyphase_bicubic_flops(up_channels // 2, 2 * up_h,
                                                                                          2 * up_w)
    filters = giga * (theirs - ours)
    # ... and its last 3x3 convolution at the image size (ours sums the channels first, Upsampler.forward)
    filters += giga * measure(model.refiner.project.forward_plain, pre_up, (h, w)) - modules["upsampler"]
    official = {"upsampler": modules["upsampler"] + filters, "full": full + filters, "reuse": reuse + filters}
    return {"ftext": ftext, "size": [h, w], "full": full, "reuse": reuse, "modules": modules,
            "official_count": official}


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
    official = result.get("official_count")
    if official:
        lines.append(f"as the official code counts them (its bicubic filters are convolutions): upsampler "
                     f"{official['upsampler']:.2f}, full {official['full']:.2f}, reuse {official['reuse']:.2f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="GFLOPs of the G-FRTM full and reuse paths (one frame, one object)")
    add_backbone_flags(parser, ftext_default="resnet18", pretrained_choices=())
    parser.add_argument("--size", type=int, nargs=2, default=[480, 854], metavar=("H", "W"))
    parser.add_argument("--c-channels", type=int, default=96, help="target-model width (evaluation: 96)")
    parser.add_argument("--device", default="meta",
                        help="where to count (meta: shapes only, no compute; the counts are the same anywhere)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if min(args.size) < 32:
        raise ConfigError(f"--size must be at least 32x32 (the backbone's stride), got {args.size[0]}x{args.size[1]}")
    result = path_flops(args.ftext, args.size, args.c_channels, args.device)
    print(json.dumps(result, indent=2) if args.json else format_path_flops(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
