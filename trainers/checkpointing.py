"""Training checkpoints: save every epoch, resume from the newest valid one, initialise from another model.

A training checkpoint ``<checkpoints>/<name>_ep%04d.pth`` is a project-format file of
:mod:`lib.tools.checkpoint` (so ``evaluate.py --model`` and :func:`lib.tools.checkpoint.build_model_from_checkpoint`
read it directly) whose extra entries are plain data, loadable with ``torch.load(weights_only=True)``::

    {'format': 'reuse-vos', 'format_version': 1, 'model': G-FRTM state dict (189 keys), 'ftext': str,
     'name': str, 'epoch': int, 'optimizer': Adam state dict, 'scheduler': StepLR state dict,
     'config': TrainConfig.to_dict(), 'stats': {str: float}}

``epoch`` is the last finished epoch; the scheduler has already been stepped for it, so a resumed run
continues at ``epoch + 1`` exactly where the uninterrupted run would be.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from base.errors import CheckpointError, ConfigError
from lib.tools.checkpoint import BACKBONE_KEY, PROJECT_FORMAT, load_model_weights, module_names, save_model
from models.gfrtm import GFRTM

PathLike = Union[str, Path]
REQUIRED = ("model", "epoch", "optimizer", "scheduler")


def to_cpu(value: Any) -> Any:
    """Tensors moved to the CPU inside nested dicts / lists / tuples (for device-independent files)."""
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


def save_training_checkpoint(path: PathLike, model: GFRTM, *, name: str, epoch: int,
                             optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                             config: Mapping[str, Any], stats: Mapping[str, float],
                             backbone: Optional[torch.nn.Module] = None, backbone_source: str = "") -> None:
    """Write a training checkpoint atomically (see the module docstring for the content).

    ``backbone`` (a fine-tuned torchvision ResNet) is stored in float32 as the file's embedded backbone, so the
    checkpoint evaluates, bundles and resumes with it; ``backbone_source`` says what it was fine-tuned from.
    """
    extra: Dict[str, Any] = {}
    if backbone is not None:
        extra[BACKBONE_KEY] = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
        extra["backbone_source"] = backbone_source
    save_model(path, model, name=name, epoch=int(epoch), optimizer=to_cpu(optimizer.state_dict()),
               scheduler=to_cpu(scheduler.state_dict()), config=dict(config),
               stats={str(k): float(v) for k, v in stats.items()}, **extra)


def list_checkpoints(directory: PathLike, name: str) -> List[Tuple[int, Path]]:
    """``(epoch, path)`` of the files ``<name>_ep<digits>.pth`` in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pattern = re.compile(re.escape(name) + r"_ep(\d+)\.pth")
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := pattern.fullmatch(p.name)) and p.is_file()]
    return sorted(found)


def load_training_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read a training checkpoint with ``weights_only=True``; :class:`CheckpointError` if it is not one."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read the training checkpoint ({err.__class__.__name__}); corrupt or "
                              "truncated", path) from None
    if not isinstance(state, dict) or state.get("format") != PROJECT_FORMAT:
        raise CheckpointError("not a project-format training checkpoint", path)
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"not a training checkpoint: no {', '.join(missing)} entry (a weights-only "
                              "model file? use --initPth for those)", path)
    if not isinstance(state["epoch"], int) or state["epoch"] < 0:
        raise CheckpointError(f"invalid epoch entry {state['epoch']!r}", path)
    return state


def restore_training_state(state: Mapping[str, Any], model: GFRTM, optimizer: torch.optim.Optimizer,
                           scheduler: torch.optim.lr_scheduler.LRScheduler, path: PathLike = "",
                           backbone: Optional[torch.nn.Module] = None) -> int:
    """Load model, optimizer and scheduler states (and a fine-tuned ``backbone``'s, which the checkpoint must
    carry); returns the checkpoint's (finished) epoch."""
    try:
        if backbone is not None:
            if not isinstance(state.get(BACKBONE_KEY), Mapping):
                raise KeyError("the checkpoint carries no fine-tuned backbone (a run without --backbone-lr?)")
            backbone.load_state_dict(state[BACKBONE_KEY], strict=True)
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"does not match this run's model/optimizer ({err.__class__.__name__}: {first})",
                              path or None) from None
    return int(state["epoch"])


def find_resume_checkpoint(directory: PathLike, name: str, log: Callable[[str], None] = print,
                           ) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """The newest checkpoint of run ``name`` in ``directory`` that reads correctly, and its content.

    Unreadable or incomplete newer files are skipped with a warning (e.g. a file from a crashed copy).
    """
    for epoch, path in reversed(list_checkpoints(directory, name)):
        try:
            state = load_training_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"skipping checkpoint: {err}", stacklevel=2)
            continue
        if state["epoch"] != epoch:
            log(f"note: {path.name} records epoch {state['epoch']}")
        return path, state
    return None


def init_from_checkpoint(model: GFRTM, path: PathLike, trust: bool = False) -> str:
    """``--initPth``: load the weights of an FRTM or G-FRTM checkpoint that exist in ``model``.

    An FRTM checkpoint initialises the refiner's 140 FRTM keys; the gate, template module, delta-generator
    and refine-translator keep their initialisation. A G-FRTM checkpoint initialises everything.

    Returns:
        A one-line report of what was loaded and what was not.
    Raises:
        CheckpointError / ConfigError: unreadable file, or a checkpoint for another backbone.
    """
    state, info = load_model_weights(path, trust)
    if info.ftext != model.ftext:
        raise ConfigError(f"--initPth {info.path}: the checkpoint is for {info.ftext}, but this run trains "
                          f"{model.ftext} (--ftext)")
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    ignored = [k for k in state if k not in loaded]
    model.load_state_dict(loaded, strict=False)
    untouched = [k for k in own if k not in loaded]
    kind = "G-FRTM" if info.kind == "gfrtm" else "FRTM"
    report = f"--initPth: loaded {len(loaded)} keys from {kind} checkpoint {info.path}"
    report += (f"; not in the file, kept at initialisation: {', '.join(module_names(untouched))} "
               f"({len(untouched)} keys)") if untouched else "; every model key was loaded"
    if ignored:
        report += f"; skipped {len(ignored)} file keys: {', '.join(ignored[:3])}"
    return report


def resume_module(directory: PathLike, name: str, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
                  log: Callable[[str], None] = print) -> int:
    """Load the newest checkpoint of run ``name`` in ``directory`` that fits into ``module`` / ``optimizer`` (/
    ``scheduler``), skipping unreadable or mismatching newer files with a message; returns its epoch (0: none).
    For the small modules of ``train.py --stage warp-corrector`` / ``tile-gate``."""
    for _, path in reversed(list_checkpoints(directory, name)):
        try:
            state = load_training_checkpoint(path)
            module.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
        except (CheckpointError, RuntimeError, ValueError, KeyError, TypeError) as err:
            log(f"skipping checkpoint {path}: {err}")
            continue
        log(f"resumed from {path} (epoch {state['epoch']} finished); continuing at epoch {state['epoch'] + 1}")
        return int(state["epoch"])
    return 0
