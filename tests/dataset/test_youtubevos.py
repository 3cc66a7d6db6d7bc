"""YouTube-VOS 2018 reader: splits, mid-video objects, 5-stride vs all frames, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from base.errors import DatasetError
from dataset.registry import open_eval_dataset
from dataset.youtubevos import DEFAULT_SPLIT_LISTS, YouTubeVOSDataset


def test_shipped_split_lists_are_disjoint():
    jjval = DEFAULT_SPLIT_LISTS["jjval"].read_text().split()
    jjtrain = DEFAULT_SPLIT_LISTS["jjtrain"].read_text().split()
    assert len(jjval) == 300 and len(jjtrain) == 2944
    assert not set(jjval) & set(jjtrain)


def test_jjval_split(ytvos_root):
    ds = YouTubeVOSDataset(ytvos_root, "jjval", split_list=ytvos_root / "jjval.txt")
    assert ds.names == ["vid_b"] and ds.key == "yt2018jjval"
    seq = ds.sequence("vid_b")
    assert seq.frames == ("00000", "00005", "00010", "00015", "00020")
    assert seq.object_ids == (1, 2)
    assert seq.start_frames == {1: "00000", 2: "00010"}
    assert seq.objects_starting_at(2) == (2,)
    # after the start frame, last annotated frame (00020) excluded
    assert seq.score_frames == {1: ("00005", "00010", "00015"), 2: ("00015",)}
    assert seq.save_frames == seq.frames
    assert seq.start_mask(2).sum() > 0
    assert set(np.unique(seq.annotation("00015"))) == {0, 1, 2}


def test_jjtrain_and_train_splits(ytvos_root):
    assert YouTubeVOSDataset(ytvos_root, "jjtrain", split_list=ytvos_root / "jjtrain.txt").names == ["vid_a"]
    assert YouTubeVOSDataset(ytvos_root, "train").names == ["vid_a", "vid_b"]


def test_valid_split_only_first_frame_annotations(ytvos_root):
    ds = open_eval_dataset("yt2018val", ytvos_root=str(ytvos_root))
    seq = ds.sequence("vid_v")
    assert seq.frames == ("00000", "00005", "00010", "00015", "00020")
    assert sorted(seq.annotation_files) == ["00000", "00010"]
    assert seq.start_frames == {1: "00000", 2: "00010"}
    assert seq.score_frames == {}
    # the first-frame annotation of object 2 holds only object 2
    assert set(np.unique(seq.annotation("00010"))) == {0, 2}


def test_valid_all_frames_saves_only_the_benchmark_frames(ytvos_root):
    seq = open_eval_dataset("yt2018valAll", ytvos_root=str(ytvos_root)).sequence("vid_v")
    assert len(seq.frames) == 21 and seq.frames[1] == "00001"
    assert seq.save_frames == ("00000", "00005", "00010", "00015", "00020")
    assert seq.start_index(2) == 10 and seq.dataset == "yt2018valAll"


def test_default_jjval_list_names_real_videos(ytvos_root):
    # the shipped list names real YouTube-VOS videos, absent from this tree
    with pytest.raises(DatasetError, match="videos of the jjval list are not in meta.json"):
        YouTubeVOSDataset(ytvos_root, "jjval")


# --- bad input ----------------------------------------------------------------------------------

def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="YouTube-VOS root not found"):
        YouTubeVOSDataset(tmp_path / "none", "valid")


def test_missing_split_folder(ytvos_root):
    import shutil

    shutil.rmtree(ytvos_root / "valid_all_frames")
    with pytest.raises(DatasetError, match="folder not found") as err:
        YouTubeVOSDataset(ytvos_root, "valid_all")
    assert err.value.path == ytvos_root / "valid_all_frames/JPEGImages"


def test_missing_meta(ytvos_root):
    (ytvos_root / "valid/meta.json").unlink()
    with pytest.raises(DatasetError, match="meta.json not found"):
        YouTubeVOSDataset(ytvos_root, "valid")


def test_broken_meta(ytvos_root):
    (ytvos_root / "valid/meta.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        YouTubeVOSDataset(ytvos_root, "valid")
    (ytvos_root / "valid/meta.json").write_text(json.dumps({"videos": {"vid_v": {"objects": {"1": {}}}}}))
    with pytest.raises(DatasetError, match='no "frames" list'):
        YouTubeVOSDataset(ytvos_root, "valid")


def test_meta_object_without_first_annotation(ytvos_root):
    meta = json.loads((ytvos_root / "valid/meta.json").read_text())
    meta["videos"]["vid_v"]["objects"]["3"] = {"category": "x", "frames": ["00015", "00020"]}
    (ytvos_root / "valid/meta.json").write_text(json.dumps(meta))
    ds = YouTubeVOSDataset(ytvos_root, "valid")
    with pytest.raises(DatasetError, match="object 3: no annotation for its first frame"):
        ds.sequence("vid_v")


def test_meta_frame_missing_from_images(ytvos_root):
    meta = json.loads((ytvos_root / "valid/meta.json").read_text())
    meta["videos"]["vid_v"]["objects"]["1"]["frames"] = ["00003", "00005"]
    (ytvos_root / "valid/meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="first frame 00003 is not in"):
        YouTubeVOSDataset(ytvos_root, "valid").sequence("vid_v")


def test_meta_video_without_folder(ytvos_root):
    meta = json.loads((ytvos_root / "valid/meta.json").read_text())
    meta["videos"]["ghost"] = meta["videos"]["vid_v"]
    (ytvos_root / "valid/meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="image folder of video ghost not found"):
        YouTubeVOSDataset(ytvos_root, "valid").sequence("ghost")


def test_empty_first_mask(ytvos_root):
    from base.io import write_index_png

    write_index_png(ytvos_root / "valid/Annotations/vid_v/00010.png", np.zeros((24, 40), np.uint8))
    seq = YouTubeVOSDataset(ytvos_root, "valid").sequence("vid_v")
    with pytest.raises(DatasetError, match="object 2 is empty on its first frame 00010"):
        seq.start_mask(2)
