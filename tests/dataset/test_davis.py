"""DAVIS 2016/2017 readers: the bundled real sequences, hand-built trees and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from base.errors import ConfigError, DatasetError
from base.io import write_index_png
from dataset.davis import DAVISDataset
from dataset.registry import open_eval_dataset

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "davis2016-sample"


def test_bundled_sample_dv2016val():
    ds = open_eval_dataset("dv2016val", str(SAMPLE))
    assert ds.names == ["blackswan", "car-shadow"]
    seq = ds.sequence("car-shadow")
    assert len(seq) == 40 and seq.frames[0] == "00000" and seq.frames[-1] == "00039"
    assert seq.object_ids == (1,) and seq.start_frames == {1: "00000"}
    assert seq.score_frames[1] == tuple(f"{i:05d}" for i in range(1, 39))  # first and last excluded
    assert seq.merge_objects and seq.dataset == "dv2016val"
    img = seq.image(0)
    assert img.shape == (480, 854, 3) and img.dtype == np.uint8
    mask = seq.start_mask(1)
    assert mask.shape == (480, 854) and set(np.unique(mask)) == {0, 1} and 40000 < mask.sum() < 45000


def test_bundled_sample_train_split():
    ds = DAVISDataset(SAMPLE, year=2017, split="train")
    assert ds.names == ["rollerblade"]
    assert len(ds.sequence("rollerblade")) == 35


def test_davis2017_objects_and_frames(davis_root):
    ds = DAVISDataset(davis_root, year=2017, split="val")
    seq = ds.sequence("two")
    assert seq.object_ids == (1, 2)
    assert seq.score_frames == {1: ("00001", "00002", "00003", "00004"), 2: ("00001", "00002", "00003", "00004")}
    lab = seq.annotation("00002")
    assert set(np.unique(lab)) == {0, 1, 2}
    assert seq.start_mask(2).sum() == 6 * 7


def test_davis2016_merges_objects(davis_root):
    seq = DAVISDataset(davis_root, year=2016, split="val").sequence("two")
    assert seq.object_ids == (1,)
    assert set(np.unique(seq.annotation("00000"))) == {0, 1}
    assert seq.start_mask(1).sum() == 2 * 6 * 7


def test_davis2016_accepts_0_255_greyscale(davis_root):
    folder = davis_root / "Annotations/480p/one"
    for png in folder.glob("*.png"):
        ids = np.array(Image.open(png))
        Image.fromarray((ids > 0).astype(np.uint8) * 255, mode="L").save(png)
    seq = DAVISDataset(davis_root, year=2016, split="train").sequence("one")
    assert seq.start_mask(1).sum() == 6 * 7
    assert set(np.unique(seq.annotation("00003"))) == {0, 1}


def test_davis2016_original_release_split_files(davis_root):
    sets = davis_root / "ImageSets"
    (sets / "2016" / "val.txt").unlink()
    (sets / "480p").mkdir()
    (sets / "480p" / "val.txt").write_text(
        "/JPEGImages/480p/two/00000.jpg /Annotations/480p/two/00000.png\n"
        "/JPEGImages/480p/two/00001.jpg /Annotations/480p/two/00001.png\n")
    assert DAVISDataset(davis_root, year=2016, split="val").names == ["two"]


def test_void_label_is_not_an_object(davis_root):
    png = davis_root / "Annotations/480p/two/00000.png"
    lab = np.array(Image.open(png))
    lab[0, :] = 255
    write_index_png(png, lab)
    seq = DAVISDataset(davis_root, year=2017, split="val").sequence("two")
    assert seq.object_ids == (1, 2)
    assert seq.annotation("00000")[0].max() == 0


def test_sequence_subset_and_unknown(davis_root):
    assert DAVISDataset(davis_root, split="val", sequences=["two"]).names == ["two"]
    with pytest.raises(DatasetError, match="not in the DAVIS 2017 val split"):
        DAVISDataset(davis_root, split="val", sequences=["nope"])


def test_root_from_environment(davis_root, monkeypatch):
    monkeypatch.setenv("DAVIS_ROOT", str(davis_root))
    assert open_eval_dataset("dv2017val").names == ["two"]
    monkeypatch.delenv("DAVIS_ROOT")
    with pytest.raises(ConfigError, match="--davis-root"):
        open_eval_dataset("dv2017val")


# --- bad input: one clear error naming the file -------------------------------------------------

def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="DAVIS root not found") as err:
        DAVISDataset(tmp_path / "nowhere")
    assert err.value.path == tmp_path / "nowhere"


def test_missing_split_file(davis_root):
    (davis_root / "ImageSets/2017/val.txt").unlink()
    with pytest.raises(DatasetError, match="split file not found") as err:
        DAVISDataset(davis_root, split="val")
    assert err.value.path.name == "val.txt"


def test_missing_sequence_folder(davis_root):
    (davis_root / "ImageSets/2017/val.txt").write_text("two\nghost\n")
    ds = DAVISDataset(davis_root, split="val")
    with pytest.raises(DatasetError, match="image folder of sequence ghost"):
        ds.sequence("ghost")


def test_missing_first_annotation(davis_root):
    (davis_root / "Annotations/480p/two/00000.png").unlink()
    with pytest.raises(DatasetError, match="first frame 00000 has no annotation"):
        DAVISDataset(davis_root).sequence("two")


def test_missing_frame_for_annotation(davis_root):
    (davis_root / "JPEGImages/480p/two/00003.jpg").unlink()
    with pytest.raises(DatasetError, match="no matching frame"):
        DAVISDataset(davis_root).sequence("two")


def test_missing_annotation_is_reported_on_read(davis_root):
    seq = DAVISDataset(davis_root).sequence("two")
    with pytest.raises(DatasetError, match="no annotation for frame"):
        seq.annotation("00042")


def test_size_mismatch(davis_root):
    png = davis_root / "Annotations/480p/two/00002.png"
    write_index_png(png, np.zeros((10, 10), np.uint8))
    seq = DAVISDataset(davis_root).sequence("two")
    with pytest.raises(DatasetError, match="annotation is 10x10 .* image is 40x24") as err:
        seq.annotation("00002")
    assert err.value.path == png


def test_corrupt_image(davis_root):
    jpg = davis_root / "JPEGImages/480p/two/00001.jpg"
    jpg.write_bytes(b"\xff\xd8 this is not a jpeg")
    seq = DAVISDataset(davis_root).sequence("two")
    with pytest.raises(DatasetError, match="corrupt") as err:
        seq.image(1)
    assert err.value.path == jpg


def test_first_frame_without_object(davis_root):
    write_index_png(davis_root / "Annotations/480p/two/00000.png", np.zeros((24, 40), np.uint8))
    with pytest.raises(DatasetError, match="holds no object"):
        DAVISDataset(davis_root).sequence("two")


def test_rgb_annotation_refused(davis_root):
    png = davis_root / "Annotations/480p/two/00000.png"
    Image.fromarray(np.zeros((24, 40, 3), np.uint8)).save(png)
    with pytest.raises(DatasetError, match="indexed"):
        DAVISDataset(davis_root).sequence("two")
