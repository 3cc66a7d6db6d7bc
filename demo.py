"""Segment any video from its first frame's mask with G-FRTM.

    python demo.py --video clip.mp4 --mask first_mask.png --out results/clip      # the shipped model
    python demo.py --video FRAME_DIR --mask first_mask.png --model PATH --TH 0.7 --dev cpu --out OUT

The video is a file OpenCV decodes (mp4, avi, ...) or a folder of .jpg/.png frames (sorted by name,
numbers compared as numbers). The mask is a PNG the size of the frames: a palette (indexed) PNG whose
values are object ids (several objects), or a binary 0/255 or 0/1 greyscale PNG (one object);
``--resize-mask`` nearest-resizes a mask of another size. Writes

    OUT/masks/<frame>.png    palette PNGs of object ids (DAVIS palette), one per frame
    OUT/overlay.mp4          the frames with the objects overlaid in colour (OpenCV, mp4v)
    OUT/overlay.gif          the same, downscaled (longest side <= 320 px, at most 150 frames)
    OUT/summary.json         FPS, reuse rate, GFLOPs/frame, the path taken per object and frame
    OUT/first_mask.png       the mask as read (object ids)

Frames are decoded one at a time and fed to an inference session (nothing is written but the outputs).
It prints FPS and reuse rate (definitions as in evaluate.py). Without ``--model`` it uses the shipped
model (``weights/gfrtm_rn18_dv2016_cpu.pth``, at the 240x432 size it records); official G-FRTM checkpoints
load with ``--trust-checkpoint``, and train.py makes new ones. With ``--pretrained none`` (random backbone)
the masks are meaningless: for testing only.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from base.background import BackgroundWriter, prefetch, spare_cpu_cores
from base.errors import ConfigError
from base.io import atomic_write_json, write_index_png
from dataset.custom import CustomVideo, open_custom_video
from lib.engine.policies import add_policy_flags, default_policy, policy_class, policy_from_args, policy_names
from lib.tools.cli import (
    SHIPPED_MODEL,
    add_compile_flag,
    add_layout_flag,
    add_model_flags,
    add_overlap_flag,
    add_reuse_state_flag,
    add_runtime_flags,
    apply_threads,
    load_model_from_args,
    resolve_device,
    run_cli,
)

# The session gets no ground truth here: policies that need it (the oracle) are not offered.
NEEDS_GROUND_TRUTH = tuple(n for n in policy_names() if policy_class(n).needs_ground_truth)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True, metavar="FILE|DIR", help="video file or folder of frames")
    parser.add_argument("--mask", required=True, metavar="PNG", help="mask of the first frame (object ids)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_model_flags(parser, model_help="G-FRTM checkpoint (project, official or FRTM format); default: the shipped "
                                       "weights/gfrtm_rn18_dv2016_cpu.pth")
    parser.add_argument("--TH", "--tau", dest="tau", type=float, default=0.7, metavar="TAU",
                        help="reuse threshold: reuse iff P_gate > tau (1 never reuses)")
    add_policy_flags(parser, exclude=NEEDS_GROUND_TRUTH)
    add_runtime_flags(parser)
    add_compile_flag(parser)
    add_layout_flag(parser)
    add_reuse_state_flag(parser)
    add_overlap_flag(parser)
    parser.add_argument("--resize-mask", action="store_true",
                        help="nearest-resize a mask whose size differs from the frames' (else an error)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="only the first N frames")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of overlay.mp4/.gif (default: the video's; 24 for a frame folder)")
    return parser


def segment_video(video: CustomVideo, args, out_dir: Path) -> Dict[str, object]:
    """Track ``video`` with the model of ``args``; writes masks and overlays; returns summary.json's content."""
    from lib.engine.core import EngineConfig, InferenceEngine
    from lib.evaluation.overlay import OverlayWriter, object_colours, overlay_frame
    from lib.evaluation.run import sequence_record, speed_and_reuse

    device = resolve_device(args.dev)
    loaded = load_model_from_args(args, device)
    from lib.engine.bases import base_class_for

    args.policy = default_policy(args, base_class_for(loaded.model).reuse)
    policy = policy_from_args(args, args.tau)
    model, backbone, size = loaded.model, loaded.backbone, loaded.size
    engine = InferenceEngine(model, backbone, EngineConfig(seed=args.seed, amp=args.amp, size=size,
                                                           compile=args.compile,
                                                           channels_last=args.channels_last,
                                                           reuse_state=args.reuse_state), device)
    session = engine.new_session(policy, name=video.name)

    masks_dir = out_dir / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    for old in masks_dir.glob("*.png"):
        old.unlink()
    colours = object_colours(video.mask.object_ids)
    writer = OverlayWriter(out_dir / "overlay.mp4", out_dir / "overlay.gif", args.fps or video.fps, video.size,
                           video.num_frames)
    overlap = spare_cpu_cores(torch.get_num_threads(), device.type) if args.overlap_io is None else args.overlap_io
    start = time.perf_counter()
    try:
        # with overlap, frames are decoded ahead and masks / overlays encoded behind the networks (one writer
        # thread keeps the overlay frames in order)
        with BackgroundWriter(threaded=overlap) as background:
            for k, (name, image) in enumerate(prefetch(video.frames(), depth=2 if overlap else 0)):
                out = session.step(image, video.mask.labels if k == 0 else None)  # every object starts on frame 0
                background.submit(write_index_png, masks_dir / f"{name}.png", out.labels)
                background.submit(lambda image=image, labels=out.labels: writer.add(
                    overlay_frame(image, labels, colours)))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    stats = session.stats
    record = sequence_record(stats)
    record["wall_seconds"] = time.perf_counter() - start
    measured = speed_and_reuse([record])
    height, width = video.size
    return {
        "video": str(video.source), "mask": video.mask.how, "objects": list(video.mask.object_ids),
        "size": [height, width], "network_size": list(size) if size else [height, width],
        "model": str(args.model), "base": engine.base.name, "backbone": engine.base.backbone_name,
        "pretrained": loaded.pretrained,
        "device": str(device), "policy": policy.label(), "tau": policy.tau, "overlap_io": overlap, **measured,
        "reused_object_frames": stats.reused_object_frames, "tracked_object_frames": stats.tracked_object_frames,
        "paths": {obj: o["paths"] for obj, o in record["objects"].items()},
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.model:
        if not SHIPPED_MODEL.is_file():
            raise ConfigError(f"--model PATH is required: the shipped model {SHIPPED_MODEL} is missing (a checkout "
                              "without it?). Use a checkpoint trained with train.py or an official one")
        args.model = str(SHIPPED_MODEL)
    if args.fps is not None and args.fps <= 0:
        raise ConfigError(f"--fps must be positive, got {args.fps}")
    apply_threads(args.threads)
    out_dir = Path(args.out)
    video = open_custom_video(args.video, args.mask, args.resize_mask, args.max_frames)
    write_index_png(out_dir / "first_mask.png", video.mask.labels)
    height, width = video.size
    ids = video.mask.object_ids
    print(f"video {video.source}: {'' if video.files else 'about '}{video.num_frames} frames, {width}x{height}; "
          f"mask: {video.mask.how}, {len(ids)} object(s) (ids {', '.join(map(str, ids))})")
    summary = segment_video(video, args, out_dir)
    atomic_write_json(out_dir / "summary.json", summary)
    tracking = summary["fps_tracking"]
    print(f"FPS {summary['fps']:.2f} (all {summary['frames']} frames, first-frame initialisation included), "
          f"{'-' if not math.isfinite(tracking) else f'{tracking:.2f}'} tracking only")
    print(f"reuse rate {summary['reuse_rate']:.3f} ({summary['reused_object_frames']} of "
          f"{summary['tracked_object_frames']} tracked object-frames reused; policy {summary['policy']}, "
          f"tau {summary['tau']:g}); {summary['gflops_per_frame']:.2f} GFLOPs/frame")
    print(f"wrote {out_dir / 'masks'} ({summary['frames']} PNGs), {out_dir / 'overlay.mp4'}, "
          f"{out_dir / 'overlay.gif'}, {out_dir / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
