"""Training samples: visibility rules and cache, temporal / official frame sampling, epochs, resizing, roots."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import dataset.training as training
from base.errors import ConfigError, DatasetError
from base.io import write_index_png
from dataset.sampling import first_frame_candidates, sample_official, sample_temporal
from dataset.sequence import VideoSequence
from dataset.synthetic import generate_youtubevos
from dataset.training import SAMPLINGS, TRAINING_DATASETS, build_training_set, prepare_synthetic_davis
from dataset.visibility import (
    DAVIS_VISIBILITY,
    OFFICIAL_DAVIS_VISIBILITY,
    SYNTHETIC_VISIBILITY,
    YTVOS_VISIBILITY,
    VisibilityRule,
)

SYN_SIZE = (48, 80)


# --- helpers ----------------------------------------------------------------------------------------


def write_davis(root: Path, videos: Dict[str, List[np.ndarray]]) -> Path:
    """A DAVIS 2017 tree whose train split holds ``videos`` (name -> per-frame label maps)."""
    for s, (name, labels) in enumerate(videos.items()):
        for t, lab in enumerate(labels):
            img = np.random.default_rng(100 * s + t).integers(0, 255, (*lab.shape, 3), dtype=np.uint8)
            path = root / "JPEGImages/480p" / name / f"{t:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path, quality=90)
            write_index_png(root / "Annotations/480p" / name / f"{t:05d}.png", lab)
    (root / "ImageSets/2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets/2017/train.txt").write_text("".join(f"{n}\n" for n in videos))
    return root


def rect_labels(shape, rects) -> np.ndarray:
    """A label map with ``rects`` = [(obj_id, y0, y1, x0, x1), ...]."""
    lab = np.zeros(shape, np.uint8)
    for obj, y0, y1, x0, x1 in rects:
        lab[y0:y1, x0:x1] = obj
    return lab


def meta(item) -> dict:
    return json.loads(item["meta"])


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return prepare_synthetic_davis(tmp_path_factory.mktemp("syn") / "davis", size=SYN_SIZE)


def synthetic_set(root: Path, **kwargs):
    kwargs.setdefault("size", (32, 56))
    return build_training_set("synthetic", synthetic_root=root, synthetic_size=SYN_SIZE, **kwargs)


# --- visibility -------------------------------------------------------------------------------------


def test_visibility_rules_hand_computed():
    size = (480, 854)
    # DAVIS: >= 100 px and >= 25% of the peak (400 -> 100)
    assert DAVIS_VISIBILITY.visible([0, 99, 100, 400, 150], size).tolist() == [False, False, True, True, True]
    # 25% of 1000 = 250: 120 px are enough pixels but too small a fraction
    assert DAVIS_VISIBILITY.visible([120, 1000, 250], size).tolist() == [False, True, True]
    # YouTube-VOS: only the 100 px
    assert YTVOS_VISIBILITY.visible([99, 100, 5000, 0], size).tolist() == [False, True, True, False]
    # synthetic: 100 px per 480x854, scaled by area: 240x427 -> 25 px
    assert SYNTHETIC_VISIBILITY.min_pixels_for((240, 427)) == pytest.approx(25.0)
    assert SYNTHETIC_VISIBILITY.visible([24, 25, 90], (240, 427)).tolist() == [False, True, True]
    # zero pixels are never visible, whatever the threshold
    assert VisibilityRule(min_pixels=0).visible([0, 1], size).tolist() == [False, True]


def test_official_davis_visibility_hand_computed():
    """The original DAVIS 2017 rule (--official-quirks): thresholds, never-occluded sequences, overrides."""
    rule, size = OFFICIAL_DAVIS_VISIBILITY, (480, 854)
    # an ordinary sequence: pixels / (peak + 0.001) >= 25 % (so exactly 25 % is occluded) and >= 100 px
    assert rule.visible_in("dog", 1, [1000, 250, 251, 99, 0], size).tolist() == [True, False, True, False, False]
    assert rule.visible_in("bmx-bumps", 1, [1000, 500, 501], size).tolist() == [True, False, True]  # 50 %
    assert rule.visible_in("drone", 2, [1000, 99, 100, 101], size).tolist() == [True, False, False, True]  # 10 %
    # never occluded: only the 100 px minimum
    assert rule.visible_in("bus", 1, [1000, 150, 99], size).tolist() == [True, True, False]
    # overrides: drone object 1 frames 0-16 and 24-59, night-race object 2 everywhere; 100 px still wins
    drone = [150] * 30 + [5000]
    visible = rule.visible_in("drone", 1, drone, size)
    assert visible[:17].all() and not visible[17:24].any() and visible[24:30].all() and visible[30]
    assert not rule.visible_in("drone", 2, drone, size)[:30].any()
    assert rule.visible_in("night-race", 2, [5000, 150, 99], size).tolist() == [True, True, False]
    assert rule.visible_in("night-race", 1, [5000] + [150] * 30, size)[:29].all()
    assert not rule.visible_in("night-race", 1, [5000] + [150] * 30, size)[29:].any()
    assert rule.visible_in("classic-car", 3, [5000] + [150] * 60, size)[:56].all()
    assert not rule.visible_in("classic-car", 3, [5000] + [150] * 60, size)[56:].any()
    # the general rule ignores the names
    assert DAVIS_VISIBILITY.visible_in("bus", 1, [1000, 150], size).tolist() == [True, False]


def test_pixel_counts_and_visibility_on_hand_built_masks(tmp_path):
    shape = (40, 60)
    labels = [
        rect_labels(shape, [(1, 0, 10, 0, 12), (2, 20, 25, 0, 6), (255, 30, 40, 0, 60)]),  # 120 px, 30 px, void
        rect_labels(shape, [(1, 0, 10, 0, 40), (2, 20, 30, 0, 20)]),  # 400 px, object 2: 200 px
        rect_labels(shape, [(1, 0, 5, 0, 4)]),  # 20 px
        rect_labels(shape, [(1, 0, 10, 0, 10)]),  # 100 px
    ]
    root = write_davis(tmp_path / "davis", {"hand": labels})
    ds = build_training_set("dv2017", davis_root=root, seq_len=2, size=shape)
    pairs = {p.obj_id: p for p in ds.sources[0].pairs}
    assert set(pairs) == {1, 2}
    assert pairs[1].visible.tolist() == [True, True, False, True]  # 120 >= 100 = 25% of 400; 20 < 100
    assert pairs[2].visible.tolist() == [False, True, False, False]
    assert pairs[1].frames == ("00000", "00001", "00002", "00003")
    # min_pixels overrides the 100 px (the 25% rule stays)
    ds = build_training_set("dv2017", davis_root=root, seq_len=2, size=shape, min_pixels=150)
    assert {p.obj_id: p.visible.tolist() for p in ds.sources[0].pairs} == {1: [False, True, False, False],
                                                                           2: [False, True, False, False]}
    # object 2 is visible only on frame 1: a temporal sample of 4 frames cannot start there
    ds = build_training_set("dv2017", davis_root=root, seq_len=4, size=shape)
    assert [p.obj_id for p in ds.sources[0].pairs] == [1]
    assert all(meta(ds[i])["frame0_id"] == 0 for i in range(len(ds)))  # frame 0: the only start with room


def test_sequence_without_visible_object_is_skipped_with_warning(tmp_path, caplog):
    shape = (40, 60)
    big = [rect_labels(shape, [(1, 0, 20, 0, 20 + t)]) for t in range(5)]  # >= 400 px
    tiny = [rect_labels(shape, [(1, 0, 6, 0, 7)]) for _ in range(5)]  # 42 px
    root = write_davis(tmp_path / "davis", {"big": big, "tiny": tiny})
    with caplog.at_level(logging.WARNING, logger="dataset.training"):
        ds = build_training_set("dv2017", davis_root=root, seq_len=3, size=shape)
    assert [(p.sequence.name, p.obj_id) for p in ds.sources[0].pairs] == [("big", 1)]
    assert any("tiny" in r.getMessage() and "no object is ever visible" in r.getMessage() for r in caplog.records)

    only_tiny = write_davis(tmp_path / "tiny", {"tiny": tiny})
    with pytest.raises(DatasetError, match="no training sample.*never visible"):
        build_training_set("dv2017", davis_root=only_tiny, seq_len=3, size=shape)


def test_visibility_cache_written_reused_and_recomputed_when_corrupt(tmp_path, davis_root, monkeypatch, caplog):
    cache = tmp_path / "cache"
    first = build_training_set("dv2017", davis_root=davis_root, seq_len=3, size=(24, 40), min_pixels=10,
                               cache_dir=cache)
    files = sorted((cache / "visibility").rglob("*.json"))
    assert [f.name for f in files] == ["one.json"]
    cached = json.loads(files[0].read_text())
    assert cached["sequence"] == "one" and cached["dataset"] == "dv2017train"
    assert cached["pixels"] == {"1": [42] * 5}  # the conftest rectangles are 6 x 7 px

    def no_reading(self, *args, **kwargs):
        raise AssertionError("annotations must come from the cache")

    with monkeypatch.context() as patch:
        patch.setattr(VideoSequence, "annotation", no_reading)
        again = build_training_set("dv2017", davis_root=davis_root, seq_len=3, size=(24, 40), min_pixels=10,
                                   cache_dir=cache)
    assert [p.visible.tolist() for p in again.sources[0].pairs] == [p.visible.tolist() for p in first.sources[0].pairs]

    files[0].write_text('{"version": 1, "frames": [')  # truncated
    with caplog.at_level(logging.WARNING, logger="dataset.visibility"):
        build_training_set("dv2017", davis_root=davis_root, seq_len=3, size=(24, 40), min_pixels=10,
                           cache_dir=cache)
    assert any("corrupt visibility cache" in r.getMessage() for r in caplog.records)
    assert json.loads(files[0].read_text())["pixels"] == {"1": [42] * 5}

    # without a cache folder nothing is written
    build_training_set("dv2017", davis_root=davis_root, seq_len=3, size=(24, 40), min_pixels=10)
    assert sorted((cache / "visibility").rglob("*.json")) == files


# --- frame sampling ---------------------------------------------------------------------------------


def test_temporal_sampling_unit_cases():
    rng = np.random.default_rng(0)
    visible = np.array([False, True, True, True, True, True, True, True, True, True])
    assert first_frame_candidates(visible, 6, "temporal").tolist() == [1, 2, 3, 4]  # room for 5 later
    assert first_frame_candidates(visible, 6, "official").tolist() == list(range(1, 10))
    assert first_frame_candidates(visible[:5], 6, "temporal").size == 0
    assert first_frame_candidates(visible[:6], 6, "official").size == 0  # needs seq_len other frames
    # exactly seq_len frames: the only sample is all of them
    for _ in range(20):
        assert sample_temporal(np.ones(6, bool), 6, 3, rng) == [0, 1, 2, 3, 4, 5]
    # gaps clipped to fit: every draw stays in range, ascending, gaps 1..3, and every gap size occurs
    gaps = set()
    for _ in range(300):
        pos = sample_temporal(visible, 6, 3, rng)
        steps = np.diff(pos)
        assert visible[pos[0]] and pos[-1] <= 9 and steps.min() >= 1 and steps.max() <= 3
        gaps.update(steps.tolist())
    assert gaps == {1, 2, 3}


def test_official_sampling_unit_cases():
    rng = np.random.default_rng(0)
    visible = np.zeros(10, bool)
    visible[6] = True
    unordered = before_first = 0
    for _ in range(200):
        pos = sample_official(visible, 6, rng)
        assert pos[0] == 6 and len(pos) == 6 and len(set(pos)) == 6 and all(0 <= k < 10 for k in pos)
        unordered += pos[1:] != sorted(pos[1:])
        before_first += min(pos[1:]) < 6
    assert unordered > 100 and before_first > 100


def test_item_shapes_dtypes_and_values(synthetic_root):
    ds = synthetic_set(synthetic_root, seq_len=5, size=(32, 56))
    for i in (0, len(ds) // 2, len(ds) - 1):
        item = ds[i]
        assert set(item) == {"images", "labels", "meta"}
        assert item["images"].shape == (5, 3, 32, 56) and item["images"].dtype == torch.uint8
        assert item["labels"].shape == (5, 1, 32, 56) and item["labels"].dtype == torch.uint8
        assert set(item["labels"].unique().tolist()) <= {0, 1}
        assert item["labels"][0].sum() > 0  # the first frame shows the object
        m = meta(item)
        assert set(m) == {"dataset", "seq_name", "obj_id", "frames", "frame0_id"}
        assert m["dataset"] == "synthetic" and len(m["frames"]) == 5
        assert m["frame0_id"] == int(m["frames"][0])  # DAVIS: every frame annotated, named by index
        s, p = ds.samples[i]
        pair = ds.sources[s].pairs[p]
        assert (m["seq_name"], m["obj_id"]) == (pair.sequence.name, pair.obj_id)
        assert [pair.frames[k] for k in ds.frame_positions(i)] == m["frames"]


def test_temporal_items_are_ordered_with_bounded_gaps(synthetic_root):
    ds = synthetic_set(synthetic_root, seq_len=6, sampling="temporal")
    gaps = set()
    for i in range(len(ds)):
        pos = ds.frame_positions(i)
        s, p = ds.samples[i]
        pair = ds.sources[s].pairs[p]
        assert pair.visible[pos[0]] and pos[-1] < len(pair.frames)
        steps = np.diff(pos)
        assert steps.min() >= 1 and steps.max() <= training.DEFAULT_MAX_GAP["davis"]
        gaps.update(steps.tolist())
    assert gaps == {1, 2, 3}
    ds = synthetic_set(synthetic_root, seq_len=6, max_gap=1)
    assert all(np.diff(ds.frame_positions(i)).tolist() == [1] * 5 for i in range(len(ds)))


def test_official_items_start_visible_and_can_be_unordered(synthetic_root):
    ds = synthetic_set(synthetic_root, seq_len=6, sampling="official", seed=3)
    unordered = 0
    for i in range(len(ds)):
        pos = ds.frame_positions(i)
        s, p = ds.samples[i]
        assert ds.sources[s].pairs[p].visible[pos[0]] and len(set(pos)) == 6
        unordered += pos != sorted(pos)
    assert unordered > len(ds) // 2
    assert meta(ds[0])["frames"][0] == ds.sources[0].pairs[ds.samples[0][1]].frames[ds.frame_positions(0)[0]]


# --- epochs and determinism -------------------------------------------------------------------------


def test_items_and_epochs_are_deterministic(synthetic_root):
    a = synthetic_set(synthetic_root, seed=5)
    b = synthetic_set(synthetic_root, seed=5)
    later = b[7]  # reading order must not matter
    first = b[2]
    for i, item in ((2, first), (7, later)):
        ref = a[i]
        assert ref["meta"] == item["meta"]
        assert torch.equal(ref["images"], item["images"]) and torch.equal(ref["labels"], item["labels"])
    # a copy in a worker process gives the same items
    clone = pickle.loads(pickle.dumps(a))
    assert clone[7]["meta"] == a[7]["meta"] and torch.equal(clone[7]["images"], a[7]["images"])
    # another seed or epoch draws other frames; going back to the epoch restores them
    other = synthetic_set(synthetic_root, seed=6)
    metas = [a[i]["meta"] for i in range(len(a))]
    assert [other[i]["meta"] for i in range(len(a))] != metas
    a.set_epoch(1)
    assert [a[i]["meta"] for i in range(len(a))] != metas
    a.set_epoch(0)
    assert [a[i]["meta"] for i in range(len(a))] == metas


def test_epoch_repeats_davis_eight_synthetic_two(synthetic_root):
    info = json.loads((synthetic_root / "synthetic_meta.json").read_text())
    n_objects = sum(len(info["sequences"][n]["objects"]) for n in info["splits"]["train"])
    # the generated folder is a DAVIS 2017 layout: read as dv2017 (every object visible with min_pixels=1)
    davis = build_training_set("dv2017", davis_root=synthetic_root, size=(32, 56), min_pixels=1)
    assert davis.num_pairs == n_objects
    assert len(davis) == 8 * n_objects
    assert np.bincount([p for _, p in davis.samples]).tolist() == [8] * n_objects
    assert f"{8 * n_objects} samples/epoch" in davis.describe()
    assert len(build_training_set("dv2017", davis_root=synthetic_root, size=(32, 56), min_pixels=1,
                                  davis_epoch_repeats=3)) == 3 * n_objects
    ds = synthetic_set(synthetic_root)
    assert ds.num_pairs == n_objects  # every synthetic object is visible with the area-scaled rule
    assert len(ds) == 2 * n_objects
    assert np.bincount([p for _, p in ds.samples]).tolist() == [2] * n_objects
    assert len(synthetic_set(synthetic_root, synthetic_epoch_repeats=5)) == 5 * n_objects


def test_unscaled_threshold_loses_objects_of_tiny_synthetic_videos(synthetic_root):
    # at 48x80 several synthetic objects stay under 100 px: this is why the synthetic rule scales it
    scaled = synthetic_set(synthetic_root)
    try:
        unscaled = synthetic_set(synthetic_root, min_pixels=100).num_pairs
    except DatasetError:
        unscaled = 0
    assert unscaled < scaled.num_pairs


@pytest.fixture(scope="module")
def synthetic_ytvos(tmp_path_factory) -> Path:
    return generate_youtubevos(tmp_path_factory.mktemp("syn") / "ytvos", size=(48, 80), num_train=6, num_valid=1,
                               frames=(20, 45))


def test_ytvos_epoch_cap_and_min_length(synthetic_ytvos):
    root = synthetic_ytvos
    kwargs = dict(ytvos_root=root, split_list=root / "jjtrain.txt", seq_len=3, size=(24, 40), min_pixels=10)
    full = build_training_set("ytvos2018", ytvos_samples_per_epoch=None, **kwargs)
    n = full.num_pairs
    assert n >= 4 and len(full) == n
    for pair in full.sources[0].pairs:
        assert len(pair.frames) >= 3 + 2  # min_seq_length = seq_len + 2
    capped = build_training_set("yt2018", ytvos_samples_per_epoch=3, **kwargs)
    assert capped.num_pairs == n and len(capped) == 3
    seen = set()
    for epoch in range(6):
        capped.set_epoch(epoch)
        chosen = [p for _, p in capped.samples]
        assert len(set(chosen)) == 3  # without replacement
        seen.update(chosen)
    assert len(seen) > 3  # every epoch draws again
    item = capped[0]
    m = meta(item)
    assert m["dataset"] == "ytvos2018" and m["frame0_id"] == int(m["frames"][0]) // 5  # the i-th 5-stride frame


def test_ytvos_short_sequences_are_dropped(ytvos_root):
    # vid_a has 5 annotated frames: kept for seq_len 3 (needs 5), dropped for seq_len 4 (needs 6)
    kwargs = dict(ytvos_root=ytvos_root, split_list=ytvos_root / "jjtrain.txt", size=(24, 40), min_pixels=10)
    ds = build_training_set("ytvos2018", seq_len=3, **kwargs)
    assert [p.obj_id for p in ds.sources[0].pairs] == [1, 2]
    # object 2 is on the last 3 annotated frames only: its one temporal sample is exactly those
    obj2 = [meta(ds[i]) for i in range(len(ds)) if ds.samples[i][1] == 1]
    assert obj2 and all(m["frames"] == ["00010", "00015", "00020"] and m["frame0_id"] == 2 for m in obj2)
    with pytest.raises(DatasetError, match="too short"):
        build_training_set("ytvos2018", seq_len=4, **kwargs)
    # with the length rule relaxed, object 2 (3 frames) still cannot make 4
    assert build_training_set("ytvos2018", seq_len=4, min_seq_length=5, **kwargs).num_pairs == 1


def test_all_concatenates_davis_and_ytvos(davis_root, ytvos_root):
    ds = build_training_set("all", davis_root=davis_root, ytvos_root=ytvos_root,
                            split_list=ytvos_root / "jjtrain.txt", seq_len=3, size=(24, 40), min_pixels=10)
    assert [s.name for s in ds.sources] == ["dv2017", "ytvos2018"]
    assert len(ds) == 8 * 1 + 2  # DAVIS "one" x 8 repeats + vid_a's two objects (under the 4000 cap)
    assert [meta(ds[i])["dataset"] for i in (0, len(ds) - 1)] == ["dv2017", "ytvos2018"]


# --- resizing ---------------------------------------------------------------------------------------


def _expected(ds, i, interpolation):
    s, p = ds.samples[i]
    pair = ds.sources[s].pairs[p]
    frame = meta(ds[i])["frames"][0]
    image = pair.sequence.image(pair.sequence.frame_index(frame))
    mask = (pair.sequence.annotation(frame) == pair.obj_id).astype(np.uint8)
    dsize = (ds.size[1], ds.size[0])
    return (cv2.resize(image, dsize, interpolation=interpolation),
            cv2.resize(mask, dsize, interpolation=cv2.INTER_NEAREST))


@pytest.mark.parametrize("dset,size,interpolation,official", [
    ("ytvos2018", (48, 80), cv2.INTER_CUBIC, False),  # YouTube-VOS enlarged: cubic
    ("ytvos2018", (12, 20), cv2.INTER_AREA, False),  # shrunk: area
    ("dv2017", (48, 80), cv2.INTER_AREA, False),  # DAVIS: always area
    ("dv2017", (48, 80), cv2.INTER_LINEAR, True),  # --official-quirks: what the original really does
    ("ytvos2018", (12, 20), cv2.INTER_LINEAR, True),
])
def test_resize_modes(dset, size, interpolation, official, davis_root, ytvos_root):
    ds = build_training_set(dset, davis_root=davis_root, ytvos_root=ytvos_root, official=official,
                            split_list=ytvos_root / "jjtrain.txt", seq_len=3, size=size, min_pixels=10)
    item = ds[0]
    image, mask = _expected(ds, 0, interpolation)
    assert item["images"].shape[-2:] == size
    assert np.array_equal(item["images"][0].permute(1, 2, 0).numpy(), image)
    assert np.array_equal(item["labels"][0, 0].numpy(), mask)
    assert set(item["labels"].unique().tolist()) == {0, 1}


# --- synthetic root, roots and flags ----------------------------------------------------------------


def test_synthetic_root_generated_once_and_reused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="synthetic_root"):
        build_training_set("synthetic")
    root = tmp_path / "syn"
    first = synthetic_set(root)
    assert (root / "synthetic_meta.json").is_file() and not list(tmp_path.glob(".syn.tmp-*"))

    def no_generation(*args, **kwargs):
        raise AssertionError("the synthetic dataset must be reused")

    monkeypatch.setattr(training, "generate_davis2017", no_generation)
    again = synthetic_set(root)
    assert again[3]["meta"] == first[3]["meta"] and torch.equal(again[3]["images"], first[3]["images"])
    with pytest.raises(ConfigError, match="generated with"):
        build_training_set("synthetic", synthetic_root=root, synthetic_size=(64, 96))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no generated dataset"):
        build_training_set("synthetic", synthetic_root=tmp_path / "other", synthetic_size=SYN_SIZE)


def test_synthetic_generation_race_leaves_a_valid_tree(tmp_path, monkeypatch):
    root = tmp_path / "syn"
    real = training.generate_davis2017

    def racing(out, **kwargs):
        real(root, **kwargs)  # another process finishes first
        return real(out, **kwargs)

    monkeypatch.setattr(training, "generate_davis2017", racing)
    assert prepare_synthetic_davis(root, size=SYN_SIZE) == root
    assert json.loads((root / "synthetic_meta.json").read_text())["size"] == list(SYN_SIZE)
    assert [p.name for p in tmp_path.iterdir()] == ["syn"]  # the loser's temporary tree is gone


def test_roots_and_names(tmp_path, monkeypatch):
    assert TRAINING_DATASETS == ("dv2017", "dv2016", "ytvos2018", "all", "synthetic", "duts")
    assert SAMPLINGS == ("temporal", "official")
    monkeypatch.delenv("DAVIS_ROOT", raising=False)
    monkeypatch.delenv("YTVOS_ROOT", raising=False)
    with pytest.raises(DatasetError, match="DAVIS root not found") as err:
        build_training_set("dv2017", davis_root=tmp_path / "nope")
    assert "nope" in str(err.value)
    with pytest.raises(DatasetError, match="YouTube-VOS root not found"):
        build_training_set("yt2018", ytvos_root=tmp_path / "nope")
    with pytest.raises(ConfigError, match="DAVIS_ROOT"):
        build_training_set("dv2017")
    with pytest.raises(ConfigError, match="YTVOS_ROOT"):
        build_training_set("ytvos2018")
    with pytest.raises(ConfigError, match="DAVIS_ROOT"):
        build_training_set("dv2016")
    with pytest.raises(ConfigError, match="unknown training dataset"):
        build_training_set("dv2015")
    with pytest.raises(ConfigError, match="unknown sampling"):
        build_training_set("synthetic", synthetic_root=tmp_path / "s", sampling="sorted")


def test_dv2016_trains_on_the_2016_train_split_with_objects_merged(tmp_path, make_davis):
    """--dset dv2016: the ImageSets/2016/train.txt sequences, every object merged into one (DAVIS 2016)."""
    root = make_davis(tmp_path / "davis", seqs=(("two", 2, 6), ("one", 1, 5), ("val", 1, 5)), train=("two", "one"))
    ds = build_training_set("dv2016", davis_root=root, seq_len=3, size=(48, 80), min_pixels=10)
    pairs = [p for source in ds.sources for p in source.pairs]
    assert sorted((p.sequence.name, p.obj_id) for p in pairs) == [("one", 1), ("two", 1)]
    item = ds[[i for i, (s, p) in enumerate(ds.samples) if ds.sources[s].pairs[p].sequence.name == "two"][0]]
    # both objects of "two" (ids 1 and 2 in the 2017-style annotation) are the one foreground
    frame = meta(item)["frames"][0]
    two = [p for p in pairs if p.sequence.name == "two"][0].sequence
    expected = (np.asarray(Image.open(root / "Annotations/480p/two" / f"{frame}.png")) > 0).astype(np.uint8)
    expected = cv2.resize(expected, (80, 48), interpolation=cv2.INTER_NEAREST)
    assert two.object_ids == (1,)
    assert np.array_equal(item["labels"][0, 0].numpy(), expected)
    assert ds.sources[0].name == "dv2016" and ds.sources[0].epoch_repeats == training.DAVIS_EPOCH_REPEATS


def test_dv2016_holdout_leaves_sequences_out(tmp_path, make_davis):
    """--holdout: the named train sequences are not sampled; an unknown name or holding out all is an error."""
    root = make_davis(tmp_path / "davis", seqs=(("two", 2, 6), ("one", 1, 5), ("val", 1, 5)), train=("two", "one"))
    ds = build_training_set("dv2016", davis_root=root, seq_len=3, size=(48, 80), min_pixels=10, holdout=("two",))
    names = {ds.sources[s].pairs[p].sequence.name for s, p in ds.samples}
    assert names == {"one"}
    with pytest.raises(DatasetError, match=r"held-out sequences \['val'\] are not in the DAVIS 2016 train split"):
        build_training_set("dv2016", davis_root=root, seq_len=3, size=(48, 80), holdout=("val",))
    with pytest.raises(ConfigError, match="every sequence of the DAVIS 2016 train split is held out"):
        build_training_set("dv2016", davis_root=root, seq_len=3, size=(48, 80), holdout=("one", "two"))
