"""The inference engine: a base network on a device, and the settings its sessions share.

The networks are stateless and so is the engine: everything that lives across the frames of a video (each
object's state, the policy's memory, the timings) belongs to an :class:`~lib.engine.session.InferenceSession`,
one per video::

    engine = InferenceEngine(model, backbone, EngineConfig(size=(240, 432)), device="cpu")
    session = engine.new_session(PolicyConfig("gate", 0.7))
    out = session.step(first_rgb, new_masks={1: mask})      # labels, probabilities, paths, P_gate
    out = session.step(next_rgb)

What a frame computes belongs to the base network the model is (:mod:`lib.engine.bases`: G-FRTM, TTVOS): the
engine picks it from the model's class (``engine.base``). The frame loop (the session), the paths and the
policies call only the base network's seam (:class:`~lib.engine.bases.base.BaseNetwork`).
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable, Mapping, Optional, Tuple

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from base.errors import ConfigError
from lib.engine.aggregation import upsample_probs
from lib.engine.bases import base_class_for
from lib.engine.policies import PolicyConfig
from lib.engine.session import InferenceSession
from lib.engine.state import FrameContext, ObjectState
from lib.tools.flops import FlopMeter
from models.precision import cast_matmul_weights
from models.quantize import quantize_backbone
from models.target_model import TargetModelConfig

if TYPE_CHECKING:  # pragma: no cover
    from lib.engine.bases.base import BaseNetwork


COMPILABLE = ("backbone", "refiner")  # the parts EngineConfig.compile may name
REUSE_STATES = ("keep", "mask", "full")  # EngineConfig.reuse_state


def _shape_key(value: Any) -> Hashable:
    if isinstance(value, Tensor):
        return tuple(value.shape)
    if isinstance(value, Mapping):
        return tuple((k, _shape_key(v)) for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return tuple(_shape_key(v) for v in value)
    return value


class _Compiled:
    """``torch.compile(fn)`` whose first call per input shape is timed into ``engine.compile_seconds``."""

    def __init__(self, fn, engine: InferenceEngine):
        self.fn, self.engine, self.shapes = torch.compile(fn), engine, set()

    def __call__(self, *args):
        shapes = tuple(_shape_key(a) for a in args)
        if shapes in self.shapes:
            return self.fn(*args)
        start = time.perf_counter()
        out = self.fn(*args)
        self.engine.sync()
        self.engine.compile_seconds += time.perf_counter() - start
        self.shapes.add(shapes)
        return out


@dataclass(frozen=True)
class EngineConfig:
    """Inference settings shared by every session of an engine.

    Attributes:
        policy: the policy of :meth:`InferenceEngine.new_session` when it is given none.
        target: target-model hyper-parameters (default: the official evaluation's fast mode).
        seed: seeds each object's target-model initial weights and its first-frame augmentation.
        amp: ``None`` (float32) or ``"bf16"`` (autocast for the networks; the target-model
            optimisation stays float32). The engine then runs copies of the networks whose convolution and
            linear weights are stored in bfloat16 (:mod:`models.precision`: the values autocast would cast on
            every call; the caller's networks stay float32), and the bicubic upsampling of G-FRTM's refiner in
            float32 (:func:`models.refiner.bicubic_up2`). docs/performance.md gives the speed-ups.
        channels_last: run the networks on channels-last (NHWC) tensors (True), on the default NCHW layout
            (False), or (None) on the base network's own choice, :attr:`BaseNetwork.channels_last`: NCHW for
            G-FRTM (NHWC measured within noise of it on a 2-core CPU; under ``amp`` NHWC, which saves the layout
            conversions of its bf16 convolutions), NHWC for TTVOS (its HRNet backbone 1.7x faster on a 2-core
            CPU, docs/performance.md). Results equal the other layout's up to float
            rounding (~1e-6), not bit for bit. The engine converts the networks the base runs in place (the
            given ones, or TTVOS's folded copy).
        fold_bn: fold inference BatchNorm into the convolutions before it (None: the base network's choice:
            TTVOS folds its backbone's, on a copy of the model; G-FRTM folds nothing, where it measured without
            gain). The same function up to float rounding; False runs the layers as given.
        size: (H, W) to run the networks at, or None for each frame's own size (the official behaviour).
            Frames are resized with INTER_AREA (as the training frames), given masks with INTER_NEAREST; the
            object probabilities are upsampled bilinearly to the frame's size and merged there, so the labels
            come at the original resolution.
        compile: parts to run through ``torch.compile`` (inductor): ``"backbone"`` (stride-8 and deep
            backbone) and / or ``"refiner"`` (the shallow stages and upsampler of both paths). Outputs equal
            the eager ones up to float rounding. Each new input shape compiles anew; the first call per shape
            (compilation + that run) is added to :attr:`InferenceEngine.compile_seconds`. Measured on a
            2-core CPU at 480x854: backbone to stride 8 133 -> 115 ms after 8 s of compilation, the shallow
            refiner 259 -> 360 ms (slower) after 66 s: off by default.
        reuse_state: what a reused frame does to a G-TTVOS object's TTVOS state (docs/gttvos.md): ``keep``
            (nothing; the next computed frame starts from the last computed one, as G-FRTM's target model),
            ``mask`` (the frame's aggregated mask enters the mask history; template and /16 features kept) or
            ``full`` (TTVOS's whole update from the reuse path's decoder output; placement ``s16`` only, whose
            reused frames have the /8 features; on copy or warp frames ``mask``). None: the base network's
            choice, :attr:`BaseNetwork.default_reuse_state` (G-TTVOS ``mask``, measured the better; the others
            ``keep``, the only one they have). The engine's resolved value is :attr:`InferenceEngine.reuse_state`.
        int8_backbone: run G-FRTM's frozen backbone as an int8 copy (:mod:`models.quantize`, PyTorch's x86
            post-training quantization; CPU only): an approximation, measured in docs/performance.md. It is
            calibrated on the frames of ``int8_calibration`` (a folder of frames; default
            :data:`DEFAULT_CALIBRATION`, the bundled DAVIS 2016 train sequence rollerblade, every 4th frame), at the
            engine's ``size``.
    """

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    target: TargetModelConfig = field(default_factory=TargetModelConfig.eval_fast)
    seed: int = 0
    amp: Optional[str] = None
    channels_last: Optional[bool] = None
    fold_bn: Optional[bool] = None
    size: Optional[Tuple[int, int]] = None
    compile: Tuple[str, ...] = ()
    reuse_state: Optional[str] = None
    int8_backbone: bool = False
    int8_calibration: Optional[str] = None

    def __post_init__(self):
        if self.amp not in (None, "bf16"):
            raise ConfigError(f"--amp must be bf16 or absent, got {self.amp!r}")
        if self.reuse_state is not None and self.reuse_state not in REUSE_STATES:
            raise ConfigError(f"--reuse-state must be one of {', '.join(REUSE_STATES)}, got {self.reuse_state!r}")
        parts = tuple(dict.fromkeys(self.compile))
        unknown = [p for p in parts if p not in COMPILABLE]
        if unknown:
            raise ConfigError(f"--compile takes {', '.join(COMPILABLE)}; got {', '.join(map(str, unknown))}")
        object.__setattr__(self, "compile", parts)
        if self.size is not None:
            if len(self.size) != 2 or min(int(s) for s in self.size) < 32:
                raise ConfigError(f"--size must be two sizes H W of at least 32 pixels, got {self.size}")
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))


DEFAULT_CALIBRATION = Path(__file__).resolve().parents[2] / "data" / "samples" / "davis2016-sample" / "JPEGImages" / \
    "480p" / "rollerblade"
CALIBRATION_STRIDE = 4


def calibration_files(folder: Optional[str]) -> list:
    """Every :data:`CALIBRATION_STRIDE`-th frame file of ``folder`` (default :data:`DEFAULT_CALIBRATION`)."""
    from base.errors import DatasetError

    root = Path(folder or DEFAULT_CALIBRATION)
    if not root.is_dir():
        raise DatasetError("the int8 calibration frames are missing (give --int8-calibration DIR, a folder of frames)",
                           root)
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    if not files:
        raise DatasetError("no frames (.jpg, .png, .bmp) to calibrate --int8-backbone on", root)
    return files[::CALIBRATION_STRIDE]


class InferenceEngine:
    """A base network on a device, and the settings its sessions share; videos run in :meth:`new_session`'s
    sessions.

    Args:
        model: the base network's model (:class:`~models.gfrtm.GFRTM`, :class:`~models.ttvos.TTVOS`); eval mode
            is set here. Its class picks the base network (:attr:`base`).
        backbone: G-FRTM's frozen feature extractor matching ``model.ftext`` (None for a model that holds its
            own, such as TTVOS).
        config: inference settings.
        device: where to run (``cpu``, ``cuda:0``, ...).
        count_flops: measure FLOPs per component (:attr:`flops`) with torch.utils.flop_counter; each
            distinct (component, shapes) call is counted once, so the timed loop is barely affected.
    """

    def __init__(self, model: nn.Module, backbone: Optional[nn.Module] = None,
                 config: Optional[EngineConfig] = None, device: torch.device | str = "cpu", count_flops: bool = True):
        self.device = torch.device(device)
        self.config = config if config is not None else EngineConfig()
        self.flops = FlopMeter(count_flops)
        self.compile_seconds = 0.0  # first calls per shape of the compiled parts (EngineConfig.compile)
        model = model.to(self.device).eval()
        if backbone is not None:
            backbone = backbone.to(self.device).eval()
        base_cls = base_class_for(model)
        if self.config.int8_backbone:
            if backbone is None:
                raise ConfigError(f"--int8-backbone quantizes G-FRTM's frozen backbone; base network {base_cls.name} "
                                  "has none")
            backbone = quantize_backbone(backbone, self._calibration_frames())
        if self.config.amp is not None:
            # bf16 weights stored once instead of cast on every call (the same values, models/precision.py),
            # on copies: the caller's networks stay float32 (an int8 backbone keeps its int8 weights)
            model = copy.deepcopy(model)
            cast_matmul_weights(model, torch.bfloat16)
            if backbone is not None and not self.config.int8_backbone:
                backbone = copy.deepcopy(backbone)
                cast_matmul_weights(backbone, torch.bfloat16)
        default_layout = base_cls.channels_last
        if self.config.amp is not None and base_cls.channels_last_amp is not None:
            default_layout = base_cls.channels_last_amp
        self.channels_last = default_layout if self.config.channels_last is None else bool(self.config.channels_last)
        self.reuse_state = self.config.reuse_state or base_cls.default_reuse_state
        if self.reuse_state not in base_cls.reuse_states:
            raise ConfigError(f"--reuse-state {self.reuse_state}: base network {base_cls.name} takes "
                              f"{', '.join(sorted(base_cls.reuse_states))}")
        self.base: BaseNetwork = base_cls(self, model, backbone)
        if self.channels_last:  # the networks the base runs (TTVOS: its folded copy)
            self.base.model.to(memory_format=torch.channels_last)
            if self.base.backbone is not None:
                self.base.backbone.to(memory_format=torch.channels_last)

    def _calibration_frames(self) -> list:
        """The int8 calibration frames as the networks will see them: resized to ``config.size`` (when set) and made
        (1, 3, H, W) uint8 tensors, as :meth:`InferenceSession.step` does with each frame."""
        from base.io import read_image_rgb

        frames = []
        for path in calibration_files(self.config.int8_calibration):
            image = read_image_rgb(path)
            if self.config.size is not None:
                image = self.resize_to_network(image, cv2.INTER_AREA)
            frames.append(self.frame_tensor(image))
        return frames

    @property
    def model(self) -> nn.Module:
        """The base network's model."""
        return self.base.model

    @property
    def backbone(self) -> Optional[nn.Module]:
        """G-FRTM's separate feature extractor (None for a base whose model holds its backbone)."""
        return self.base.backbone

    def compiled(self, fn: Callable) -> Callable:
        """``torch.compile(fn)`` whose first call per input shape is timed into :attr:`compile_seconds`."""
        return _Compiled(fn, self)

    def new_session(self, policy: Optional[PolicyConfig] = None, name: str = "") -> InferenceSession:
        """A session for one video (``policy`` defaults to the engine config's)."""
        return InferenceSession(self, policy if policy is not None else self.config.policy, name)

    # --- helpers ------------------------------------------------------------------------------

    def autocast(self):
        if self.config.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def frame_tensor(self, image: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 -> (1, 3, H, W) uint8 on the device (a view with channels-last strides)."""
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(self.device)

    def resize_to_network(self, array: np.ndarray, interpolation: int) -> np.ndarray:
        """An (h, w[, 3]) array resized to ``config.size``."""
        height, width = self.config.size
        return cv2.resize(array, (width, height), interpolation=interpolation)


__all__ = ["COMPILABLE", "REUSE_STATES", "EngineConfig", "FrameContext", "InferenceEngine", "ObjectState",
           "upsample_probs"]
