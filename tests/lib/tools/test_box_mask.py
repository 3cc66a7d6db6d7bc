"""lib/tools/box_mask.py: GrabCut inside a box finds a synthetic object; boxes become object ids; bad boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from base.errors import ConfigError
from lib.tools.box_mask import boxes_to_labels, check_box, grabcut_box, parse_box


def scene(height=240, width=320, seed=0):
    """A blurred random background with a noisy red ellipse and a noisy green rectangle; their masks."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 110, (height, width, 3), dtype=np.uint8), (5, 5), 0)
    ellipse = np.zeros((height, width), np.uint8)
    cv2.ellipse(ellipse, (width * 5 // 8, height // 2), (width // 6, height // 6), 20, 0, 360, 1, -1)
    rect = np.zeros((height, width), np.uint8)
    rect[height // 8:height // 3, width // 10:width // 3] = 1
    for mask, colour in ((ellipse, (210, 80, 50)), (rect, (60, 200, 90))):
        paint = np.clip(np.array(colour) + rng.normal(0, 15, (height, width, 3)), 0, 255).astype(np.uint8)
        image[mask > 0] = paint[mask > 0]
    return image, ellipse, rect


def box_around(mask, margin):
    ys, xs = np.nonzero(mask)
    return int(xs.min()) - margin, int(ys.min()) - margin, int(xs.max()) + 1 + margin, int(ys.max()) + 1 + margin


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("size", [(240, 320), (720, 960)])  # the second is downscaled for GrabCut
def test_a_box_around_an_object_gives_its_mask(size):
    image, ellipse, _ = scene(*size)
    mask = grabcut_box(image, box_around(ellipse, size[0] // 24))
    assert mask.dtype == np.uint8 and mask.shape == ellipse.shape
    assert iou(mask > 0, ellipse > 0) > 0.8
    np.testing.assert_array_equal(mask, grabcut_box(image, box_around(ellipse, size[0] // 24)))  # deterministic


def test_boxes_become_object_ids_in_order():
    image, ellipse, rect = scene()
    labels = boxes_to_labels(image, [box_around(ellipse, 10), box_around(rect, 8)])
    assert set(np.unique(labels)) == {0, 1, 2}
    assert iou(labels == 1, ellipse > 0) > 0.8 and iou(labels == 2, rect > 0) > 0.8


def test_bad_boxes_are_one_line_errors():
    image, ellipse, _ = scene()
    assert parse_box("10,20,110,90") == (10, 20, 110, 90) and parse_box(" 1.6, 2, 3 ,4") == (2, 2, 3, 4)
    for text in ("10,20,30", "a,b,c,d", ""):
        with pytest.raises(ConfigError, match="x0,y0,x1,y1"):
            parse_box(text)
    assert check_box((-5, -5, 50, 60), (240, 320)) == (0, 0, 50, 60)  # clipped to the frame
    with pytest.raises(ConfigError, match="x0 < x1"):
        check_box((50, 10, 40, 30), (240, 320))
    with pytest.raises(ConfigError, match="inside the 320x240"):
        check_box((318, 10, 400, 30), (240, 320))
    with pytest.raises(ConfigError, match="whole frame"):
        grabcut_box(image, (0, 0, 320, 240))
    flat = np.full((120, 160, 3), 90, np.uint8)
    with pytest.raises(ConfigError, match="found no object"):
        boxes_to_labels(flat, [(40, 30, 80, 70)])
    with pytest.raises(ConfigError, match="covered by a later box"):
        boxes_to_labels(image, [box_around(ellipse, 10), box_around(ellipse, 10)])
