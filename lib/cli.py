"""Shared command-line plumbing: dataset-root flags, the --dev device and one-line user errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from lib.errors import ConfigError, ReuseVOSError
from models.backbone import BACKBONES


def add_dataset_root_flags(parser: argparse.ArgumentParser) -> None:
    """``--davis-root`` / ``--ytvos-root`` (defaults: the DAVIS_ROOT / YTVOS_ROOT variables)."""
    parser.add_argument("--davis-root", default=None, metavar="DIR",
                        help="DAVIS root (JPEGImages/, Annotations/, ImageSets/); default: $DAVIS_ROOT")
    parser.add_argument("--ytvos-root", default=None, metavar="DIR",
                        help="YouTube-VOS 2018 root (train/, valid/, ...); default: $YTVOS_ROOT")


def parse_sequence_list(value: Optional[str]) -> Optional[list]:
    """``a,b,c`` -> ['a', 'b', 'c']; None stays None."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--sequences needs at least one name")
    return names


SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "weights" / "gfrtm_rn18_dv2016_cpu.pth"


def add_model_flags(group, *, model_help: str) -> None:
    """The flags that say which networks run: ``--model``, ``--trust-checkpoint``, ``--ftext``,
    ``--pretrained`` and ``--size`` (read by :func:`lib.checkpoint.load_inference_model`)."""
    group.add_argument("--model", metavar="PATH", default=None, help=model_help)
    group.add_argument("--trust-checkpoint", action="store_true",
                       help="allow loading official training checkpoints that pickle Python objects "
                            "(only for files from a trusted source)")
    group.add_argument("--ftext", choices=BACKBONES, default=None,
                       help="backbone (default: detected from the checkpoint)")
    group.add_argument("--pretrained", default=None, metavar="embedded|imagenet|none|PATH",
                       help="backbone weights: the checkpoint's own (embedded; the default when it has them), "
                            "torchvision's ImageNet weights (TORCH_HOME cache, downloaded when online; the "
                            "default otherwise), random ('none', meaningless masks), or a torchvision-format "
                            "state dict file")
    group.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                       help="run the networks at H x W (frames resized, INTER_AREA); masks are written and scored "
                            "at the original size (probabilities upsampled, then labelled). Default: the size "
                            "the checkpoint records, else each frame at its own size, as the official code")


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
