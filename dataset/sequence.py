"""The one video abstraction every dataset reader yields.

A :class:`VideoSequence` knows its frames (in temporal order), where their images and annotations are,
which objects it holds and on which frame each object's given mask is, and which frames are to be
scored and saved. Images and annotations are read lazily, with every problem reported as a
:class:`~base.errors.DatasetError` that names the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from base.errors import DatasetError
from base.io import read_image_rgb, read_index_png


@dataclass(frozen=True)
class VideoSequence:
    """One video of a dataset.

    Attributes:
        name: sequence name (folder name).
        frames: frame names (file stems) in temporal order: every frame the tracker processes.
        image_files: one image file per entry of ``frames``.
        annotation_files: frame name -> annotation PNG for the frames that have one.
        object_ids: ids of the objects to segment, ascending.
        start_frames: object id -> name of the frame that carries its given (first) mask.
        score_frames: object id -> frames on which that object is scored (official DAVIS protocol:
            after its start frame, last annotated frame excluded). Empty when there is no ground truth.
        save_frames: frames the benchmark wants a prediction PNG for.
        merge_objects: every non-zero label is object 1 (DAVIS 2016).
        dataset: the dataset key the sequence comes from (e.g. ``dv2017val``).
    """

    name: str
    frames: Tuple[str, ...]
    image_files: Tuple[Path, ...]
    annotation_files: Mapping[str, Path]
    object_ids: Tuple[int, ...]
    start_frames: Mapping[int, str]
    score_frames: Mapping[int, Tuple[str, ...]] = field(default_factory=dict)
    save_frames: Tuple[str, ...] = ()
    merge_objects: bool = False
    dataset: str = ""

    def __post_init__(self):
        assert len(self.frames) == len(self.image_files), "one image file per frame"
        index: Dict[str, int] = {f: i for i, f in enumerate(self.frames)}
        object.__setattr__(self, "_index", index)
        for obj, frame in self.start_frames.items():
            assert frame in index, f"start frame {frame} of object {obj} is not a frame of {self.name}"
            assert frame in self.annotation_files, f"start frame {frame} of object {obj} has no annotation"

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return (f"VideoSequence({self.dataset}/{self.name}: {len(self.frames)} frames, "
                f"objects {list(self.object_ids)})")

    # --- frame lookup -------------------------------------------------------------------------

    def frame_index(self, frame: str) -> int:
        """Position of a frame name in :attr:`frames`."""
        try:
            return self._index[frame]  # type: ignore[attr-defined]
        except KeyError:
            raise DatasetError(f"sequence {self.name} has no frame {frame!r}") from None

    def start_index(self, obj_id: int) -> int:
        """Index of the frame carrying the given mask of ``obj_id``."""
        return self.frame_index(self.start_frames[obj_id])

    def objects_starting_at(self, index: int) -> Tuple[int, ...]:
        """Ids of the objects whose given mask is on frame ``index`` (ascending)."""
        frame = self.frames[index]
        return tuple(o for o in self.object_ids if self.start_frames[o] == frame)

    # --- file reading -------------------------------------------------------------------------

    def image(self, index: int) -> np.ndarray:
        """Frame ``index`` as an (H, W, 3) uint8 RGB array."""
        return read_image_rgb(self.image_files[index])

    def image_size(self) -> Tuple[int, int]:
        """(H, W) of the first frame (all frames of a sequence share it)."""
        from base.io import image_size

        return image_size(self.image_files[0])

    def has_annotation(self, frame: str) -> bool:
        return frame in self.annotation_files

    def annotation(self, frame: str, expected_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """Object-id map (H, W) uint8 of an annotated frame.

        Ids not in :attr:`object_ids` (e.g. the DAVIS 2017 void label 255) become 0; with
        :attr:`merge_objects` every non-zero label becomes 1. ``expected_size`` (H, W) defaults to the
        size of the frame's image; a mismatch raises :class:`DatasetError`.
        """
        path = self.annotation_files.get(frame)
        if path is None:
            raise DatasetError(f"sequence {self.name} has no annotation for frame {frame!r}")
        labels = read_index_png(path)
        if expected_size is None:
            from base.io import image_size

            expected_size = image_size(self.image_files[self.frame_index(frame)])
        if labels.shape != tuple(expected_size):
            raise DatasetError(
                f"annotation is {labels.shape[1]}x{labels.shape[0]} (WxH) but its image is "
                f"{expected_size[1]}x{expected_size[0]}", path)
        if self.merge_objects:
            return (labels != 0).astype(np.uint8)
        known = np.zeros(256, dtype=bool)
        known[list(self.object_ids)] = True
        return np.where(known[labels], labels, 0).astype(np.uint8)

    def start_mask(self, obj_id: int) -> np.ndarray:
        """Binary (H, W) uint8 given mask of ``obj_id`` on its start frame."""
        frame = self.start_frames[obj_id]
        mask = (self.annotation(frame) == obj_id).astype(np.uint8)
        if not mask.any():
            raise DatasetError(f"object {obj_id} is empty on its first frame {frame}",
                               self.annotation_files[frame])
        return mask
