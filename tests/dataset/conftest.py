"""Tiny hand-built dataset trees (real on-disk layouts) that tests can break on purpose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from base.io import write_index_png

H, W = 24, 40


def _jpg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path, quality=90)


def _labels(ids, shift: int = 0) -> np.ndarray:
    lab = np.zeros((H, W), np.uint8)
    for k, obj in enumerate(ids):
        lab[4 + k * 8: 10 + k * 8, 5 + shift + 10 * k: 12 + shift + 10 * k] = obj
    return lab


def build_davis(root: Path, seqs=(("two", 2, 6), ("one", 1, 5)), train=("one",)) -> Path:
    """DAVIS 2017 layout: sequences (name, objects, frames); split files for 2016 and 2017."""
    for s, (name, n_obj, n_frames) in enumerate(seqs):
        for t in range(n_frames):
            _jpg(root / "JPEGImages/480p" / name / f"{t:05d}.jpg", 100 * s + t)
            write_index_png(root / "Annotations/480p" / name / f"{t:05d}.png",
                            _labels(range(1, n_obj + 1), shift=t))
    names = [s[0] for s in seqs]
    for year in (2016, 2017):
        sets = root / "ImageSets" / str(year)
        sets.mkdir(parents=True, exist_ok=True)
        (sets / "val.txt").write_text("\n".join(n for n in names if n not in train) + "\n")
        (sets / "train.txt").write_text("\n".join(train) + "\n")
    return root


def build_ytvos(root: Path) -> Path:
    """YouTube-VOS 2018 layout: train (+ all frames) with a mid-video object, and valid (+ all frames)."""
    meta_train = {"videos": {}}
    meta_valid = {"videos": {}}
    all_frames = 21  # -> 5-stride frames 00000 ... 00020
    for split, meta, vids in (("train", meta_train, ("vid_a", "vid_b")), ("valid", meta_valid, ("vid_v",))):
        for v, vid in enumerate(vids):
            for t in range(all_frames):
                _jpg(root / f"{split}_all_frames/JPEGImages" / vid / f"{t:05d}.jpg", 1000 * v + t)
                if t % 5 == 0:
                    _jpg(root / split / "JPEGImages" / vid / f"{t:05d}.jpg", 1000 * v + t)
            strided = [f"{t:05d}" for t in range(0, all_frames, 5)]
            objects = {"1": {"category": "cat", "frames": strided},
                       "2": {"category": "dog", "frames": strided[2:]}}  # object 2 starts at 00010
            meta["videos"][vid] = {"objects": objects}
            for i, f in enumerate(strided):
                ids = [1] if i < 2 else [1, 2]
                if split == "valid":
                    ids = {0: [1], 2: [2]}.get(i)
                    if ids is None:
                        continue
                # valid annotations hold only the objects starting on that frame
                lab = _labels(ids, shift=i)
                write_index_png(root / split / "Annotations" / vid / f"{f}.png", lab)
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / "meta.json").write_text(json.dumps(meta))
    (root / "jjval.txt").write_text("vid_b\n")
    (root / "jjtrain.txt").write_text("vid_a\n")
    return root


@pytest.fixture
def make_davis() -> Callable[..., Path]:
    """:func:`build_davis` itself, for layouts other than the default."""
    return build_davis


@pytest.fixture
def davis_root(tmp_path) -> Path:
    return build_davis(tmp_path / "davis")


@pytest.fixture
def ytvos_root(tmp_path) -> Path:
    return build_ytvos(tmp_path / "ytvos")
