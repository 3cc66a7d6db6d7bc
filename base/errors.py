"""The project's user-facing error types.

Every problem a user can cause (a wrong path, a broken file, an incompatible checkpoint) is reported
with one of these exceptions and a one-line message that names the file and the problem. The CLIs
catch :class:`ReuseVOSError` and print the message without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, Path]


class ReuseVOSError(Exception):
    """Base class of every error meant for the user (not a programming error)."""

    def __init__(self, message: str, path: Optional[PathLike] = None):
        self.path = Path(path) if path is not None else None
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class DatasetError(ReuseVOSError):
    """A dataset root, split file, frame, annotation or meta.json entry is missing or malformed."""


class ScoringError(ReuseVOSError):
    """Predictions cannot be scored (missing or mismatched prediction files)."""


class CheckpointError(ReuseVOSError):
    """A checkpoint file cannot be loaded, converted or does not match the network."""


class ConfigError(ReuseVOSError):
    """Command-line flags or configuration values are inconsistent."""
