"""YouTube-VOS 2018 reader.

On-disk layout::

    ROOT/train/JPEGImages/<vid>/00000.jpg 00005.jpg ...   every 5th frame (names = frame numbers)
    ROOT/train/Annotations/<vid>/00000.png ...            every listed frame annotated
    ROOT/train/meta.json                                   {"videos": {vid: {"objects": {"1": {
                                                                "category": ..., "frames": [...]}}}}}
    ROOT/train_all_frames/JPEGImages/<vid>/00000.jpg 00001.jpg ...
    ROOT/valid/JPEGImages/<vid>/...                        every 5th frame
    ROOT/valid/Annotations/<vid>/...                       only frames where an object first appears
    ROOT/valid/meta.json
    ROOT/valid_all_frames/JPEGImages/<vid>/...

Splits (names as in the original code):

=============  ==========================  =============  =========================================
split          images                      annotations    sequences
=============  ==========================  =============  =========================================
``jjval``      train/JPEGImages            train/         the 300 names of ``splits/ytvos2018_jjval``
``jjtrain``    train/JPEGImages            train/         the 2944 names of ``ytvos2018_jjtrain``
``train``      train/JPEGImages            train/         every video of train/meta.json
``valid``      valid/JPEGImages            valid/         every video of valid/meta.json
``valid_all``  valid_all_frames/JPEGImages valid/         every video; PNGs saved on valid's frames
=============  ==========================  =============  =========================================

Objects may first appear mid-video: each object starts on the first frame listed for it in meta.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional
from typing import Sequence as Seq

from base.errors import DatasetError
from dataset.davis import list_frames, read_split_file
from dataset.sequence import VideoSequence

SPLIT_DIR = Path(__file__).resolve().parent / "splits"
DEFAULT_SPLIT_LISTS = {
    "jjval": SPLIT_DIR / "ytvos2018_jjval.txt",
    "jjtrain": SPLIT_DIR / "ytvos2018_jjtrain.txt",
}

# split -> (image folder, annotation/meta folder, dataset key)
_LAYOUT = {
    "jjval": ("train/JPEGImages", "train", "yt2018jjval"),
    "jjtrain": ("train/JPEGImages", "train", "yt2018jjtrain"),
    "train": ("train/JPEGImages", "train", "yt2018train"),
    "valid": ("valid/JPEGImages", "valid", "yt2018val"),
    "valid_all": ("valid_all_frames/JPEGImages", "valid", "yt2018valAll"),
}


def read_meta(path: Path) -> Dict[str, dict]:
    """``videos`` of a YouTube-VOS meta.json, validated: vid -> {obj_id(str): {"frames": [...]}}."""
    if not path.is_file():
        raise DatasetError("meta.json not found (is --ytvos-root / YTVOS_ROOT right?)", path)
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"meta.json is not valid JSON ({err})", path) from None
    videos = meta.get("videos") if isinstance(meta, dict) else None
    if not isinstance(videos, dict):
        raise DatasetError('meta.json has no "videos" object', path)
    for vid, entry in videos.items():
        objects = entry.get("objects") if isinstance(entry, dict) else None
        if not isinstance(objects, dict):
            raise DatasetError(f'video {vid} has no "objects" entry', path)
        for obj, info in objects.items():
            if not str(obj).isdigit() or not 0 < int(obj) < 255:
                raise DatasetError(f"video {vid}: object id {obj!r} is not an integer in 1..254", path)
            frames = info.get("frames") if isinstance(info, dict) else None
            if not isinstance(frames, list) or not frames:
                raise DatasetError(f'video {vid}, object {obj}: no "frames" list', path)
    return videos


class YouTubeVOSDataset:
    """YouTube-VOS 2018, one split (see the module docstring).

    Args:
        root: YouTube-VOS 2018 root folder.
        split: ``jjval``, ``jjtrain``, ``train``, ``valid`` or ``valid_all``.
        split_list: file listing the sequences of ``jjval``/``jjtrain`` (default: the shipped list).
        sequences: optional subset of the split's sequence names.
    """

    def __init__(self, root, split: str = "valid", split_list=None,
                 sequences: Optional[Seq[str]] = None):
        if split not in _LAYOUT:
            raise DatasetError(f"unknown YouTube-VOS split {split!r}; choose from {sorted(_LAYOUT)}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError("YouTube-VOS root not found (is --ytvos-root / YTVOS_ROOT right?)", self.root)
        image_sub, anno_sub, self.key = _LAYOUT[split]
        self.split = split
        self.image_root = self.root / image_sub
        self.annotation_root = self.root / anno_sub / "Annotations"
        for folder in (self.image_root, self.annotation_root):
            if not folder.is_dir():
                raise DatasetError("folder not found (YouTube-VOS 2018 layout expected)", folder)
        self.meta_path = self.root / anno_sub / "meta.json"
        self.meta = read_meta(self.meta_path)
        # The frames the benchmark server wants: the 5-stride frames of the split's own folder.
        self.save_root = self.root / anno_sub / "JPEGImages"

        if split in DEFAULT_SPLIT_LISTS:
            listed = read_split_file(Path(split_list) if split_list else DEFAULT_SPLIT_LISTS[split])
            missing = [v for v in listed if v not in self.meta]
            if missing:
                raise DatasetError(f"{len(missing)} videos of the {split} list are not in meta.json "
                                   f"(e.g. {missing[0]})", self.meta_path)
            names = listed
        else:
            names = sorted(self.meta)
        if sequences is not None:
            unknown = [s for s in sequences if s not in names]
            if unknown:
                raise DatasetError(f"sequences {unknown} are not in the YouTube-VOS {split} split",
                                   self.meta_path)
            names = list(sequences)
        self.names: List[str] = names

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        for name in self.names:
            yield self.sequence(name)

    def sequence(self, name: str) -> VideoSequence:
        """Build the :class:`VideoSequence` of one video, checking meta.json against the files."""
        image_dir = self.image_root / name
        if not image_dir.is_dir():
            raise DatasetError(f"image folder of video {name} not found", image_dir)
        images = list_frames(image_dir, (".jpg", ".jpeg"))
        if not images:
            raise DatasetError("no .jpg frames in the video folder", image_dir)
        frames = tuple(p.stem for p in images)
        frame_set = set(frames)
        anno_dir = self.annotation_root / name
        if not anno_dir.is_dir():
            raise DatasetError(f"annotation folder of video {name} not found", anno_dir)
        annotations = {p.stem: p for p in list_frames(anno_dir, (".png",))}

        objects = self.meta[name]["objects"]
        ids = sorted(int(o) for o in objects)
        start_frames: Dict[int, str] = {}
        for obj in ids:
            listed = sorted(objects[str(obj)]["frames"])
            start = listed[0]
            if start not in frame_set:
                raise DatasetError(f"video {name}, object {obj}: its first frame {start} is not in "
                                   f"{image_dir}", self.meta_path)
            if start not in annotations:
                raise DatasetError(f"video {name}, object {obj}: no annotation for its first frame "
                                   f"(expected {anno_dir / (start + '.png')})", self.meta_path)
            start_frames[obj] = start

        if self.split == "valid_all":
            save_dir = self.save_root / name
            if not save_dir.is_dir():
                raise DatasetError(f"5-stride frame folder of video {name} not found", save_dir)
            save_frames = tuple(p.stem for p in list_frames(save_dir, (".jpg", ".jpeg")))
            absent = [f for f in save_frames if f not in frame_set]
            if absent:
                raise DatasetError(f"frames {absent[:3]} of valid/ are missing from valid_all_frames/",
                                   image_dir)
        else:
            save_frames = frames

        score_frames: Dict[int, tuple] = {}
        if self.split in ("jjval", "jjtrain", "train"):
            # Official protocol: after the object's first frame, the last annotated frame excluded.
            position = {f: i for i, f in enumerate(frames)}
            annotated = [f for f in frames if f in annotations][:-1]
            for obj in ids:
                start = position[start_frames[obj]]
                score_frames[obj] = tuple(f for f in annotated if position[f] > start)
        return VideoSequence(
            name=name,
            frames=frames,
            image_files=tuple(images),
            annotation_files=annotations,
            object_ids=tuple(ids),
            start_frames=start_frames,
            score_frames=score_frames,
            save_frames=save_frames,
            merge_objects=False,
            dataset=self.key,
        )
