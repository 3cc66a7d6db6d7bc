"""Synthetic dataset generator: determinism, real on-disk layouts, motion regimes, occlusion, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from PIL import Image

from base.errors import ConfigError
from base.io import davis_palette
from dataset.synthetic import (
    REGIMES,
    SHAPE_KINDS,
    generate,
    generate_davis2017,
    generate_youtubevos,
    render_video,
)
from tests.cli import call

PALETTE = davis_palette().flatten().tolist()


# --- helpers ----------------------------------------------------------------------------------------


def tree_bytes(root: Path) -> Dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "P", path
        assert img.getpalette()[:768] == PALETTE, path
        return np.array(img)


def read_jpg(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img.convert("RGB"))


def lines(path: Path):
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


@pytest.fixture(scope="module")
def davis(tmp_path_factory) -> Path:
    return generate_davis2017(tmp_path_factory.mktemp("syn") / "davis", seed=0)


@pytest.fixture(scope="module")
def ytvos(tmp_path_factory) -> Path:
    return generate_youtubevos(tmp_path_factory.mktemp("syn") / "ytvos", seed=0)


def smeta(root: Path) -> dict:
    return json.loads((root / "synthetic_meta.json").read_text())


# --- in-memory videos -------------------------------------------------------------------------------


def test_render_video_in_memory():
    v = render_video(7, size=(64, 96), num_frames=20, num_objects=3, first_frames=[0, 0, 10], name="v")
    assert v.images.shape == (20, 64, 96, 3) and v.images.dtype == np.uint8
    assert v.masks.shape == (20, 64, 96) and v.masks.dtype == np.uint8
    assert v.num_frames == 20 and v.size == (64, 96) and v.object_ids == (1, 2, 3)
    assert len(v.regimes) == 20 and set(v.regimes) <= set(REGIMES)
    assert set(np.unique(v.masks)) <= {0, 1, 2, 3}
    assert all(o.kind in SHAPE_KINDS for o in v.objects)
    late = v.object(3)
    assert late.first_frame == 10 and not (v.masks[:10] == 3).any() and (v.masks[10] == 3).any()
    assert v.regimes[10] != "still"  # an appearance is never a still frame
    for o in v.objects:
        assert o.pixels[o.first_frame] > 0
        assert all(p <= u for p, u in zip(o.pixels, o.unoccluded_pixels))
        assert list(o.pixels) == [int((m == o.obj_id).sum()) for m in v.masks]
    assert not (v.masks > 0).all(axis=(1, 2)).any()  # never the whole image
    # pure function of its arguments
    again = render_video(7, size=(64, 96), num_frames=20, num_objects=3, first_frames=[0, 0, 10], name="v")
    assert np.array_equal(v.images, again.images) and np.array_equal(v.masks, again.masks)
    other = render_video(8, size=(64, 96), num_frames=20, num_objects=3, first_frames=[0, 0, 10])
    assert not np.array_equal(v.images, other.images)
    with pytest.raises(ConfigError):
        render_video(0, num_frames=10, num_objects=2, first_frames=[3, 4])  # nobody on frame 0


# --- determinism ------------------------------------------------------------------------------------


def test_davis_deterministic(davis, tmp_path):
    again = generate_davis2017(tmp_path / "again", seed=0)
    ref, new = tree_bytes(davis), tree_bytes(again)
    assert sorted(ref) == sorted(new)
    assert all(ref[k] == new[k] for k in ref)
    other = tree_bytes(generate_davis2017(tmp_path / "other", seed=1))
    common = set(ref) & set(other)
    assert any(ref[k] != other[k] for k in common if k.endswith(".jpg"))
    assert ref["synthetic_meta.json"] != other["synthetic_meta.json"]


def test_youtubevos_deterministic(ytvos, tmp_path):
    again = generate_youtubevos(tmp_path / "again", seed=0)
    ref, new = tree_bytes(ytvos), tree_bytes(again)
    assert sorted(ref) == sorted(new)
    assert all(ref[k] == new[k] for k in ref)
    other = tree_bytes(generate_youtubevos(tmp_path / "other", seed=1))
    assert set(lines(ytvos / "jjtrain.txt")).isdisjoint(lines(tmp_path / "other" / "jjtrain.txt"))
    assert ref["train/meta.json"] != other["train/meta.json"]


# --- DAVIS 2017 layout ------------------------------------------------------------------------------


def test_davis_layout(davis):
    meta = smeta(davis)
    assert meta["format"] == "davis2017" and meta["seed"] == 0 and meta["size"] == [120, 216]
    train = lines(davis / "ImageSets/2017/train.txt")
    val = lines(davis / "ImageSets/2017/val.txt")
    assert len(train) == 4 and len(val) == 3 and not set(train) & set(val)
    assert lines(davis / "ImageSets/2016/train.txt") == train
    assert lines(davis / "ImageSets/2016/val.txt") == val
    assert meta["splits"] == {"train": train, "val": val}
    assert sorted(p.name for p in (davis / "JPEGImages/480p").iterdir()) == sorted(train + val)
    n_objects = {}
    for name in train + val:
        seq = meta["sequences"][name]
        t_count = seq["num_frames"]
        assert 24 <= t_count <= 40 and len(seq["regimes"]) == t_count
        names = [f"{t:05d}" for t in range(t_count)]
        assert sorted(p.stem for p in (davis / "JPEGImages/480p" / name).iterdir()) == names
        assert sorted(p.stem for p in (davis / "Annotations/480p" / name).iterdir()) == names
        ids = sorted(int(k) for k in seq["objects"])
        assert ids == list(range(1, len(ids) + 1))
        n_objects[name] = len(ids)
        for t, frame in enumerate(names):
            img = read_jpg(davis / "JPEGImages/480p" / name / f"{frame}.jpg")
            lab = read_png(davis / "Annotations/480p" / name / f"{frame}.png")
            assert img.shape == (120, 216, 3) and lab.shape == (120, 216)
            assert set(np.unique(lab).tolist()) <= {0, *ids}
            assert (lab == 0).any()  # never the whole image
            for k in ids:
                assert seq["objects"][str(k)]["pixels"][t] == int((lab == k).sum())
        first = read_png(davis / "Annotations/480p" / name / "00000.png")
        assert set(np.unique(first).tolist()) == {0, *ids}  # every object visible on frame 0
    assert any(n == 1 for n in n_objects.values())
    assert [n_objects[v] for v in val if n_objects[v] > 1] and all(n_objects[v] <= 3 for v in val)
    kinds = {o["kind"] for s in meta["sequences"].values() for o in s["objects"].values()}
    assert kinds <= set(SHAPE_KINDS) and len(kinds) >= 3


# --- YouTube-VOS 2018 layout ------------------------------------------------------------------------


def test_youtubevos_train_layout(ytvos):
    meta = smeta(ytvos)
    ytmeta = json.loads((ytvos / "train/meta.json").read_text())["videos"]
    vids = sorted(ytmeta)
    assert len(vids) == 6 and meta["splits"]["train"] == vids
    assert all(len(v) == 10 and int(v, 16) >= 0 for v in vids)
    jjval, jjtrain = lines(ytvos / "jjval.txt"), lines(ytvos / "jjtrain.txt")
    assert jjval and jjtrain and not set(jjval) & set(jjtrain) and sorted(jjval + jjtrain) == vids
    for vid in vids:
        seq = meta["sequences"][vid]
        t_count = seq["num_frames"]
        assert 30 <= t_count <= 50
        all_frames = [f"{t:05d}" for t in range(t_count)]
        strided = all_frames[::5]
        assert 6 <= len(strided) <= 10 and seq["annotated_frames"] == strided
        assert sorted(p.stem for p in (ytvos / "train_all_frames/JPEGImages" / vid).iterdir()) == all_frames
        assert sorted(p.stem for p in (ytvos / "train/JPEGImages" / vid).iterdir()) == strided
        assert sorted(p.stem for p in (ytvos / "train/Annotations" / vid).iterdir()) == strided
        for f in strided:  # the 5-stride frames are the same files as in all_frames
            assert (ytvos / "train/JPEGImages" / vid / f"{f}.jpg").read_bytes() == \
                (ytvos / "train_all_frames/JPEGImages" / vid / f"{f}.jpg").read_bytes()
        labels = {f: read_png(ytvos / "train/Annotations" / vid / f"{f}.png") for f in strided}
        objects = ytmeta[vid]["objects"]
        ids = {int(k) for k in objects}
        for f, lab in labels.items():
            assert lab.shape == (120, 216) and set(np.unique(lab).tolist()) <= {0, *ids}
            assert read_jpg(ytvos / "train/JPEGImages" / vid / f"{f}.jpg").shape == (120, 216, 3)
        for k, obj in objects.items():
            assert obj["category"] == seq["objects"][k]["kind"]
            present = [f for f in strided if (labels[f] == int(k)).any()]
            assert obj["frames"] == present  # exactly the frames where it is present
            assert obj["frames"][0] == seq["objects"][k]["first_frame_name"]


def test_youtubevos_valid_layout(ytvos):
    meta = smeta(ytvos)
    ytmeta = json.loads((ytvos / "valid/meta.json").read_text())["videos"]
    vids = sorted(ytmeta)
    assert len(vids) == 3 and meta["splits"]["valid"] == vids
    assert not set(vids) & set(meta["splits"]["train"])
    for vid in vids:
        seq = meta["sequences"][vid]
        all_frames = [f"{t:05d}" for t in range(seq["num_frames"])]
        strided = all_frames[::5]
        assert sorted(p.stem for p in (ytvos / "valid_all_frames/JPEGImages" / vid).iterdir()) == all_frames
        assert sorted(p.stem for p in (ytvos / "valid/JPEGImages" / vid).iterdir()) == strided
        objects = ytmeta[vid]["objects"]
        starts: Dict[str, set] = {}
        for k, obj in objects.items():
            first = seq["objects"][k]["first_frame_name"]
            assert obj["frames"] == [f for f in strided if f >= first]  # from first appearance on
            starts.setdefault(first, set()).add(int(k))
        annotated = sorted(p.stem for p in (ytvos / "valid/Annotations" / vid).iterdir())
        assert annotated == sorted(starts)  # only first-appearance frames
        for f in annotated:
            lab = read_png(ytvos / "valid/Annotations" / vid / f"{f}.png")
            assert set(np.unique(lab).tolist()) == {0} | starts[f]  # exactly the objects starting there


def test_youtubevos_mid_video_objects(ytvos):
    meta = smeta(ytvos)
    for split in ("train", "valid"):
        late = [(vid, k, o) for vid in meta["splits"][split]
                for k, o in meta["sequences"][vid]["objects"].items() if o["first_frame"] > 0]
        assert late, f"no object appears mid-video in {split}"
        for vid, k, o in late:
            first = o["first_frame"]
            assert first % 5 == 0 and o["pixels"][first] > 0 and not any(o["pixels"][:first])
            lab = read_png(ytvos / split / "Annotations" / vid / f"{first:05d}.png")
            assert (lab == int(k)).any()
            if split == "train":
                before = read_png(ytvos / "train/Annotations" / vid / f"{first - 5:05d}.png")
                assert not (before == int(k)).any()


def test_project_readers_accept_the_trees(davis, ytvos):
    davis_mod = pytest.importorskip("dataset.davis")
    yt_mod = pytest.importorskip("dataset.youtubevos")
    meta = smeta(davis)
    for year in (2016, 2017):
        ds = davis_mod.DAVISDataset(davis, year=year, split="val")
        assert ds.names == meta["splits"]["val"]
        for seq in ds:
            n = len(meta["sequences"][seq.name]["objects"])
            assert len(seq) == meta["sequences"][seq.name]["num_frames"]
            assert seq.object_ids == ((1,) if year == 2016 else tuple(range(1, n + 1)))
            assert seq.start_mask(seq.object_ids[0]).any()
    ymeta = smeta(ytvos)
    valid = yt_mod.YouTubeVOSDataset(ytvos, split="valid")
    for seq in valid:
        for obj in seq.object_ids:
            assert seq.start_mask(obj).any()
            assert seq.start_frames[obj] == ymeta["sequences"][seq.name]["objects"][str(obj)]["first_frame_name"]
    jjval = yt_mod.YouTubeVOSDataset(ytvos, split="jjval", split_list=ytvos / "jjval.txt")
    assert jjval.names == lines(ytvos / "jjval.txt")
    assert len(yt_mod.YouTubeVOSDataset(ytvos, split="valid_all").sequence(valid.names[0])) == \
        ymeta["sequences"][valid.names[0]]["num_frames"]


# --- content: regimes, occlusion, camera ------------------------------------------------------------


def test_still_frames_are_identical(davis, ytvos):
    meta = smeta(davis)
    checked = 0
    for name, seq in meta["sequences"].items():
        for t in range(1, seq["num_frames"]):
            if seq["regimes"][t] != "still":
                continue
            a, b = f"{t - 1:05d}", f"{t:05d}"
            assert read_png(davis / "Annotations/480p" / name / f"{a}.png").tobytes() == \
                read_png(davis / "Annotations/480p" / name / f"{b}.png").tobytes()
            assert np.array_equal(read_jpg(davis / "JPEGImages/480p" / name / f"{a}.jpg"),
                                  read_jpg(davis / "JPEGImages/480p" / name / f"{b}.jpg"))
            assert seq["mask_iou_prev"][t] == 1.0 and seq["camera"][t] == seq["camera"][t - 1]
            checked += 1
    assert checked >= 10
    meta = smeta(ytvos)
    for vid in meta["splits"]["train"]:
        seq = meta["sequences"][vid]
        folder = ytvos / "train_all_frames/JPEGImages" / vid
        for t in range(1, seq["num_frames"]):
            same = (folder / f"{t - 1:05d}.jpg").read_bytes() == (folder / f"{t:05d}.jpg").read_bytes()
            assert same == (seq["regimes"][t] == "still")  # moving frames always change


def test_every_regime_occurs_and_fast_moves_more_than_slow(davis):
    meta = smeta(davis)
    per_regime: Dict[str, list] = {r: [] for r in REGIMES}
    for name, seq in meta["sequences"].items():
        assert set(seq["regimes"]) == set(REGIMES)
        labels = [read_png(p) for p in sorted((davis / "Annotations/480p" / name).iterdir())]
        for t in range(1, len(labels)):
            for k in seq["objects"]:
                a, b = labels[t - 1] == int(k), labels[t] == int(k)
                if a.any() or b.any():
                    per_regime[seq["regimes"][t]].append(iou(a, b))
    mean = {r: float(np.mean(v)) for r, v in per_regime.items()}
    assert mean["still"] == 1.0
    assert mean["slow"] > 0.8
    assert mean["fast"] < mean["slow"] - 0.25
    # the same holds for the recorded per-frame IoU, over more videos
    recorded: Dict[str, list] = {r: [] for r in REGIMES}
    for seed in range(4):
        video = render_video(seed, num_frames=30, num_objects=2)
        for r, v in zip(video.regimes[1:], video.mask_iou_prev()[1:]):
            if v is not None:
                recorded[r].append(v)
    assert np.mean(recorded["fast"]) < np.mean(recorded["slow"]) - 0.25


def test_occlusion_happens(davis, ytvos):
    events = 0
    for root in (davis, ytvos):
        for seq in smeta(root)["sequences"].values():
            for obj in seq["objects"].values():
                px, full = obj["pixels"], obj["unoccluded_pixels"]
                assert all(p <= u for p, u in zip(px, full))
                # visible count drops while the unoccluded shape would be larger: something covers it
                events += sum(1 for t in range(1, len(px)) if px[t] < px[t - 1] and full[t] > px[t])
    assert events > 0
    # and somewhere an object is hidden completely for a while
    hidden = [t for seed in range(6) for o in render_video(seed, num_frames=36, num_objects=3).objects
              for t, (p, u) in enumerate(zip(o.pixels, o.unoccluded_pixels)) if p == 0 and u > 0]
    assert hidden


def test_camera_pans_on_some_moving_frames(davis):
    moved = 0
    for seq in smeta(davis)["sequences"].values():
        cam = np.array(seq["camera"])
        step = np.abs(np.diff(cam, axis=0)).sum(axis=1)
        moved += int((step > 0).sum())
        assert all(s == 0 for s, r in zip(step, seq["regimes"][1:]) if r == "still")
    assert moved > 0


# --- API and CLI ------------------------------------------------------------------------------------


def test_api_arguments(tmp_path):
    with pytest.raises(ConfigError, match="unknown synthetic dataset format"):
        generate("coco", tmp_path / "x")
    with pytest.raises(ConfigError, match="size"):
        generate("davis2017", tmp_path / "x", size=(8, 8))
    out = generate("davis2017", tmp_path / "small", size=(48, 64), num_train=1, num_val=1, frames=(6, 6))
    assert lines(out / "ImageSets/2017/val.txt") == ["synth-val-00"]
    assert len(list((out / "JPEGImages/480p/synth-val-00").iterdir())) == 6
    with pytest.raises(ConfigError, match="not empty"):
        generate("davis2017", out)


def run_cli(*args):
    """``python -m dataset.synthetic args``, in-process."""
    from dataset.synthetic import main

    return call(main, *args)


def test_cli_writes_refuses_and_overwrites(tmp_path):
    out = tmp_path / "yt"
    args = ["--format", "youtubevos", "--out", str(out), "--seed", "3", "--size", "48", "80",
            "--num-videos", "2", "1", "--frames", "12", "16"]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stdout and "train/meta.json" in res.stdout
    first = tree_bytes(out)
    assert len(json.loads((out / "train/meta.json").read_text())["videos"]) == 2
    assert len(json.loads((out / "valid/meta.json").read_text())["videos"]) == 1
    valid_vid = next((out / "valid/JPEGImages").iterdir())
    assert read_jpg(valid_vid / "00000.jpg").shape == (48, 80, 3)

    res = run_cli(*args)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "not empty" in res.stderr and "Traceback" not in res.stderr

    (out / "train/JPEGImages/stale.jpg").write_bytes(b"old")
    res = run_cli(*args, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert tree_bytes(out) == first  # the earlier synthetic tree is replaced, stale files gone

    # a folder that is not an earlier synthetic tree: written into, nothing of it deleted
    mine = tmp_path / "mine"
    (mine / "JPEGImages").mkdir(parents=True)
    (mine / "JPEGImages/keep.txt").write_text("keep")
    res = run_cli("--format", "davis2017", "--out", str(mine), "--num-videos", "1", "--frames", "4", "4",
                  "--overwrite")
    assert res.returncode == 0, res.stderr
    assert (mine / "JPEGImages/keep.txt").read_text() == "keep"
    assert lines(mine / "ImageSets/2017/train.txt") == ["synth-train-00"]

    res = run_cli("--format", "davis2017", "--out", str(tmp_path / "d"), "--size", "8", "8")
    assert res.returncode == 2 and "size" in res.stderr and "Traceback" not in res.stderr
