"""Fixtures of the trainer tests: a tiny synthetic DAVIS tree and tiny training components."""

from __future__ import annotations

import json
from typing import Callable

import pytest
import torch

from dataset.training import prepare_synthetic_davis
from models.backbone import FeatureExtractor
from models.gfrtm import GFRTM
from models.target_model import TargetModelConfig
from trainers.recurrent import RecurrentOptions, RecurrentTrainingModel
from trainers.target_models import FirstFrameTargetModels
from trainers.tmcache import TargetModelCache

TINY = (64, 112)


@pytest.fixture(autouse=True)
def one_thread():
    """The trainer tests run small convolutions: one thread is as fast and does not fight other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A synthetic DAVIS 2017 tree at 64x112 (4 train, 3 val videos), generated once per session."""
    return prepare_synthetic_davis(tmp_path_factory.mktemp("synthetic") / "davis", size=TINY, seed=0)


def _box_labels(batch: int, boxes) -> torch.Tensor:
    labels = torch.zeros(batch, len(boxes), 1, *TINY, dtype=torch.uint8)
    for t, (y0, y1, x0, x1) in enumerate(boxes):
        labels[:, t, :, y0:y1, x0:x1] = 1
    return labels


def _metas(batch: int, seq: str = "seq") -> list:
    return [json.dumps({"dataset": "test", "seq_name": f"{seq}{b}", "obj_id": 1, "frame0_id": 0, "frames": []})
            for b in range(batch)]


@pytest.fixture
def box_labels() -> Callable[..., torch.Tensor]:
    """(batch, boxes) -> (B,T,1,64,112) uint8 labels; frame t is the box ``boxes[t]`` = (y0, y1, x0, x1)."""
    return _box_labels


@pytest.fixture
def sample_metas() -> Callable[..., list]:
    """(batch, seq) -> B JSON meta strings with distinct sequence names."""
    return _metas


@pytest.fixture
def make_recurrent(tmp_path) -> Callable[..., RecurrentTrainingModel]:
    """Factory of a ResNet-18 (random backbone) recurrent training model with a target-model cache in tmp."""

    def make(seed: int = 0, cache: bool = True, **options) -> RecurrentTrainingModel:
        torch.manual_seed(seed)
        backbone = FeatureExtractor("resnet18", "none")
        torch.manual_seed(seed)
        model = GFRTM("resnet18")
        model.init_gate_bias()
        tm_cache = None
        if cache:
            tm_cache = TargetModelCache(tmp_path / "tmcache", "test",
                                        {"project.weight": (32, 256, 1, 1), "filter.weight": (1, 32, 3, 3)})
        provider = FirstFrameTargetModels(backbone, TargetModelConfig.train(), tm_cache, seed=seed)
        return RecurrentTrainingModel(model, backbone, provider, RecurrentOptions(**options)).train()

    return make
