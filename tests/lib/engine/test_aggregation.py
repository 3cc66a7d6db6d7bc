"""The aggregations: TTVOS's odds aggregation (the official ``softmax_aggregate``), in closed form and with several
objects; the labels of G-FRTM's soft aggregation alone."""

from __future__ import annotations

import torch

from lib.engine.aggregation import EPS, odds_aggregate, soft_aggregate, soft_labels


def test_one_object_is_the_squared_odds_form():
    p = torch.tensor([0.05, 0.3, 0.5, 0.7, 0.999]).view(1, 1, 5).double()
    labels, merged = odds_aggregate(torch.stack([1 - p, p], dim=1))
    c = p.clamp(EPS, 1 - EPS)
    odds = c / (1 - c)
    expected = odds * odds / (odds * odds + 1)  # background odds = (1 - p) / p: a = p^2 / (p^2 + (1 - p)^2)
    assert torch.allclose(merged[1], expected[0], rtol=1e-12, atol=0)
    assert torch.allclose(merged.sum(0), torch.ones(1, 5, dtype=torch.float64), rtol=0, atol=1e-15)
    assert labels.tolist() == [[0, 0, 0, 1, 1]]  # p = 0.5 is a tie: the lower channel (background) wins


def test_several_objects_and_the_background_pseudo_object():
    fg = torch.tensor([[0.9, 0.2, 0.1], [0.6, 0.7, 0.05]]).view(2, 1, 3).double()  # 2 objects, 3 pixels
    labels, merged = odds_aggregate(torch.stack([1 - fg, fg], dim=1))
    b = (1 - fg).min(0, keepdim=True).values  # the least background of the objects
    odds = torch.cat([b / (1 - b), fg / (1 - fg)], 0)
    assert torch.allclose(merged, odds / odds.sum(0, keepdim=True), rtol=1e-12, atol=0)
    assert labels.tolist() == [[1, 2, 0]]


def test_soft_labels_are_soft_aggregates_labels_ties_included():
    torch.manual_seed(0)
    probs = torch.rand(3, 40, 50)
    probs[:, :5] = 0.5  # ties between the objects and the background
    probs[1, 10:15] = probs[2, 10:15]  # ties between two objects
    probs[0, 20:25] = 1.0  # clamped
    torch.testing.assert_close(soft_labels(probs), soft_aggregate(probs)[0], rtol=0, atol=0)


def test_a_base_networks_labels_match_its_aggregation():
    from lib.engine.bases.gfrtm import GFRTMBase

    torch.manual_seed(1)
    probs = {3: torch.rand(30, 40), 7: torch.rand(30, 40)}
    base = GFRTMBase.__new__(GFRTMBase)  # labels and aggregate use no network
    torch.testing.assert_close(base.labels(probs), base.aggregate(None, probs)[0], rtol=0, atol=0)
    assert base.labels(probs).dtype == torch.uint8 and set(base.labels(probs).unique().tolist()) <= {0, 3, 7}


def _reference_soft_aggregate(probs: torch.Tensor):
    """Soft aggregation by its definition alone (the reduction over the objects and the argmax, whatever N)."""
    p = probs.clamp(EPS, 1 - EPS)
    p = torch.cat([(1 - p).min(dim=0, keepdim=True).values, p], dim=0)
    scores = torch.softmax(p / (1 - p), dim=0)
    labels = scores.max(dim=0).indices
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(0, labels.unsqueeze(0), True)
    return labels, scores * keep


def test_one_objects_shortcuts_give_the_definitions_numbers():
    """One object: no reduction for the background and a comparison for the argmax, bit for bit the same labels
    and merged maps, at and around p = 0.5 included (ties go to the background)."""
    torch.manual_seed(2)
    p = torch.rand(1, 64, 80)
    near = torch.tensor(0.5).nextafter(torch.tensor(0.0))
    p[0, :4] = 0.5
    p[0, 4:8] = near
    p[0, 8:12] = torch.tensor(0.5).nextafter(torch.tensor(1.0))
    p[0, 12:16] = 0.5 + torch.linspace(-1e-6, 1e-6, 80)
    p[0, 16:20] = 1.0
    p[0, 20:24] = 0.0
    labels, merged = soft_aggregate(p)
    ref_labels, ref_merged = _reference_soft_aggregate(p)
    assert labels.dtype == ref_labels.dtype == torch.int64
    torch.testing.assert_close(labels, ref_labels, rtol=0, atol=0)
    torch.testing.assert_close(merged, ref_merged, rtol=0, atol=0)
    torch.testing.assert_close(soft_labels(p), ref_labels, rtol=0, atol=0)
    assert labels[:4].sum() == 0 and labels[16:20].min() == 1


def test_channel_ids_maps_channels_to_object_ids():
    from lib.engine.aggregation import channel_ids

    channels = torch.tensor([[0, 1, 2], [2, 1, 0]])
    assert channel_ids(channels, [1, 2]).tolist() == [[0, 1, 2], [2, 1, 0]]
    assert channel_ids(channels, [3, 7]).tolist() == [[0, 3, 7], [7, 3, 0]]
    assert channel_ids(channels, [2, 5]).dtype == channel_ids(channels, [1, 2]).dtype == torch.uint8
