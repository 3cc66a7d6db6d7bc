"""A learned per-tile gate for the sparse path (SpVOS's gate, one decision per tile instead of per pixel).

SpVOS decides per pixel, with a small convolution on the fused features and Gumbel-Softmax sampling, whether a
location is computed or reuses the previous frame's value, and trains the decisions with a sparsity loss that
holds the computed fraction at a target. :class:`TileGate` makes the same decision for the tiles of the
``sparse`` path: from a few cheap per-tile measurements of the frame and the object's previous mask
(:func:`lib.engine.sparse.tile_features`) a small CNN over the tile grid (so that a tile sees its
neighbours) gives one logit per tile: compute (> 0) or reuse.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor, nn

NUM_FEATURES = 5


class TileGate(nn.Module):
    """Per-tile compute/reuse logits.

    Args:
        width: channels of the hidden layers.
        tile: the tile side in pixels of the network input the gate was trained for (kept with the weights).

    Shapes: ``forward(features (B, NUM_FEATURES, rows, cols))`` -> logits (B, 1, rows, cols); > 0: compute.
    """

    def __init__(self, width: int = 16, tile: int = 32):
        super().__init__()
        self.width, self.tile = width, tile
        self.net = nn.Sequential(
            nn.Conv2d(NUM_FEATURES, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, 1, 1),
        )

    def config(self) -> Dict[str, int]:
        return {"width": self.width, "tile": self.tile}

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)


def gumbel_sigmoid(logits: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """SpVOS's Gumbel-Softmax sampling for two choices: sigmoid((logits + logistic noise) / temperature), the
    soft decision (a sample of compute vs reuse whose gradient reaches the logits)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype).clamp(1e-6, 1 - 1e-6)
    return torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)
