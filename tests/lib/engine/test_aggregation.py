"""TTVOS's odds aggregation (the official ``softmax_aggregate``), in closed form and with several objects."""

from __future__ import annotations

import torch

from lib.engine.aggregation import EPS, odds_aggregate


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
