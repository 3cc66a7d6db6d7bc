"""Training of the learned tile gate of the sparse path: ``train.py --stage tile-gate``.

What a tile decision changes is known exactly once a model has run: on a reuse-path frame, a computed tile
gets the dense shallow stages' output there, a reused tile keeps the previous frame's output. So the data are
collected once from the G-FRTM model the gate serves: every DAVIS train sequence is tracked on the reuse path
(``gate`` with tau = -1: the paper's reuse path, shallow stages dense), and per frame and tile are stored the
gate's inputs (:func:`lib.engine.sparse.tile_features`) and the mean per-pixel BCE against the ground truth of
the frame's own output (``dense``) and of an older output (``reuse``). A reused tile keeps its maps until it is
computed again, so it may be several frames old: each frame is paired with each of the 1..4 frames before it,
the features then measure the change since that frame (as the sparse path measures it against the image each
tile's maps came from) and the reuse loss is that frame's output's. The collection is cached in
``runs/<name>/tiles_<train|val>.pt``.

Training follows SpVOS: soft decisions by Gumbel-Softmax sampling (two choices: temperature 1), the
segmentation loss of the mixed output, here per tile ``g dense + (1 - g) reuse`` (normalised by the mean reuse
loss), plus the sparsity loss ``weight (mean g - target)^2`` that holds the computed fraction at the target
(one decision per tile for all shallow stages, so SpVOS's layer-wise and global losses coincide). Each epoch
validates on the held-out sequences with hard decisions (compute iff logit > 0): the computed fraction, the
share of the possible loss reduction it captures, and the same for the training-free change rule (mean
grey-level change > 0.02 or the mask boundary) and for an oracle that computes the same number of tiles with
the largest true gains.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import cv2
import torch
import torch.nn.functional as F
from torch import Tensor

from base.errors import ConfigError
from base.io import atomic_path, atomic_write_json
from dataset.davis import DAVISDataset
from dataset.registry import resolve_root
from dataset.sequence import VideoSequence
from lib.engine.core import EngineConfig, InferenceEngine
from lib.engine.policies import PolicyConfig
from lib.engine.sparse import check_size, tile_features, tile_means
from lib.tools.checkpoint import load_inference_model, load_tile_gate, save_tile_gate
from models.tile_gate import NUM_FEATURES, TileGate, gumbel_sigmoid
from trainers.checkpointing import resume_module, to_cpu
from trainers.config import TileGateTrainConfig

CHANGE_THRESHOLD = 0.02  # the training-free rule's default (--sparse-threshold)
MAX_AGE = 4  # reused tiles of 1..MAX_AGE frames are simulated
DATA_VERSION = 2


def tile_bce(logits: Tensor, target: Tensor, tile: int) -> Tensor:
    """Mean per-pixel binary cross-entropy of ``logits`` (1, 1, H, W) against ``target`` (H, W) in each tile:
    (1, 1, rows, cols)."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float()[None, None], reduction="none")
    return tile_means(bce, tile)


def collect_sequence(engine: InferenceEngine, seq: VideoSequence, tile: int,
                     max_age: int = MAX_AGE) -> Dict[str, List[Tensor]]:
    """Track ``seq`` on the reuse path and gather, per (object, frame) and per age d = 1..``max_age`` of a reused
    tile (frames since it was computed), the tile features against the frame d back and the dense / reuse losses,
    the reuse loss being that of the output d frames back (see the module docstring)."""
    session = engine.new_session(PolicyConfig("gate", -1.0), name=seq.name)
    out: Dict[str, List[Tensor]] = {"features": [], "dense": [], "reuse": []}
    history: List[tuple] = []  # (network-size image, probs, logits) of the last max_age tracked frames
    for index in range(len(seq)):
        image = seq.image(index)
        new = {obj: seq.start_mask(obj) for obj in seq.objects_starting_at(index)}
        result = session.step(image, new or None).result
        net_image = engine.frame_tensor(engine.resize_to_network(image, cv2.INTER_AREA))
        frame = seq.frames[index]
        if history and result is not None and seq.has_annotation(frame):
            gt = torch.from_numpy(engine.resize_to_network(seq.annotation(frame), cv2.INTER_NEAREST))
            for obj, logits in result.logits.items():
                target = (gt == obj).to(logits.device)
                dense = tile_bce(logits, target, tile)[0].cpu()
                for old_image, old_probs, old_logits in reversed(history):
                    if obj not in old_logits:
                        break
                    out["features"].append(tile_features(net_image, old_image, old_probs[obj], tile)[0].cpu())
                    out["dense"].append(dense)
                    out["reuse"].append(tile_bce(old_logits[obj], target, tile)[0].cpu())
        if result is not None and result.logits:
            history = (history + [(net_image, dict(result.probs), dict(result.logits))])[-max_age:]
    return out


def collect(engine: InferenceEngine, sequences: List[VideoSequence], tile: int, path: Path, meta: dict,
            log: Callable[[str], None]) -> Dict[str, Tensor]:
    """The data of ``sequences`` (stacked tensors), read from ``path`` when it was collected with the same
    ``meta``, else collected and written there (atomically)."""
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached.get("meta") == meta:
            return cached
        log(f"{path}: collected with other settings, collecting again")
    from tqdm import tqdm

    start = time.perf_counter()
    parts: Dict[str, List[Tensor]] = {"features": [], "dense": [], "reuse": []}
    for seq in tqdm(sequences, desc=f"collecting {path.stem}", unit="seq", leave=False, file=sys.stderr,
                    mininterval=0.5 if sys.stderr.isatty() else 30.0):
        for key, values in collect_sequence(engine, seq, tile).items():
            parts[key].extend(values)
    if not parts["features"]:
        data = {"features": torch.zeros(0, NUM_FEATURES, 1, 1), "dense": torch.zeros(0, 1, 1, 1),
                "reuse": torch.zeros(0, 1, 1, 1)}
    else:
        data = {k: torch.stack(v) for k, v in parts.items()}
    data["meta"] = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    log(f"collected {len(parts['features'])} object-frames of {len(sequences)} sequences in "
        f"{time.perf_counter() - start:.0f} s -> {path}")
    return data


def change_rule(features: Tensor, threshold: float = CHANGE_THRESHOLD) -> Tensor:
    """The training-free decision from the same features: mean change > threshold, or the previous mask's
    boundary in the tile (some but not all of it foreground)."""
    fg = features[:, 3:4]
    return (features[:, 0:1] > threshold) | ((fg > 0) & (fg < 1))


def decision_stats(active: Tensor, dense: Tensor, reuse: Tensor) -> Dict[str, float]:
    """Computed fraction, share of the possible loss reduction captured, and the mixed loss, of hard decisions."""
    gain = reuse - dense
    possible = gain.clamp(min=0).sum()
    captured = (gain * active).sum() / possible if possible > 0 else torch.tensor(1.0)
    mixed = torch.where(active, dense, reuse).mean()
    return {"fraction": float(active.float().mean()), "captured": float(captured), "loss": float(mixed)}


def oracle(dense: Tensor, reuse: Tensor, fraction: float) -> Tensor:
    """The ``fraction`` of tiles (per object-frame) with the largest true gain."""
    gain = (reuse - dense).flatten(1)
    k = max(0, min(gain.shape[1], round(fraction * gain.shape[1])))
    active = torch.zeros_like(gain, dtype=torch.bool)
    if k:
        active.scatter_(1, gain.topk(k, dim=1).indices, True)
    return active.view_as(dense)


@torch.no_grad()
def validate(gate: TileGate, data: Dict[str, Tensor]) -> Dict[str, float]:
    """Learned, change-rule and oracle decisions on ``data`` (see the module docstring)."""
    if len(data["features"]) == 0:
        return {}
    was = gate.training
    gate.eval()
    learned = gate(data["features"]) > 0
    gate.train(was)
    stats = {}
    for name, active in (("learned", learned), ("change", change_rule(data["features"]))):
        stats.update({f"{name}_{k}": v for k, v in decision_stats(active, data["dense"], data["reuse"]).items()})
    best = oracle(data["dense"], data["reuse"], stats["learned_fraction"])
    stats.update({f"oracle_{k}": v for k, v in decision_stats(best, data["dense"], data["reuse"]).items()})
    stats["all_loss"], stats["none_loss"] = float(data["dense"].mean()), float(data["reuse"].mean())
    return stats


def gate_loss(logits: Tensor, dense: Tensor, reuse: Tensor, target: float, weight: float, norm: float,
              generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
    """SpVOS's objective on tiles: the mixed segmentation loss of Gumbel-sampled soft decisions (divided by
    ``norm``) + ``weight`` (mean decision - ``target``)^2."""
    g = gumbel_sigmoid(logits, 1.0, generator)
    seg = (g * dense + (1 - g) * reuse).mean() / norm
    sparsity = (g.mean() - target) ** 2
    return {"loss": seg + weight * sparsity, "seg": seg, "sparsity": sparsity, "fraction": g.mean()}


class TileGateTrainer:
    """Collects the data (or reads its cache), builds the gate and its optimiser (and resumes); :meth:`fit`."""

    def __init__(self, config: TileGateTrainConfig, log: Callable[[str], None] = print):
        from lib.tools.cli import SHIPPED_MODEL

        self.config = config
        self.log = log
        device = torch.device(config.device)
        model_path = config.model or str(SHIPPED_MODEL)
        loaded = load_inference_model(model_path, size=config.size, device=device)
        size = loaded.size
        if size is None:
            raise ConfigError(f"{model_path}: the model records no inference size: pass --size H W")
        check_size(size, config.tile)
        engine = InferenceEngine(loaded.model, loaded.backbone, EngineConfig(size=size, seed=config.seed), device,
                                 count_flops=False)
        reader = DAVISDataset(resolve_root(config.davis_root, "DAVIS_ROOT", "DAVIS"),
                              year=2016 if config.dset == "dv2016" else 2017, split="train")
        kept, held = reader.split_holdout(config.holdout)
        meta = {"version": DATA_VERSION, "model": str(Path(model_path).resolve()), "size": list(size),
                "tile": config.tile, "seed": config.seed, "dset": config.dset}
        self.train_data = collect(engine, [reader.sequence(n) for n in kept], config.tile,
                                  config.run_dir / "tiles_train.pt", {**meta, "sequences": kept}, log)
        self.val_data = collect(engine, [reader.sequence(n) for n in held], config.tile,
                                config.run_dir / "tiles_val.pt", {**meta, "sequences": held}, log)
        if len(self.train_data["features"]) == 0:
            raise ConfigError("no training object-frames: the training sequences need 3 or more frames")
        torch.manual_seed(config.seed)
        self.gate = TileGate(width=config.width, tile=config.tile)
        self.optimizer = torch.optim.Adam(self.gate.parameters(), lr=config.lr)
        self.start_epoch = 1
        if config.resume:
            self.start_epoch += resume_module(config.checkpoints, config.name, self.gate, self.optimizer, log=log)

    def fit(self) -> Dict[str, float]:
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.config
        Path(cfg.checkpoints).mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg.config_path, cfg.to_dict())
        data = self.train_data
        n = len(data["features"])
        norm = float(data["reuse"].mean()) or 1.0
        self.log(f"tile gate: {n} training object-frames, {len(self.val_data['features'])} held out, "
                 f"{tuple(data['features'].shape[-2:])} tiles of {cfg.tile} px, target {cfg.target}")
        stats: Dict[str, float] = {}
        if self.start_epoch > cfg.epochs:
            self.log(f"nothing to do: epoch {self.start_epoch - 1} of {cfg.epochs} already finished")
            return stats
        writer = SummaryWriter(cfg.tensorboard)
        try:
            for epoch in range(self.start_epoch, cfg.epochs + 1):
                generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
                order = torch.randperm(n, generator=generator)
                sums = {"loss": 0.0, "seg": 0.0, "sparsity": 0.0, "fraction": 0.0}
                steps = 0
                self.gate.train()
                for start in range(0, n, cfg.batch_size):
                    idx = order[start:start + cfg.batch_size]
                    parts = gate_loss(self.gate(data["features"][idx]), data["dense"][idx], data["reuse"][idx],
                                      cfg.target, cfg.sparsity_weight, norm, generator)
                    self.optimizer.zero_grad(set_to_none=True)
                    parts["loss"].backward()
                    self.optimizer.step()
                    steps += 1
                    for k in sums:
                        sums[k] += float(parts[k].detach())
                stats = {k: v / steps for k, v in sums.items()}
                stats.update(validate(self.gate, self.val_data))
                save_tile_gate(cfg.checkpoint_path(epoch), self.gate, name=cfg.name, epoch=epoch,
                               optimizer=to_cpu(self.optimizer.state_dict()), scheduler={}, config=cfg.to_dict(),
                               stats=stats)
                for key, value in stats.items():
                    writer.add_scalar(("train/" if key in sums else "val/") + key, value, epoch)
                line = (f"epoch {epoch}/{cfg.epochs}: loss {stats['loss']:.4f} (seg {stats['seg']:.4f}, sparsity "
                        f"{stats['sparsity']:.5f}), soft fraction {stats['fraction']:.3f}")
                if "learned_fraction" in stats:
                    line += (f"; held out: learned computes {stats['learned_fraction']:.3f} of the tiles and captures "
                             f"{stats['learned_captured']:.3f} of the gain (oracle {stats['oracle_captured']:.3f}; "
                             f"change rule {stats['change_fraction']:.3f} / {stats['change_captured']:.3f})")
                self.log(line)
        finally:
            writer.close()
        save_tile_gate(cfg.weights_path, self.gate, name=cfg.name, epoch=cfg.epochs, config=cfg.to_dict(),
                       stats=stats)
        load_tile_gate(cfg.weights_path)
        self.log(f"weights: {cfg.weights_path} (--sparse-select learned --tile-gate {cfg.weights_path})")
        return stats
