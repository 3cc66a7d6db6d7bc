"""Train G-FRTM (the reuse gate, template module, delta-generator and refiner on a frozen ResNet).

As the original README::

    python train.py --name RUN --ftext resnet18 --dset all --dev cuda:0 --m1 1.0 --m2 0

Several GPUs (or CPU processes) with torchrun; batch size is per process::

    torchrun --nproc_per_node=4 train.py --name RUN --dset all --dev cuda

A CPU run on generated data, no download needed::

    python train.py --name cpu-test --dset synthetic --dev cpu --size 240 432 --epochs 2

The learned correction of the flow-warped reuse path (``--warp-refine learned``), on DAVIS 2016 train, no
backbone involved (about 15 minutes on 2 CPU cores)::

    python train.py --stage warp-corrector --name warp_corrector_dv2016 --dset dv2016 --davis-root DIR \
        --holdout dataset/splits/davis2016_train_holdout.txt --dev cpu

The learned tile gate of the sparse path (``--sparse-select learned``), from a G-FRTM model's own reuse-path
outputs (collected once, about 10 minutes on 2 CPU cores; the training itself takes seconds)::

    python train.py --stage tile-gate --name tile_gate_dv2016 --dset dv2016 --davis-root DIR \
        --holdout dataset/splits/davis2016_train_holdout.txt --model weights/gfrtm_rn18_dv2016_cpu.pth --dev cpu

G-TTVOS's reuse modules (gate, delta-generator, translator) on a trained TTVOS, which stays frozen::

    python train.py --stage gttvos --name gttvos_dv2016 --dset dv2016 --davis-root DIR \
        --holdout dataset/splits/davis2016_train_holdout.txt --initPth weights/ttvos_hrnet_dv2016_cpu.pth --dev cpu

TTVOS, the second base network, end to end on clips (saliency clips with thin-plate-spline deformations, then
DAVIS 2016 train from that stage's model; no pre-trained backbone is needed)::

    python train.py --stage ttvos --name ttvos_duts --dset duts --saliency-root DIR --seq-len 3 --dev cpu
    python train.py --stage ttvos --name ttvos_dv2016 --dset dv2016 --davis-root DIR \
        --holdout dataset/splits/davis2016_train_holdout.txt --initPth runs/ttvos_duts/ttvos.pth --dev cpu

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
from trainers.config import (
    DEFAULT_NAME,
    GATE_LOSSES,
    SAMPLINGS,
    TMCACHE_MODES,
    GTTVOSTrainConfig,
    TileGateTrainConfig,
    TrainConfig,
    TTVOSTrainConfig,
    WarpTrainConfig,
)

DSETS = TRAINING_DATASETS + tuple(DATASET_ALIASES)
STAGES = ("gfrtm", "warp-corrector", "tile-gate", "ttvos", "gttvos")
# Flags whose default depends on --stage (None: the stage has no such setting or takes it from elsewhere).
STAGE_DEFAULTS = {
    "name": {"gfrtm": DEFAULT_NAME, "warp-corrector": WarpTrainConfig.name, "tile-gate": TileGateTrainConfig.name,
             "ttvos": TTVOSTrainConfig.name, "gttvos": GTTVOSTrainConfig.name},
    "dset": {"gfrtm": "all", "warp-corrector": WarpTrainConfig.dset, "tile-gate": TileGateTrainConfig.dset,
             "ttvos": TTVOSTrainConfig.dset, "gttvos": GTTVOSTrainConfig.dset},
    "epochs": {"gfrtm": TrainConfig.epochs, "warp-corrector": WarpTrainConfig.epochs,
               "tile-gate": TileGateTrainConfig.epochs, "ttvos": TTVOSTrainConfig.epochs,
               "gttvos": GTTVOSTrainConfig.epochs},
    "batch_size": {"gfrtm": TrainConfig.batch_size, "warp-corrector": WarpTrainConfig.batch_size,
                   "tile-gate": TileGateTrainConfig.batch_size, "ttvos": TTVOSTrainConfig.batch_size,
                   "gttvos": GTTVOSTrainConfig.batch_size},
    "lr": {"gfrtm": TrainConfig.lr, "warp-corrector": WarpTrainConfig.lr, "tile-gate": TileGateTrainConfig.lr,
           "ttvos": TTVOSTrainConfig.lr, "gttvos": GTTVOSTrainConfig.lr},
    "lr_step": {"gfrtm": TrainConfig.lr_step, "warp-corrector": WarpTrainConfig.lr_step, "tile-gate": None,
                "ttvos": TTVOSTrainConfig.lr_step, "gttvos": GTTVOSTrainConfig.lr_step},
    "size": {"gfrtm": TrainConfig.size, "warp-corrector": WarpTrainConfig.size, "tile-gate": None,
             "ttvos": TTVOSTrainConfig.size, "gttvos": GTTVOSTrainConfig.size},
    "workers": {"gfrtm": TrainConfig.workers, "warp-corrector": WarpTrainConfig.workers, "tile-gate": None,
                "ttvos": TTVOSTrainConfig.workers, "gttvos": GTTVOSTrainConfig.workers},
}
# Flags of one stage only: giving them to another is an error.
STAGE_ONLY = {
    "gfrtm": ("ftext", "pretrained", "ytvos_root", "train_only", "backbone_lr", "synthetic_size", "split_list",
              "sampling", "gate_loss", "target_rate", "tmcache", "tmcache_mode"),
    "warp-corrector": ("max_distance", "samples_per_epoch", "corrector_width"),
    "tile-gate": ("model", "sparse_tile", "sparsity_target", "sparsity_weight"),
    "ttvos": ("train_backbone", "diff_loss", "tmp_loss"),
    "gttvos": ("placement", "reuse_weight"),
}
# Flags of several stages (and of no other).
STAGES_OF = {("gfrtm", "ttvos", "gttvos"): ("init_pth", "trust_checkpoint", "synthetic_root", "saliency_root",
                                            "clips_per_epoch", "data_cache", "seq_len", "official_quirks"),
             ("ttvos", "gttvos"): ("ttvos_backbone", "tps"),
             ("gfrtm", "gttvos"): ("m1", "m2", "margin_epochs")}
# Common flags a stage has no use for.
STAGE_WITHOUT = {"tile-gate": ("lr_step", "lr_gamma", "max_iters_per_epoch", "workers", "amp")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = parser.add_argument_group("run")
    run.add_argument("--stage", choices=STAGES, default="gfrtm",
                     help="what to train: gfrtm (the network, default), warp-corrector (the learned correction "
                          "of the warp path, --warp-refine learned), tile-gate (the learned tile gate of the "
                          "sparse path, --sparse-select learned), ttvos (TTVOS) or gttvos (G-TTVOS's reuse modules "
                          "on a trained TTVOS)")
    run.add_argument("--name", default=None,
                     help=f"run name (folder names under runs/; default {DEFAULT_NAME}, with --stage warp-corrector "
                          f"{WarpTrainConfig.name}, tile-gate {TileGateTrainConfig.name})")
    add_backbone_flags(run, ftext_default="resnet18", pretrained_default="imagenet",
                       pretrained_choices=("imagenet", "none", "PATH"), pretrained_note="Default: imagenet")
    run.add_argument("--initPth", "--init-pth", dest="init_pth", default="", metavar="PATH",
                     help="initialise from an FRTM (refiner) or G-FRTM checkpoint's matching weights")
    run.add_argument("--train-only", default=None, metavar="A,B",
                     help="train only these parameter groups (convGS: the gate, Tmatching, Convert_Diff, refiner); "
                          "the others stay frozen in eval mode, e.g. --initPth MODEL --train-only convGS for a "
                          "gate-only fine-tune (default: all)")
    run.add_argument("--backbone-lr", type=float, default=None, metavar="LR",
                     help="fine-tune the backbone's weights at this learning rate with the G-FRTM losses (its "
                          "BatchNorm statistics stay frozen; target models are then fitted per sample, without the "
                          "cache; checkpoints carry the backbone). Default 0: frozen, as the paper")
    run.add_argument("--trust-checkpoint", action="store_true",
                     help="allow an official training checkpoint that pickles Python objects for --initPth")
    run.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                     help="continue from the newest valid checkpoint of this run (default: on)")
    add_runtime_flags(run, seed_help="seed of initialisation, sampling and target models",
                      dev_help="under torchrun a CUDA device becomes cuda:LOCAL_RANK")
    run.add_argument("--workers", type=int, default=None,
                     help="data-loader worker processes (default 4; warp-corrector 2)")

    data = parser.add_argument_group("data")
    data.add_argument("--dset", default=None, choices=DSETS,
                      help="training data: DAVIS 2017 train, DAVIS 2016 train (objects merged), YouTube-VOS 2018 "
                           "jjtrain, DAVIS 2017 + YouTube-VOS (all, the default), generated videos (synthetic), or "
                           "synthetic clips of saliency images (duts, the paper's 'Syn' stage; --saliency-root); "
                           "warp-corrector: dv2016 (default) or dv2017")
    add_dataset_root_flags(data)
    data.add_argument("--synthetic-root", default=None, metavar="DIR",
                      help="where --dset synthetic generates/reads its videos (default runs/<name>/synthetic)")
    data.add_argument("--saliency-root", default=None, metavar="DIR",
                      help="--dset duts: a saliency set (DUTS: DUTS-TR/DUTS-TR-Image + DUTS-TR-Mask; ECSSD, HKU-IS, "
                           "MSRA10K layouts too) turned into synthetic clips (default: $SALIENCY_ROOT)")
    data.add_argument("--clips-per-epoch", type=int, default=None,
                      help=f"--dset duts: synthetic clips per epoch (default {TrainConfig.clips_per_epoch})")
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
    data.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                      help="training size (default 480 854; warp-corrector 240 432, the shipped model's size; "
                           "tile-gate: the size --model records)")
    data.add_argument("--sampling", choices=SAMPLINGS, default=None,
                      help="temporal: ordered frames (default); official: the original's unordered frames "
                           "(default with --official-quirks)")

    optim = parser.add_argument_group("optimisation and losses")
    optim.add_argument("--epochs", type=int, default=None,
                       help="last epoch (default 260; warp-corrector 10; tile-gate 40)")
    optim.add_argument("--batch-size", type=int, default=None,
                       help="samples per step (per process; default 8; tile-gate: 64 object-frames)")
    optim.add_argument("--lr", type=float, default=None,
                       help="Adam learning rate (default 5e-4; warp-corrector 2e-3; tile-gate 1e-2)")
    optim.add_argument("--lr-step", type=int, default=None, metavar="EPOCHS",
                       help="StepLR: multiply the learning rate by --lr-gamma every EPOCHS epochs (default 127; "
                            "warp-corrector 7)")
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

    warp = parser.add_argument_group("--stage warp-corrector")
    warp.add_argument("--max-distance", type=int, default=None, metavar="D",
                      help=f"key-to-frame distances 1..D (default {WarpTrainConfig.max_distance})")
    warp.add_argument("--samples-per-epoch", type=int, default=None, metavar="N",
                      help=f"(key, frame) pairs per epoch (default {WarpTrainConfig.samples_per_epoch})")
    warp.add_argument("--corrector-width", type=int, default=None, metavar="C",
                      help=f"channels of the corrector's CNN (default {WarpTrainConfig.width})")

    ttvos = parser.add_argument_group("--stage ttvos (also: --initPth a TTVOS checkpoint, --dset dv2016|dv2017|duts|"
                                      "synthetic, --seq-len, --saliency-root, --clips-per-epoch, --official-quirks)")
    ttvos.add_argument("--ttvos-backbone", default=None, metavar="NAME",
                       help="TTVOS backbone: hrnetv2Sv1 (default), resnet18s16, resnet50s16, mobileNetV3Larges16")
    ttvos.add_argument("--train-backbone", choices=("all", "finetune"), default=None,
                       help="all: every backbone layer trains (default: no pre-trained backbone exists here); "
                            "finetune: only its last stage, as the official training")
    ttvos.add_argument("--tps", type=float, default=None,
                       help=f"--dset duts: thin-plate-spline deformation of the clips (default {TTVOSTrainConfig.tps})")
    ttvos.add_argument("--diff-loss", action=argparse.BooleanOptionalAction, default=None,
                       help="the temporal-consistency loss (default on)")
    ttvos.add_argument("--tmp-loss", action=argparse.BooleanOptionalAction, default=None,
                       help="the template loss (default on)")

    gttvos = parser.add_argument_group("--stage gttvos (also: --initPth the trained TTVOS, required; --ttvos-backbone, "
                                       "--m1, --m2, --marginEp, --official-quirks and the data flags of --stage ttvos)")
    gttvos.add_argument("--placement", default=None, choices=("frame", "s16"),
                        help="what a reused frame skips: frame (all but the backbone's stem; default) or s16 (the "
                             "decoder's /16 path), docs/gttvos.md")
    gttvos.add_argument("--reuse-weight", type=float, default=None, metavar="W",
                        help="weight of the reuse path's own segmentation loss on every frame (default "
                             f"{GTTVOSTrainConfig.reuse_weight}; 0: the paper's terms alone)")

    tiles = parser.add_argument_group("--stage tile-gate")
    tiles.add_argument("--model", default=None, metavar="PATH",
                       help="the G-FRTM model whose reuse path the gate serves (default: the shipped "
                            "weights/gfrtm_rn18_dv2016_cpu.pth)")
    tiles.add_argument("--sparse-tile", type=int, default=None, metavar="PX",
                       help=f"tile side in pixels (default {TileGateTrainConfig.tile})")
    tiles.add_argument("--sparsity-target", type=float, default=None, metavar="T",
                       help=f"SpVOS's sparse target: the wanted fraction of computed tiles "
                            f"(default {TileGateTrainConfig.target})")
    tiles.add_argument("--sparsity-weight", type=float, default=None, metavar="W",
                       help=f"weight of the sparsity loss (default {TileGateTrainConfig.sparsity_weight})")

    paths = parser.add_argument_group("output folders (defaults under runs/<name>/)")
    paths.add_argument("--checkpoints", default="", metavar="DIR", help="checkpoints and config.json")
    paths.add_argument("--tensorboard", default="", metavar="DIR", help="TensorBoard event files")
    paths.add_argument("--tmcache", default="", metavar="DIR", help="first-frame target-model cache")
    paths.add_argument("--tmcache-mode", choices=TMCACHE_MODES, default="readwrite",
                       help="use the cache read-write, read-only, or not at all")
    return parser


def _resolve_stage_defaults(args: argparse.Namespace) -> None:
    """Fill the flags whose default depends on --stage; refuse the flags the stage has no use for (ConfigError)."""
    from base.errors import ConfigError

    defaults = build_parser().parse_args([])
    foreign = [n for stage, names in STAGE_ONLY.items() if stage != args.stage for n in names]
    foreign += STAGE_WITHOUT.get(args.stage, ())
    foreign += [n for stages, names in STAGES_OF.items() if args.stage not in stages for n in names]
    given = [name for name in foreign if getattr(args, name) != getattr(defaults, name)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigError(f"{flags}: not a flag of --stage {args.stage}")
    for name, values in STAGE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, values[args.stage])


def warp_config_from_args(args: argparse.Namespace) -> WarpTrainConfig:
    """Flags of ``--stage warp-corrector`` -> validated :class:`WarpTrainConfig`."""
    _resolve_stage_defaults(args)
    optional = {k: v for k, v in (("max_distance", args.max_distance), ("samples_per_epoch", args.samples_per_epoch),
                                  ("width", args.corrector_width)) if v is not None}
    return WarpTrainConfig(
        name=args.name, dset=DATASET_ALIASES.get(args.dset, args.dset), device=args.dev or str(resolve_device()),
        davis_root=args.davis_root, holdout=read_holdout(args.holdout), size=tuple(args.size), epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, lr_step=args.lr_step, lr_gamma=args.lr_gamma,
        max_iters_per_epoch=args.max_iters_per_epoch, checkpoints=args.checkpoints, tensorboard=args.tensorboard,
        resume=args.resume, amp=args.amp, workers=args.workers, seed=args.seed, **optional)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Flags -> validated :class:`TrainConfig` (defaults resolved)."""
    if args.stage != "gfrtm":
        raise ValueError("config_from_args is the G-FRTM stage's; use warp_config_from_args")
    _resolve_stage_defaults(args)
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
        saliency_root=args.saliency_root, train_only=tuple(t for t in (args.train_only or "").split(",") if t),
        backbone_lr=args.backbone_lr or 0.0, clips_per_epoch=args.clips_per_epoch or TrainConfig.clips_per_epoch,
        synthetic_size=tuple(args.synthetic_size) if args.synthetic_size else None, split_list=args.split_list,
        holdout=read_holdout(args.holdout), data_cache=args.data_cache, resume=args.resume, amp=args.amp,
        workers=args.workers, seed=args.seed,
        lr=args.lr, lr_step=args.lr_step, lr_gamma=args.lr_gamma, max_iters_per_epoch=args.max_iters_per_epoch)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from trainers.distributed import cleanup_distributed, setup_distributed
    from trainers.loop import Trainer

    args = build_parser().parse_args(argv)
    if args.stage != "gfrtm":
        return train_small_module(args)
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


def tile_config_from_args(args: argparse.Namespace) -> TileGateTrainConfig:
    """Flags of ``--stage tile-gate`` -> validated :class:`TileGateTrainConfig`."""
    _resolve_stage_defaults(args)
    optional = {k: v for k, v in (("tile", args.sparse_tile), ("target", args.sparsity_target),
                                  ("sparsity_weight", args.sparsity_weight)) if v is not None}
    return TileGateTrainConfig(
        name=args.name, dset=DATASET_ALIASES.get(args.dset, args.dset), device=args.dev or str(resolve_device()),
        davis_root=args.davis_root, holdout=read_holdout(args.holdout), model=args.model,
        size=tuple(args.size) if args.size else None, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        checkpoints=args.checkpoints, tensorboard=args.tensorboard, resume=args.resume, seed=args.seed, **optional)


def _clip_stage_settings(args: argparse.Namespace, **optional) -> dict:
    """The settings ``--stage ttvos`` and ``--stage gttvos`` share (defaults resolved), plus the ``optional`` ones
    that were given (None: the config's default)."""
    _resolve_stage_defaults(args)
    optional.update(backbone=args.ttvos_backbone, tps=args.tps, clips_per_epoch=args.clips_per_epoch)
    return dict(
        name=args.name, dset=DATASET_ALIASES.get(args.dset, args.dset), device=args.dev or str(resolve_device()),
        init_pth=args.init_pth, trust_checkpoint=args.trust_checkpoint, official_quirks=args.official_quirks,
        seq_len=args.seq_len, size=tuple(args.size), holdout=read_holdout(args.holdout), davis_root=args.davis_root,
        saliency_root=args.saliency_root, synthetic_root=args.synthetic_root, data_cache=args.data_cache,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_step=args.lr_step, lr_gamma=args.lr_gamma,
        max_iters_per_epoch=args.max_iters_per_epoch, checkpoints=args.checkpoints, tensorboard=args.tensorboard,
        resume=args.resume, amp=args.amp, workers=args.workers, seed=args.seed,
        **{k: v for k, v in optional.items() if v is not None})


def ttvos_config_from_args(args: argparse.Namespace) -> TTVOSTrainConfig:
    """Flags of ``--stage ttvos`` -> validated :class:`TTVOSTrainConfig`."""
    return TTVOSTrainConfig(**_clip_stage_settings(args, train_backbone=args.train_backbone,
                                                   diff_loss=args.diff_loss, tmp_loss=args.tmp_loss))


def gttvos_config_from_args(args: argparse.Namespace) -> GTTVOSTrainConfig:
    """Flags of ``--stage gttvos`` -> validated :class:`GTTVOSTrainConfig`."""
    return GTTVOSTrainConfig(m1=args.m1, m2=args.m2, margin_epochs=args.margin_epochs,
                             **_clip_stage_settings(args, placement=args.placement, reuse_weight=args.reuse_weight))


def train_small_module(args: argparse.Namespace) -> int:
    """``--stage warp-corrector`` / ``tile-gate`` / ``ttvos`` / ``gttvos``: one process (torchrun is not needed)."""
    if args.stage == "gttvos":
        from trainers.gttvos import GTTVOSTrainer as trainer_class

        config = gttvos_config_from_args(args)
        what = f"G-TTVOS reuse modules ({config.placement}) on {config.init_pth}"
    elif args.stage == "ttvos":
        from trainers.ttvos import TTVOSTrainer as trainer_class

        config, what = ttvos_config_from_args(args), f"TTVOS ({args.ttvos_backbone or 'hrnetv2Sv1'})"
    elif args.stage == "warp-corrector":
        from trainers.warp import WarpTrainer as trainer_class

        config, what = warp_config_from_args(args), "warp corrector"
    else:
        from trainers.tile_gate import TileGateTrainer as trainer_class

        config, what = tile_config_from_args(args), "tile gate"
    apply_threads(args.threads)
    print(f"run {config.name}: {what}, checkpoints {config.checkpoints}, tensorboard {config.tensorboard}", flush=True)
    trainer_class(config, log=lambda m: print(m, flush=True)).fit()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
