"""Multi-object merging by soft aggregation (FRTM's, used unchanged by G-FRTM).

For N object probability maps p_k: clamp to [1e-7, 1 - 1e-7]; background p_0 = min_k (1 - p_k);
scores = softmax over the N+1 channels of the odds p / (1 - p); label = argmax; the merged mask of
channel k keeps its score where the label is k and is 0 elsewhere. With one object, the label is the
object iff its probability exceeds 0.5.
"""

from __future__ import annotations

from typing import Tuple

import torch

EPS = 1e-7


def soft_aggregate(probs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merge per-object probabilities.

    Args:
        probs: (N, H, W) object probabilities in [0, 1], N >= 1.

    Returns:
        labels: (H, W) int64, 0 = background, k = channel k (object k of the input order, 1-based).
        masks: (N + 1, H, W) merged soft masks; channel 0 is the background.
    """
    p = probs.clamp(EPS, 1 - EPS)
    background = (1 - p).min(dim=0, keepdim=True).values
    p = torch.cat([background, p], dim=0)
    scores = torch.softmax(p / (1 - p), dim=0)
    labels = scores.max(dim=0).indices  # = argmax (first maximum), several times faster over dim 0 on CPU
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(0, labels.unsqueeze(0), True)
    return labels, scores * keep
