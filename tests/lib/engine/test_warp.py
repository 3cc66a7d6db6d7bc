"""Optical-flow warping: a known translation moves a mask by that translation; the guided filter and the
photometric error behave as documented."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from lib.engine.warp import (
    Correction,
    backward_warp,
    corrector_inputs,
    dis_flow,
    guide_image,
    guided_filter,
    guided_radius,
    resize_flow,
    small_gray,
    warp_object,
)
from models.warp_corrector import WarpCorrector
from tests.numerics import U32, gamma

SIZE = (240, 320)


def textured_scene(shift=(0, 0), seed=0):
    """A smooth random RGB texture (H, W, 3) uint8 moved by ``shift`` = (dy, dx) pixels (wrapping around)."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (SIZE[0], SIZE[1], 3)).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), 3)
    texture = (texture - texture.min()) / (texture.max() - texture.min()) * 255
    return np.roll(texture, shift, axis=(0, 1)).astype(np.uint8)


def box_mask(top, left, height=80, width=100):
    mask = np.zeros(SIZE, np.float32)
    mask[top:top + height, left:left + width] = 1
    return mask


@pytest.mark.parametrize("refine", [False, True])
@pytest.mark.parametrize("shift", [(4, 8), (-8, 12)])
def test_a_known_translation_moves_the_mask_by_it(shift, refine):
    key, current = textured_scene(), textured_scene(shift)
    key_small, current_small = small_gray(key), small_gray(current)
    flow = dis_flow(current_small, key_small)
    guide = Correction("guided", guide=guide_image(current)) if refine else None
    result = warp_object(current_small, key_small, flow, box_mask(80, 110), guide)
    moved = result.prob > 0.5
    expected = box_mask(80 + shift[0], 110 + shift[1]) > 0.5
    iou = (moved & expected).sum() / (moved | expected).sum()
    assert iou > 0.9, iou
    ys, xs = np.nonzero(moved)
    assert abs(ys.mean() - (80 + shift[0] + 39.5)) < 1.5 and abs(xs.mean() - (110 + shift[1] + 49.5)) < 1.5
    assert result.error < 0.03  # the warp explains the frame
    # the same mask on the unmoved frame: the warp's photometric error is much larger
    assert warp_object(current_small, key_small, np.zeros_like(flow), box_mask(80, 110), None).error > 3 * result.error


def test_backward_warp_of_an_exact_flow_and_flow_resizing():
    array = np.arange(12 * 16, dtype=np.float32).reshape(12, 16)
    flow = np.zeros((12, 16, 2), np.float32)
    flow[..., 0] = 2  # out(x) = array(x + 2): content moves left by 2
    np.testing.assert_array_equal(backward_warp(array, flow)[:, :14], array[:, 2:])
    np.testing.assert_array_equal(backward_warp(array, flow)[:, 14:], array[:, 15:16].repeat(2, 1))  # border
    big = resize_flow(flow, (24, 64))
    assert big.shape == (24, 64, 2)
    # a constant resized bilinearly: 4 float32 weights summing to 1 up to their roundings, 4 products, 3 sums
    # (gamma(8) relative), then the exact scaling by 4
    np.testing.assert_allclose(big[..., 0], 8.0, rtol=gamma(8), atol=0)
    np.testing.assert_array_equal(big[..., 1], 0.0)


def test_guided_filter_keeps_what_follows_the_guide_and_smooths_the_rest():
    guide = np.zeros((64, 64), np.float32)
    guide[:, 32:] = 1.0
    # float32 box filters (OpenCV's running row and column sums): each mean within gamma(n) of exact, n <= the
    # image's width + height + 2 windows' sides
    n = 64 + 64 + 2 * 9 + 1
    # a map that is the guide itself (edges aligned) comes back nearly unchanged: where a window holds both
    # values, its fit's slope is var / (var + eps) with var >= (N - 1) / N^2 (one pixel of N = 81 differs), so
    # the fit leaves at most eps / (var + eps) of the step out; in a window of one value the rounding of a
    # multiplies I - mean(I), itself rounding: the box means' own gamma(n) each in the output's two terms remain
    windows = 9 * 9
    leak = 1e-4 / ((windows - 1) / windows ** 2 + 1e-4)
    np.testing.assert_allclose(guided_filter(guide, guide.copy(), 4, 1e-4), guide, rtol=0, atol=leak + 3 * gamma(n))
    # a constant map c stays constant: the covariance is rounding, |cov| <= 3 gamma(n) c, the slope
    # |a| <= |cov| / eps, and the output moves by <= 2 max|a| + 3 gamma(n) c = gamma(n) c (6 / eps + 3)
    np.testing.assert_allclose(guided_filter(guide, np.full_like(guide, 0.3), 4, 1e-2), 0.3, rtol=0,
                               atol=0.3 * (6 / 1e-2 + 3) * gamma(n))
    # on a flat guide, a step that the guide does not have is blurred
    flat = np.full_like(guide, 0.5)
    out = guided_filter(flat, guide.copy(), 4, 1e-2)
    assert 0.2 < out[32, 31] < 0.8 and 0.2 < out[32, 32] < 0.8
    assert guided_radius((480, 854)) == 8 and guided_radius((24, 32)) == 1


def test_an_empty_object_measures_the_whole_frame():
    key, current = textured_scene(), textured_scene((0, 6))
    key_small, current_small = small_gray(key), small_gray(current)
    zero = np.zeros(SIZE + (2,), np.float32)[::4, ::4]
    result = warp_object(current_small, key_small, zero, np.zeros(SIZE, np.float32), None)
    whole = np.abs(current_small.astype(np.float32) - key_small.astype(np.float32)).mean() / 255
    # two float32 means of the same n >= 0 terms in different orders (Higham 3.1)
    n = current_small.size
    assert result.prob.max() == 0 and result.error == pytest.approx(whole, rel=2 * gamma(n + 1))


def test_corrector_inputs_warp_the_key_frame_with_the_map():
    key = textured_scene()
    flow = np.zeros(SIZE + (2,), np.float32)
    flow[..., 1] = -3  # out(y) = key(y - 3): content moves down by 3
    image, warped, prob = corrector_inputs(textured_scene((3, 0)), key, box_mask(80, 110), flow)
    assert image.shape == warped.shape == (3, *SIZE) and prob.shape == (1, *SIZE)
    assert image.dtype == warped.dtype == prob.dtype == np.float32
    # an integer shift copies the values; scaling to [0, 1] in float32 rounds once or twice (x / 255 or x * (1/255))
    np.testing.assert_allclose(warped[:, 3:], key[:-3].transpose(2, 0, 1) / 255.0, rtol=0, atol=2 * U32)
    np.testing.assert_allclose(warped[:, 3:], image[:, 3:], rtol=0, atol=2 * U32)  # the warp explains the moved frame
    np.testing.assert_array_equal(prob[0], box_mask(83, 110))


def test_learned_correction_of_a_known_translation():
    """The corrector at initialisation (close to the identity) keeps the warped mask where the flow moved it."""
    key, current = textured_scene(), textured_scene((6, -10))
    key_small, current_small = small_gray(key), small_gray(current)
    flow = dis_flow(current_small, key_small)
    torch.manual_seed(0)
    correction = Correction("learned", corrector=WarpCorrector().eval(), current_rgb=current, key_rgb=key)
    result = warp_object(current_small, key_small, flow, box_mask(80, 110), correction)
    moved, expected = result.prob > 0.5, box_mask(86, 100) > 0.5
    assert result.prob.dtype == np.float32 and result.prob.shape == SIZE
    assert (moved & expected).sum() / (moved | expected).sum() > 0.9


def test_a_flow_does_not_depend_on_earlier_flows():
    """OpenCV's DIS object lowers its finest scale for good after a frame too small for it: every flow gets a
    fresh one, so the same frames give the same flow whatever ran before."""
    key, current = small_gray(textured_scene()), small_gray(textured_scene((3, 5)))
    before = dis_flow(current, key)
    rng = np.random.default_rng(0)
    dis_flow(*(rng.integers(0, 255, (16, 24), dtype=np.uint8) for _ in range(2)))
    np.testing.assert_array_equal(dis_flow(current, key), before)


def _module_correction(corrector, current, key, key_prob, flow):
    tensors = [torch.from_numpy(a)[None] for a in corrector_inputs(current, key, key_prob, flow)]
    with torch.inference_mode():
        return torch.sigmoid(corrector(*tensors))[0, 0].numpy()


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_fast_cpu_correction_is_the_modules_function(channels_last):
    """The engine's CPU correction (pooled frames, OpenCV's upsampling, taps in place) gives the module's
    probabilities up to float rounding, with the shipped weights on a moved scene whose mask is soft."""
    from lib.engine.policies.warp import SHIPPED_CORRECTOR
    from lib.engine.warp import fast_learned_correction, learned_correction
    from lib.tools.checkpoint import WARP_CORRECTOR_KIND, cached_module

    trained = cached_module(WARP_CORRECTOR_KIND, str(SHIPPED_CORRECTOR), "cpu")
    corrector = WarpCorrector(**trained.config()).eval()
    corrector.load_state_dict(trained.state_dict())
    corrector.channels_last = channels_last
    key, current = textured_scene(seed=1), textured_scene((5, -7), seed=1)
    key_prob = cv2.GaussianBlur(box_mask(70, 100), (0, 0), 2)
    flow = resize_flow(dis_flow(small_gray(current), small_gray(key)), SIZE)
    expected = _module_correction(corrector, current, key, key_prob, flow)
    fast = fast_learned_correction(corrector, current, key, key_prob, flow)
    assert fast.dtype == np.float32 and fast.shape == SIZE
    np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-5)
    assert 0.05 < expected.mean() < 0.5 and np.abs(expected - key_prob).max() > 0.5  # a real correction
    np.testing.assert_array_equal(learned_correction(corrector, current, key, key_prob, flow), fast)  # dispatched
    # a side that is not a multiple of the scale: the module itself
    cut = (slice(0, 238), slice(0, 318))
    np.testing.assert_array_equal(
        learned_correction(corrector, current[cut], key[cut], key_prob[cut], flow[cut]),
        _module_correction(corrector, current[cut], key[cut], key_prob[cut], flow[cut]))


def test_shared_sampling_maps_warp_as_the_flow_does():
    from lib.engine.warp import warp_maps

    rng = np.random.default_rng(3)
    flow = rng.normal(0, 3, SIZE + (2,)).astype(np.float32)
    array = rng.random(SIZE + (3,)).astype(np.float32)
    maps = warp_maps(flow)
    np.testing.assert_array_equal(backward_warp(array, flow, maps), backward_warp(array, flow))
    ys, xs = np.mgrid[0:SIZE[0], 0:SIZE[1]].astype(np.float32)
    np.testing.assert_array_equal(maps[0], xs + flow[..., 0])
    np.testing.assert_array_equal(maps[1], ys + flow[..., 1])
