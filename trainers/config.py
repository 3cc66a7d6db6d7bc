"""Typed training configuration: resolved once from the command line, validated, saved as JSON.

Configuration flows one way: ``train.py`` flags -> :class:`TrainConfig` -> the trainer's constructors.
Paths left empty on the command line are resolved here to their defaults under ``./runs/<name>/``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from base.errors import ConfigError
from dataset.registry import DATASET_ALIASES, TRAINING_DATASETS
from models.backbone import BACKBONES

DEFAULT_NAME = "All_RN18_m1000_b8seq6"
GATE_LOSSES = ("paper", "ngate")
SAMPLINGS = ("temporal", "official")
TMCACHE_MODES = ("readwrite", "readonly", "off")


def need(ok: bool, message: str) -> None:
    """A :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def check_gate_margins(m1: float, m2: float, margin_epochs: int) -> None:
    """The paper's gate-loss margins (Eq. 4-5) and schedule, as --m1 / --m2 / --marginEp give them."""
    need(0.0 <= m1 <= 1.0, f"--m1 must be in [0, 1], got {m1}")
    need(0.0 <= m2 <= 1.0, f"--m2 must be in [0, 1], got {m2}")
    need(margin_epochs >= 0, f"--marginEp must be >= 0, got {margin_epochs}")


def check_run_name(name: str) -> None:
    need(bool(name) and "/" not in name and name not in (".", ".."),
         f"--name {name!r}: a run name must be a non-empty folder name without '/'")


class RunFolders:
    """The folders and files of a run named ``name`` whose checkpoints go to ``checkpoints`` (a mixin of the
    frozen config dataclasses); :meth:`_default_folders` fills empty folder fields with ``runs/<name>/<field>``."""

    name: str
    checkpoints: str

    def _default_folders(self, *fields: str) -> None:
        for attr in fields:
            if not getattr(self, attr):
                object.__setattr__(self, attr, str(self.run_dir / attr))

    @property
    def run_dir(self) -> Path:
        return Path("runs") / self.name

    def checkpoint_path(self, epoch: int) -> Path:
        """``<checkpoints>/<name>_ep%04d.pth``."""
        return Path(self.checkpoints) / f"{self.name}_ep{epoch:04d}.pth"

    @property
    def config_path(self) -> Path:
        return Path(self.checkpoints) / "config.json"

    def _check_loop(self) -> None:
        """The training loop's settings, for configs that have them all: epochs, batch size, learning rate and its
        StepLR, the per-epoch iteration cut, autocast and data-loader workers."""
        need(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        need(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(self.lr_step >= 1 and 0 < self.lr_gamma <= 1, "lr_step must be >= 1 and 0 < lr_gamma <= 1")
        need(self.max_iters_per_epoch is None or self.max_iters_per_epoch >= 1,
             f"--max-iters-per-epoch must be >= 1, got {self.max_iters_per_epoch}")
        need(self.amp in (None, "bf16"), f"--amp must be bf16 or absent, got {self.amp!r}")
        need(self.workers >= 0, f"--workers must be >= 0, got {self.workers}")

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able dict: every tuple (size, holdout, ...) as a list."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class TrainConfig(RunFolders):
    """Everything a training run depends on (saved next to the checkpoints as ``config.json``).

    Attributes:
        name: run name; default folders are ``runs/<name>/{checkpoints,tensorboard,tmcache,datacache}``.
        ftext: backbone, ``resnet18`` or ``resnet101``.
        dset: training data, ``dv2017``, ``dv2016``, ``ytvos2018``, ``all`` or ``synthetic``.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun each rank uses ``cuda:LOCAL_RANK``).
        init_pth: FRTM or G-FRTM checkpoint whose matching weights initialise the model ("" for none).
        trust_checkpoint: allow official training checkpoints that pickle Python objects for ``init_pth``.
        margin_epochs: ep_T, the epoch at which the margin m = m1 * min(epoch / ep_T, 1) reaches m1.
        m1: final margin of the gate-probability target (paper Eq. 4).
        m2: margin on |P_gate - P_target| (paper Eq. 5).
        epochs: last epoch (epochs are numbered from 1).
        batch_size: samples per optimiser step (per process under torchrun).
        seq_len: frames per sample (1 initialisation frame + seq_len - 1 tracked frames).
        size: (H, W) training resolution.
        sampling: ``temporal`` (ordered frames) or ``official`` (the original's unordered frames).
        official_quirks: reproduce the original code's loss and deep-feature update (see README).
        gate_loss: ``paper`` (gate probability loss) or ``ngate`` (the Table 2 Loss_Ngate ablation).
        target_rate: R of ``ngate``: the wanted fraction of reuse decisions.
        pretrained: backbone weights, ``imagenet``, ``none`` or a torchvision state-dict file.
        checkpoints, tensorboard, tmcache: folders.
        tmcache_mode: ``readwrite``, ``readonly`` or ``off``.
        davis_root, ytvos_root, synthetic_root: dataset roots (None: the environment / default).
        saliency_root: the saliency set of ``--dset duts`` (None: ``$SALIENCY_ROOT``).
        clips_per_epoch: synthetic clips per epoch of ``--dset duts``.
        train_only: train just these parameter groups (``convGS`` the gate, ``Tmatching``, ``Convert_Diff``,
            ``refiner``), the others frozen in eval mode (e.g. a gate-only fine-tune of a trained model); () all.
        backbone_lr: 0 (the paper's frozen backbone, the default) or the learning rate at which the backbone's
            weights are fine-tuned with the G-FRTM losses (its BatchNorm statistics stay frozen; the first-frame
            target models are then fitted on the current backbone for every sample, without the cache).
        synthetic_size: (H, W) the synthetic videos are generated at (None: the generator's default).
        split_list: YouTube-VOS training video list (None: the shipped jjtrain list).
        holdout: DAVIS train sequences left out of training (validation).
        data_cache: folder for the training set's object-visibility cache.
        resume: continue from the newest valid checkpoint in ``checkpoints``.
        amp: None or ``bf16`` (autocast for the networks; losses in float32).
        workers: data-loader worker processes.
        seed: seeds the model initialisation, the sampling order and the target-model initialisations.
        lr: Adam learning rate of every parameter group.
        lr_step: StepLR step size in epochs; lr_gamma: its factor.
        max_iters_per_epoch: stop each epoch after this many iterations (smoke runs); None: full epochs.
    """

    name: str = DEFAULT_NAME
    ftext: str = "resnet18"
    dset: str = "all"
    device: str = "cpu"
    init_pth: str = ""
    trust_checkpoint: bool = False
    margin_epochs: int = 120
    m1: float = 1.0
    m2: float = 0.0
    epochs: int = 260
    batch_size: int = 8
    seq_len: int = 6
    size: Tuple[int, int] = (480, 854)
    sampling: str = "temporal"
    official_quirks: bool = False
    gate_loss: str = "paper"
    target_rate: Optional[float] = None
    pretrained: str = "imagenet"
    checkpoints: str = ""
    tensorboard: str = ""
    tmcache: str = ""
    tmcache_mode: str = "readwrite"
    davis_root: Optional[str] = None
    ytvos_root: Optional[str] = None
    synthetic_root: Optional[str] = None
    synthetic_size: Optional[Tuple[int, int]] = None
    saliency_root: Optional[str] = None
    clips_per_epoch: int = 2000
    train_only: Tuple[str, ...] = ()
    backbone_lr: float = 0.0
    split_list: Optional[str] = None
    holdout: Tuple[str, ...] = ()
    data_cache: str = ""
    resume: bool = True
    amp: Optional[str] = None
    workers: int = 4
    seed: int = 0
    lr: float = 5e-4
    lr_step: int = 127
    lr_gamma: float = 0.1
    max_iters_per_epoch: Optional[int] = None

    def __post_init__(self):
        run_dir = Path("runs") / self.name
        object.__setattr__(self, "dset", DATASET_ALIASES.get(self.dset, self.dset))
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "train_only", tuple(str(s) for s in self.train_only))
        if self.train_only:
            from trainers.loop import WEIGHT_DECAY  # the optimiser's parameter groups

            unknown = [g for g in self.train_only if g not in WEIGHT_DECAY]
            if unknown:
                raise ConfigError(f"--train-only {','.join(unknown)}: choose from {', '.join(WEIGHT_DECAY)}")
        object.__setattr__(self, "holdout", tuple(str(s) for s in self.holdout))
        if self.synthetic_size is not None:
            object.__setattr__(self, "synthetic_size", tuple(int(s) for s in self.synthetic_size))
        for attr, default in (("checkpoints", run_dir / "checkpoints"), ("tensorboard", run_dir / "tensorboard"),
                              ("tmcache", run_dir / "tmcache"), ("data_cache", run_dir / "datacache")):
            if not getattr(self, attr):
                object.__setattr__(self, attr, str(default))
        if self.dset == "synthetic" and not self.synthetic_root:
            object.__setattr__(self, "synthetic_root", str(run_dir / "synthetic"))
        self._validate()

    def _validate(self) -> None:
        check_run_name(self.name)
        need(self.ftext in BACKBONES, f"--ftext {self.ftext!r}: choose one of {', '.join(BACKBONES)}")
        need(self.dset in TRAINING_DATASETS,
             f"--dset {self.dset!r}: choose one of {', '.join(TRAINING_DATASETS + tuple(DATASET_ALIASES))}")
        need(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        need(self.seq_len >= 2, f"--seq-len must be >= 2 (one initialisation frame + tracked frames), "
                                f"got {self.seq_len}")
        need(len(self.size) == 2 and min(self.size) >= 32, f"--size H W must both be >= 32, got {self.size}")
        deepest = math.ceil(self.size[0] / 32) * math.ceil(self.size[1] / 32)
        need(self.batch_size * deepest >= 2,
             f"--size {self.size[0]} {self.size[1]} with --batch-size {self.batch_size}: the stride-32 refiner stage "
             "would be 1x1 with one sample, and its BatchNorm (train mode) needs at least 2 values per channel; "
             "use a larger size or batch")
        need(self.synthetic_size is None or (len(self.synthetic_size) == 2 and min(self.synthetic_size) >= 16),
             f"--synthetic-size H W must both be >= 16, got {self.synthetic_size}")
        need(self.sampling in SAMPLINGS, f"--sampling {self.sampling!r}: choose one of {', '.join(SAMPLINGS)}")
        need(self.gate_loss in GATE_LOSSES, f"--gate-loss {self.gate_loss!r}: choose one of {', '.join(GATE_LOSSES)}")
        if self.gate_loss == "ngate":
            need(self.target_rate is not None and 0.0 <= self.target_rate <= 1.0,
                 f"--gate-loss ngate needs --target-rate R with 0 <= R <= 1, got {self.target_rate}")
        else:
            need(self.target_rate is None, "--target-rate only applies to --gate-loss ngate")
        check_gate_margins(self.m1, self.m2, self.margin_epochs)
        need(self.backbone_lr >= 0.0, f"--backbone-lr must be >= 0, got {self.backbone_lr}")
        need(not (self.backbone_lr > 0 and self.train_only),
             "--backbone-lr fine-tunes the backbone with every module; it does not combine with --train-only")
        need(self.tmcache_mode in TMCACHE_MODES, f"--tmcache-mode {self.tmcache_mode!r}: choose one of "
                                                 f"{', '.join(TMCACHE_MODES)}")
        need(self.amp in (None, "bf16"), f"--amp must be bf16 or absent, got {self.amp!r}")
        need(self.workers >= 0, f"--workers must be >= 0, got {self.workers}")
        need(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(self.lr_step >= 1 and 0 < self.lr_gamma <= 1, "lr_step must be >= 1 and 0 < lr_gamma <= 1")
        need(self.max_iters_per_epoch is None or self.max_iters_per_epoch >= 1,
             f"--max-iters-per-epoch must be >= 1, got {self.max_iters_per_epoch}")

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training config keys: {', '.join(unknown)}")
        return cls(**values)

    def differences(self, other: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
        """Keys whose value differs from a saved :meth:`to_dict` (``{key: (saved, now)}``)."""
        mine = self.to_dict()
        return {k: (other.get(k), v) for k, v in mine.items() if other.get(k) != v}


WARP_DATASETS = ("dv2016", "dv2017")


@dataclass(frozen=True)
class WarpTrainConfig(RunFolders):
    """A ``train.py --stage warp-corrector`` run (saved next to its checkpoints as ``config.json``).

    The warp corrector (:class:`models.warp_corrector.WarpCorrector`) learns to correct a key frame's mask
    warped by DIS optical flow to a frame ``1..max_distance`` frames away, on DAVIS train sequences; no
    backbone is involved.

    Attributes:
        name: run name; default folders ``runs/<name>/{checkpoints,tensorboard}``.
        dset: ``dv2016`` (objects merged) or ``dv2017`` (one object per sample).
        device, seed, workers, resume, amp: as :class:`TrainConfig`'s.
        davis_root: DAVIS root (None: ``$DAVIS_ROOT``).
        holdout: train sequences left out of training; the per-epoch validation runs on them.
        size: (H, W) frames are resized to (the inference size of the model the corrector serves).
        max_distance: key-to-frame distances are drawn from 1..max_distance (both directions in time).
        samples_per_epoch: training pairs per epoch.
        epochs, batch_size, lr, lr_step, lr_gamma, max_iters_per_epoch: as :class:`TrainConfig`'s (Adam).
        width: channels of the corrector's CNN.
        checkpoints, tensorboard: folders.
    """

    name: str = "warp_corrector_dv2016"
    dset: str = "dv2016"
    device: str = "cpu"
    davis_root: Optional[str] = None
    holdout: Tuple[str, ...] = ()
    size: Tuple[int, int] = (240, 432)
    max_distance: int = 4
    samples_per_epoch: int = 2048
    epochs: int = 10
    batch_size: int = 8
    lr: float = 2e-3
    lr_step: int = 7
    lr_gamma: float = 0.1
    max_iters_per_epoch: Optional[int] = None
    width: int = 24
    checkpoints: str = ""
    tensorboard: str = ""
    resume: bool = True
    amp: Optional[str] = None
    workers: int = 2
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "holdout", tuple(str(s) for s in self.holdout))
        self._default_folders("checkpoints", "tensorboard")
        self._validate()

    def _validate(self) -> None:
        check_run_name(self.name)
        need(self.dset in WARP_DATASETS, f"--stage warp-corrector trains on DAVIS: --dset must be one of "
                                         f"{', '.join(WARP_DATASETS)}, got {self.dset!r}")
        need(len(self.size) == 2 and min(self.size) >= 16, f"--size H W must both be >= 16, got {self.size}")
        need(self.max_distance >= 1, f"--max-distance must be >= 1, got {self.max_distance}")
        need(self.samples_per_epoch >= 1, f"--samples-per-epoch must be >= 1, got {self.samples_per_epoch}")
        need(self.width >= 1, f"--corrector-width must be >= 1, got {self.width}")
        self._check_loop()

    @property
    def weights_path(self) -> Path:
        """The final weights file (no optimiser state), what ``--warp-corrector`` takes."""
        return self.run_dir / "warp_corrector.pth"


@dataclass(frozen=True)
class TileGateTrainConfig(RunFolders):
    """A ``train.py --stage tile-gate`` run (saved next to its checkpoints as ``config.json``).

    The learned tile gate of the sparse path (:class:`models.tile_gate.TileGate`) learns, per tile of a
    reuse-path frame, whether recomputing the shallow stages there is worth it, from a G-FRTM model's own
    outputs on DAVIS train sequences (collected once, cached), with SpVOS's sparsity loss.

    Attributes:
        name: run name; default folders ``runs/<name>/{checkpoints,tensorboard}``; collected data in
            ``runs/<name>/tiles_<split>.pt``.
        dset: ``dv2016`` or ``dv2017``; davis_root, holdout: as :class:`WarpTrainConfig`'s.
        model: the G-FRTM model file whose reuse path the gate serves (None: the shipped model).
        size: (H, W) the model runs at (None: the size the model file records).
        tile: tile side in pixels (a multiple of 8; the sparse path's ``--sparse-tile``).
        target: the sparsity target t_s: the wanted fraction of computed tiles.
        sparsity_weight: weight of the sparsity loss (target - computed fraction)^2.
        epochs, batch_size (frames per step), lr, seed, device, width, checkpoints, tensorboard, resume.
    """

    name: str = "tile_gate_dv2016"
    dset: str = "dv2016"
    device: str = "cpu"
    davis_root: Optional[str] = None
    holdout: Tuple[str, ...] = ()
    model: Optional[str] = None
    size: Optional[Tuple[int, int]] = None
    tile: int = 64
    target: float = 0.15
    sparsity_weight: float = 4.0
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-2
    width: int = 16
    checkpoints: str = ""
    tensorboard: str = ""
    resume: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.size is not None:
            object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "holdout", tuple(str(s) for s in self.holdout))
        self._default_folders("checkpoints", "tensorboard")
        check_run_name(self.name)
        need(self.dset in WARP_DATASETS, f"--stage tile-gate trains on DAVIS: --dset must be one of "
                                         f"{', '.join(WARP_DATASETS)}, got {self.dset!r}")
        need(self.size is None or (len(self.size) == 2 and all(s % 8 == 0 and s >= 8 for s in self.size)),
             f"--size H W must be multiples of 8 (the sparse path's tiling), got {self.size}")
        need(self.tile >= 8 and self.tile % 8 == 0, f"--sparse-tile must be a positive multiple of 8, got {self.tile}")
        need(0 < self.target < 1, f"--sparsity-target must be in (0, 1), got {self.target}")
        need(self.sparsity_weight >= 0, f"--sparsity-weight must be >= 0, got {self.sparsity_weight}")
        need(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        need(self.lr > 0, f"--lr must be > 0, got {self.lr}")

    @property
    def weights_path(self) -> Path:
        """The final weights file, what ``--tile-gate`` takes."""
        return self.run_dir / "tile_gate.pth"



TTVOS_DATASETS = ("dv2016", "dv2017", "duts", "synthetic")
TRAIN_BACKBONE = ("all", "finetune")


@dataclass(frozen=True)
class TTVOSTrainConfig(RunFolders):
    """A ``train.py --stage ttvos`` run (saved next to its checkpoints as ``config.json``).

    TTVOS (:class:`models.ttvos.TTVOS`) trains end to end on clips (the official stages: saliency clips, then
    DAVIS; no YouTube-VOS here), with the official losses (:mod:`trainers.ttvos_recurrent`).

    Attributes:
        name: run name; default folders ``runs/<name>/{checkpoints,tensorboard,datacache}``.
        backbone: the TTVOS backbone (``hrnetv2Sv1`` default; :data:`models.ttvos_backbones.TTVOS_BACKBONES`).
        dset: ``dv2016`` / ``dv2017`` (DAVIS train), ``duts`` (saliency clips, ``--saliency-root``), ``synthetic``.
        init_pth: a TTVOS checkpoint to start from (the previous stage's; official or project format).
        trust_checkpoint: allow an official checkpoint that pickles objects for ``init_pth``.
        train_backbone: ``all`` (every layer; the default here, where no ImageNet/HRNet weights exist) or
            ``finetune`` (the official: only the last stage, the rest frozen in eval mode).
        tps: the saliency clips' thin-plate-spline deformation (TTVOS's ``--use_tps``; 0: affine only).
        diff_loss, tmp_loss: the auxiliary losses; official_quirks: the temporal loss's official softmax.
        seq_len, size, holdout, davis_root, saliency_root, synthetic_root, clips_per_epoch, data_cache: the data.
        epochs, batch_size, lr (Adam, no weight decay), lr_step, lr_gamma, max_iters_per_epoch, device, seed,
        workers, resume, amp, checkpoints, tensorboard: as :class:`TrainConfig`'s.
    """

    name: str = "ttvos_dv2016"
    backbone: str = "hrnetv2Sv1"
    dset: str = "dv2016"
    device: str = "cpu"
    init_pth: str = ""
    trust_checkpoint: bool = False
    train_backbone: str = "all"
    tps: float = 0.1
    diff_loss: bool = True
    tmp_loss: bool = True
    official_quirks: bool = False
    seq_len: int = 6
    size: Tuple[int, int] = (240, 432)
    holdout: Tuple[str, ...] = ()
    davis_root: Optional[str] = None
    saliency_root: Optional[str] = None
    synthetic_root: Optional[str] = None
    clips_per_epoch: int = 2000
    data_cache: str = ""
    epochs: int = 20
    batch_size: int = 4
    lr: float = 3e-4
    lr_step: int = 15
    lr_gamma: float = 0.1
    max_iters_per_epoch: Optional[int] = None
    checkpoints: str = ""
    tensorboard: str = ""
    resume: bool = True
    amp: Optional[str] = None
    workers: int = 2
    seed: int = 0

    def __post_init__(self):
        from models.ttvos_backbones import TTVOS_BACKBONES

        object.__setattr__(self, "dset", DATASET_ALIASES.get(self.dset, self.dset))
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "holdout", tuple(str(s) for s in self.holdout))
        self._default_folders("checkpoints", "tensorboard", "data_cache")
        if self.dset == "synthetic" and not self.synthetic_root:
            object.__setattr__(self, "synthetic_root", str(self.run_dir / "synthetic"))
        check_run_name(self.name)
        need(self.backbone in TTVOS_BACKBONES, f"--ttvos-backbone {self.backbone!r}: choose one of "
                                                f"{', '.join(TTVOS_BACKBONES)}")
        need(self.dset in TTVOS_DATASETS, f"--stage ttvos trains on {', '.join(TTVOS_DATASETS)}; got {self.dset!r}")
        need(self.train_backbone in TRAIN_BACKBONE, f"--train-backbone must be one of {', '.join(TRAIN_BACKBONE)}")
        need(0.0 <= self.tps <= 0.5, f"--tps must be in [0, 0.5], got {self.tps}")
        need(self.seq_len >= 2, f"--seq-len must be >= 2, got {self.seq_len}")
        need(len(self.size) == 2 and all(s >= 32 and s % 16 == 0 for s in self.size),
             f"--size H W must be multiples of 16 (TTVOS's stride), at least 32; got {self.size}")
        need(self.clips_per_epoch >= 1, f"--clips-per-epoch must be >= 1, got {self.clips_per_epoch}")
        self._check_loop()

    @property
    def weights_path(self) -> Path:
        """The final model file (weights, backbone name and size; no optimiser state): ``--model`` takes it."""
        return self.run_dir / "ttvos.pth"


@dataclass(frozen=True)
class GTTVOSTrainConfig(TTVOSTrainConfig):
    """A ``train.py --stage gttvos`` run: G-TTVOS's reuse modules (:class:`models.gttvos.GTTVOS`) trained on a
    trained TTVOS, which stays frozen (:mod:`trainers.gttvos_recurrent`).

    Attributes (beyond :class:`TTVOSTrainConfig`'s; ``train_backbone``, ``diff_loss``, ``tmp_loss`` do not apply):
        init_pth: the trained TTVOS (or a G-TTVOS file of the same placement, to go on training it); required.
        placement: ``frame`` or ``s16`` (:data:`models.gttvos.PLACEMENTS`).
        m1, m2, margin_epochs: the gate loss's margins and schedule (paper Eq. 4-5), as G-FRTM's.
        reuse_weight: weight of the reuse path's own segmentation loss (0: the paper's terms alone).
    """

    name: str = "gttvos_dv2016"
    placement: str = "frame"
    m1: float = 1.0
    m2: float = 0.0
    margin_epochs: int = 120
    reuse_weight: float = 1.0
    lr: float = 1e-3
    epochs: int = 10

    def __post_init__(self):
        super().__post_init__()
        from models.gttvos import PLACEMENTS

        need(bool(self.init_pth), "--stage gttvos needs --initPth: the trained TTVOS whose reuse modules it trains")
        need(self.placement in PLACEMENTS, f"--placement {self.placement!r}: choose one of {', '.join(PLACEMENTS)}")
        check_gate_margins(self.m1, self.m2, self.margin_epochs)
        need(self.reuse_weight >= 0, f"--reuse-weight must be >= 0, got {self.reuse_weight}")

    @property
    def weights_path(self) -> Path:
        """The final model file (TTVOS and the reuse modules, the size; no optimiser state): ``--model`` takes it."""
        return self.run_dir / "gttvos.pth"
