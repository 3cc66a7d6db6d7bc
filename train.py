"""Train G-FRTM (the reuse gate, template module, delta-generator and refiner on a frozen ResNet).

As the original README::

    python train.py --name RUN --ftext resnet18 --dset all --dev cuda:0 --m1 1.0 --m2 0

Several GPUs (or CPU processes) with torchrun; batch size is per process::

    torchrun --nproc_per_node=4 train.py --name RUN --dset all --dev cuda

A CPU run on generated data, no download needed::

    python train.py --name cpu-test --dset synthetic --dev cpu --size 240 432 --epochs 2

Checkpoints (every epoch), TensorBoard logs and the target-model cache go to ``runs/<name>/`` unless
``--checkpoints`` / ``--tensorboard`` / ``--tmcache`` say otherwise. A run started again with the same
``--name`` resumes from its newest valid checkpoint (``--no-resume`` starts over).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from dataset.registry import DATASET_ALIASES, TRAINING_DATASETS
from lib.tools.checkpoint import RANDOM_BACKBONE_WARNING
from lib.tools.cli import (
    add_backbone_flags,
    add_dataset_root_flags,
    add_runtime_flags,
    apply_threads,
    read_holdout,
    resolve_device,
    run_cli,
)
from trainers.config import DEFAULT_NAME, GATE_LOSSES, SAMPLINGS, TMCACHE_MODES, TrainConfig

DSETS = TRAINING_DATASETS + tuple(DATASET_ALIASES)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = parser.add_argument_group("run")
    run.add_argument("--name", default=DEFAULT_NAME, help="run name (folder names under runs/)")
    add_backbone_flags(run, ftext_default="resnet18", pretrained_default="imagenet",
                       pretrained_choices=("imagenet", "none", "PATH"), pretrained_note="Default: imagenet")
    run.add_argument("--initPth", "--init-pth", dest="init_pth", default="", metavar="PATH",
                     help="initialise from an FRTM (refiner) or G-FRTM checkpoint's matching weights")
    run.add_argument("--trust-checkpoint", action="store_true",
                     help="allow an official training checkpoint that pickles Python objects for --initPth")
    run.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                     help="continue from the newest valid checkpoint of this run (default: on)")
    add_runtime_flags(run, seed_help="seed of initialisation, sampling and target models",
                      dev_help="under torchrun a CUDA device becomes cuda:LOCAL_RANK")
    run.add_argument("--workers", type=int, default=4, help="data-loader worker processes")

    data = parser.add_argument_group("data")
    data.add_argument("--dset", default="all", choices=DSETS,
                      help="training data: DAVIS 2017 train, DAVIS 2016 train (objects merged), YouTube-VOS 2018 "
                           "jjtrain, DAVIS 2017 + YouTube-VOS (all), or generated videos")
    add_dataset_root_flags(data)
    data.add_argument("--synthetic-root", default=None, metavar="DIR",
                      help="where --dset synthetic generates/reads its videos (default runs/<name>/synthetic)")
    data.add_argument("--synthetic-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                      help="frame size the synthetic videos are generated at (default 240 432)")
    data.add_argument("--holdout", default=None, metavar="FILE|a,b|none",
                      help="DAVIS train sequences left out of training, kept for validation (a file with one "
                           "name per line, or a comma-separated list; e.g. dataset/splits/"
                           "davis2016_train_holdout.txt); default: none")
    data.add_argument("--split-list", default=None, metavar="FILE",
                      help="YouTube-VOS training video list (default: the shipped jjtrain list)")
    data.add_argument("--data-cache", default="", metavar="DIR",
                      help="object-visibility cache (default runs/<name>/datacache)")
    data.add_argument("--seq-len", type=int, default=6, help="frames per sample (1 init + N-1 tracked)")
    data.add_argument("--size", type=int, nargs=2, default=(480, 854), metavar=("H", "W"), help="training size")
    data.add_argument("--sampling", choices=SAMPLINGS, default=None,
                      help="temporal: ordered frames (default); official: the original's unordered frames "
                           "(default with --official-quirks)")

    optim = parser.add_argument_group("optimisation and losses")
    optim.add_argument("--epochs", type=int, default=260)
    optim.add_argument("--batch-size", type=int, default=8, help="samples per step (per process)")
    optim.add_argument("--lr", type=float, default=5e-4)
    optim.add_argument("--lr-step", type=int, default=127, metavar="EPOCHS",
                       help="StepLR: multiply the learning rate by --lr-gamma every EPOCHS epochs (default 127)")
    optim.add_argument("--lr-gamma", type=float, default=0.1, help="StepLR factor (default 0.1)")
    optim.add_argument("--max-iters-per-epoch", type=int, default=None, metavar="N",
                       help="cut every epoch after N iterations (smoke runs)")
    optim.add_argument("--m1", type=float, default=1.0, help="final margin m1 of the gate target (Eq. 4)")
    optim.add_argument("--m2", type=float, default=0.0, help="margin m2 on |P_gate - P_target| (Eq. 5)")
    optim.add_argument("--marginEp", "--margin-epochs", dest="margin_epochs", type=int, default=120,
                       help="ep_T: epoch at which the margin reaches m1")
    optim.add_argument("--gate-loss", choices=GATE_LOSSES, default="paper",
                       help="paper: gate probability loss; ngate: the Loss_Ngate ablation (needs --target-rate)")
    optim.add_argument("--target-rate", type=float, default=None, metavar="R",
                       help="wanted fraction of reuse decisions for --gate-loss ngate")
    optim.add_argument("--official-quirks", action="store_true",
                       help="reproduce the original code: no margin m, dead-zone gate loss on both softmax "
                            "channels, inverted deep-feature update, official sampling (unless --sampling)")

    paths = parser.add_argument_group("output folders (defaults under runs/<name>/)")
    paths.add_argument("--checkpoints", default="", metavar="DIR", help="checkpoints and config.json")
    paths.add_argument("--tensorboard", default="", metavar="DIR", help="TensorBoard event files")
    paths.add_argument("--tmcache", default="", metavar="DIR", help="first-frame target-model cache")
    paths.add_argument("--tmcache-mode", choices=TMCACHE_MODES, default="readwrite",
                       help="use the cache read-write, read-only, or not at all")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Flags -> validated :class:`TrainConfig` (defaults resolved)."""
    device = args.dev or str(resolve_device())
    sampling = args.sampling or ("official" if args.official_quirks else "temporal")
    return TrainConfig(
        name=args.name, ftext=args.ftext, dset=args.dset, device=device, init_pth=args.init_pth,
        trust_checkpoint=args.trust_checkpoint, margin_epochs=args.margin_epochs, m1=args.m1, m2=args.m2,
        epochs=args.epochs, batch_size=args.batch_size, seq_len=args.seq_len, size=tuple(args.size),
        sampling=sampling, official_quirks=args.official_quirks, gate_loss=args.gate_loss,
        target_rate=args.target_rate, pretrained=args.pretrained, checkpoints=args.checkpoints,
        tensorboard=args.tensorboard, tmcache=args.tmcache, tmcache_mode=args.tmcache_mode,
        davis_root=args.davis_root, ytvos_root=args.ytvos_root, synthetic_root=args.synthetic_root,
        synthetic_size=tuple(args.synthetic_size) if args.synthetic_size else None, split_list=args.split_list,
        holdout=read_holdout(args.holdout), data_cache=args.data_cache, resume=args.resume, amp=args.amp,
        workers=args.workers, seed=args.seed,
        lr=args.lr, lr_step=args.lr_step, lr_gamma=args.lr_gamma, max_iters_per_epoch=args.max_iters_per_epoch)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from trainers.distributed import cleanup_distributed, setup_distributed
    from trainers.loop import Trainer

    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    apply_threads(args.threads)
    ctx = setup_distributed(config.device)
    logging.basicConfig(level=logging.INFO if ctx.is_main else logging.WARNING, format="%(message)s",
                        stream=sys.stdout)
    try:
        if ctx.is_main:
            print(f"run {config.name}: checkpoints {config.checkpoints}, tensorboard {config.tensorboard}, "
                  f"target-model cache {config.tmcache} ({config.tmcache_mode})", flush=True)
            if config.pretrained == "none":
                print(RANDOM_BACKBONE_WARNING, flush=True)
        trainer = Trainer(config, ctx, log=lambda m: print(m, flush=True))
        trainer.fit()
    finally:
        cleanup_distributed(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
