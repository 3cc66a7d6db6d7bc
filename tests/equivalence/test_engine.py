"""One tracking step through the inference engine (:class:`lib.engine.core.InferenceEngine`) against the official
``Tracker.track`` outputs, and the project's deliberate differences from the official code.

The engine is driven through a session's own per-frame code path (:meth:`InferenceSession.step_features`,
which :meth:`InferenceSession.step` runs after the backbone) with the object state the official code had after
its first-frame initialisation, injected with :meth:`GFRTMBase.restore_object` (template, previous score,
previous deep refined feature, target-model weights ``tm_project``/``tm_filter``). A restored object
does not update its target model online; the official fixture switched that update off too, and it
comes after every compared output of the frame.

Tolerance (fixture README): max abs difference <= 1e-5 * max(1, max|ref|); gate decisions exact.
Sizes come from the fixture (``inputs.pt`` ``__meta__`` and tensor shapes), the folder from
``OFFICIAL_FIXTURE_DIR`` (default ``tests/fixtures/official``). Every compared quantity is recorded in
:data:`RESULTS` as (name, max abs difference, tolerance).
"""

from __future__ import annotations

import copy
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn.functional as F

import models.target_model as target_model_module
from base.errors import ConfigError
from lib.engine.aggregation import soft_aggregate
from lib.engine.core import EngineConfig, InferenceEngine, ObjectState
from lib.engine.paths import COMPUTE, TRANSLATE, PathKind
from lib.engine.policies import PolicyConfig
from lib.engine.session import FrameResult
from lib.tools.checkpoint import build_model_from_checkpoint
from models.backbone import FeatureExtractor
from models.gfrtm import GFRTM, nearest_resize
from models.refiner import bicubic_up2
from models.target_model import OnlineTargetModel, TargetModel, TargetModelConfig, upsample_bilinear
from tests.conftest import fixture_backbone
from tests.numerics import U32, bilinear_adjoint_bound, bilinear_weight_bound, gamma
from tests.numerics import check as check_bound

ATOL_SCALE = 1e-5
F64_TOLERANCE = 2e-3  # README: float64 optimisation, parameters and scores rel-to-max
LAYOUTS = ("nchw", "channels_last")  # EngineConfig.channels_last off / on
PATHS = {"compute": (1.0, COMPUTE, "track_full"), "reuse": (-1.0, TRANSLATE, "track_reuse")}

RESULTS: List[Tuple[str, float, float]] = []


@pytest.fixture(scope="module")
def model(inputs, official_checkpoint) -> GFRTM:
    net, _ = build_model_from_checkpoint(official_checkpoint, ftext=inputs["__meta__"]["ftext"])
    return net


@pytest.fixture(scope="module")
def seeded_backbone(inputs) -> FeatureExtractor:
    """The fixture's seeded random backbone, bit for bit on every CPU (tests/seeded_backbone.py)."""
    return fixture_backbone(inputs["__meta__"])


def image_size(inputs) -> Tuple[int, int]:
    return inputs["__meta__"]["H"], inputs["__meta__"]["W"]


def features(inputs: Dict, frame: int, keys=("layer2", "layer3", "layer4", "layer5")) -> Dict[str, torch.Tensor]:
    """The stored official features of a frame (a fresh dict: the engine may add deep features to it)."""
    return {key: inputs[f"feat{frame}.{key}"] for key in keys}


def make_tracker(model: GFRTM, backbone: FeatureExtractor, tau: float, seed: int = 0,
                 channels_last: bool = False) -> InferenceEngine:
    if channels_last:  # the engine converts the networks in place: keep the shared ones as they are
        model, backbone = copy.deepcopy(model), copy.deepcopy(backbone)
    config = EngineConfig(policy=PolicyConfig("gate", tau), seed=seed, channels_last=channels_last)
    return InferenceEngine(model, backbone, config, count_flops=False)


def track_states(tracker: InferenceEngine, states, feats: Dict[str, torch.Tensor], size) -> FrameResult:
    """A new session holding ``states``, tracked on frame 1 from given features."""
    session = tracker.new_session()
    for state in states:
        session.add_object(state)
    return session.step_features(feats, size)


def restore_official_state(tracker: InferenceEngine, inputs: Dict, obj_id: int = 1) -> ObjectState:
    """The official tracker state after initialising on frame 0 (``inputs.pt``)."""
    return tracker.base.restore_object(
        obj_id, 0, inputs["init_template"], inputs["prev_score"], inputs["prev_refine"],
        {"project.weight": inputs["tm_project"], "filter.weight": inputs["tm_filter"]},
        inputs["mask0"][0, 0].float(),
    )


def check(name: str, actual: torch.Tensor, ref: torch.Tensor) -> None:
    """Assert max|actual - ref| <= 1e-5 * max(1, max|ref|) and record the difference."""
    assert actual.shape == ref.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(ref.shape)}"
    diff = (actual.double() - ref.double()).abs().max().item()
    tol = ATOL_SCALE * max(1.0, ref.abs().max().item())
    RESULTS.append((name, diff, tol))
    check_bound(f"official engine: {name} (max abs diff)", diff, tol)


def check_labels(name: str, labels: torch.Tensor, ref_logits: torch.Tensor, obj_id: int = 1) -> None:
    """One object: the label is the object iff its probability > 0.5. Pixels may differ only where the
    reference probability is within the tolerance of 0.5."""
    ref_prob = torch.sigmoid(ref_logits.double())[0, 0]
    differ = (labels.cpu() == obj_id) != (ref_prob > 0.5)
    ambiguous = (ref_prob - 0.5).abs() <= ATOL_SCALE
    RESULTS.append((f"{name} (pixels differing)", float(differ.sum()), float(ambiguous.sum())))
    assert not (differ & ~ambiguous).any(), f"{name}: {int((differ & ~ambiguous).sum())} labels differ"


def check_path(frame, expected: PathKind, outputs: Dict, prefix: str, where: str) -> None:
    """The path object 1 took on ``frame`` (a FrameResult or FrameOutput) is the one the policy forced
    (tau 1: compute, tau -1: reuse) and its P_gate is the official's."""
    assert frame.paths[1] is expected
    check(f"{prefix}: P_gate ({where})", torch.tensor([frame.p_reuse[1]]), outputs["gate_prob"][:, 0])


def check_state_after(obj: ObjectState, expected: PathKind, inputs: Dict, outputs: Dict, prefix: str) -> None:
    """On the compute path the object's 'previous' score and refined feature become this frame's; on
    the reuse path they stay those of the last computed frame."""
    if expected is COMPUTE:
        check(f"{prefix}: prev_score after (= score1)", obj.prev_score, inputs["score1"])
        check(f"{prefix}: prev_refine after (= deep_refine1)", obj.prev_refine, outputs["deep_refine1"])
        assert obj.last_compute_index == 1
    else:
        assert torch.equal(obj.prev_score, inputs["prev_score"]) and torch.equal(obj.prev_refine, inputs["prev_refine"])
        assert obj.last_compute_index == 0


# ----------------------------------------------------------------------------------------------
# one tracking step from the official post-initialisation state


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("path_name", list(PATHS))
def test_tracking_step_from_stored_features(model, inputs, outputs, seeded_backbone, path_name, layout):
    """``InferenceSession.step_features`` on frame 1 with the stored official features of that frame."""
    tau, expected, prefix = PATHS[path_name]
    tracker = make_tracker(model, seeded_backbone, tau, channels_last=layout == "channels_last")
    obj = restore_official_state(tracker, inputs)
    result = track_states(tracker, [obj], features(inputs, 1), image_size(inputs))

    where = f"engine, {layout}"
    check_path(result, expected, outputs, prefix, where)
    check(f"{prefix}_logits ({where})", result.logits[1], outputs[f"{prefix}_logits"])
    check(f"{prefix}_mask ({where}, soft aggregation)", result.merged[1], outputs[f"{prefix}_mask"])
    check(f"{prefix}: probability ({where})", result.probs[1], torch.sigmoid(outputs[f"{prefix}_logits"])[0, 0])
    check_labels(f"{prefix}: labels ({where})", result.labels, outputs[f"{prefix}_logits"])
    assert torch.equal(obj.prev_prob, result.probs[1])
    check_state_after(obj, expected, inputs, outputs, f"{prefix} ({where})")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("path_name", list(PATHS))
def test_session_step_from_the_image(model, inputs, outputs, seeded_backbone, path_name, layout):
    """The whole per-frame path from the RGB frame (``InferenceSession.step``): backbone, tracking,
    merging, labels, with the fixture's backbone."""
    backbone = seeded_backbone
    tau, expected, prefix = PATHS[path_name]
    tracker = make_tracker(model, backbone, tau, channels_last=layout == "channels_last")
    obj = restore_official_state(tracker, inputs)
    session = tracker.new_session()
    session.add_object(obj)
    image1 = inputs["image1"].permute(1, 2, 0).numpy()
    out = session.step(image1)
    labels = out.labels

    assert out.index == 1 and out.init_seconds == 0.0
    where = f"session.step, {layout}"
    check_path(out, expected, outputs, prefix, where)
    check(f"{prefix}: probability ({where})", obj.prev_prob, torch.sigmoid(outputs[f"{prefix}_logits"])[0, 0])
    check_labels(f"{prefix}: labels ({where})", torch.from_numpy(labels), outputs[f"{prefix}_logits"])
    check_state_after(obj, expected, inputs, outputs, f"{prefix} ({where})")


def test_engine_initialisation_exact_parts(model, inputs, seeded_backbone):
    """``GFRTMBase.init_object`` on frame 0: template, initial score and probability as the official
    initialisation. (Its target model comes from the project's own first-frame augmentation and the
    float32 GN/CG, which the official code does not reproduce bit for bit; see DIFFERENCES.md.)"""
    tracker = make_tracker(model, seeded_backbone, 1.0)
    mask = inputs["mask0"][0, 0].numpy()
    with torch.inference_mode():
        obj = tracker.base.init_object(1, 0, inputs["image0"][None], mask, features(inputs, 0, ("layer3", "layer4",
                                                                                           "layer5")))
    check("init_template (engine init)", obj.template, inputs["init_template"])
    check("prev_score (engine init)", obj.prev_score, inputs["prev_score"])
    assert torch.equal(obj.prev_prob, inputs["mask0"][0, 0].float())
    assert obj.target.memory is not None and obj.target.memory.current_size == tracker.config.target.num_aug


# ----------------------------------------------------------------------------------------------
# deliberate differences (tests/fixtures/official/DIFFERENCES.md)


def _second_object_state(tracker: InferenceEngine, model: GFRTM, inputs: Dict) -> ObjectState:
    """A different object on the same frames: the complement of the mask, a sign-flipped filter."""
    mask = 1 - inputs["mask0"]
    with torch.no_grad():
        template = model.make_template(inputs["feat0.layer3"], mask)
    return tracker.base.restore_object(
        2, 0, template, nearest_resize(mask, inputs["prev_score"].shape[-2:]), inputs["prev_refine"].flip(-1),
        {"project.weight": inputs["tm_project"], "filter.weight": -inputs["tm_filter"]}, mask[0, 0].float(),
    )


@pytest.mark.parametrize("path_name", list(PATHS))
def test_shared_deep_backbone_equals_per_object_computation(model, inputs, seeded_backbone, monkeypatch,
                                                            path_name):
    """The engine runs the deep backbone once per frame for all objects (the official code once per
    object on the compute path). Two objects tracked together give the same logits, bit for bit, as
    each object tracked alone (which recomputes the deep features, as the official code does)."""
    backbone = seeded_backbone
    tau, expected, _ = PATHS[path_name]
    calls = []
    forward_deep = backbone.forward_deep
    monkeypatch.setattr(backbone, "forward_deep", lambda layer3: calls.append(1) or forward_deep(layer3))
    size = image_size(inputs)
    f8 = ("layer2", "layer3")  # the engine computes layer4/layer5 itself

    def objects(tracker, ids):
        states = {1: restore_official_state(tracker, inputs), 2: _second_object_state(tracker, model, inputs)}
        return {i: states[i] for i in ids}

    tracker = make_tracker(model, backbone, tau)
    pair = track_states(tracker, objects(tracker, (1, 2)).values(), features(inputs, 1, f8), size)
    assert len(calls) == (1 if expected is COMPUTE else 0)
    for obj_id in (1, 2):
        alone = track_states(tracker, objects(tracker, (obj_id,)).values(), features(inputs, 1, f8), size)
        diff = (pair.logits[obj_id] - alone.logits[obj_id]).abs().max().item()
        RESULTS.append((f"{path_name}: object {obj_id} logits, with another object vs alone", diff, 0.0))
        assert torch.equal(pair.logits[obj_id], alone.logits[obj_id])
        assert torch.equal(pair.probs[obj_id], alone.probs[obj_id])
    assert len(calls) == (3 if expected is COMPUTE else 0)
    # merging the two independently computed probabilities gives the engine's merged masks
    labels, merged = soft_aggregate(torch.stack([pair.probs[1], pair.probs[2]]))
    assert torch.equal(merged[1], pair.merged[1]) and torch.equal(merged[2], pair.merged[2])


def test_matrix_bilinear_upsampling_equals_interpolate(inputs):
    """The target model's least-squares residuals upsample the scores with two matrix products instead
    of ``F.interpolate`` (bilinear, align_corners=False): same values up to float rounding, forward and
    backward (the official fixture's b = -J^T r is matched in tests/equivalence/test_target_model.py)."""
    low, high = tuple(inputs["score0"].shape[-2:]), image_size(inputs)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, *low, generator=gen, dtype=torch.float64)
    cotangent = torch.randn(5, 1, *high, generator=gen, dtype=torch.float64)
    # float64: rounding only (< 1e-12). float32 forward: the weights differ in their float32 rounding (derived
    # in tests/numerics.bilinear_weight_bound, relative to max|x|). float32 backward (a scatter of ~1000
    # products per input vs two matrix products): elementwise, derived in tests/numerics.bilinear_adjoint_bound.
    for dtype in (torch.float64, torch.float32):
        for name, data in (("random", x), ("score0", inputs["score0"].double())):
            a = data.to(dtype).requires_grad_(True)
            b = data.to(dtype).requires_grad_(True)
            g = cotangent[: a.shape[0]].to(dtype)
            ours = upsample_bilinear(a, high)
            official = F.interpolate(b, high, mode="bilinear", align_corners=False)
            grad_ours, = torch.autograd.grad(ours, a, g)
            grad_official, = torch.autograd.grad(official, b, g)
            forward = ((ours - official).abs().max() / a.abs().max()).item()
            if dtype == torch.float64:
                backward = ((grad_ours - grad_official).abs().max() / grad_official.abs().max()).item()
                checks = (("forward", "max abs diff / max|x|", forward, 1e-12),
                          ("backward", "rel-to-max", backward, 1e-12))
            else:
                bound = bilinear_adjoint_bound(g, low)
                backward = ((grad_ours.double() - grad_official.double()).abs() / bound).max().item()
                checks = (("forward", "max abs diff / max|x|", forward, bilinear_weight_bound(low)),
                          ("backward", "err/bound", backward, 1.0))
            for what, measure, value, tolerance in checks:
                site = f"matrix bilinear {what} {name} {str(dtype)[6:]} ({measure})"
                RESULTS.append((site, value, tolerance))
                check_bound(site, value, tolerance)


def _float64_run(tm: Dict, inputs: Dict) -> Tuple[OnlineTargetModel, torch.Tensor]:
    """Official float64 sequence (init, apply on frame 1, frame counter as stored, update)."""
    meta = tm["__meta__"]
    model = TargetModel(tm["init.project0"].shape[1], tm["init.project0"].shape[0])
    model.load_state_dict({"project.weight": tm["init.project0"], "filter.weight": tm["init.filter0"]})
    online = OnlineTargetModel(model, TargetModelConfig.eval_fast(), record_runs=True)
    online.init(tm["init.x"].double(), tm["aug.labels"])
    online.apply(inputs["feat1.layer4"].double())
    online.frame_count = meta["update"]["frame_num_at_update"]
    assert online.update(tm["update.soft_mask"].double())
    with torch.no_grad():
        return online, online.model(inputs["feat1.layer4"].double())


def test_matrix_bilinear_effect_on_the_float64_optimisation(tm, inputs, monkeypatch):
    """The whole float64 init + update with the official ``F.interpolate`` form vs the matrix form: both
    within the README's float64 tolerance of each other (the official float64 run itself moves by up
    to 2e-4 with the thread count), and both within it of the official float64 run."""
    ours, score_ours = _float64_run(tm, inputs)
    monkeypatch.setattr(target_model_module, "upsample_bilinear",
                        lambda x, size: F.interpolate(x, size, mode="bilinear", align_corners=False))
    official_form, score_official_form = _float64_run(tm, inputs)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()

    pairs = [("score_after: matrix vs F.interpolate", score_ours, score_official_form),
             ("filter: matrix vs F.interpolate", ours.model.filter.weight, official_form.model.filter.weight),
             ("project: matrix vs F.interpolate", ours.model.project.weight, official_form.model.project.weight),
             ("score_after: F.interpolate form vs official f64", score_official_form, tm["f64.update.score_after"]),
             ("score_after: matrix form vs official f64", score_ours, tm["f64.update.score_after"])]
    for name, a, b in pairs:
        value = rel(a, b)
        RESULTS.append((f"f64 {name} (rel-to-max)", value, F64_TOLERANCE))
        assert value <= F64_TOLERANCE, f"{name}: {value:.3g}"


def test_seeded_target_model_weights_are_the_official_draw(model, inputs, tm, seeded_backbone):
    """The engine draws every object's initial target-model weights under ``EngineConfig.seed``,
    without touching the global RNG. With the seed the fixture used before the official
    ``Tracker.initialize`` (``tm_seed``) they are the official initial weights: the same random bits, mapped to
    U(-b, b) by ``from + x (to - from)`` in float32, which a kernel family may round differently (with or without
    FMA; measured: 3.7e-9 = 2 ulps with ATEN_CPU_CAPABILITY=default, 0 with avx2). Bound: two roundings of size
    <= 2b and one of size <= b on each side, 6 u b in all."""
    tracker = make_tracker(model, seeded_backbone, 1.0, seed=tm["__meta__"]["tm_seed"])
    state = torch.random.get_rng_state()
    first, second = tracker.base.new_target_model(), tracker.base.new_target_model()
    assert torch.equal(torch.random.get_rng_state(), state)
    for name, ref in (("project", tm["init.project0"]), ("filter", tm["init.filter0"])):
        for weights in (first, second):
            diff = (getattr(weights, name).weight - ref).abs().max().item()
            bound = 6 * U32 * ref.abs().max().item()
            RESULTS.append((f"seeded initial {name} weights vs init.{name}0", diff, bound))
            check_bound(f"seeded initial {name} weights vs init.{name}0 (max abs diff)", diff, bound)


def test_restore_object_rejects_wrong_weights(model, inputs, seeded_backbone):
    tracker = make_tracker(model, seeded_backbone, 1.0)
    with pytest.raises(ConfigError, match="do not fit"):
        tracker.base.restore_object(1, 0, inputs["init_template"], inputs["prev_score"], inputs["prev_refine"],
                               {"project.weight": inputs["tm_project"][:10], "filter.weight": inputs["tm_filter"]},
                               inputs["mask0"][0, 0].float())
    with pytest.raises(ConfigError, match="lack filter.weight"):
        tracker.base.restore_object(1, 0, inputs["init_template"], inputs["prev_score"], inputs["prev_refine"],
                               {"project.weight": inputs["tm_project"]}, inputs["mask0"][0, 0].float())


# float32 forward: each output is a separable 4 x 4-tap sum (weights -3/128, 29/128, 111/128, -9/128 at
# scale 2, sum of |w| 1.1875 per axis); both forms are within gamma(8 + 4) * 1.1875^2 * max|x| of the exact
# value (4 roundings for F.interpolate's float32 weight formula), so within twice that of each other.
# float32 backward (the adjoint, with replicated borders): elementwise, :func:`bicubic_adjoint_bound`.
# float64: rounding only.
BICUBIC_TOLERANCE = {torch.float64: {"forward": 1e-12, "backward": 1e-12},
                     torch.float32: {"forward": 2 * gamma(12) * 1.1875 ** 2, "backward": 1.0}}
# Per axis an input pixel receives <= 8 taps at scale 2 (4 input widths x 2 outputs), <= 16 at a replicated
# border (the clamped taps pile up there): <= 256 products per input in 2-D, in the scatter's order or in the two
# depthwise passes' (2 x 16); F.interpolate's weights carry 4 more roundings (above).
BICUBIC_ADJOINT_TERMS = 16 * 16 + 4


def bicubic_adjoint_bound(cotangent: torch.Tensor, in_shape) -> torch.Tensor:
    """Elementwise bound on |a - b| between two float32 backward passes of the 2x bicubic upsampling: each is
    within gamma(n) |K|^T |g| of the exact adjoint (Higham 3.5), |K| the kernel with absolute taps; evaluated in
    float64 by the project's own polyphase form with |taps|."""
    import models.refiner as refiner_module

    taps = refiner_module.BICUBIC_TAPS
    x = torch.zeros(in_shape, dtype=torch.float64, requires_grad=True)
    try:
        refiner_module.BICUBIC_TAPS = tuple(tuple(abs(t) for t in phase) for phase in taps)
        magnitude, = torch.autograd.grad((bicubic_up2(x) * cotangent.double().abs()).sum(), x)
    finally:
        refiner_module.BICUBIC_TAPS = taps
    return 2 * gamma(BICUBIC_ADJOINT_TERMS) * magnitude


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bicubic_up2_equals_interpolate(dtype):
    """The upsampler's 2x bicubic steps (depthwise polyphase convolutions) against ``F.interpolate``:
    odd sizes, several images, a channels-last input, and the gradient used in training."""
    tolerance = BICUBIC_TOLERANCE[dtype]
    gen = torch.Generator().manual_seed(0)
    for shape, layout in (((3, 5, 7, 9), torch.contiguous_format), ((1, 64, 15, 27), torch.channels_last)):
        x = torch.randn(*shape, generator=gen, dtype=dtype).contiguous(memory_format=layout).requires_grad_(True)
        ours = bicubic_up2(x)
        ref = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        cotangent = torch.randn(ref.shape, generator=gen, dtype=dtype)
        grad_ours, = torch.autograd.grad(ours, x, cotangent)
        grad_ref, = torch.autograd.grad(ref, x, cotangent)
        forward = ((ours - ref).abs().max() / x.abs().max()).item()
        if dtype == torch.float64:
            backward, measure = ((grad_ours - grad_ref).abs().max() / grad_ref.abs().max()).item(), "rel-to-max"
        else:
            bound = bicubic_adjoint_bound(cotangent, shape)
            backward, measure = ((grad_ours.double() - grad_ref.double()).abs() / bound).max().item(), "err/bound"
        for what, value, what_measure in (("forward", forward, "max abs diff / max|x|"), ("backward", backward,
                                                                                          measure)):
            site = f"bicubic_up2 {what} {tuple(shape)} {str(dtype)[6:]} ({what_measure})"
            RESULTS.append((site, value, tolerance[what]))
            check_bound(site, value, tolerance[what])
