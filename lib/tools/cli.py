"""Shared command-line plumbing: the model, runtime and dataset-root flags, the device, and one-line user errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import torch

from base.errors import ConfigError, ReuseVOSError
from models.backbone import BACKBONES


def add_dataset_root_flags(parser: argparse.ArgumentParser) -> None:
    """``--davis-root`` / ``--ytvos-root`` (defaults: the DAVIS_ROOT / YTVOS_ROOT variables)."""
    parser.add_argument("--davis-root", default=None, metavar="DIR",
                        help="DAVIS root (JPEGImages/, Annotations/, ImageSets/); default: $DAVIS_ROOT")
    parser.add_argument("--ytvos-root", default=None, metavar="DIR",
                        help="YouTube-VOS 2018 root (train/, valid/, ...); default: $YTVOS_ROOT")


def _comma_list(text: str) -> Tuple[str, ...]:
    """``a, b,,c`` -> ('a', 'b', 'c'): the non-empty, stripped items of a comma-separated value."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def parse_sequence_list(value: Optional[str]) -> Optional[list]:
    """``a,b,c`` -> ['a', 'b', 'c']; None stays None."""
    if value is None:
        return None
    names = list(_comma_list(value))
    if not names:
        raise argparse.ArgumentTypeError("--sequences needs at least one name")
    return names


SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "weights" / "gfrtm_rn18_dv2016_cpu.pth"
SHIPPED_TTVOS = Path(__file__).resolve().parents[2] / "weights" / "ttvos_hrnet_dv2016_cpu.pth"
SHIPPED_GTTVOS = Path(__file__).resolve().parents[2] / "weights" / "gttvos_hrnet_dv2016_cpu.pth"


PRETRAINED_HELP = {
    "embedded": "the checkpoint's own (embedded; the default when it has them)",
    "imagenet": "torchvision's ImageNet weights (TORCH_HOME hub cache, downloaded when online)",
    "none": "random ('none': seeded torchvision init, meaningless masks unless trained on)",
    "PATH": "a torchvision-format ResNet state dict file",
}


def add_backbone_flags(group, *, ftext_default: Optional[str] = None, ftext_help: str = "backbone",
                       pretrained_default: Optional[str] = None, pretrained_choices: Sequence[str] = (
                           "embedded", "imagenet", "none", "PATH"), pretrained_note: str = "") -> None:
    """``--ftext`` (the backbone names of :data:`models.backbone.BACKBONES`) and, unless ``pretrained_choices`` is
    empty, ``--pretrained`` (read by :func:`lib.tools.checkpoint.build_backbone` / ``load_inference_model``)."""
    group.add_argument("--ftext", choices=BACKBONES, default=ftext_default, help=ftext_help)
    if pretrained_choices:
        parts = "; ".join(PRETRAINED_HELP[c] for c in pretrained_choices)
        group.add_argument("--pretrained", default=pretrained_default, metavar="|".join(pretrained_choices),
                           help=f"backbone weights: {parts}" + (f". {pretrained_note}" if pretrained_note else ""))


def add_model_flags(group, *, model_help: str) -> None:
    """The flags that say which networks run: ``--model``, ``--trust-checkpoint``, ``--ftext``,
    ``--pretrained`` and ``--size`` (read by :func:`load_model_from_args`)."""
    group.add_argument("--model", metavar="PATH", default=None, help=model_help)
    group.add_argument("--trust-checkpoint", action="store_true",
                       help="allow loading official training checkpoints that pickle Python objects "
                            "(only for files from a trusted source)")
    add_backbone_flags(group, ftext_help="backbone (default: detected from the checkpoint)",
                       pretrained_note="Default: embedded when the checkpoint has them, else imagenet")
    group.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                       help="run the networks at H x W (frames resized, INTER_AREA); masks are written and scored "
                            "at the original size (probabilities upsampled, then labelled). Default: the size "
                            "the checkpoint records, else each frame at its own size, as the official code")


def load_model_from_args(args: argparse.Namespace, device: torch.device,
                         log: Callable[[str], None] = print):
    """The :class:`lib.tools.checkpoint.InferenceModel` of :func:`add_model_flags`' flags; what was loaded (and the
    random-backbone warning) goes to ``log``."""
    from lib.tools.checkpoint import load_inference_model

    loaded = load_inference_model(args.model, trust=args.trust_checkpoint, ftext=args.ftext,
                                  pretrained=args.pretrained, size=args.size, device=device)
    for message in loaded.messages:
        log(message)
    if getattr(args, "amp", None) == "bf16" and device.type == "cpu":
        from lib.tools.cpu import bf16_is_native, cpu_report

        report = cpu_report()
        if not bf16_is_native(report):
            log(f"warning: --amp bf16 on a CPU without bf16 instructions ({report['summary']}) runs emulated, "
                "several times slower than float32 (5.6x for the shipped G-FRTM's frame, docs/performance.md); "
                "drop --amp here")
    return loaded


def add_device_flag(group, default: Optional[str] = None, note: str = "") -> None:
    """``--dev`` (read by :func:`resolve_device`)."""
    shown = default or "cuda:0 if available, else cpu"
    group.add_argument("--dev", default=default, help=f"device, e.g. cpu or cuda:0 (default: {shown})"
                                                      + (f"; {note}" if note else ""))


def add_runtime_flags(group, *, seed_help: str = "seed of target-model init and augmentation",
                      dev_default: Optional[str] = None, dev_help: str = "", amp: bool = True) -> None:
    """``--dev``, ``--amp``, ``--seed`` and ``--threads`` (see :func:`apply_threads`)."""
    add_device_flag(group, dev_default, dev_help)
    if amp:
        group.add_argument("--amp", choices=["bf16"], default=None, help="bf16 autocast for the networks")
    group.add_argument("--seed", type=int, default=0, help=seed_help)
    group.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def add_int8_flags(group) -> None:
    """``--int8-backbone`` and ``--int8-calibration DIR`` (:attr:`EngineConfig.int8_backbone`)."""
    group.add_argument("--int8-backbone", action="store_true",
                       help="run G-FRTM's frozen backbone in int8 (PyTorch's x86 post-training quantization, CPU "
                            "only; an approximation: docs/performance.md measures its J&F and speed)")
    group.add_argument("--int8-calibration", metavar="DIR", default=None,
                       help="frames to calibrate --int8-backbone on (every 4th is used; default: the bundled DAVIS "
                            "2016 train sequence rollerblade)")


def add_compile_flag(group) -> None:
    """``--compile PARTS`` -> ``args.compile`` (a tuple; empty: eager), for :attr:`EngineConfig.compile`."""
    group.add_argument("--compile", type=_comma_list, default=(), metavar="PARTS",
                       help="run backbone and/or refiner (comma-separated) through torch.compile (inductor); the "
                            "compilation time is reported apart (compile_seconds). Measured on a 2-core CPU: the "
                            "backbone 13%% faster after 8 s of compilation, the refiner slower")


def add_layout_flag(group) -> None:
    """``--channels-last`` / ``--no-channels-last`` -> ``args.channels_last`` (None: the base network's choice)."""
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="run the networks on NHWC (channels-last) tensors, or not (default: the base network's "
                            "faster layout as measured on a 2-core CPU: NCHW for G-FRTM, NHWC for TTVOS); results "
                            "agree up to float rounding")


def add_reuse_state_flag(group) -> None:
    """``--reuse-state keep|mask|full`` -> ``args.reuse_state`` (:attr:`EngineConfig.reuse_state`)."""
    group.add_argument("--reuse-state", choices=("keep", "mask", "full"), default=None,
                       help="G-TTVOS: what a reused frame does to the object's TTVOS state: keep (nothing, as "
                            "G-FRTM's target model), mask (its mask enters the mask history; the default, measured "
                            "the better) or full (TTVOS's whole update; placement s16 only); docs/gttvos.md")


def add_overlap_flag(group) -> None:
    """``--overlap-io`` / ``--no-overlap-io`` (None: :func:`base.background.spare_cpu_cores` decides)."""
    group.add_argument("--overlap-io", action=argparse.BooleanOptionalAction, default=None,
                       help="read frames ahead and write masks behind the networks in background threads (default: "
                            "on a GPU, or when the CPU has more cores than --threads; on a saturated CPU the threads "
                            "only move the I/O time into the networks' time)")


def apply_threads(threads: Optional[int]) -> None:
    """``--threads N``: torch's intra-op CPU threads (None leaves torch's default)."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def read_holdout(value: Optional[str]) -> tuple:
    """``--holdout``: ``none`` (or None), a comma-separated list, or a file with one sequence name per line."""
    if value is None or value == "none":
        return ()
    path = Path(value)
    if path.is_file():
        return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if "/" in value or value.endswith(".txt"):
        raise ConfigError(f"{value}: held-out sequence list not found")
    return tuple(parse_sequence_list(value))


def resolve_device(requested: Optional[str] = None) -> torch.device:
    """``--dev`` -> a device (None: ``cuda:0`` when CUDA is available, else ``cpu``).

    A string that is not a device, or a CUDA request on a machine without CUDA, is a :class:`ConfigError`.
    """
    if not requested:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"--dev {requested!r} is not a device (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--dev {requested}: CUDA is not available on this machine (use --dev cpu)")
    return device


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run ``main``; a :class:`ReuseVOSError` becomes one line on stderr and exit status 2."""
    try:
        return main(argv)
    except ReuseVOSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
