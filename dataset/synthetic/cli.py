"""``python -m dataset.synthetic``: write a synthetic dataset from the command line."""

from __future__ import annotations

import argparse
import sys
from typing import Dict, Optional, Sequence

from base.errors import ReuseVOSError
from dataset.synthetic.writers import FORMATS, generate

# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dataset.synthetic",
        description="Write a deterministic synthetic video dataset in the DAVIS 2017 or YouTube-VOS 2018 "
                    "on-disk layout.")
    p.add_argument("--format", required=True, choices=FORMATS, help="on-disk layout to write")
    p.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(120, 216),
                   help="frame size (default 120 216)")
    p.add_argument("--num-videos", type=int, nargs="+", metavar="N",
                   help="videos per split: TRAIN [VAL] (one number: the same for both; default "
                        "davis2017 4 3, youtubevos 6 3)")
    p.add_argument("--frames", type=int, nargs=2, metavar=("MIN", "MAX"),
                   help="frames per video (default davis2017 24 40; youtubevos 30 50, all frames)")
    p.add_argument("--objects", type=int, nargs=2, metavar=("MIN", "MAX"),
                   help="objects per video (default 2 3; the first video of each split has one)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    header = [f"wrote a synthetic {args.format} dataset (seed {args.seed}, {args.size[0]}x{args.size[1]}) "
              f"to {args.out}:"]

    def log(line: str) -> None:
        while header:
            print(header.pop(), flush=True)
        print(f"  {line}", flush=True)

    kwargs: Dict[str, object] = {"seed": args.seed, "size": tuple(args.size), "overwrite": args.overwrite,
                                 "log": log}
    if args.num_videos is not None:
        if len(args.num_videos) > 2:
            print("error: --num-videos takes one or two numbers (TRAIN [VAL])", file=sys.stderr)
            return 2
        train = args.num_videos[0]
        val = args.num_videos[1] if len(args.num_videos) == 2 else train
        kwargs["num_train"] = train
        kwargs["num_val" if args.format == "davis2017" else "num_valid"] = val
    if args.frames is not None:
        kwargs["frames"] = tuple(args.frames)
    if args.objects is not None:
        kwargs["objects"] = tuple(args.objects)
    try:
        generate(args.format, args.out, **kwargs)
    except ReuseVOSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
