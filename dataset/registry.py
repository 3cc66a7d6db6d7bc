"""Dataset keys, as named in the original code, and where their roots come from.

Evaluation sets: ``dv2016val``, ``dv2016train``, ``dv2017val``, ``yt2018jjval``, ``yt2018val``, ``yt2018valAll``;
training sets: ``dv2017``, ``dv2016``, ``ytvos2018`` (alias ``yt2018``), ``all``, ``synthetic``, ``duts`` (synthetic
clips of a saliency set's images, ``--saliency-root`` / ``SALIENCY_ROOT``).
Roots come from ``--davis-root`` / ``--ytvos-root``, defaulting to the ``DAVIS_ROOT`` / ``YTVOS_ROOT``
environment variables; never from paths written in code.
"""

from __future__ import annotations

import os
from typing import Optional, Union
from typing import Sequence as Seq

from base.errors import ConfigError
from dataset.davis import DAVISDataset
from dataset.youtubevos import YouTubeVOSDataset

EVAL_DATASETS = {
    # key: (family, split)
    "dv2016val": ("davis2016", "val"),
    "dv2016train": ("davis2016", "train"),  # e.g. train sequences held out of training (--sequences)
    "dv2017val": ("davis2017", "val"),
    "yt2018jjval": ("ytvos", "jjval"),
    "yt2018val": ("ytvos", "valid"),
    "yt2018valAll": ("ytvos", "valid_all"),
}
# Training sets (dataset/training.py builds them); aliases are accepted on the command line too.
TRAINING_DATASETS = ("dv2017", "dv2016", "ytvos2018", "all", "synthetic", "duts")
DATASET_ALIASES = {"yt2018": "ytvos2018"}
SCORED_DATASETS = ("dv2016val", "dv2016train", "dv2017val", "yt2018jjval")
# Sets whose ground truth is on the benchmark server: evaluate.py also zips the masks for upload.
SUBMISSION_DATASETS = ("yt2018val", "yt2018valAll")


def resolve_root(flag_value: Optional[str], env_var: str, what: str) -> str:
    """The dataset root from its flag, else from the environment variable, else a clear error."""
    value = flag_value or os.environ.get(env_var)
    if not value:
        flag = "--" + env_var.lower().replace("_", "-")  # DAVIS_ROOT -> --davis-root, SALIENCY_ROOT -> ...
        raise ConfigError(f"no {what} root given: pass {flag} DIR or set {env_var}")
    return value


def open_eval_dataset(key: str, davis_root: Optional[str] = None, ytvos_root: Optional[str] = None,
                      sequences: Optional[Seq[str]] = None, split_list: Optional[str] = None,
                      ) -> Union[DAVISDataset, YouTubeVOSDataset]:
    """The evaluation dataset named ``key`` (see :data:`EVAL_DATASETS`)."""
    if key not in EVAL_DATASETS:
        raise ConfigError(f"unknown dataset {key!r}; choose from {', '.join(EVAL_DATASETS)}")
    family, split = EVAL_DATASETS[key]
    if family.startswith("davis"):
        root = resolve_root(davis_root, "DAVIS_ROOT", "DAVIS")
        return DAVISDataset(root, year=int(family[-4:]), split=split, sequences=sequences)
    root = resolve_root(ytvos_root, "YTVOS_ROOT", "YouTube-VOS")
    return YouTubeVOSDataset(root, split=split, split_list=split_list, sequences=sequences)
