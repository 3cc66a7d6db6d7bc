"""TTVOS against the official code's own outputs (``tests/fixtures/ttvos``, see its README).

``OFFICIAL_TTVOS_FIXTURE_DIR`` points these tests at another fixture made the same way (another sequence,
seed, size or backbone); every frame list is read from the fixture's ``__meta__``.

Tolerances are the fixture README's, which are 4x to 10x the largest differences measured between runs of
the official code itself (threads, oneDNN off, AVX2 kernels): features and head maps
max|ours - ref| <= 2e-5 max(1, max|ref|); the template, pooled masks and aggregated probabilities
<= 2e-5 absolute; final masks equal except where the two logits are within 1e-4 of a tie (at most 10
pixels a frame: the official data has 1-8).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from lib.engine.aggregation import odds_aggregate
from lib.tools.checkpoint import load_ttvos
from models.ttvos import TTVOS, TTVOSState, coordinate_channels, normalise_image

FIXTURE_DIR = Path(os.environ.get("OFFICIAL_TTVOS_FIXTURE_DIR",
                                  Path(__file__).resolve().parents[1] / "fixtures" / "ttvos"))
REL = 2e-5  # relative to max(1, max|ref|): features, lt, refine internals, coarse, segscore, W
ABS = 2e-5  # absolute: template, pooled masks, aggregated probabilities
TIE = 1e-4  # a mask pixel may differ where |logit_1 - logit_0| is below this
MAX_TIE_PIXELS = 10
FEATURES = ("s16", "s8", "s4")
REFINE_INTERNALS = ("prev_seg16", "short", "u16", "out16", "s8conv", "u8", "up16")


def _load(name: str) -> Dict:
    path = FIXTURE_DIR / name
    if not path.is_file():
        pytest.fail(f"TTVOS fixture file {path} not found (set OFFICIAL_TTVOS_FIXTURE_DIR)")
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def inputs() -> Dict:
    return _load("inputs.pt")


@pytest.fixture(scope="module")
def outputs() -> Dict:
    return _load("outputs.pt")


@pytest.fixture(scope="module")
def meta(outputs) -> Dict:
    return outputs["__meta__"]


@pytest.fixture(scope="module")
def model() -> TTVOS:
    files = sorted(FIXTURE_DIR.glob("official_ttvos_*.pth"))
    if not files:
        pytest.fail(f"no official_ttvos_*.pth checkpoint in {FIXTURE_DIR}")
    return load_ttvos(files[0])


def assert_rel(ours: torch.Tensor, ref: torch.Tensor, what: str, tol: float = REL) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    err = (ours.double() - ref.double()).abs().max().item()
    bound = tol * max(1.0, ref.double().abs().max().item())
    assert err <= bound, f"{what}: max|diff| {err:.3g} > {bound:.3g}"


def assert_abs(ours: torch.Tensor, ref: torch.Tensor, what: str, tol: float = ABS) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    err = (ours.double() - ref.double()).abs().max().item()
    assert err <= tol, f"{what}: max|diff| {err:.3g} > {tol:.3g}"


def assert_mask(ours_labels: torch.Tensor, ref: torch.Tensor, logits: torch.Tensor, what: str) -> None:
    """Labels equal except at near-ties of the object's two logits (single-object fixtures)."""
    differ = ours_labels.to(torch.uint8) != ref.view_as(ours_labels).to(torch.uint8)
    margin = (logits[:, 1] - logits[:, 0]).abs().view_as(ours_labels)
    unexplained = int((differ & (margin >= TIE)).sum())
    assert unexplained == 0, f"{what}: {unexplained} mask pixels differ away from a logit tie"
    assert int(differ.sum()) <= MAX_TIE_PIXELS, f"{what}: {int(differ.sum())} tie pixels differ"


def feats_of(inputs: Dict, t: int) -> Dict[str, torch.Tensor]:
    return {k: inputs[f"feat.f{t}.{k}"] for k in FEATURES if f"feat.f{t}.{k}" in inputs}


def stored_state(inputs: Dict, outputs: Dict, t: int) -> TTVOSState:
    """The official state after frame t (t = 0: the initialisation)."""
    key = "init" if t == 0 else f"f{t}"
    return TTVOSState(prev_seg=outputs[f"{key}.prev_seg"], template=outputs[f"{key}.gc"],
                      prev_s16=inputs[f"feat.f{t}.s16"])


def mask0(inputs: Dict) -> torch.Tensor:
    return inputs["mask0"].float()


def step(model: TTVOS, feats: Dict[str, torch.Tensor], state: TTVOSState):
    """One tracked frame of one object as the official evaluation runs it: logits, aggregation, update."""
    out = model(feats, state)
    pairs = torch.softmax(out.logits, dim=1)  # (1, 2, H, W): N = 1 object
    labels, merged = odds_aggregate(pairs)
    a = merged[1:2].unsqueeze(0)  # (1, 1, H, W)
    new_state = model.update(feats, torch.cat([1 - a, a], dim=1), state, out.update_weight)
    return out, labels, a, new_state


def test_fixture_settings_are_the_ones_tested(meta):
    assert meta["object_ids"] == [1], "these tests aggregate one object, as the fixture"
    assert meta["config"]["refine"] == "v3" and meta["config"]["ltLoc"] == "s8"
    assert meta["padding"] == [0, 0, 0, 0], "the fixture's frames need no padding (multiples of 16)"


def test_checkpoint_loads_strictly_with_the_official_keys(model, meta):
    assert model.backbone_name == meta["backbone"]
    official = torch.load(sorted(FIXTURE_DIR.glob("official_ttvos_*.pth"))[0], weights_only=True)["net"]
    assert [k[len("vos."):] for k in official] == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(v, official["vos." + k]), k


def test_normalisation_is_the_official_transform(inputs):
    """Bit for bit the torchvision ToTensor + Normalize of the official loader, on the stored frame."""
    for i, image in enumerate(inputs["images"]):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        ref = TF.normalize(TF.to_tensor(pil), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        assert torch.equal(normalise_image(image.unsqueeze(0))[0], ref), f"image {i}"


def test_coordinate_channels(outputs):
    ref = outputs["coords8"]
    assert torch.equal(coordinate_channels(*ref.shape[-2:]), ref)


def test_backbone_features(model, inputs, meta):
    frames = meta["image_frames"]
    assert len(frames) == inputs["images"].shape[0]
    with torch.no_grad():
        for image, t in zip(inputs["images"], frames):
            feats = model.features(normalise_image(image.unsqueeze(0)))
            for k in FEATURES:
                if f"feat.f{t}.{k}" in inputs:
                    assert_rel(feats[k], inputs[f"feat.f{t}.{k}"], f"frame {t} {k}")
            if t == 0 and "feat.f0.s32" in inputs:
                assert_rel(model.backbone.branches(normalise_image(image.unsqueeze(0)))[3], inputs["feat.f0.s32"],
                           "frame 0 /32 branch")


def test_first_frame_state(model, inputs, outputs):
    with torch.no_grad():
        state = model.init_state(feats_of(inputs, 0), mask0(inputs))
    assert_abs(state.prev_seg, outputs["init.prev_seg"], "init prev_seg", tol=1e-6)
    assert_abs(state.template, outputs["init.gc"], "init gc")
    assert torch.equal(state.prev_s16, inputs["feat.f0.s16"])


def _internals(model: TTVOS) -> tuple:
    """Forward hooks recording the decoder's internals under the fixture's names."""
    seen: Dict[str, torch.Tensor] = {}
    r = model.refine

    def out(name):
        return lambda _m, _i, o: seen.__setitem__(name, o)

    def short(_m, i, o):
        seen["prev_seg16"], seen["short"] = i[0][:, :6], o

    handles = [r.conv_s16.register_forward_hook(short),
               r.blend_s16.register_forward_hook(out("u16")), r.deconv1_1.register_forward_hook(out("out16")),
               r.conv_s8.register_forward_hook(out("s8conv")),
               r.blend_s8.register_forward_hook(out("u8")),
               r.deconv1_2.register_forward_hook(out("up16"))]
    return seen, handles


def test_per_frame_modules_from_the_stored_state(model, inputs, outputs, meta):
    for t in meta["detail_frames"]:
        state = stored_state(inputs, outputs, t - 1)
        seen, handles = _internals(model)
        try:
            with torch.no_grad():
                lt = model.attend(feats_of(inputs, t), state)
                out = model(feats_of(inputs, t), state)
        finally:
            for h in handles:
                h.remove()
        assert_rel(lt, outputs[f"f{t}.lt"], f"frame {t} lt")
        assert_rel(out.update_weight, outputs[f"f{t}.upW"], f"frame {t} W")
        assert_rel(out.coarse, outputs[f"f{t}.coarse"], f"frame {t} coarse")
        assert_rel(out.logits, outputs[f"f{t}.segscore"], f"frame {t} segscore")
        if t in meta["internals_frames"]:
            for name in REFINE_INTERNALS:
                assert_rel(seen[name], outputs[f"f{t}.refine.{name}"], f"frame {t} refine {name}")


def test_aggregation_and_update_every_frame(model, inputs, outputs, meta):
    """From the stored state of frame t-1: our logits, aggregation and update against the state after t."""
    for t in meta["frames"][1:]:
        with torch.no_grad():
            out, labels, a, new = step(model, feats_of(inputs, t), stored_state(inputs, outputs, t - 1))
        assert_rel(out.update_weight, outputs[f"f{t}.upW"], f"frame {t} W")
        assert_abs(new.prev_seg[:, :2], outputs[f"f{t}.pred8"], f"frame {t} pred8")
        assert_abs(new.prev_seg, outputs[f"f{t}.prev_seg"], f"frame {t} prev_seg")
        assert_abs(new.template, outputs[f"f{t}.gc"], f"frame {t} gc")
        assert_mask(labels, outputs["segs"][t], out.logits, f"frame {t} mask")
        if f"f{t}.agg_fg" in outputs:  # fixtures made with --store-agg
            assert_abs(a, outputs[f"f{t}.agg_fg"], f"frame {t} aggregated probability")


def test_template_of_the_update(model, inputs, outputs, meta):
    """gc_cur: the template module on frame t's features and the stored new mask history."""
    for t in meta["frames"][1:]:
        with torch.no_grad():
            cur = model.gcm(model.addCoords(inputs[f"feat.f{t}.s8"]), outputs[f"f{t}.prev_seg"])
        assert_abs(cur, outputs[f"f{t}.gc_cur"], f"frame {t} gc_cur")


def test_sequence_chains_its_own_state(model, inputs, outputs, meta):
    """The whole head from the stored features and mask0, our own state carried over every frame."""
    with torch.no_grad():
        state = model.init_state(feats_of(inputs, 0), mask0(inputs))
        assert torch.equal(outputs["segs"][0].view(-1), inputs["mask0"].view(-1))
        for t in meta["frames"][1:]:
            out, labels, _, state = step(model, feats_of(inputs, t), state)
            if f"f{t}.segscore" in outputs:
                assert_rel(out.logits, outputs[f"f{t}.segscore"], f"chained frame {t} segscore")
            assert_rel(out.update_weight, outputs[f"f{t}.upW"], f"chained frame {t} W")
            assert_abs(state.prev_seg, outputs[f"f{t}.prev_seg"], f"chained frame {t} prev_seg")
            assert_abs(state.template, outputs[f"f{t}.gc"], f"chained frame {t} gc")
            assert_mask(labels, outputs["segs"][t], out.logits, f"chained frame {t} mask")
