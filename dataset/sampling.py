"""Which frames of a video make one training sample.

A training sample is ``seq_len`` frames of one (sequence, object) pair. Frames are positions in the
sequence's list of *annotated* frames (every frame for DAVIS, every 5th frame for YouTube-VOS), and
``visible[k]`` says whether the object is visible on annotated frame ``k`` (see
:mod:`dataset.visibility`). Two compositions exist:

``temporal`` (the default)
    The first frame is drawn uniformly among the frames where the object is visible *and* that leave
    room for ``seq_len - 1`` later frames. Then ``seq_len - 1`` later frames follow in temporal order,
    each a random gap of 1..``max_gap`` annotated frames after the previous one; a gap is clipped when a
    larger one would leave no room for the remaining frames. The reuse gate learns "is this frame like
    the previous one", so the previous frame must be a temporal neighbour.

``official``
    The original code's composition (spec 4.1, 6.1 item 2): the first frame is a uniformly drawn
    visible frame; then ``seq_len`` frames are drawn without replacement from all *other* frames and
    the first of them is dropped. The result, [first, seq_len - 1 random frames], is not sorted, may
    go back in time, and may show the object invisible.

Every draw comes from the :class:`numpy.random.Generator` passed in, so a sample is a pure function
of its seed.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from base.errors import ConfigError

SAMPLINGS = ("temporal", "official")


def check_sampling(sampling: str) -> str:
    if sampling not in SAMPLINGS:
        raise ConfigError(f"unknown sampling {sampling!r}; choose from {', '.join(SAMPLINGS)}")
    return sampling


def min_frames(seq_len: int, sampling: str) -> int:
    """Fewest annotated frames a sequence needs for one sample (official draws from the *other* frames)."""
    check_sampling(sampling)
    return seq_len if sampling == "temporal" else seq_len + 1


def first_frame_candidates(visible: np.ndarray, seq_len: int, sampling: str) -> np.ndarray:
    """Positions a sample may start on: visible frames (``temporal``: with room for the later frames).

    Args:
        visible: (N,) bool, the object's visibility on each annotated frame.
        seq_len: frames per sample.
        sampling: one of :data:`SAMPLINGS`.

    Returns:
        (K,) int64 positions, ascending; empty when the pair cannot make a sample.
    """
    visible = np.asarray(visible, dtype=bool)
    n = visible.shape[0]
    if n < min_frames(seq_len, sampling):
        return np.zeros(0, dtype=np.int64)
    if sampling == "temporal":
        visible = visible[: n - seq_len + 1]
    return np.flatnonzero(visible).astype(np.int64)


def sample_temporal(visible: np.ndarray, seq_len: int, max_gap: int, rng: np.random.Generator) -> List[int]:
    """``seq_len`` ascending positions: a visible first frame, then random gaps of 1..``max_gap``.

    The gap to frame ``i`` is drawn uniformly in ``[1, min(max_gap, room)]``, where ``room`` keeps
    enough frames after it for the ``seq_len - 1 - i`` frames still to come.
    """
    if max_gap < 1:
        raise ConfigError(f"max_gap must be >= 1, got {max_gap}")
    candidates = first_frame_candidates(visible, seq_len, "temporal")
    if candidates.size == 0:
        raise ValueError("no visible frame leaves room for a temporal sample")
    last = len(visible) - 1
    positions = [int(rng.choice(candidates))]
    for i in range(1, seq_len):
        still_to_come = seq_len - 1 - i
        room = last - still_to_come - positions[-1]
        positions.append(positions[-1] + int(rng.integers(1, min(max_gap, room) + 1)))
    return positions


def sample_official(visible: np.ndarray, seq_len: int, rng: np.random.Generator) -> List[int]:
    """The original composition: [visible first frame, ``seq_len - 1`` other frames in random order]."""
    candidates = first_frame_candidates(visible, seq_len, "official")
    if candidates.size == 0:
        raise ValueError("no visible frame, or fewer than seq_len + 1 frames, for an official sample")
    first = int(rng.choice(candidates))
    others = np.delete(np.arange(len(visible)), first)
    drawn = rng.choice(others, size=seq_len, replace=False)
    return [first] + [int(k) for k in drawn[1:]]


def sample_frames(visible: np.ndarray, seq_len: int, sampling: str, rng: np.random.Generator,
                  max_gap: Optional[int] = None) -> List[int]:
    """Positions (into the annotated-frame list) of one sample; see the module docstring."""
    if check_sampling(sampling) == "temporal":
        if max_gap is None:
            raise ConfigError("temporal sampling needs max_gap")
        return sample_temporal(visible, seq_len, max_gap, rng)
    return sample_official(visible, seq_len, rng)
