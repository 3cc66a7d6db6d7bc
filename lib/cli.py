"""Shared command-line plumbing: dataset-root flags, the --dev device and one-line user errors."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

import torch

from lib.errors import ConfigError, ReuseVOSError


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
