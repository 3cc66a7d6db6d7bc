"""First-frame augmentation: determinism, layout of the output, label validity, and usefulness for
fitting the target model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.engine.augment import OFFICIAL_LISTS, PROJECT_LISTS, _draw_warps, augment_first_frame
from models.target_model import OnlineTargetModel, TargetModel, TargetModelConfig


def toy_scene(height: int = 96, width: int = 128, centre=(40, 50), radii=(14, 22), seed: int = 0):
    """A red textured ellipse on a smooth green-blue background: image (3, H, W) uint8, mask (1, H, W)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    background = np.stack(
        [30 + 20 * np.sin(xx / 9.0), 120 + 60 * np.sin(yy / 7.0), 150 + 50 * np.cos((xx + yy) / 11.0)]
    )
    background += rng.normal(0, 8, background.shape)
    inside = ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1
    colour = np.array([210.0, 40.0, 50.0])[:, None, None] + rng.normal(0, 10, (3, height, width))
    image = np.where(inside[None], colour, background)
    image = torch.from_numpy(np.clip(image, 0, 255).astype(np.uint8))
    return image, torch.from_numpy(inside.astype(np.uint8))[None]


def test_output_layout_original_first_and_valid_labels():
    image, mask = toy_scene()
    images, labels = augment_first_frame(image, mask, 5, np.random.default_rng(0))
    assert images.shape == (5, 3, 96, 128) and images.dtype == torch.uint8
    assert labels.shape == (5, 1, 96, 128) and labels.dtype == torch.uint8
    assert torch.equal(images[0], image) and torch.equal(labels[0], mask)
    assert set(labels.unique().tolist()) <= {0, 1}
    per_sample = labels.flatten(1).sum(1)
    assert torch.all(per_sample > 0) and torch.all(per_sample < 96 * 128)
    assert all(not torch.equal(labels[i], labels[0]) for i in range(1, 5))  # every copy is warped


def test_deterministic_under_a_seed():
    image, mask = toy_scene()
    a = augment_first_frame(image, mask, 5, np.random.default_rng(3))
    b = augment_first_frame(image, mask, 5, np.random.default_rng(3))
    c = augment_first_frame(image, mask, 5, np.random.default_rng(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0][1:], c[0][1:])


def test_object_is_removed_from_the_background():
    """Away from the warped object, the synthetic frames show the inpainted background, not the object."""
    image, mask = toy_scene()
    images, labels = augment_first_frame(image, mask, 5, np.random.default_rng(0))
    red = (images[:, 0].int() - images[:, 1].int()) > 100  # the object's colour
    far = F.max_pool2d(labels.float(), 9, stride=1, padding=4)[:, 0] == 0
    assert not (red[1:] & far[1:]).any()


@pytest.mark.parametrize("num_aug", [1, 15])
def test_training_and_trivial_counts(num_aug):
    image, mask = toy_scene()
    images, labels = augment_first_frame(image, mask, num_aug, np.random.default_rng(0))
    assert images.shape[0] == labels.shape[0] == num_aug
    per_sample = labels.flatten(1).sum(1)
    assert torch.all(per_sample > 0) and torch.all(per_sample < 96 * 128)


@pytest.mark.parametrize(
    "centre,radii", [((4, 5), (3, 3)), ((90, 120), (12, 20)), ((48, 64), (47, 63))], ids=["tiny", "border", "huge"]
)
def test_small_border_and_large_objects_stay_valid(centre, radii):
    image, mask = toy_scene(centre=centre, radii=radii)
    _, labels = augment_first_frame(image, mask, 5, np.random.default_rng(1))
    per_sample = labels.flatten(1).sum(1)
    assert torch.all(per_sample > 0) and torch.all(per_sample < 96 * 128)


def test_empty_mask_is_rejected():
    image, mask = toy_scene()
    with pytest.raises(ValueError):
        augment_first_frame(image, torch.zeros_like(mask), 5, np.random.default_rng(0))


def colour_features(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 9, H/8, W/8): pooled colours and their pairwise products."""
    x = images.double() / 255.0
    products = torch.stack([x[:, i] * x[:, j] for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2))], 1)
    return F.avg_pool2d(torch.cat([x, products], 1), 8)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_target_model_fitted_on_augmented_samples_finds_the_object():
    image, mask = toy_scene()
    images, labels = augment_first_frame(image, mask, 5, np.random.default_rng(0))
    torch.manual_seed(0)
    online = OnlineTargetModel(TargetModel(9, 8), replace(TargetModelConfig.eval_fast(), c_channels=8))
    online.init(colour_features(images), labels)

    moved_image, moved_mask = toy_scene(centre=(60, 85), radii=(16, 18), seed=5)
    for frame, frame_mask in ((image, mask), (moved_image, moved_mask)):
        score = online.apply(colour_features(frame[None]))
        score = F.interpolate(score, size=frame_mask.shape[-2:], mode="bilinear", align_corners=False)
        assert correlation(score, frame_mask.double()) > 0.7


def test_official_lists_keep_the_duplicates():
    """--official-quirks augments with the original's lists: a skew 1/3, a motion blur 1/4, a background blur 3/5
    of the time (each list drawn without replacement, so every full cycle has exactly these counts)."""
    rng = np.random.default_rng(0)
    warps = _draw_warps(rng, 60, (48, 80), OFFICIAL_LISTS)
    assert sum(w.skew != (0.0, 0.0) for w in warps) == 20
    assert sum(w.blur_size != 0 for w in warps) == 15
    assert sum(w.background_blur != 0 for w in warps) == 36
    project = _draw_warps(np.random.default_rng(0), 60, (48, 80), PROJECT_LISTS)
    assert sum(w.skew != (0.0, 0.0) for w in project) == 30 and sum(w.blur_size != 0 for w in project) == 30
