"""Loading, saving and converting G-FRTM checkpoints.

Accepted files (all hold the 189-key G-FRTM state dict of :class:`models.gfrtm.GFRTM`, or the 140
``refiner.*`` keys of an FRTM checkpoint, which has no ``refiner.Diff_process``):

* the project's own format, ``{'format': 'reuse-vos', 'format_version': 1, 'model': state_dict, ...}``,
  which always loads with ``torch.load(weights_only=True)``;
* official G-FRTM / FRTM training checkpoints, ``{'name', 'epoch', 'stats', 'model', 'optimizer',
  'scheduler'}``. Their ``stats`` usually pickle ``lib.utils.AverageMeter`` objects of the official code,
  which a safe (weights-only) load refuses. Such files load only with ``trust=True``
  (``--trust-checkpoint``); classes of the official code (modules ``lib.*``, ``model.*``, ``__main__``)
  are then replaced by inert placeholders and never imported (this repository has its own ``lib``);
* a bare state dict.

Command line: ``python -m lib.tools.checkpoint convert OFFICIAL.pth OUT.pth [--trust-checkpoint]`` writes the
project format (model weights only; optimizer, scheduler and stats are dropped).
``python -m lib.tools.checkpoint bundle TRAINED.pth OUT.pth --backbone RESNET.pth --size H W`` writes one
self-contained model file (the G-FRTM weights, the backbone in float16 and the inference size it was
trained at) that ``evaluate.py`` / ``demo.py`` use with ``--model OUT.pth`` alone; on a TTVOS training checkpoint
(``train.py --stage ttvos``) it writes TTVOS's weights and the size its training recorded (no ``--backbone``).
"""

from __future__ import annotations

import argparse
import functools
import pickle
import re
import sys
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from base.errors import CheckpointError, ConfigError, ReuseVOSError
from base.io import atomic_path
from models.gfrtm import GFRTM
from models.gttvos import GTTVOS
from models.tile_gate import TileGate
from models.ttvos import TTVOS
from models.ttvos_backbones import TTVOS_BACKBONES
from models.warp_corrector import WarpCorrector

PathLike = Union[str, Path]
StateDict = Dict[str, Tensor]

PROJECT_FORMAT = "reuse-vos"
WARP_CORRECTOR_KIND = "warp-corrector"
TILE_GATE_KIND = "tile-gate"
TTVOS_KIND = "ttvos"
GTTVOS_KIND = "gttvos"  # TTVOS with the reuse modules (models.gttvos); the same file layout
OFFICIAL_TTVOS_PREFIX = "vos."
# one key (and its shape) that tells the official TTVOS backbones apart
_TTVOS_SIGNATURES = {"backbone.stage4.0.fuse_layers.0.1.0.weight": "hrnetv2Sv1",
                     "backbone.layer0.0.0.weight": "mobileNetV3Larges16",
                     "backbone.layer4.0.conv1.weight": "resnet18s16",
                     "backbone.layer3.5.conv3.weight": "resnet50s16"}
FORMAT_VERSION = 1
OFFICIAL_MODULES = ("lib", "model", "__main__", "utils")  # G-FRTM: lib.utils; TTVOS: utils.stats
BACKBONE_KEY = "backbone_weights"
TRUST_HINT = "pass --trust-checkpoint (trust=True) only for files from a trusted source"
# First bytes of a legacy (pre-zip) torch.save file: pickle protocol 2, then the magic number as a long.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`load_model_weights` found in a file.

    Attributes:
        path: the file.
        container: ``'reuse-vos'`` (project format), ``'official'`` (training checkpoint with a
            ``'model'`` entry) or ``'state_dict'`` (bare state dict).
        kind: ``'gfrtm'`` (all 189 keys) or ``'frtm'`` (the 140 FRTM ``refiner.*`` keys only).
        ftext: ``'resnet18'`` or ``'resnet101'``, detected from the weights.
        num_keys: number of state-dict entries.
        trusted: True if the file needed a full (non weights-only) unpickling.
        dropped: top-level entries of the file that are not model weights (e.g. ``stats``).
        extra: descriptive top-level entries kept (official ``name``/``epoch``, project-format extras).
    """

    path: Path
    container: str
    kind: str
    ftext: str
    num_keys: int
    trusted: bool
    dropped: Tuple[str, ...] = ()
    extra: Dict[str, Any] = field(default_factory=dict)


class OfficialObject:
    """Inert stand-in for an instance of a class from the official code (e.g. ``AverageMeter``).

    It keeps the constructor arguments and the pickled state as plain data and runs no foreign code.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


@functools.cache
def _placeholder(module: str, name: str) -> type:
    """A distinct :class:`OfficialObject` subclass named after the official class it replaces."""
    return type(name, (OfficialObject,), {"__module__": f"official.{module}", "__qualname__": name})


class _OfficialSafeUnpickler(pickle.Unpickler):
    """Unpickler that maps classes of the official code base to placeholders instead of importing them."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in OFFICIAL_MODULES:
            return _placeholder(module, name)
        return super().find_class(module, name)


def _placeholder_load(file, **kwargs: Any) -> Any:
    return _OfficialSafeUnpickler(file, **kwargs).load()


# A "pickle module" for torch.load(pickle_module=..., weights_only=False): torch subclasses its
# Unpickler and calls its load(). Classes of the official code come back as OfficialObject subclasses.
OFFICIAL_SAFE_PICKLE = types.ModuleType("reuse_vos_official_safe_pickle")
OFFICIAL_SAFE_PICKLE.Unpickler = _OfficialSafeUnpickler
OFFICIAL_SAFE_PICKLE.load = _placeholder_load


def _looks_like_torch_file(path: Path) -> bool:
    """True for torch.save's zip format and for the legacy pickle format (by its magic number)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC


def _torch_load(path: Path, trust: bool) -> Tuple[Any, bool]:
    """torch.load on CPU: weights-only first; a full (placeholder) unpickling only with ``trust``.

    Returns the loaded object and whether the full unpickling was needed.
    """
    not_torch = "cannot read the file as a PyTorch checkpoint ({}); it is corrupt or not a torch.save file"
    try:
        return torch.load(path, map_location="cpu", weights_only=True), False
    except pickle.UnpicklingError as err:
        if not _looks_like_torch_file(path):
            raise CheckpointError(not_torch.format("UnpicklingError"), path) from None
        if not trust:
            names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(err))))
            what = f" (first refused: {', '.join(names)})" if names else ""
            raise CheckpointError(f"the file pickles Python objects{what} that a safe weights-only load "
                                  f"refuses; {TRUST_HINT}", path) from None
    except Exception as err:
        raise CheckpointError(not_torch.format(err.__class__.__name__), path) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=OFFICIAL_SAFE_PICKLE)
    except Exception as err:
        first_line = (str(err).splitlines() or [""])[0][:200]
        raise CheckpointError(f"cannot unpickle the checkpoint even with trust ({err.__class__.__name__}: "
                              f"{first_line})", path) from None
    return obj, True


@functools.cache
def expected_shapes(ftext: str) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of the full G-FRTM state dict for ``ftext``, in the official order."""
    with torch.device("meta"):
        model = GFRTM(ftext)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def frtm_keys(ftext: str) -> List[str]:
    """The 140 keys an FRTM checkpoint has: ``refiner.*`` without ``refiner.Diff_process.*``."""
    return [k for k in expected_shapes(ftext)
            if k.startswith("refiner.") and not k.startswith("refiner.Diff_process.")]


def _abbrev(keys: Sequence[str], limit: int = 3) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _check_state_dict(state: StateDict, path: Path) -> Tuple[str, str]:
    """Validate keys and shapes; returns (kind, ftext)."""
    try:
        ftext = GFRTM.detect_ftext(state)
    except CheckpointError as err:
        raise CheckpointError(err.problem, path) from None
    shapes = expected_shapes(ftext)
    is_frtm = all(k.startswith("refiner.") and not k.startswith("refiner.Diff_process.") for k in state)
    kind = "frtm" if is_frtm else "gfrtm"
    wanted = frtm_keys(ftext) if is_frtm else list(shapes)
    missing = [k for k in wanted if k not in state]
    unexpected = [k for k in state if k not in shapes or k not in wanted]
    wrong = [f"{k} {tuple(state[k].shape)} != {shapes[k]}" for k in wanted
             if k in state and tuple(state[k].shape) != shapes[k]]
    problems = []
    if missing:
        problems.append(f"missing keys: {_abbrev(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_abbrev(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_abbrev(wrong)}")
    if problems:
        label = "FRTM" if is_frtm else "G-FRTM"
        raise CheckpointError(f"not a valid {label} {ftext} state dict; " + "; ".join(problems), path)
    return kind, ftext


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def load_model_weights(path: PathLike, trust: bool = False) -> Tuple[StateDict, CheckpointInfo]:
    """Read the model state dict of a checkpoint file (on CPU) and describe it.

    Args:
        path: project-format, official training, bare state-dict or FRTM checkpoint file.
        trust: allow a full unpickling (needed for official training checkpoints whose ``stats`` pickle
            official classes; those are replaced by inert placeholders, never imported).

    Returns:
        The state dict (file order) and a :class:`CheckpointInfo`.

    Raises:
        CheckpointError: missing file, not a torch file, pickled objects without ``trust``, no model
            weights, unknown backbone, missing/unexpected keys or wrong shapes. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint file not found", path)
    obj, trusted = _torch_load(path, trust)
    return _parse_model_weights(obj, path, trusted)


def _parse_model_weights(obj: Any, path: Path, trusted: bool) -> Tuple[StateDict, CheckpointInfo]:
    dropped: Tuple[str, ...] = ()
    extra: Dict[str, Any] = {}
    if isinstance(obj, Mapping) and obj.get("format") == PROJECT_FORMAT:
        container, state = "reuse-vos", obj.get("model")
        extra = {k: v for k, v in obj.items() if k not in ("format", "format_version", "model")}
    elif isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        container, state = "official", obj["model"]
        extra = {k: obj[k] for k in ("name", "epoch") if isinstance(obj.get(k), (str, int))}
        dropped = tuple(str(k) for k in obj if k not in ("model", *extra))
    else:
        container, state = "state_dict", obj
    if not _is_state_dict(state):
        raise CheckpointError("no model weights found: expected a state dict of tensors, or a dict with a "
                              "'model' state dict", path)
    state = dict(state)
    kind, ftext = _check_state_dict(state, path)
    info = CheckpointInfo(path=path, container=container, kind=kind, ftext=ftext, num_keys=len(state),
                          trusted=trusted, dropped=dropped, extra=extra)
    return state, info


def module_names(keys: Sequence[str]) -> List[str]:
    """Top-level modules of state-dict keys, in order (``refiner.*`` split one level deeper)."""
    names: Dict[str, None] = {}
    for key in keys:
        parts = key.split(".")
        names[".".join(parts[:2]) if parts[0] == "refiner" else parts[0]] = None
    return list(names)


def _model_from_state(state: StateDict, info: CheckpointInfo, ftext: Optional[str]) -> Tuple[GFRTM, str]:
    if ftext is not None and ftext != info.ftext:
        raise ConfigError(f"{info.path}: the checkpoint is for {info.ftext}, but {ftext} was requested")
    model = GFRTM(info.ftext)
    if info.kind == "gfrtm":
        model.load_state_dict(state, strict=True)
        report = f"loaded G-FRTM {info.ftext} weights ({info.num_keys} keys) from {info.path}"
    else:
        model.load_state_dict(state, strict=False)
        untouched = [k for k in model.state_dict() if k not in state]
        report = (f"initialised the refiner from FRTM {info.ftext} checkpoint {info.path} ({info.num_keys} "
                  f"keys); at default initialisation: {', '.join(module_names(untouched))} "
                  f"({len(untouched)} keys)")
    return model, report


def build_model_from_checkpoint(path: PathLike, trust: bool = False, ftext: Optional[str] = None,
                                device: Union[str, torch.device] = "cpu") -> Tuple[GFRTM, str]:
    """Build a :class:`GFRTM` for the checkpoint's backbone and load its weights.

    A G-FRTM file is loaded strictly. An FRTM file initialises the refiner (strict on its 140 keys); the
    gate, template module, delta-generator and refine-translator stay at their default initialisation.

    Args:
        path: checkpoint file (see :func:`load_model_weights`).
        trust: allow a full unpickling of official training checkpoints.
        ftext: expected backbone; ``None`` accepts the detected one, otherwise a mismatch is an error.
        device: where the model is placed.

    Returns:
        The model in eval mode on ``device``, and a one-line report of what was loaded.
    """
    state, info = load_model_weights(path, trust)
    model, report = _model_from_state(state, info, ftext)
    return model.to(device).eval(), report


RANDOM_BACKBONE_WARNING = ("backbone: RANDOM weights (--pretrained none): masks and scores are not meaningful "
                           "accuracy figures")


def _imagenet_enum(name: str):
    from models.backbone import IMAGENET_WEIGHTS, check_backbone_name

    check_backbone_name(name)
    return IMAGENET_WEIGHTS[name]


def imagenet_weights_file(name: str) -> Path:
    """Where torchvision's hub cache keeps the ImageNet weights of ``name`` (the file may not exist).

    That is ``<torch.hub.get_dir()>/checkpoints/<file name of the weights URL>``, i.e. by default
    ``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth`` for ResNet-18.
    """
    from urllib.parse import urlparse

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(_imagenet_enum(name).url).path).name


def imagenet_state_dict(name: str) -> Dict[str, Tensor]:
    """torchvision's ``IMAGENET1K_V1`` weights of ``name``: from the TORCH_HOME hub cache, downloaded there first
    (hash checked) when missing and the machine is online; offline and not cached, a one-line ConfigError naming
    the file, where it goes and the way out."""
    weights = _imagenet_enum(name)
    cached = imagenet_weights_file(name)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # offline, blocked, interrupted or corrupt download
        if cached.is_file():
            raise
        reason = (str(err).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"ImageNet weights for {name} not found and not downloadable here ({err.__class__.__name__}: "
            f"{reason}): expected the file {cached.name} at {cached} (torchvision hub cache, i.e. "
            f"$TORCH_HOME/hub/checkpoints; TORCH_HOME is currently {Path(torch.hub.get_dir()).parent}). "
            f"Download {weights.url} on a machine with internet access and place it there, or run with "
            "--pretrained none (random backbone weights)."
        ) from None


def read_backbone_file(path: PathLike) -> Dict[str, Tensor]:
    """Backbone weights from a file, read with weights_only: a torchvision-format ResNet state dict (saved with
    torch.save), or a project-format G-FRTM file that carries its backbone (a bundle, or a training checkpoint
    of a run that fine-tuned it, ``--backbone-lr``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("backbone weights file not found (expected 'none', 'imagenet' or a path to a "
                              "torchvision ResNet state dict)", path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read backbone weights ({err.__class__.__name__}); expected a "
                              "torchvision ResNet state dict saved with torch.save", path) from None
    if isinstance(obj, Mapping) and obj.get("format") == PROJECT_FORMAT:
        embedded = obj.get(BACKBONE_KEY)
        if not isinstance(embedded, Mapping):
            raise CheckpointError("a project model file without backbone weights; expected a torchvision ResNet "
                                  "state dict or a model file that carries its backbone", path)
        return {k: (v.float() if v.is_floating_point() else v) for k, v in embedded.items()}
    return obj


def build_backbone(name: str, pretrained: Union[str, PathLike, Mapping[str, Tensor]] = "none"):
    """The frozen :class:`models.backbone.FeatureExtractor` ``name`` with the weights ``pretrained`` names.

    Args:
        pretrained: ``none`` (seeded random weights), ``imagenet`` (:func:`imagenet_state_dict`), the path of
            a torchvision-format ResNet state dict file, or such a state dict.

    Raises:
        ConfigError: ImageNet weights offline and not cached; CheckpointError: a file that is missing,
            unreadable or of another architecture (its path named).
    """
    from models.backbone import FeatureExtractor

    if isinstance(pretrained, Mapping):
        return FeatureExtractor(name, pretrained)
    pretrained = str(pretrained)
    if pretrained == "none":
        return FeatureExtractor(name, "none")
    if pretrained == "imagenet":
        return FeatureExtractor(name, imagenet_state_dict(name))  # an unknown name fails before any download
    state = read_backbone_file(pretrained)
    try:
        return FeatureExtractor(name, state)
    except CheckpointError as err:
        raise CheckpointError(err.problem, pretrained) from None  # name the file


@dataclass
class InferenceModel:
    """What :func:`load_inference_model` builds: the networks and the settings the checkpoint asks for.

    Attributes:
        model: the base network's model in eval mode on the device (G-FRTM's modules, or TTVOS).
        backbone: G-FRTM's frozen feature extractor (on CPU; the engine moves it); None for TTVOS.
        pretrained: where the backbone weights came from: ``embedded`` (the checkpoint's own), ``imagenet``,
            ``none`` or a file path.
        size: (H, W) the networks run at, or None for each frame's own size.
        messages: lines to show the user (what was loaded, warnings).
    """

    model: Any
    backbone: Any
    pretrained: str
    size: Optional[Tuple[int, int]]
    messages: List[str]


def _checkpoint_size(value: Any, path: Path) -> Optional[Tuple[int, int]]:
    """A file's recorded inference size ``[H, W]`` (None if it records none)."""
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and v >= 32 for v in value)):
        raise CheckpointError(f"the recorded inference size {value!r} is not [H, W] with H, W >= 32", path)
    return int(value[0]), int(value[1])


def _chosen_size(size: Optional[Sequence[int]], recorded: Optional[Tuple[int, int]],
                 messages: List[str]) -> Optional[Tuple[int, int]]:
    """The inference size: the one asked for, else the one the file records (said in ``messages``)."""
    if size is not None:
        return tuple(int(v) for v in size)
    if recorded is not None:
        messages.append(f"inference size {recorded[0]}x{recorded[1]}, as the checkpoint records (--size overrides)")
    return recorded


def load_inference_model(path: PathLike, *, trust: bool = False, ftext: Optional[str] = None,
                         pretrained: Optional[str] = None, size: Optional[Sequence[int]] = None,
                         device: Union[str, torch.device] = "cpu") -> InferenceModel:
    """The checkpoint's G-FRTM, its backbone and its inference size, with explicit choices overriding.

    Args:
        path: checkpoint file (see :func:`load_model_weights`); a bundle written by :func:`bundle` also
            carries its backbone weights and the size it was trained at.
        trust: allow a full unpickling of official training checkpoints.
        ftext: expected backbone (None: the detected one).
        pretrained: backbone weights, ``imagenet``, ``none``, ``embedded`` or a torchvision state-dict file;
            None: the checkpoint's embedded backbone when it has one, else ``imagenet``.
        size: (H, W) to run the networks at; None: the checkpoint's recorded size, else each frame's own.
        device: where the G-FRTM modules are placed.
    """
    from models.backbone import FeatureExtractor

    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint file not found", path)
    obj, trusted = _torch_load(path, trust)
    if is_ttvos_checkpoint(obj):
        return _ttvos_inference_model(obj, path, ftext, pretrained, size, device)
    state, info = _parse_model_weights(obj, path, trusted)
    model, report = _model_from_state(state, info, ftext)
    messages = [report]
    embedded = info.extra.get(BACKBONE_KEY)
    if pretrained is None:
        pretrained = "embedded" if embedded is not None else "imagenet"
    if pretrained == "embedded":
        if embedded is None:
            raise ConfigError(f"{info.path}: --pretrained embedded, but the checkpoint has no backbone weights")
        backbone = FeatureExtractor(model.ftext, embedded)
        source = info.extra.get("backbone_source")
        messages.append(f"backbone: the checkpoint's own {model.ftext} weights"
                        + (f" (from {source})" if isinstance(source, str) else ""))
    else:
        backbone = build_backbone(model.ftext, pretrained)
        if pretrained == "none":
            messages.append(RANDOM_BACKBONE_WARNING)
        if embedded is not None:
            messages.append(f"note: --pretrained {pretrained} replaces the backbone weights stored in {info.path}")
    recorded = _checkpoint_size(info.extra.get("size"), info.path)
    chosen = _chosen_size(size, recorded, messages)
    return InferenceModel(model.to(device).eval(), backbone, pretrained, chosen, messages)


def _ttvos_inference_model(obj: Any, path: Path, ftext: Optional[str], pretrained: Optional[str],
                           size: Optional[Sequence[int]], device: Union[str, torch.device]) -> InferenceModel:
    """:func:`load_inference_model` for a TTVOS file: its backbone is inside the model; the size as recorded."""
    if ftext is not None or pretrained not in (None, "embedded"):
        raise ConfigError(f"{path}: a TTVOS model holds its own backbone; --ftext / --pretrained apply to G-FRTM")
    model = _ttvos_from_object(obj, path)
    what = f"G-TTVOS ({model.backbone_name}, placement {model.placement})" if isinstance(model, GTTVOS) \
        else f"TTVOS ({model.backbone_name})"
    messages = [f"loaded {what} from {path}"]
    recorded = _checkpoint_size(obj.get("size") if obj.get("format") == PROJECT_FORMAT else None, path)
    chosen = _chosen_size(size, recorded, messages)
    return InferenceModel(model.to(device).eval(), None, "embedded", chosen, messages)


def bundle(model_path: PathLike, out: PathLike, *, backbone: Optional[PathLike] = None,
           size: Optional[Sequence[int]] = None, card: Optional[Mapping[str, Any]] = None,
           backbone_dtype: torch.dtype = torch.float16) -> Path:
    """Write a self-contained model file: G-FRTM weights, the backbone (float16), the inference size; for a TTVOS
    checkpoint its weights, the size (given or recorded) and the card.

    The result is a project-format file (loads with weights_only) that :func:`load_inference_model` reads
    with no further flags. Training state (optimizer, scheduler) is dropped; name, epoch, config and stats
    are kept. ``card`` is plain data stored as ``card`` (data, command, wall time, scores ...).
    """

    if size is not None and (len(size) != 2 or min(size) < 32):
        raise ConfigError(f"--size H W must both be >= 32, got {list(size)}")
    path = Path(model_path)
    if not path.is_file():
        raise CheckpointError("checkpoint file not found", path)
    obj, trusted = _torch_load(path, False)  # read once, for either network
    if is_ttvos_checkpoint(obj):
        return _bundle_ttvos(obj, path, out, backbone=backbone, size=size, card=card)
    state, info = _parse_model_weights(obj, path, trusted)
    if info.kind != "gfrtm":
        raise CheckpointError("bundle needs a full G-FRTM checkpoint, not an FRTM refiner", info.path)
    extra: Dict[str, Any] = {"ftext": info.ftext}
    extra.update({k: info.extra[k] for k in ("name", "epoch", "config", "stats") if k in info.extra})
    if backbone is not None and BACKBONE_KEY in info.extra:
        raise ConfigError(f"{info.path} carries its own (fine-tuned) backbone: leave out --backbone")
    if backbone is not None or BACKBONE_KEY in info.extra:
        # a file validated against the architecture, or the checkpoint's own (a --backbone-lr run's)
        net = build_backbone(info.ftext, backbone if backbone is not None else info.extra[BACKBONE_KEY])
        extra[BACKBONE_KEY] = {k: (v.to(backbone_dtype) if v.is_floating_point() else v).clone()
                               for k, v in net.resnet.state_dict().items()}
        extra["backbone_source"] = (Path(backbone).name if backbone is not None
                                    else str(info.extra.get("backbone_source", info.path.name)))
    if size is not None:
        extra["size"] = [int(v) for v in size]
    if card:
        extra["card"] = dict(card)
    _write_project_file(out, state, extra)
    return Path(out)


def _bundle_ttvos(obj: Any, path: Path, out: PathLike, *, backbone: Optional[PathLike],
                  size: Optional[Sequence[int]], card: Optional[Mapping[str, Any]]) -> Path:
    """:func:`bundle` for TTVOS: its weights (float32: 1.6 M parameters) and constructor arguments, the size
    (given, else the one a training checkpoint records), name, epoch, config, stats and card; no training state."""
    if backbone is not None:
        raise ConfigError(f"{path} is a TTVOS checkpoint, which holds its own backbone: leave out --backbone")
    model = _ttvos_from_object(obj, path)
    project = obj.get("format") == PROJECT_FORMAT
    extra: Dict[str, Any] = {k: obj[k] for k in ("name", "epoch", "config", "stats") if project and k in obj}
    recorded = _checkpoint_size(obj.get("size") if project else None, path)
    chosen = [int(v) for v in size] if size is not None else (list(recorded) if recorded else None)
    if chosen is not None:
        extra["size"] = chosen
    if card:
        extra["card"] = dict(card)
    save_ttvos(out, model, **extra)
    return Path(out)


_PLAIN_TYPES = (type(None), bool, int, float, str, Tensor)


def _check_plain(value: Any, where: str) -> None:
    """Refuse values that would make the file unloadable with weights_only=True."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, item in value.items():
            _check_plain(k, f"{where} key")
            _check_plain(item, f"{where}[{k!r}]")
    elif not isinstance(value, _PLAIN_TYPES):
        raise TypeError(f"{where} has type {type(value).__name__}; only None, bool, int, float, str, tensors "
                        "and lists/tuples/dicts of them can be saved")


def _write_project_file(path: PathLike, state: Mapping[str, Tensor], extra: Mapping[str, Any]) -> None:
    reserved = {"format", "format_version", "model"} & set(extra)
    if reserved:
        raise ValueError(f"extra entries may not use the reserved names {sorted(reserved)}")
    _check_plain(dict(extra), "extra")
    payload = {"format": PROJECT_FORMAT, "format_version": FORMAT_VERSION,
               "model": {k: v.detach().cpu() for k, v in state.items()}, **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def save_model(path: PathLike, model: GFRTM, /, **extra: Any) -> None:
    """Write ``model``'s state dict in the project format (atomically).

    ``extra`` entries (e.g. ``epoch=12``) are stored next to the weights; they must be plain data (None,
    bool, int, float, str, tensors, lists/tuples/dicts of them) so the file loads with weights_only=True.
    """
    _write_project_file(path, model.state_dict(), {"ftext": model.ftext, **extra})


def _save_module(path: PathLike, module: Any, kind: str, extra: Mapping[str, Any]) -> None:
    _write_project_file(path, module.state_dict(), {"kind": kind, "module_config": module.config(), **extra})


def _load_module(path: PathLike, kind: str, cls: type, hint: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{kind} weights not found ({hint})", path)
    obj, _ = _torch_load(path, trust=False)
    if not isinstance(obj, Mapping) or obj.get("format") != PROJECT_FORMAT or obj.get("kind") != kind:
        found = obj.get("kind", "a G-FRTM model file?") if isinstance(obj, Mapping) else "something else"
        raise CheckpointError(f"not a {kind} file (it is {found})", path)
    try:
        module = cls(**dict(obj.get("module_config", {})))
        module.load_state_dict(obj["model"], strict=True)
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{kind} weights do not fit ({err.__class__.__name__}: {first})", path) from None
    return module.eval()


def save_warp_corrector(path: PathLike, module: WarpCorrector, /, **extra: Any) -> None:
    """Write a :class:`WarpCorrector`'s weights and constructor arguments in the project format (atomically);
    ``extra`` as :func:`save_model`'s (a training checkpoint adds its optimizer, scheduler, epoch)."""
    _save_module(path, module, WARP_CORRECTOR_KIND, extra)


def load_warp_corrector(path: PathLike) -> WarpCorrector:
    """The :class:`WarpCorrector` of a file written by :func:`save_warp_corrector` (a weights file or a training
    checkpoint of ``train.py --stage warp-corrector``), in eval mode on the CPU.

    Raises:
        CheckpointError: missing or unreadable file, not a warp-corrector file, or weights that do not fit.
    """
    return _load_module(path, WARP_CORRECTOR_KIND, WarpCorrector,
                        "train them with train.py --stage warp-corrector, or pass --warp-corrector PATH")


def save_tile_gate(path: PathLike, module: TileGate, /, **extra: Any) -> None:
    """Write a :class:`TileGate` (as :func:`save_warp_corrector`)."""
    _save_module(path, module, TILE_GATE_KIND, extra)


def load_tile_gate(path: PathLike) -> TileGate:
    """The :class:`TileGate` of a file written by :func:`save_tile_gate` (``train.py --stage tile-gate``)."""
    return _load_module(path, TILE_GATE_KIND, TileGate,
                        "train it with train.py --stage tile-gate, or pass --tile-gate PATH")


def save_ttvos(path: PathLike, model: TTVOS, /, **extra: Any) -> None:
    """Write a :class:`TTVOS` (weights and constructor arguments, ``kind: 'ttvos'``; a :class:`GTTVOS`:
    ``kind: 'gttvos'``) in the project format."""
    _save_module(path, model, GTTVOS_KIND if isinstance(model, GTTVOS) else TTVOS_KIND, extra)


def _ttvos_backbone_of(state: Mapping[str, Tensor], path: Path) -> str:
    for key, name in _TTVOS_SIGNATURES.items():
        if key in state:
            return name
    raise CheckpointError(f"not a TTVOS state dict: none of the backbones {', '.join(TTVOS_BACKBONES)} "
                          f"matches its keys (first: {_abbrev(list(state))})", path)


def is_ttvos_checkpoint(obj: Any) -> bool:
    """Whether a loaded checkpoint holds TTVOS: a project file of kind ``ttvos``, an official TTVOS training
    checkpoint (a ``net`` state dict) or a bare state dict with ``vos.`` keys or TTVOS's backbone keys."""
    if not isinstance(obj, Mapping):
        return False
    if obj.get("format") == PROJECT_FORMAT:
        return obj.get("kind") in (TTVOS_KIND, GTTVOS_KIND)
    if isinstance(obj.get("net"), Mapping):
        return True
    keys = [k for k in obj if isinstance(k, str)]
    return bool(keys) and (all(k.startswith(OFFICIAL_TTVOS_PREFIX) for k in keys)
                           or any(k in obj for k in _TTVOS_SIGNATURES))


def load_ttvos(path: PathLike, trust: bool = False) -> TTVOS:
    """The :class:`TTVOS` (or :class:`GTTVOS`, for a ``gttvos`` file) of a file, in eval mode on the CPU.

    Accepted: the project format (:func:`save_ttvos`); an official TTVOS training checkpoint
    (``{'net': VOS state dict with 'vos.' keys, 'epoch', 'optimizer', ...}``; ``trust`` where it pickles
    objects); a bare state dict with or without the ``vos.`` prefix. The backbone is read from the keys
    (official files do not name it), the query group size from the project file (official: 4, the
    ``--ltG`` default).

    Raises:
        CheckpointError: missing or unreadable file, not TTVOS weights, or weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("TTVOS checkpoint file not found", path)
    return _ttvos_from_object(_torch_load(path, trust)[0], path)


def _ttvos_from_object(obj: Any, path: Path) -> TTVOS:
    config: Dict[str, Any] = {}
    cls: type = TTVOS
    if isinstance(obj, Mapping) and obj.get("format") == PROJECT_FORMAT:
        if obj.get("kind") not in (TTVOS_KIND, GTTVOS_KIND):
            raise CheckpointError(f"not a TTVOS model file (it is {obj.get('kind', 'a G-FRTM model file')})", path)
        state, config = obj.get("model"), dict(obj.get("module_config", {}))
        cls = GTTVOS if obj.get("kind") == GTTVOS_KIND else TTVOS
    elif isinstance(obj, Mapping) and isinstance(obj.get("net"), Mapping):
        state = obj["net"]
    else:
        state = obj
    if not _is_state_dict(state):
        raise CheckpointError("no TTVOS weights found: expected a state dict of tensors or a dict with a 'net' "
                              "state dict", path)
    if all(k.startswith(OFFICIAL_TTVOS_PREFIX) for k in state):
        state = {k[len(OFFICIAL_TTVOS_PREFIX):]: v for k, v in state.items()}
    config.setdefault("backbone", _ttvos_backbone_of(state, path))
    try:
        model = cls(**config)
        model.load_state_dict(state, strict=True)
    except (TypeError, ValueError, RuntimeError, KeyError, ConfigError) as err:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        what = "G-TTVOS" if cls is GTTVOS else "TTVOS"
        raise CheckpointError(f"{what} weights do not fit ({err.__class__.__name__}: {first})", path) from None
    return model.eval()


@functools.lru_cache(maxsize=8)
def cached_module(kind: str, path: str, device: str) -> Any:
    """The ``kind`` (warp corrector or tile gate) module of file ``path`` on ``device``, read once per process
    (the policies that use one ask for it per frame)."""
    load = {WARP_CORRECTOR_KIND: load_warp_corrector, TILE_GATE_KIND: load_tile_gate}[kind]
    module = load(path).to(device)
    if kind == WARP_CORRECTOR_KIND:
        module.channels_last = True  # faster at inference, the same function up to rounding (models/warp_corrector.py)
    return module


def convert(src: PathLike, dst: PathLike, trust: bool = False) -> CheckpointInfo:
    """Convert a checkpoint (official or any accepted format) to the project format; returns its info."""
    state, info = load_model_weights(src, trust)
    source = {"source_file": info.path.name, "source_container": info.container,
              **{f"source_{k}": v for k, v in info.extra.items() if k in ("name", "epoch")}}
    _write_project_file(dst, state, {"ftext": info.ftext, **source})
    return info


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.tools.checkpoint", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="write a checkpoint's model weights in the project format")
    conv.add_argument("src", help="official G-FRTM/FRTM checkpoint (or any accepted checkpoint)")
    conv.add_argument("dst", help="output .pth (project format, loads with weights_only=True)")
    conv.add_argument("--trust-checkpoint", action="store_true",
                      help="allow unpickling Python objects (official 'stats'); only for trusted files")
    bun = sub.add_parser("bundle", help="one self-contained model file: G-FRTM + backbone (float16) + size, "
                         "or TTVOS + size")
    bun.add_argument("src", help="G-FRTM or TTVOS checkpoint (e.g. a training checkpoint)")
    bun.add_argument("dst", help="output .pth")
    bun.add_argument("--backbone", metavar="PATH", default=None,
                     help="torchvision-format ResNet state dict to embed (not for a --backbone-lr checkpoint, which "
                          "carries its own)")
    bun.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                     help="inference size to record (TTVOS: default the one its training checkpoint records)")
    bun.add_argument("--card", metavar="JSON", default=None, help="JSON file of model-card facts to store")
    args = parser.parse_args(argv)
    if args.command == "bundle":
        try:
            card = None
            if args.card:
                import json
                card = json.loads(Path(args.card).read_text())
            out = bundle(args.src, args.dst, backbone=args.backbone, size=args.size, card=card)
        except ReuseVOSError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
        return 0
    try:
        info = convert(args.src, args.dst, trust=args.trust_checkpoint)
    except ReuseVOSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    network = "G-FRTM" if info.kind == "gfrtm" else "FRTM (refiner only)"
    source = {"reuse-vos": "a project-format file", "official": "an official training checkpoint",
              "state_dict": "a bare state dict"}[info.container]
    print(f"wrote {args.dst}: {network}, ftext {info.ftext}, {info.num_keys} keys "
          f"(from {source}{', unpickled with trust' if info.trusted else ''})")
    print(f"dropped: {', '.join(info.dropped) if info.dropped else 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
