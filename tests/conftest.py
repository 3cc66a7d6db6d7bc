"""Shared test fixtures."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Dict

import pytest
import torch

from models.backbone import FEATURE_CHANNELS, FeatureExtractor
from tests.seeded_backbone import content_sha256, fixture_backbone_state

# Emulating another machine's kernels (every numeric bound must hold on all of them):
#   ATEN_CPU_CAPABILITY=default|avx2|avx512  PyTorch's own CPU kernels (read by torch itself)
#   ONEDNN_MAX_CPU_ISA=SSE41|AVX2|AVX512_CORE  oneDNN's convolutions (read by oneDNN itself)
#   OMP_NUM_THREADS=1|2                        intra-op threads (read by torch itself)
#   REUSE_VOS_TEST_MKLDNN=0                    torch.backends.mkldnn off: PyTorch's native convolutions
# The last one only reaches in-process tests; the CLI subprocesses keep oneDNN on.
if os.environ.get("REUSE_VOS_TEST_MKLDNN", "1") == "0":
    torch.backends.mkldnn.enabled = False

# The official code's fixture (tests/equivalence/); any fixture made the same way works.
OFFICIAL_FIXTURE_DIR = Path(os.environ.get("OFFICIAL_FIXTURE_DIR", Path(__file__).parent / "fixtures" / "official"))


def fixture_backbone(meta: Dict, ftext: str = "resnet18", folders=()) -> FeatureExtractor:
    """The frozen backbone with the fixture's exact seeded random weights (``__meta__``: ``backbone_seed``,
    ``backbone_content_sha256``, optionally ``ftext``), on every CPU (tests/seeded_backbone.py). Fails, never
    skips, when they cannot be rebuilt."""
    ftext = meta.get("ftext", ftext)
    state = fixture_backbone_state(ftext, meta["backbone_seed"], meta["backbone_content_sha256"],
                                   [*folders, OFFICIAL_FIXTURE_DIR])
    extractor = FeatureExtractor(ftext, state)
    assert content_sha256(extractor.resnet.state_dict()) == meta["backbone_content_sha256"]
    return extractor


@pytest.fixture(scope="session")
def load_official() -> Callable[[str], Dict]:
    """Function reading one file of the official fixture (``inputs.pt``, ...); fails the test if it is absent
    (the fixtures are part of the project)."""

    def load(name: str) -> Dict:
        path = OFFICIAL_FIXTURE_DIR / name
        if not path.is_file():
            pytest.fail(f"official fixture file {path} not found (set OFFICIAL_FIXTURE_DIR)")
        return torch.load(path, map_location="cpu", weights_only=True)

    return load


@pytest.fixture(scope="session")
def official_checkpoint() -> Path:
    """The fixture's official-format checkpoint (``official_rn18_seed*.pth``); fails the test if absent."""
    files = sorted(OFFICIAL_FIXTURE_DIR.glob("official_rn18_seed*.pth"))
    if not files:
        pytest.fail(f"no official_rn18_seed*.pth checkpoint in {OFFICIAL_FIXTURE_DIR}")
    return files[0]


def _feature_grid(height: int, width: int) -> Dict[str, tuple]:
    """(h, w) of each feature key for an image of height x width (every stride-2 step is a ceil)."""
    h, w = math.ceil(math.ceil(height / 2) / 2), math.ceil(math.ceil(width / 2) / 2)
    grid = {"layer1": (h, w), "layer2": (h, w)}
    for key in ("layer3", "layer4", "layer5"):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        grid[key] = (h, w)
    return grid


@pytest.fixture
def feature_grid() -> Callable[[int, int], Dict[str, tuple]]:
    """The function (H, W) -> {key: (h, w)} of backbone feature sizes."""
    return _feature_grid


@pytest.fixture
def random_features() -> Callable[..., Dict[str, torch.Tensor]]:
    """Factory: random backbone-shaped features ``layer1`` .. ``layer5`` for (ftext, batch, H, W, seed)."""

    def make(ftext: str = "resnet18", batch: int = 1, height: int = 64, width: int = 112,
             seed: int = 0) -> Dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return {key: torch.randn(batch, FEATURE_CHANNELS[ftext][key], *size, generator=gen).relu()
                for key, size in _feature_grid(height, width).items()}

    return make


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A project-format G-FRTM ResNet-18 checkpoint of seeded random weights (for the CLI tests)."""
    from lib.tools.checkpoint import save_model
    from models.gfrtm import GFRTM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GFRTM("resnet18")
    path = tmp_path_factory.mktemp("ckpt") / "random_rn18.pth"
    save_model(path, model)
    return path
