"""The seam itself: the engine picks the base network from the model's class, G-FRTM refuses a missing backbone,
and the frame loop reaches G-FRTM only through its base (the G-FRTM computations are tested bit for bit in
tests/equivalence/test_engine.py and tests/lib/engine/test_session.py)."""

from __future__ import annotations

import pytest
import torch

from base.errors import ConfigError
from lib.engine import bases
from lib.engine.bases.gfrtm import GFRTMBase, GFRTMObject
from lib.engine.core import InferenceEngine
from models.gfrtm import GFRTM
from tests.lib.engine.sessions import seeded_networks


def test_registry_knows_the_three_bases():
    assert bases.base_names() == ["gfrtm", "ttvos", "gttvos"]
    with pytest.raises(ConfigError, match="no base network runs a Linear"):
        InferenceEngine(torch.nn.Linear(2, 2))


def test_gfrtm_needs_its_backbone():
    with pytest.raises(ConfigError, match="needs its backbone"):
        InferenceEngine(GFRTM("resnet18"))


def test_gfrtm_objects_are_object_states_with_the_gfrtm_fields():
    model, backbone = seeded_networks()
    engine = InferenceEngine(model, backbone, count_flops=False)
    assert isinstance(engine.base, GFRTMBase) and engine.model is model and engine.backbone is backbone
    assert {"target", "template", "prev_score", "prev_refine"} <= set(GFRTMObject.__dataclass_fields__)
