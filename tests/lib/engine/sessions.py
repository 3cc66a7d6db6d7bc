"""Shared by the engine and policy tests: a small synthetic DAVIS 2017 video and a policy run over it."""

from __future__ import annotations

import torch

from dataset.davis import DAVISDataset
from dataset.synthetic import generate_davis2017
from lib.engine.core import EngineConfig, InferenceEngine
from lib.evaluation.run import track_sequence
from models.backbone import FeatureExtractor
from models.gfrtm import GFRTM


def seeded_networks():
    """Random-init ResNet-18 G-FRTM and backbone under seed 0."""
    torch.manual_seed(0)
    return GFRTM("resnet18"), FeatureExtractor("resnet18", "none")


def davis_video(root, frames: int = 6):
    """The synthetic 64x96 DAVIS 2017 val sequence (seed 3) with the most objects, ``frames`` long."""
    root = generate_davis2017(root, seed=3, size=(64, 96), num_train=1, num_val=2, frames=(frames, frames))
    ds = DAVISDataset(root, year=2017, split="val")
    return max((ds.sequence(n) for n in ds.names), key=lambda s: len(s.object_ids))


def run_policy(networks, seq, policy, **config):
    """Track ``seq`` with ``policy`` on a fresh engine (EngineConfig(**config)): (engine, stats, frame outputs)."""
    model, backbone = networks
    engine = InferenceEngine(model, backbone, EngineConfig(**config))
    outputs = []
    stats = track_sequence(engine, seq, policy, on_frame=outputs.append)
    return engine, stats, outputs


def counting(calls, name, fn):
    """``fn`` wrapped to add 1 to ``calls[name]`` per call (for monkeypatched spies)."""
    def wrapper(*args, **kwargs):
        calls[name] += 1
        return fn(*args, **kwargs)
    return wrapper
