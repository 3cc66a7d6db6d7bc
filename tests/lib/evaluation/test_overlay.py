"""Overlay frames: the table-based tint is the float blend of its definition, bit for bit; outlines in colour."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lib.evaluation.overlay import object_colours, overlay_frame


def _blend_by_definition(image, labels, colours, alpha):
    """Each object's pixels blended in float32, rounded and clipped, then outlined (the overlay's definition)."""
    out = image.astype(np.float32)
    for obj, colour in colours.items():
        inside = labels == obj
        out[inside] = (1 - alpha) * out[inside] + alpha * colour.astype(np.float32)
    out = out.round().clip(0, 255).astype(np.uint8)
    for obj, colour in colours.items():
        contours, _ = cv2.findContours((labels == obj).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), 1)
    return out


@pytest.mark.parametrize("alpha", [0.5, 0.3, 1.0])
def test_the_tint_is_the_float_blend_bit_for_bit(alpha):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (61, 87, 3), dtype=np.uint8)
    image[0, :4] = [[0, 0, 0], [255, 255, 255], [127, 128, 129], [1, 254, 3]]  # the extremes and ties
    labels = np.zeros((61, 87), np.uint8)
    labels[:20, :30] = 1
    labels[30:50, 40:80] = 3
    labels[0, :4] = 1
    colours = object_colours([1, 3, 7])  # 7 is absent from the frame
    out = overlay_frame(image, labels, colours, alpha)
    np.testing.assert_array_equal(out, _blend_by_definition(image, labels, colours, alpha))
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out[labels == 0][:100], image[labels == 0][:100])  # background untouched
    # a non-contiguous frame (a view) gives the same
    np.testing.assert_array_equal(overlay_frame(np.asfortranarray(image), labels, colours, alpha), out)


def test_outlines_take_the_objects_colour():
    image = np.zeros((40, 40, 3), np.uint8)
    labels = np.zeros((40, 40), np.uint8)
    labels[10:30, 10:30] = 2
    out = overlay_frame(image, labels, object_colours([2]))
    assert out[10, 20].tolist() == object_colours([2])[2].tolist()  # the boundary: the full colour
    assert out[20, 20].tolist() == (object_colours([2])[2] * 0.5).round().astype(int).tolist()  # inside: half
