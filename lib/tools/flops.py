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

and of TTVOS (per frame and its parts, plus the figure the official TTVOS README reports: its counter on the
official test.py's dummy call, see :func:`official_module_flops`)::

    python -m lib.tools.flops --net ttvos --backbone hrnetv2Sv1 --size 480 854
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


_RELU_LIKE = (torch.nn.ReLU, torch.nn.PReLU, torch.nn.ELU, torch.nn.LeakyReLU, torch.nn.ReLU6)


def _module_flops(module: torch.nn.Module, inputs, output) -> int:
    """One call's count under the official TTVOS counter's rules (0 for a module it does not count)."""
    x = inputs[0]
    if isinstance(module, torch.nn.Conv2d):
        positions = x.shape[0] * output.shape[2] * output.shape[3]
        per_position = 2 * module.kernel_size[0] * module.kernel_size[1] * module.in_channels * (
            module.out_channels // module.groups)
        return positions * per_position + (module.out_channels * positions if module.bias is not None else 0)
    if isinstance(module, torch.nn.ConvTranspose2d):  # counted per *input* position
        positions = x.shape[0] * x.shape[2] * x.shape[3]
        per_position = 2 * module.kernel_size[0] * module.kernel_size[1] * module.in_channels * (
            module.out_channels // module.groups)
        return positions * per_position + (module.out_channels * positions if module.bias is not None else 0)
    if isinstance(module, _RELU_LIKE) or isinstance(module, torch.nn.AvgPool2d):
        return x.numel()
    if isinstance(module, torch.nn.BatchNorm2d):
        return x.numel() * (2 if module.affine else 1)
    if isinstance(module, torch.nn.Linear):
        return x.shape[0] * x.shape[1] * output.shape[1]
    if isinstance(module, torch.nn.Upsample):
        return output.numel() * (2 if module.mode == "bilinear" else 1)
    return 0


def official_module_flops(model: torch.nn.Module, fn) -> int:
    """FLOPs of ``fn()`` as the official TTVOS code's counter (``utils/flops_counter.py``) counts them: forward
    hooks on modules only, so functional calls (``F.relu``, ``F.avg_pool2d``, interpolation, softmax, bmm)
    count 0; a convolution 2 k_h k_w C_in C_out / groups per output position plus its bias, a transposed
    convolution the same per *input* position, a ReLU-like or AvgPool2d module the input's size, BatchNorm
    twice that (affine), Upsample the output's size (x2 bilinear). Each call of a module counts (a shared ReLU
    module too). The official README's "GMac" figure is this count / 2 / 1e9."""
    total = [0]

    def hook(module, inputs, output):
        total[0] += _module_flops(module, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        fn()
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def _ttvos_inputs(size: Sequence[int], device: str):
    """The official ``test.py`` dummy inputs at ``size`` padded to a multiple of 16: (H, W), a zero image and a
    mask with a 100x100 box; and ``(parts, count)``: ``count(name, fn)`` runs ``fn`` under a FLOP counter and
    stores its GFLOPs in ``parts[name]``."""
    height, width = (-(-int(s) // 16) * 16 for s in size)
    image = torch.zeros(1, 3, height, width, device=device)
    mask = torch.zeros(1, 1, height, width, device=device)
    mask[..., :100, :100] = 1
    parts: Dict[str, float] = {}

    def count(name, fn):
        with FlopCounterMode(display=False) as counter:
            out = fn()
        parts[name] = counter.get_total_flops() / 1e9
        return out

    return (height, width), image, mask, parts, count


@torch.inference_mode()
def ttvos_flops(backbone: str = "hrnetv2Sv1", size: Sequence[int] = (480, 854), device: str = "meta") -> Dict:
    """GFLOPs of TTVOS: per tracked frame and object (``torch.utils.flop_counter``, as every count of this
    project), its parts, and the official README's figure: the official counter on ``test.py``'s dummy call
    (a 2-frame clip at ``size`` padded to a multiple of 16, a 100x100 box on frame 0: one initialisation, one
    tracked frame and its state update), in GMac."""
    from models.ttvos import TTVOS, count_parameters

    model = TTVOS(backbone).eval().to(device)
    (height, width), image, mask, parts, count = _ttvos_inputs(size, device)
    feats = count("backbone", lambda: model.features(image))
    state = count("first_frame_template", lambda: model.init_state(feats, mask))
    count("template_attention", lambda: model.attend(feats, state))
    out = count("head", lambda: model(feats, state))
    prob = torch.softmax(out.logits, dim=1)
    count("state_update", lambda: model.update(feats, prob, state, out.update_weight))
    parts["refine_decoder"] = parts["head"] - parts["template_attention"]

    def dummy():
        f0 = model.features(image)
        st = model.init_state(f0, mask)
        f1 = model.features(image)
        o = model(f1, st)
        model.update(f1, torch.softmax(o.logits, dim=1), st, o.update_weight)

    official = official_module_flops(model, dummy) if device != "meta" else None
    per_frame = parts["backbone"] + parts["head"] + parts["state_update"]
    return {"net": "ttvos", "backbone": backbone, "size": [int(size[0]), int(size[1])], "padded": [height, width],
            "parts": parts, "tracked_frame": per_frame, "parameters": count_parameters(model),
            "official_gmac_dummy": official / 2e9 if official is not None else None}


def format_ttvos_flops(result: Dict[str, object]) -> str:
    parts: Dict[str, float] = result["parts"]  # type: ignore[assignment]
    lines = [f"TTVOS {result['backbone']} at {result['size'][0]}x{result['size'][1]} (padded to "
             f"{result['padded'][0]}x{result['padded'][1]}), GFLOPs (torch.utils.flop_counter):"]
    lines += [f"  {name:<22} {value:9.4f}" for name, value in parts.items()]
    lines.append(f"  {'tracked frame':<22} {result['tracked_frame']:9.4f}   (backbone + head + state update)")
    lines.append(f"parameters: {result['parameters'] / 1e6:.2f} M")
    if result.get("official_gmac_dummy") is not None:
        lines.append(f"official counter on test.py's dummy call (2 frames): {result['official_gmac_dummy']:.2f} GMac")
    return "\n".join(lines)


@torch.inference_mode()
def gttvos_flops(backbone: str = "hrnetv2Sv1", placement: str = "frame", size: Sequence[int] = (480, 854),
                 device: str = "meta") -> Dict:
    """GFLOPs of G-TTVOS per tracked frame and object (``torch.utils.flop_counter``): the parts, a computed
    frame (prefix + rest of the backbone + matching and gate + TTVOS's attention and decoder + state update) and
    a reused frame (prefix + matching and gate + reuse path), and their ratio; TTVOS's own frame for scale."""
    from models.gttvos import GTTVOS

    model = GTTVOS(backbone, placement=placement).eval().to(device)
    (height, width), image, mask, parts, count = _ttvos_inputs(size, device)
    feats = model.features(image)
    state = model.init_state(feats, mask)
    reuse = model.init_reuse(feats, mask, state)
    prefix = count("backbone_prefix", lambda: model.prefix(image))
    count("backbone_rest", lambda: model.complete(dict(prefix)))
    def match_and_gate():
        dissimilarity = model.match(feats, state, reuse)
        model.gate_logits(dissimilarity)
        return dissimilarity

    dissimilarity = count("matching_gate", match_and_gate)
    lt = dissimilarity if placement == "s16" else None
    out = count("compute_path", lambda: model(feats, state, lt=lt))
    count("state_update", lambda: model.update(feats, torch.softmax(out.logits, dim=1), state, out.update_weight))
    count("reuse_path", lambda: model.reuse(feats, reuse, dissimilarity))
    computed = sum(parts[k] for k in ("backbone_prefix", "backbone_rest", "matching_gate", "compute_path",
                                      "state_update"))
    reused = sum(parts[k] for k in ("backbone_prefix", "matching_gate", "reuse_path"))
    ttvos = parts["backbone_prefix"] + parts["backbone_rest"] + parts["compute_path"] + parts["state_update"]
    if placement == "s16":  # D is TTVOS's own template attention (in matching_gate), not in compute_path
        ttvos += parts["matching_gate"] - _gate_only(model, dissimilarity)
    return {"net": "gttvos", "backbone": backbone, "placement": placement, "size": [int(size[0]), int(size[1])],
            "padded": [height, width], "parts": parts, "computed_frame": computed, "reused_frame": reused,
            "reused_vs_computed": reused / computed, "ttvos_frame": ttvos}


def _gate_only(model, dissimilarity) -> float:
    with FlopCounterMode(display=False) as counter:
        model.gate_logits(dissimilarity)
    return counter.get_total_flops() / 1e9


def format_gttvos_flops(result: Dict[str, object]) -> str:
    parts: Dict[str, float] = result["parts"]  # type: ignore[assignment]
    lines = [f"G-TTVOS {result['backbone']}, placement {result['placement']}, at {result['size'][0]}x"
             f"{result['size'][1]} (padded to {result['padded'][0]}x{result['padded'][1]}), GFLOPs per frame and "
             "object (torch.utils.flop_counter):"]
    lines += [f"  {name:<22} {value:9.4f}" for name, value in parts.items()]
    lines.append(f"  {'computed frame':<22} {result['computed_frame']:9.4f}   (TTVOS's own frame: "
                 f"{result['ttvos_frame']:.4f})")
    lines.append(f"  {'reused frame':<22} {result['reused_frame']:9.4f}   (reused / computed = "
                 f"{result['reused_vs_computed']:.3f})")
    return "\n".join(lines)


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
    from models.ttvos_backbones import TTVOS_BACKBONES

    parser = argparse.ArgumentParser(description="GFLOPs of the G-FRTM full and reuse paths (one frame, one object), "
                                                 "of TTVOS (--net ttvos) or of G-TTVOS (--net gttvos)")
    parser.add_argument("--net", choices=("gfrtm", "ttvos", "gttvos"), default="gfrtm", help="base network")
    parser.add_argument("--backbone", choices=TTVOS_BACKBONES, default="hrnetv2Sv1",
                        help="--net ttvos / gttvos: its backbone")
    parser.add_argument("--placement", choices=("frame", "s16"), default="frame",
                        help="--net gttvos: where the reuse path attaches (docs/gttvos.md)")
    add_backbone_flags(parser, ftext_default="resnet18", pretrained_choices=())
    parser.add_argument("--size", type=int, nargs=2, default=[480, 854], metavar=("H", "W"))
    parser.add_argument("--c-channels", type=int, default=96, help="target-model width (evaluation: 96)")
    parser.add_argument("--device", default="meta",
                        help="where to count (meta: shapes only, no compute; the counts are the same anywhere)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if min(args.size) < 32:
        raise ConfigError(f"--size must be at least 32x32 (the backbone's stride), got {args.size[0]}x{args.size[1]}")
    if args.net == "gttvos":
        result = gttvos_flops(args.backbone, args.placement, args.size, args.device)
        print(json.dumps(result, indent=2) if args.json else format_gttvos_flops(result))
        return 0
    if args.net == "ttvos":
        device = "cpu" if args.device == "meta" else args.device  # the official counter needs real tensors
        result = ttvos_flops(args.backbone, args.size, device)
        print(json.dumps(result, indent=2) if args.json else format_ttvos_flops(result))
        return 0
    result = path_flops(args.ftext, args.size, args.c_channels, args.device)
    print(json.dumps(result, indent=2) if args.json else format_path_flops(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
