"""How well a frozen backbone's features separate the object: a first-frame linear probe on later frames.

FRTM's target model is a linear classifier fitted on the first frame's features. This probe is its simplest
stand-in: per sequence, a ridge classifier on the L2-normalised features of frame 0 (labels +-1 from the
mask, area-resized to the feature grid), applied to later frames and scored as IoU at the feature grid,
next to copying the first mask. It compares backbones (random, pre-trained by ``pretrain_backbone.py``,
ImageNet) in seconds, before any G-FRTM training::

    python -m benchmarks.backbone_probe --davis-root ../shared/data/davis2016-train \\
        --sequences bmx-bumps,drift-turn,hockey,stroller --backbone none runs/backbone/backbone.pth
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch

from base.errors import ConfigError
from lib.tools.cli import add_backbone_flags, parse_sequence_list, run_cli

LAYERS = {"layer3": "stride 8", "layer4": "stride 16"}


def _grid_labels(mask: np.ndarray, shape) -> np.ndarray:
    return cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA) > 0.5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@torch.no_grad()
def probe(backbone, sequences, size, frames=(10, 20, 30, 40), ridge: float = 1.0) -> Dict[str, float]:
    """Mean IoU over sequences and ``frames`` of the probe per layer, and of copying the first mask."""
    scores: Dict[str, List[float]] = {k: [] for k in LAYERS}
    scores["copy"] = []
    for seq in sequences:
        feats, masks = [], []
        for index in (0, *[f for f in frames if f < len(seq)]):
            frame = seq.image(index)
            image = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            label = seq.annotation(seq.frames[index], expected_size=frame.shape[:2])  # DAVIS 2016: merged, 0/1
            masks.append(cv2.resize((label > 0).astype(np.uint8), (size[1], size[0]),
                                    interpolation=cv2.INTER_NEAREST))
            out = backbone(torch.from_numpy(image).permute(2, 0, 1)[None].float())
            feats.append({k: torch.nn.functional.normalize(out[k][0], dim=0) for k in LAYERS})
        for layer in LAYERS:
            x0 = feats[0][layer]
            c, h, w = x0.shape
            y0 = torch.from_numpy(_grid_labels(masks[0], (h, w)).astype(np.float32) * 2 - 1).reshape(-1, 1)
            X = x0.reshape(c, -1).T.double()
            weights = torch.linalg.solve(X.T @ X + ridge * torch.eye(c, dtype=X.dtype), X.T @ y0.double())
            for f, m in zip(feats[1:], masks[1:]):
                pred = (f[layer].reshape(c, -1).T.double() @ weights).reshape(h, w).numpy() > 0
                scores[layer].append(_iou(pred, _grid_labels(m, (h, w))))
        grid = feats[0]["layer4"].shape[-2:]
        scores["copy"].extend(_iou(_grid_labels(masks[0], grid), _grid_labels(m, grid)) for m in masks[1:])
    return {k: float(np.mean(v)) for k, v in scores.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--davis-root", required=True, metavar="DIR")
    p.add_argument("--split", default="train", help="DAVIS 2016 split file the sequences are in")
    p.add_argument("--sequences", type=parse_sequence_list, required=True, metavar="A,B")
    p.add_argument("--backbone", nargs="+", default=["none"], metavar="none|imagenet|PATH",
                   help="backbones to compare (--pretrained values)")
    add_backbone_flags(p, ftext_default="resnet18", pretrained_choices=())
    p.add_argument("--size", type=int, nargs=2, default=(240, 432), metavar=("H", "W"))
    p.add_argument("--every", type=int, default=None, metavar="K",
                   help="probe every K-th frame after the first (default: frames 10, 20, 30, 40)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from dataset.davis import DAVISDataset
    from lib.tools.checkpoint import build_backbone

    args = build_parser().parse_args(argv)
    sequences = list(DAVISDataset(args.davis_root, year=2016, split=args.split, sequences=args.sequences))
    if args.every is not None and args.every < 1:
        raise ConfigError(f"--every must be >= 1, got {args.every}")
    frames = (10, 20, 30, 40) if args.every is None else tuple(range(args.every, max(len(s) for s in sequences),
                                                                        args.every))
    results = {}
    for weights in args.backbone:
        results[weights] = probe(build_backbone(args.ftext, weights), sequences, tuple(args.size), frames)
        row = results[weights]
        print(f"{weights}: layer3 (stride 8) {row['layer3']:.3f}, layer4 (stride 16) {row['layer4']:.3f}, "
              f"copy the first mask {row['copy']:.3f}", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
