"""Module-by-module equivalence with the official G-FRTM outputs (fixture README: tests/fixtures/official).

The official checkpoint is loaded through :mod:`lib.tools.checkpoint` (the project's normal path) and the
project's modules are fed the **stored** official inputs. Tolerance (fixture README): max abs difference
<= 1e-5 * max(1, max|ref|); ``gate_hard`` exact; the rebuilt backbone rel-to-max <= 1e-5.

The fixture folder comes from ``OFFICIAL_FIXTURE_DIR`` (default ``tests/fixtures/official``). Every max abs
difference is collected and printed as a table at the end of the module (visible with ``pytest -s``).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn.functional as F

from lib.tools.checkpoint import build_model_from_checkpoint
from models.gfrtm import GFRTM, nearest_resize
from models.refiner import resize
from models.target_model import OnlineTargetModel, TargetModel, TargetModelConfig
from tests.conftest import fixture_backbone
from tests.numerics import check as check_bound

ATOL_SCALE = 1e-5

RESULTS: List[Tuple[str, float, float, float]] = []


@pytest.fixture(scope="module", autouse=True)
def _print_table():
    yield
    if RESULTS:
        lines = ["", f"{'tensor':40s} {'max abs diff':>13s} {'max |ref|':>11s} {'tolerance':>10s}"]
        lines += [f"{name:40s} {diff:13.3e} {ref:11.3e} {tol:10.1e}" for name, diff, ref, tol in RESULTS]
        print("\n".join(lines))


@pytest.fixture(scope="module")
def model(official_checkpoint) -> GFRTM:
    net, _ = build_model_from_checkpoint(official_checkpoint, ftext="resnet18")
    return net


@pytest.fixture(scope="module")
def image_size(inputs) -> Tuple[int, int]:
    return inputs["__meta__"]["H"], inputs["__meta__"]["W"]


def _features(inputs: Dict, frame: int) -> Dict[str, torch.Tensor]:
    prefix = f"feat{frame}."
    return {k[len(prefix):]: v for k, v in inputs.items() if k.startswith(prefix)}


def check(name: str, actual: torch.Tensor, ref: torch.Tensor) -> None:
    """Assert max|actual - ref| <= 1e-5 * max(1, max|ref|) and record the difference."""
    assert actual.shape == ref.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(ref.shape)}"
    diff = (actual.double() - ref.double()).abs().max().item()
    ref_max = ref.abs().max().item()
    tol = ATOL_SCALE * max(1.0, ref_max)
    RESULTS.append((name, diff, ref_max, tol))
    check_bound(f"official modules: {name} (max abs diff)", diff, tol)


def test_mask_and_score_resizes(inputs, outputs):
    check("mask0_8", nearest_resize(inputs["mask0"], outputs["mask0_8"].shape[-2:]), outputs["mask0_8"])
    check("prev_score8", resize(inputs["prev_score"], inputs["feat1.layer3"].shape[-2:]), outputs["prev_score8"])
    check("prev_score (nearest to layer4 grid)",
          nearest_resize(inputs["mask0"], inputs["feat0.layer4"].shape[-2:]), inputs["prev_score"])


def test_template(model, inputs, outputs):
    with torch.no_grad():
        template = model.make_template(inputs["feat0.layer3"], inputs["mask0"])
    check("template", template, outputs["template"])
    check("template vs init_template", template, inputs["init_template"])


def test_matching_gate_delta(model, inputs, outputs):
    with torch.no_grad():
        tpl_s = model.match(inputs["feat1.layer3"], inputs["prev_score"], inputs["init_template"])
        logits = model.gate_logits(outputs["tplS"])
        prob = torch.softmax(logits, dim=1)
        delta = model.delta(outputs["tplS"])
    check("tplS", tpl_s, outputs["tplS"])
    check("gate_logits", logits, outputs["gate_logits"])
    check("gate_prob", prob, outputs["gate_prob"])
    check("gate_prob[:, 0] (reuse_probability)", model.reuse_probability(logits), outputs["gate_prob"][:, 0])
    hard = F.one_hot(logits.argmax(dim=1), 2).to(outputs["gate_hard"].dtype)
    RESULTS.append(("gate_hard (exact)", (hard - outputs["gate_hard"]).abs().max().item(), 1.0, 0.0))
    assert torch.equal(hard, outputs["gate_hard"])
    check("delta", delta, outputs["delta"])


def test_target_model_scores_from_stored_weights(inputs, outputs):
    """The project's target model (:class:`models.target_model.TargetModel`, and the online learner's apply)
    with the stored official weights gives the stored scores."""
    model = TargetModel(inputs["tm_project"].shape[1], inputs["tm_project"].shape[0])
    model.load_state_dict({"project.weight": inputs["tm_project"], "filter.weight": inputs["tm_filter"]})
    online = OnlineTargetModel(model, TargetModelConfig.eval_fast())
    with torch.no_grad():
        check("score0 (tm on feat0.layer4)", model(inputs["feat0.layer4"]), inputs["score0"])
        check("score1 (tm on feat1.layer4)", model(inputs["feat1.layer4"]), inputs["score1"])
    check("tm_score1 (OnlineTargetModel.apply)", online.apply(inputs["feat1.layer4"]), outputs["tm_score1"])


def test_deep_stages_and_translator(model, inputs, outputs):
    f0, f1 = _features(inputs, 0), _features(inputs, 1)
    with torch.no_grad():
        deep0 = model.deep(inputs["score0"], f0["layer5"], f0["layer4"])
        deep1 = model.deep(inputs["score1"], f1["layer5"], f1["layer4"])
        translated = model.translate(inputs["prev_refine"], outputs["delta"])
    check("deep_refine0", deep0, outputs["deep_refine0"])
    check("deep_refine0 vs prev_refine", deep0, inputs["prev_refine"])
    check("deep_refine1", deep1, outputs["deep_refine1"])
    check("out_full_prevX", deep1, outputs["out_full_prevX"])
    check("translated", translated, outputs["translated"])


def test_full_path(model, inputs, outputs, image_size):
    f1 = _features(inputs, 1)
    with torch.no_grad():
        pre_up = model.refiner.shallow_features(outputs["out_full_prevX"], inputs["score1"], f1["layer3"],
                                                f1["layer2"])
        out = model.shallow(outputs["out_full_prevX"], inputs["score1"], f1["layer3"], f1["layer2"], image_size)
        out_forward = model.refiner(inputs["score1"], f1, image_size)
    check("pre_up_full", pre_up, outputs["pre_up_full"])
    check("out_full", out, outputs["out_full"])
    check("out_full (refiner.forward)", out_forward, outputs["out_full"])


def test_reuse_path(model, inputs, outputs, image_size):
    f1 = _features(inputs, 1)
    with torch.no_grad():
        pre_up = model.refiner.shallow_features(outputs["translated"], outputs["score_reuse"], f1["layer3"],
                                                f1["layer2"])
        out = model.shallow(outputs["translated"], outputs["score_reuse"], f1["layer3"], f1["layer2"],
                            image_size)
    check("pre_up_reuse", pre_up, outputs["pre_up_reuse"])
    check("out_reuse", out, outputs["out_reuse"])


def test_upsampler_alone(model, outputs, image_size):
    with torch.no_grad():
        check("upsampler: pre_up_full -> out_full", model.refiner.project(outputs["pre_up_full"], image_size),
              outputs["out_full"])
        check("upsampler: pre_up_reuse -> out_reuse", model.refiner.project(outputs["pre_up_reuse"], image_size),
              outputs["out_reuse"])


def test_chained_modules_match_tracker_logits(model, inputs, outputs, image_size):
    """The module chain of one tracked frame from the stored state reproduces ``Tracker.track``'s logits
    (tau = 1: compute path; tau = -1: reuse path)."""
    f1 = _features(inputs, 1)
    with torch.no_grad():
        tpl_s = model.match(f1["layer3"], inputs["prev_score"], inputs["init_template"])
        full = model.shallow(model.deep(inputs["score1"], f1["layer5"], f1["layer4"]), inputs["score1"],
                             f1["layer3"], f1["layer2"], image_size)
        delta = model.delta(tpl_s)
        reuse = model.shallow(model.translate(inputs["prev_refine"], delta), inputs["prev_score"] + delta,
                              f1["layer3"], f1["layer2"], image_size)
    check("track_full_logits (chained)", full, outputs["track_full_logits"])
    check("track_reuse_logits (chained)", reuse, outputs["track_reuse_logits"])


def test_backbone_rebuilt_from_seed(inputs):
    """The project's backbone (:class:`models.backbone.FeatureExtractor`: fused normalisation, the four stages)
    with the fixture's seeded random weights, rebuilt on every CPU, gives the stored official features."""
    extractor = fixture_backbone(inputs["__meta__"])
    with torch.no_grad():
        for frame in (0, 1):
            feats = extractor(inputs[f"image{frame}"].unsqueeze(0))
            for key, ref in _features(inputs, frame).items():
                name = f"feat{frame}.{key}"
                diff = (feats[key] - ref).abs().max().item()
                ref_max = ref.abs().max().item()
                RESULTS.append((f"{name} (rel-to-max {diff / ref_max:.1e})", diff, ref_max, 1e-5 * ref_max))
                check_bound(f"official modules: {name} rebuilt backbone (rel-to-max)", diff / ref_max, 1e-5)
