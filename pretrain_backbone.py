"""Pre-train the ResNet backbone on a DAVIS 2016 train split as a foreground/background segmenter.

A stand-in for ImageNet pre-training where no ImageNet weights exist (see the README's model card)::

    python pretrain_backbone.py --davis-root DAVIS --out runs/backbone --steps 1200

The held-out sequences (default: ``dataset/splits/davis2016_train_holdout.txt``) are left out of training
and give a validation IoU. The ResNet is written as a torchvision-format state dict to
``<out>/backbone.pth`` (and a float16 copy, ``backbone_fp16.pth``); train G-FRTM on it with
``train.py --pretrained <out>/backbone.pth``. A run started again with the same ``--out`` resumes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from lib.tools.cli import add_backbone_flags, read_holdout, run_cli

DEFAULT_HOLDOUT = Path(__file__).resolve().parent / "dataset" / "splits" / "davis2016_train_holdout.txt"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--davis-root", required=True, metavar="DIR", help="DAVIS root with ImageSets/2016/train.txt")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (resumes when it has a state file)")
    p.add_argument("--holdout", default=str(DEFAULT_HOLDOUT), metavar="FILE|a,b|none",
                   help="train-split sequences left out for validation (default: the shipped list)")
    add_backbone_flags(p, ftext_default="resnet18", pretrained_choices=())
    p.add_argument("--size", type=int, nargs=2, default=(240, 432), metavar=("H", "W"), help="crop size")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=1200, help="optimiser steps in total")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (warm-up, cosine decay)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between resumable state files")
    p.add_argument("--val-every", type=int, default=200, help="steps between held-out IoU passes")
    p.add_argument("--source", choices=("davis", "duts", "mixed"), default="davis",
                   help="training images: DAVIS train frames (default), a saliency set's images (DUTS-TR), or "
                        "both with DAVIS objects pasted onto saliency images (--paste)")
    p.add_argument("--saliency-root", default=None, metavar="DIR",
                   help="saliency set (DUTS) for --source duts/mixed and the DUTS-TE validation "
                        "(default: $SALIENCY_ROOT when --source needs it)")
    p.add_argument("--paste", type=float, default=0.5, help="--source mixed: probability of a pasted DAVIS object")
    p.add_argument("--head", choices=("fpn", "linear"), default="fpn",
                   help="training head: a small feature pyramid (default, the shipped recipe) or one linear (1x1) "
                        "classifier per stage, strides 8-32 (FRTM's target model is linear)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from trainers.backbone_pretrain import PretrainConfig, run

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PretrainConfig(out=args.out, davis_root=args.davis_root, holdout=read_holdout(args.holdout),
                            ftext=args.ftext, size=tuple(args.size), batch_size=args.batch_size, steps=args.steps,
                            lr=args.lr, seed=args.seed, checkpoint_every=args.checkpoint_every,
                            val_every=args.val_every, source=args.source, paste=args.paste, head=args.head,
                            saliency_root=args.saliency_root or (os.environ.get("SALIENCY_ROOT")
                                                                 if args.source != "davis" else None))
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
