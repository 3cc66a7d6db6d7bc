"""Saliency image/mask readers (DUTS and the other layouts) and the synthetic clip generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from base.errors import ConfigError, DatasetError
from dataset.clips import ClipConfig, make_clip, tps_maps
from dataset.saliency import SaliencyDataset, resolve_saliency_root

H, W = 60, 80


def _pair(folder_img: Path, folder_mask: Path, stem: str, seed: int, rgb_mask: bool = False,
          image_ext: str = ".jpg") -> np.ndarray:
    rng = np.random.default_rng(seed)
    folder_img.mkdir(parents=True, exist_ok=True)
    folder_mask.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder_img / f"{stem}{image_ext}")
    grey = np.zeros((H, W), np.uint8)
    grey[10:40, 20:50] = 255
    grey[10, 20:50] = 127  # an anti-aliased edge: below the threshold
    grey[39, 20:50] = 128  # at the threshold: object
    mask = Image.fromarray(grey)
    (mask.convert("RGB") if rgb_mask else mask).save(folder_mask / f"{stem}.png")
    return grey >= 128


def build_duts(root: Path) -> Path:
    for split, tag in (("TR", "train"), ("TE", "test")):
        for k in range(3):
            _pair(root / f"DUTS-{split}/DUTS-{split}-Image", root / f"DUTS-{split}/DUTS-{split}-Mask",
                  f"{tag}_{k}", k, rgb_mask=k == 2)
    (root / "DUTS-TR/DUTS-TR-Image/orphan.jpg").write_bytes(
        (root / "DUTS-TR/DUTS-TR-Image/train_0.jpg").read_bytes())  # no mask: left out
    return root


def test_duts_splits_pairs_and_masks(tmp_path):
    root = build_duts(tmp_path / "duts")
    train, test = SaliencyDataset(root, "train"), SaliencyDataset(root, "test")
    assert (train.name, len(train)) == ("DUTS-TR", 3) and (test.name, len(test)) == ("DUTS-TE", 3)
    assert [p[0].name for p in train.pairs] == ["train_0.jpg", "train_1.jpg", "train_2.jpg"]
    for k in range(3):
        image, mask = train.read(k)
        assert image.shape == (H, W, 3) and image.dtype == np.uint8 and mask.dtype == np.uint8
        expected = np.zeros((H, W), np.uint8)
        expected[11:40, 20:50] = 1  # the 127 row is background, the 128 row object
        np.testing.assert_array_equal(mask, expected)  # grey and RGB masks alike
    assert len(SaliencyDataset(root)) == 3  # no split: the first layout found (DUTS-TR)
    assert [p[0].name for p in train.subset([2, 0]).pairs] == ["train_2.jpg", "train_0.jpg"]


@pytest.mark.parametrize("layout, images, masks, ext", [
    ("ECSSD", "images", "ground_truth_mask", ".jpg"),
    ("HKU-IS", "imgs", "gt", ".png"),
    ("MSRA10K", "Imgs", "Imgs", ".jpg"),
])
def test_other_saliency_layouts_read_the_same_way(tmp_path, layout, images, masks, ext):
    root = tmp_path / layout
    expected = _pair(root / images, root / masks, "0001", 0, image_ext=ext)
    _pair(root / images, root / masks, "0002", 1, image_ext=ext)
    data = SaliencyDataset(root)
    assert data.name == layout and len(data) == 2
    np.testing.assert_array_equal(data.read(0)[1], expected.astype(np.uint8))


def test_bad_saliency_input_gives_one_line_naming_the_path(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="saliency root not found") as err:
        SaliencyDataset(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no saliency image/mask folders"):
        SaliencyDataset(tmp_path / "empty")
    root = build_duts(tmp_path / "duts")
    bad = root / "DUTS-TR/DUTS-TR-Mask/train_1.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot read image") as err:
        SaliencyDataset(root, "train").read(1)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(bad)
    with pytest.raises(DatasetError, match=f"mask is {W}x{H + 1} but its image train_1.jpg is {W}x{H}"):
        SaliencyDataset(root, "train").read(1)
    with pytest.raises(ConfigError, match="saliency split"):
        SaliencyDataset(root, "val")
    monkeypatch.delenv("SALIENCY_ROOT", raising=False)
    with pytest.raises(ConfigError, match="SALIENCY_ROOT"):
        resolve_saliency_root(None)
    monkeypatch.setenv("SALIENCY_ROOT", str(root))
    assert resolve_saliency_root(None) == root


# ------------------------------------------------------------------------------------------------
# clips


def scene(seed: int = 0, colour=(250, 20, 20)) -> tuple:
    """A textured grey-green picture with one flat-coloured object (a disc) and its mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 120, (120, 160, 3), dtype=np.uint8)
    image[..., 1] += 60
    yy, xx = np.mgrid[0:120, 0:160]
    mask = ((yy - 60) ** 2 + (xx - 70) ** 2 < 25 ** 2).astype(np.uint8)
    image[mask > 0] = colour
    return image, mask


RIGID = dict(frames=5, size=(96, 128), crop=(1.0, 1.0), jitter=0.0, tps=0.0)


def _colour_match(frame, mask, colour, tol=40):
    return (np.abs(frame.astype(int) - colour).max(-1) < tol) & (mask > 0)


@pytest.mark.parametrize("paste", [False, True])
def test_the_mask_moves_with_the_object(paste):
    """Every frame: the mask covers the object's colour and nothing else of it; the object does move."""
    cfg = ClipConfig(**RIGID, p_background=1.0 if paste else 0.0, p_distractor=0.0)
    background = scene(5, colour=(20, 20, 250))
    clip = make_clip(scene(), cfg, np.random.default_rng(1), background=background)
    assert clip.pasted == paste and clip.frames.shape == (5, 96, 128, 3) and clip.masks.shape == (5, 96, 128)
    red = (250, 20, 20)
    centres = []
    for frame, mask in zip(clip.frames, clip.masks):
        assert mask.sum() > 100
        inside = _colour_match(frame, mask, red).sum() / mask.sum()
        outside = (np.abs(frame.astype(int) - red).max(-1) < 40) & (mask == 0)
        assert inside > 0.9 and outside.sum() < 0.05 * mask.sum()  # only resampled edges differ
        ys, xs = np.nonzero(mask)
        centres.append((ys.mean(), xs.mean()))
    assert np.hypot(*np.subtract(centres[-1], centres[0])) > 1.0 or abs(clip.masks[-1].sum() / clip.masks[0].sum()
                                                                         - 1) > 0.02


def test_an_occluder_in_front_removes_the_covered_pixels_and_one_behind_does_not():
    base = dict(**RIGID, p_background=0.0, distractor_scale=(0.6, 0.9))
    target, other = scene(), scene(7, colour=(20, 250, 250))
    for occlude, side in ((1.0, "front"), (0.0, "behind")):
        clip = make_clip(target, ClipConfig(**base, p_distractor=1.0, p_occlude=occlude), np.random.default_rng(3),
                         distractor=other)
        free = make_clip(target, ClipConfig(**base), np.random.default_rng(3))  # no distractor given
        assert clip.distractor == side
        cover = clip.distractor_masks.astype(bool)
        assert cover.any()
        if side == "front":
            assert not (clip.masks.astype(bool) & cover).any()  # covered target pixels left the mask
            # the target's own motion is the one of the free clip: the mask is its mask minus the cover
            np.testing.assert_array_equal(clip.masks, free.masks & ~cover)
            assert (free.masks.astype(bool) & cover).any()  # so something was removed
        else:
            np.testing.assert_array_equal(clip.masks, free.masks)
            assert not (clip.masks.astype(bool) & cover).any()  # drawn only where the target is not
        cyan = _colour_match(clip.frames, cover.astype(np.uint8), (20, 250, 250)).sum() / cover.sum()
        assert cyan > 0.8  # the distractor's pixels are where its mask says


def test_same_generator_state_same_clip_and_tps_moves_pixels():
    cfg = ClipConfig(frames=4, size=(64, 96), tps=0.05)
    a = make_clip(scene(), cfg, np.random.default_rng(9), scene(1), scene(2))
    b = make_clip(scene(), cfg, np.random.default_rng(9), scene(1), scene(2))
    c = make_clip(scene(), cfg, np.random.default_rng(10), scene(1), scene(2))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.frames, c.frames)
    mx, my = tps_maps((64, 96), 0.05, np.random.default_rng(0))
    gy, gx = np.mgrid[0:64, 0:96]
    assert np.abs(mx - gx).max() > 1  # the inner control points move the pixels
    lattice = np.ix_([0, 21, 42, 63], [0, 95])  # the fixed border control points (4 x 4 lattice)
    assert np.abs(mx - gx)[lattice].max() < 1e-3 and np.abs(my - gy)[np.ix_([0, 63], [0, 95])].max() < 1e-3
    assert np.abs(tps_maps((64, 96), 0.0, np.random.default_rng(0))[0] - gx).max() < 1e-3


def test_clip_config_is_checked():
    with pytest.raises(ConfigError, match="at least 2 frames"):
        ClipConfig(frames=1)
    with pytest.raises(ConfigError, match="p_occlude"):
        ClipConfig(p_occlude=1.5)


# ------------------------------------------------------------------------------------------------
# the clip training set (--dset duts)


def test_clip_training_set_items_are_deterministic_and_uncached(tmp_path):
    import json

    import torch

    from dataset.training import build_training_set
    from trainers.recurrent import parse_meta

    root = build_duts(tmp_path / "duts")
    data = build_training_set("duts", saliency_root=root, seq_len=3, size=(48, 64), seed=5,
                              clip_samples_per_epoch=7)
    assert len(data) == 7 and data.num_pairs == 3 and "DUTS-TR: 3 images, 7 synthetic clips/epoch" in data.describe()
    item = data[2]
    assert item["images"].shape == (3, 3, 48, 64) and item["images"].dtype == torch.uint8
    assert item["labels"].shape == (3, 1, 48, 64) and set(item["labels"].unique().tolist()) <= {0, 1}
    meta = json.loads(item["meta"])
    assert meta["dataset"] == "DUTS-TR" and meta["seq_name"].endswith("@0.2") and meta["cache"] is False
    assert not parse_meta(item["meta"]).cacheable  # the target-model cache is bypassed for generated frames
    again = data[2]
    assert torch.equal(again["images"], item["images"]) and torch.equal(again["labels"], item["labels"])
    data.set_epoch(1)
    assert not torch.equal(data[2]["images"], item["images"])
    with pytest.raises(IndexError):
        data[7]
