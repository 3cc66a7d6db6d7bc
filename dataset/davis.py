"""DAVIS 2016 and 2017 readers.

On-disk layout (the DAVIS 2017 release; the DAVIS 2016 sequences are part of it)::

    ROOT/JPEGImages/480p/<seq>/00000.jpg ...
    ROOT/Annotations/480p/<seq>/00000.png ...     palette PNGs, pixel value = object id
    ROOT/ImageSets/2017/{train,val}.txt           one sequence name per line
    ROOT/ImageSets/2016/{train,val}.txt

DAVIS 2016 merges every object into one (label != 0 -> 1), which accepts both the original 2016
masks (0/255 greyscale) and the 2017-style 0/1 indexed ones. The original 2016 release's split files
(``ImageSets/480p/<split>.txt``, lines of "/JPEGImages/480p/<seq>/<frame>.jpg /Annotations/...")
are read too when ``ImageSets/2016`` is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple
from typing import Sequence as Seq

import numpy as np

from base.errors import ConfigError, DatasetError
from base.io import read_index_png
from dataset.sequence import VideoSequence

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
VOID_LABEL = 255


def _check_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} not found (is --davis-root / DAVIS_ROOT right?)", path)
    return path


def read_split_file(path: Path) -> List[str]:
    """Sequence names listed in a split file, one per line (blank lines and duplicates dropped)."""
    if not path.is_file():
        raise DatasetError("split file not found", path)
    names: List[str] = []
    for line in path.read_text().splitlines():
        name = line.strip()
        if name and name not in names:
            names.append(name)
    if not names:
        raise DatasetError("split file lists no sequence", path)
    return names


def _read_davis2016_release_split(path: Path) -> List[str]:
    """Sequence names from an original DAVIS 2016 ``ImageSets/480p/<split>.txt`` (path pairs)."""
    if not path.is_file():
        raise DatasetError("split file not found", path)
    names: List[str] = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        seq = Path(parts[0]).parent.name
        if seq and seq not in names:
            names.append(seq)
    if not names:
        raise DatasetError("split file lists no sequence", path)
    return names


def list_frames(folder: Path, exts: Tuple[str, ...] = IMAGE_EXTS) -> List[Path]:
    """Image files of a sequence folder, sorted by name."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts and not p.name.startswith("."))
    return files


class DAVISDataset:
    """DAVIS 2016 or 2017, one split.

    Args:
        root: DAVIS root folder.
        year: 2016 (objects merged into one) or 2017 (several objects).
        split: ``train`` or ``val`` (any name with a split file works, e.g. ``test-dev``).
        resolution: image folder under JPEGImages/Annotations (``480p`` or ``Full-Resolution``).
        sequences: optional subset of the split's sequence names (in the given order).
    """

    def __init__(self, root, year: int = 2017, split: str = "val", resolution: str = "480p",
                 sequences: Optional[Seq[str]] = None):
        if year not in (2016, 2017):
            raise DatasetError(f"DAVIS year must be 2016 or 2017, got {year}")
        self.root = _check_dir(Path(root).expanduser(), "DAVIS root")
        self.year = year
        self.split = split
        self.resolution = resolution
        self.image_root = _check_dir(self.root / "JPEGImages" / resolution, "image folder")
        self.annotation_root = _check_dir(self.root / "Annotations" / resolution, "annotation folder")
        self.key = f"dv{year}{split}"
        names = self._split_names()
        if sequences is not None:
            unknown = [s for s in sequences if s not in names]
            if unknown:
                raise DatasetError(f"sequences {unknown} are not in the DAVIS {year} {split} split",
                                   self._split_path())
            names = list(sequences)
        self.names = names

    def _split_path(self) -> Path:
        path = self.root / "ImageSets" / str(self.year) / f"{self.split}.txt"
        if self.year == 2016 and not path.is_file():
            legacy = self.root / "ImageSets" / self.resolution / f"{self.split}.txt"
            if legacy.is_file():
                return legacy
        return path

    def _split_names(self) -> List[str]:
        path = self._split_path()
        if path.parent.name == self.resolution:
            return _read_davis2016_release_split(path)
        return read_split_file(path)

    def __len__(self) -> int:
        return len(self.names)

    def split_holdout(self, holdout: Seq[str]) -> Tuple[List[str], List[str]]:
        """(kept, held out): this split's sequences without and with ``holdout`` (split order).

        A held-out name that is not in the split is a :class:`DatasetError` naming the split file; holding
        out every sequence is a :class:`ConfigError`.
        """
        unknown = sorted(set(holdout) - set(self.names))
        if unknown:
            raise DatasetError(f"held-out sequences {unknown} are not in the DAVIS {self.year} {self.split} split",
                               self._split_path())
        kept = [n for n in self.names if n not in holdout]
        if not kept:
            raise ConfigError(f"every sequence of the DAVIS {self.year} {self.split} split is held out")
        return kept, [n for n in self.names if n in holdout]

    def __iter__(self):
        for name in self.names:
            yield self.sequence(name)

    def sequence(self, name: str) -> VideoSequence:
        """Build the :class:`VideoSequence` of one video, checking that its files are consistent."""
        image_dir = _check_dir(self.image_root / name, f"image folder of sequence {name}")
        anno_dir = _check_dir(self.annotation_root / name, f"annotation folder of sequence {name}")
        images = list_frames(image_dir)
        if not images:
            raise DatasetError("no frames (.jpg/.png) in the sequence folder", image_dir)
        frames = tuple(p.stem for p in images)
        annotations: Dict[str, Path] = {p.stem: p for p in list_frames(anno_dir, (".png",))}
        orphan = sorted(set(annotations) - set(frames))
        if orphan:
            raise DatasetError(f"annotations {orphan[:3]} have no matching frame in {image_dir}", anno_dir)
        first = frames[0]
        if first not in annotations:
            raise DatasetError(f"the first frame {first} has no annotation (expected "
                               f"{anno_dir / (first + '.png')})", anno_dir)
        first_labels = read_index_png(annotations[first])
        ids = sorted(int(v) for v in np.unique(first_labels) if v not in (0, VOID_LABEL))
        if self.year == 2016:
            ids = [1] if np.any(first_labels != 0) else []
        if not ids:
            raise DatasetError("the first frame's annotation holds no object", annotations[first])
        annotated = [f for f in frames if f in annotations]
        # Official DAVIS protocol: frames after the first, the last annotated frame excluded.
        scored = tuple(annotated[1:-1])
        return VideoSequence(
            name=name,
            frames=frames,
            image_files=tuple(images),
            annotation_files=annotations,
            object_ids=tuple(ids),
            start_frames={i: first for i in ids},
            score_frames={i: scored for i in ids},
            save_frames=frames,
            merge_objects=self.year == 2016,
            dataset=self.key,
        )
