"""A short CPU training on one fixed tiny batch lowers all three losses."""

from __future__ import annotations

import pytest
import torch

from dataset.training import build_training_set
from trainers.loop import build_optimizer

ITERATIONS = 20
WINDOW = 5


@pytest.mark.slow
def test_losses_go_down_on_a_fixed_batch(synthetic_root, make_recurrent, tmp_path):
    dataset = build_training_set("synthetic", synthetic_root=synthetic_root, synthetic_size=(64, 112),
                                 size=(64, 112), seq_len=3, seed=0, cache_dir=tmp_path / "data")
    dataset.set_epoch(1)
    items = [dataset[0], dataset[9]]  # two different sequences
    images = torch.stack([it["images"] for it in items])
    labels = torch.stack([it["labels"] for it in items])
    metas = [it["meta"] for it in items]

    net = make_recurrent(seed=0)  # ResNet-18 with random weights, target-model cache in tmp
    optimizer = build_optimizer(net.model, 5e-4)
    history = {"seg": [], "delta": [], "gate": []}
    for _ in range(ITERATIONS):
        optimizer.zero_grad()
        out = net(images, labels, metas, epoch=1)
        out["loss"].backward()
        optimizer.step()
        for key in history:
            history[key].append(float(out[key]))
    for key, values in history.items():
        first = sum(values[:WINDOW]) / WINDOW
        last = sum(values[-WINDOW:]) / WINDOW
        assert last < 0.9 * first, f"{key}: first {values[:WINDOW]} last {values[-WINDOW:]}"
    assert history["seg"][-1] < 0.5 * history["seg"][0]
