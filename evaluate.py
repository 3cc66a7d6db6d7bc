"""Evaluate semi-supervised VOS predictions.

Scoring mode (any method's existing predictions, no model)::

    python evaluate.py --score PRED_DIR --dset dv2016val --davis-root ROOT [--sequences a,b]

reads ``PRED_DIR/<sequence>/<frame>.png`` (palette PNGs of object ids), scores them with the official
DAVIS protocol, prints a table and writes ``summary.json`` into PRED_DIR (or ``--out DIR``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from dataset.registry import EVAL_DATASETS, SCORED_DATASETS, open_eval_dataset
from lib.cli import add_dataset_root_flags, parse_sequence_list, run_cli
from lib.errors import ConfigError
from lib.summary import score_run, write_summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dset", default="dv2016val", choices=list(EVAL_DATASETS), help="dataset to evaluate on")
    add_dataset_root_flags(parser)
    parser.add_argument("--sequences", type=parse_sequence_list, default=None, metavar="A,B",
                        help="only these sequences of the dataset")
    parser.add_argument("--score", metavar="PRED_DIR", default=None,
                        help="score existing predictions PRED_DIR/<seq>/<frame>.png; no model is run")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="folder for summary.json (default: the prediction folder)")
    parser.add_argument("--workers", type=int, default=1, help="processes used for scoring")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.score is None:
        raise ConfigError("nothing to do: pass --score PRED_DIR (running the model comes with --model)")
    if args.dset not in SCORED_DATASETS:
        raise ConfigError(f"{args.dset} has no public ground truth; scoring works on {', '.join(SCORED_DATASETS)}")
    pred_dir = Path(args.score)
    if not pred_dir.is_dir():
        raise ConfigError(f"prediction folder not found: {pred_dir}")
    dataset = open_eval_dataset(args.dset, args.davis_root, args.ytvos_root, args.sequences)
    run, table = score_run(list(dataset), pred_dir, tau=None, workers=args.workers)
    print(table)
    out_dir = Path(args.out) if args.out else pred_dir
    path = write_summary(out_dir / "summary.json", args.dset, [run])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
