"""Multi-object merging: FRTM's soft aggregation (G-FRTM) and TTVOS's odds aggregation.

Soft aggregation: for N object probability maps p_k: clamp to [1e-7, 1 - 1e-7]; background p_0 = min_k (1 - p_k);
scores = softmax over the N+1 channels of the odds p / (1 - p); label = argmax; the merged mask of
channel k keeps its score where the label is k and is 0 elsewhere. With one object, the label is the
object iff its probability exceeds 0.5.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F

EPS = 1e-7


def soft_aggregate(probs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merge per-object probabilities.

    Args:
        probs: (N, H, W) object probabilities in [0, 1], N >= 1.

    Returns:
        labels: (H, W) int64, 0 = background, k = channel k (object k of the input order, 1-based).
        masks: (N + 1, H, W) merged soft masks; channel 0 is the background.
    """
    scores, labels = _soft_scores(probs)
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(0, labels.unsqueeze(0), True)
    return labels, scores * keep


def soft_labels(probs: torch.Tensor) -> torch.Tensor:
    """The labels of :func:`soft_aggregate` alone (the same operations, without the merged masks)."""
    return _soft_scores(probs)[1]


def _soft_scores(probs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    p = probs.clamp(EPS, 1 - EPS)
    # the minimum over one object's map is that map (the same numbers, without a reduction over a dimension of 1)
    background = 1 - p if p.shape[0] == 1 else (1 - p).min(dim=0, keepdim=True).values
    p = torch.cat([background, p], dim=0)
    scores = torch.softmax(p / (1 - p), dim=0)
    if scores.shape[0] == 2:  # the first maximum of two channels: 1 iff the object's score is the larger
        return scores, (scores[1] > scores[0]).long()  # (10x faster than the reduction on a CPU)
    return scores, scores.max(dim=0).indices  # = argmax (first maximum), several times faster over dim 0 on CPU


def channel_ids(labels: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """Aggregation channels (H, W) int64 (0 = background, k = the k-th of ``ids``) -> (H, W) uint8 object ids
    (a table lookup; a conversion where the ids are 1, 2, ..., N)."""
    if list(ids) == list(range(1, len(ids) + 1)):
        return labels.to(torch.uint8)
    return torch.tensor([0, *ids], dtype=torch.uint8, device=labels.device)[labels]



def odds_aggregate(pairs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merge per-object probabilities as TTVOS does (the official ``softmax_aggregate``).

    With c = clamp to [1e-7, 1 - 1e-7]: background b = min_k of the objects' background probabilities; the
    odds c(b) / c(1 - b) of the background and c(p_k[1]) / c(p_k[0]) of each object, divided by their sum,
    are the merged probabilities a_0 (background), a_1, ..., a_N; label = argmax (ties to the lower channel).
    For one object a_1 is about p^2 / (p^2 + (1 - p)^2): sharper than p. Same operations, same order as the
    official code.

    Args:
        pairs: (N, 2, H, W) each object's softmax [background, object], N >= 1.

    Returns:
        labels: (H, W) int64, 0 = background, k = object k (1-based, input order).
        merged: (N + 1, H, W) the merged probabilities a (they sum to 1 over channels); object k's state
        update takes [1 - a_k, a_k].
    """
    def c(t: torch.Tensor) -> torch.Tensor:
        return t.clamp(EPS, 1 - EPS)

    background = pairs[:, 0].min(dim=0).values
    odds = torch.stack([c(background) / c(1 - background)] + [c(pair[1]) / c(pair[0]) for pair in pairs], dim=0)
    merged = odds / odds.sum(dim=0, keepdim=True)
    return merged.max(dim=0).indices, merged


def upsample_probs(probs: Dict[int, torch.Tensor], size: Sequence[int]) -> Dict[int, torch.Tensor]:
    """Each (h, w) probability bilinearly resized to ``size`` (unchanged when already there): the maps that are
    merged at a frame's own size when the networks ran at another."""
    return {obj_id: p if tuple(p.shape) == tuple(size) else
            F.interpolate(p[None, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
            for obj_id, p in probs.items()}
