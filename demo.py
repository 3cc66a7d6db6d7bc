"""Segment any video, file or live stream, from its first frame's mask or from boxes.

    python demo.py --video clip.mp4 --mask first_mask.png --out results/clip      # the shipped model
    python demo.py --video FRAME_DIR --mask first_mask.png --model PATH --TH 0.7 --dev cpu --out OUT
    python demo.py --video 0 --show --out results/webcam                           # camera 0; draw boxes
    python demo.py --video rtsp://host/stream --box 120,80,300,260 --policy budget --budget-fps 25 --out OUT

The video is a file OpenCV decodes (mp4, avi, ...), a folder of .jpg/.png frames (sorted by name, numbers
compared as numbers), a camera index (``0``) or a URL OpenCV's FFmpeg reads (``rtsp://``, ``http://``, ...).
Frames are processed as they arrive: decode one, step the networks, write (and show) its outputs, repeat;
a camera or a URL is read by a thread that keeps only the newest frame (``--frames latest``, their default:
frames the networks could not keep up with are skipped and counted), files and folders frame by frame.
The objects come from

* ``--mask PNG``: a mask the size of the frames: a palette (indexed) PNG whose values are object ids (several
  objects), or a binary 0/255 or 0/1 greyscale PNG (one object); ``--resize-mask`` nearest-resizes a mask of
  another size;
* ``--box x0,y0,x1,y1`` (once per object): OpenCV's GrabCut turns each box on the first frame into a mask;
* neither, with ``--show``: boxes drawn on the first frame with the mouse, then GrabCut.

Writes, as it goes (a stream that closes, q / Esc in the window or Ctrl-C end the run and keep everything
written so far):

    OUT/masks/<frame>.png    palette PNGs of object ids (DAVIS palette), one per frame
    OUT/overlay.mp4          the frames with the objects overlaid in colour (OpenCV, mp4v; not with --no-overlay)
    OUT/overlay.gif          the same, downscaled (longest side <= 320 px, at most 150 frames; not with --no-overlay)
    OUT/summary.json         FPS (networks, and end to end with decoding and writing), reuse rate, GFLOPs/frame,
                             dropped frames, how the run ended, the path taken per object and frame
    OUT/first_mask.png       the first frame's mask as read or made (object ids)

``--show`` opens a window with the masks and the live frame rate. Without ``--model`` it uses the shipped
model (``weights/gfrtm_rn18_dv2016_cpu.pth``, at the size it records); official G-FRTM checkpoints load with
``--trust-checkpoint``, and train.py makes new ones. ``--policy budget --budget-fps F`` holds a frame rate on
any CPU (computes when the time allows, warps by optical flow otherwise). With ``--pretrained none`` (random
backbone) the masks are meaningless: for testing only.
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
from dataset.custom import FirstMask, fit_mask, read_first_mask
from dataset.stream import MODES, FrameStream, open_stream
from lib.engine.policies import add_policy_flags, default_policy, policy_class, policy_from_args, policy_names
from lib.tools.box_mask import boxes_to_labels, check_box, parse_box
from lib.tools.cli import (
    SHIPPED_MODEL,
    add_compile_flag,
    add_int8_flags,
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
INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT), the outputs so far kept
NO_OBJECTS = "give the first frame's objects: --mask PNG, --box x0,y0,x1,y1, or --show to draw boxes"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True, metavar="FILE|DIR|CAMERA|URL",
                        help="video file, folder of frames, camera index (0) or stream URL (rtsp://, http://, ...)")
    parser.add_argument("--mask", default=None, metavar="PNG", help="mask of the first frame (object ids)")
    parser.add_argument("--box", action="append", default=None, metavar="x0,y0,x1,y1",
                        help="a box around one object on the first frame (pixels), made a mask by GrabCut; once "
                             "per object (ids 1, 2, ... in order). Instead of --mask")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--show", action="store_true",
                        help="a window with the masks and the live FPS (q / Esc stops); without --mask or --box, "
                             "draw the boxes on the first frame")
    parser.add_argument("--frames", choices=MODES, default="auto",
                        help="every frame in order, or the latest one a live source sent (skipping those the "
                             "networks could not keep up with); auto: latest for cameras and URLs, else every")
    add_model_flags(parser, model_help="G-FRTM checkpoint (project, official or FRTM format); default: the shipped "
                                       "weights/gfrtm_rn18_dv2016_cpu.pth")
    parser.add_argument("--TH", "--tau", dest="tau", type=float, default=0.7, metavar="TAU",
                        help="reuse threshold: reuse iff P_gate > tau (1 never reuses)")
    add_policy_flags(parser, exclude=NEEDS_GROUND_TRUTH)
    add_runtime_flags(parser)
    add_compile_flag(parser)
    add_int8_flags(parser)
    add_layout_flag(parser)
    add_reuse_state_flag(parser)
    add_overlap_flag(parser)
    parser.add_argument("--resize-mask", action="store_true",
                        help="nearest-resize a mask whose size differs from the frames' (else an error)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="only the first N frames")
    parser.add_argument("--no-overlay", action="store_true",
                        help="write no overlay.mp4 / overlay.gif (masks and summary.json only): encoding them costs "
                             "about half a warped frame's time (8-13 ms a 480p frame on a 2-core CPU)")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of overlay.mp4/.gif (default: the video's or the stream's; 24 for a frame "
                             "folder). A live stream's skipped frames repeat the last processed one, so the mp4 "
                             "plays in real time")
    return parser


def check_object_flags(args) -> None:
    """One source of the first frame's objects: ``--mask``, ``--box`` or ``--show`` (boxes drawn)."""
    if args.mask is not None and args.box:
        raise ConfigError("give --mask or --box, not both")
    if args.mask is None and not args.box and not args.show:
        raise ConfigError(NO_OBJECTS)


def first_mask(stream: FrameStream, args, view=None) -> FirstMask:
    """The objects of the first frame: ``--mask``, ``--box`` (GrabCut) or boxes drawn in ``view``."""
    check_object_flags(args)
    if args.mask is not None:
        return fit_mask(read_first_mask(args.mask), stream.size, args.resize_mask, args.mask)
    if args.box:
        boxes, given = [check_box(parse_box(b), stream.size) for b in args.box], "--box"
    elif view is not None:
        boxes, given = view.draw_boxes(stream.first[1]), "drawn boxes"
    else:
        raise ConfigError(NO_OBJECTS)
    how = f"GrabCut in {given} " + "; ".join(",".join(map(str, b)) for b in boxes)
    return FirstMask(boxes_to_labels(stream.first[1], boxes), tuple(range(1, len(boxes) + 1)), how)


def segment_video(stream: FrameStream, mask: FirstMask, args, out_dir: Path, view=None) -> Dict[str, object]:
    """Track ``stream`` from ``mask`` with the model of ``args``, writing masks and overlays frame by frame (and
    showing them in ``view``); returns summary.json's content. Ctrl-C or the window's q end it with what was
    done kept (``stopped`` in the summary)."""
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
                                                           reuse_state=args.reuse_state,
                                                           int8_backbone=args.int8_backbone,
                                                           int8_calibration=args.int8_calibration), device)
    session = engine.new_session(policy, name=stream.name)

    masks_dir = out_dir / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    for old in masks_dir.glob("*.png"):
        old.unlink()
    colours = object_colours(mask.object_ids)
    fps = args.fps or stream.fps
    for name in ("overlay.mp4", "overlay.gif"):  # a run's outputs are its own: none left from an earlier run
        (out_dir / name).unlink(missing_ok=True)
    writer = None if args.no_overlay else OverlayWriter(out_dir / "overlay.mp4", out_dir / "overlay.gif", fps,
                                                        stream.size, stream.num_frames)
    overlap = spare_cpu_cores(torch.get_num_threads(), device.type) if args.overlap_io is None else args.overlap_io
    # a live source is decoded by its own reader thread, which keeps the newest frame: no queue ahead of it
    ahead = 2 if overlap and not stream.live else 0
    stopped, first_wall, live_fps, dropped = None, 0.0, None, 0
    start = last = time.perf_counter()
    try:
        # with overlap, frames are decoded ahead and masks / overlays encoded behind the networks (one writer
        # thread keeps the overlay frames in order)
        with BackgroundWriter(threaded=overlap) as background:
            try:
                for k, (name, image) in enumerate(prefetch(stream.frames(), depth=ahead)):
                    out = session.step(image, mask.labels if k == 0 else None)  # every object starts on frame 0
                    background.submit(write_index_png, masks_dir / f"{name}.png", out.labels)
                    drawn = writer is not None or view is not None
                    shown = overlay_frame(image, out.labels, colours) if drawn else None
                    # a live stream's skipped frames repeat the last shown one: overlay.mp4 plays in real time
                    for _ in range(1 + stream.dropped - dropped if writer is not None else 0):
                        background.submit(writer.add, shown)
                    dropped = stream.dropped
                    now = time.perf_counter()
                    if k == 0:
                        first_wall = now - start
                    else:
                        rate = 1.0 / max(now - last, 1e-9)
                        live_fps = rate if live_fps is None else 0.9 * live_fps + 0.1 * rate
                    last = now
                    if view is not None and not view.show(shown, _status(k, live_fps, out, stream)):
                        stopped = "window closed (q / Esc)"
                        break
            except KeyboardInterrupt:
                stopped = "Ctrl-C"
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        stream.close()
        if view is not None:
            view.close()
    if writer is not None:
        writer.close()
    stats = session.stats
    record = sequence_record(stats)
    record["wall_seconds"] = time.perf_counter() - start
    record["wall_first_seconds"] = first_wall
    measured = speed_and_reuse([record])
    height, width = stream.size
    return {
        "video": stream.source, "source": stream.kind, "frame_mode": stream.mode, "mask": mask.how,
        "objects": list(mask.object_ids),
        "size": [height, width], "network_size": list(size) if size else [height, width],
        "model": str(args.model), "base": engine.base.name, "backbone": engine.base.backbone_name,
        "pretrained": loaded.pretrained,
        "device": str(device), "policy": policy.label(), "tau": policy.tau, "overlap_io": overlap,
        "overlays": writer is not None, **measured,
        "dropped_frames": stream.dropped, "stopped": stopped,
        "reused_object_frames": stats.reused_object_frames, "tracked_object_frames": stats.tracked_object_frames,
        "paths": {obj: o["paths"] for obj, o in record["objects"].items()},
    }


def _status(k: int, fps: Optional[float], out, stream: FrameStream) -> str:
    paths = "".join(p.code for p in out.paths.values())
    rate = "-" if fps is None else f"{fps:.1f}"
    dropped = f"  dropped {stream.dropped}" if stream.live else ""
    return f"frame {k}  {rate} FPS  {paths}{dropped}  (q: stop)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.model:
        if not SHIPPED_MODEL.is_file():
            raise ConfigError(f"--model PATH is required: the shipped model {SHIPPED_MODEL} is missing (a checkout "
                              "without it?). Use a checkpoint trained with train.py or an official one")
        args.model = str(SHIPPED_MODEL)
    if args.fps is not None and args.fps <= 0:
        raise ConfigError(f"--fps must be positive, got {args.fps}")
    check_object_flags(args)
    view = None
    if args.show:
        from lib.tools.live_view import LiveView

        view = LiveView(f"reuse-vos: {args.video}")
    apply_threads(args.threads)
    out_dir = Path(args.out)
    stream = None
    try:
        stream = open_stream(args.video, args.frames, args.max_frames)
        mask = first_mask(stream, args, view)
    except BaseException:  # segment_video closes both from here on
        if stream is not None:
            stream.close()
        if view is not None:
            view.close()
        raise
    write_index_png(out_dir / "first_mask.png", mask.labels)
    height, width = stream.size
    ids = mask.object_ids
    about = "" if stream.kind == "folder" else "about "
    known = "" if stream.num_frames is None else f"{about}{stream.num_frames} frames, "
    print(f"{stream.kind} {stream.source}: {known}{width}x{height}, {stream.fps:g} fps, "
          f"{'the latest frame' if stream.mode == 'latest' else 'every frame'}; mask: {mask.how}, {len(ids)} "
          f"object(s) (ids {', '.join(map(str, ids))})")
    summary = segment_video(stream, mask, args, out_dir, view)
    atomic_write_json(out_dir / "summary.json", summary)
    tracking = summary["fps_tracking"]
    print(f"FPS {summary['fps']:.2f} (all {summary['frames']} frames, first-frame initialisation included), "
          f"{'-' if not math.isfinite(tracking) else f'{tracking:.2f}'} tracking only; end to end (decoding and "
          f"writing included) {summary['fps_end_to_end']:.2f}")
    print(f"reuse rate {summary['reuse_rate']:.3f} ({summary['reused_object_frames']} of "
          f"{summary['tracked_object_frames']} tracked object-frames reused; policy {summary['policy']}, "
          f"tau {summary['tau']:g}); {summary['gflops_per_frame']:.2f} GFLOPs/frame"
          + (f"; {summary['dropped_frames']} frames dropped" if stream.live else ""))
    overlays = "" if args.no_overlay else f"{out_dir / 'overlay.mp4'}, {out_dir / 'overlay.gif'}, "
    print(f"wrote {out_dir / 'masks'} ({summary['frames']} PNGs), {overlays}{out_dir / 'summary.json'}")
    if summary["stopped"]:
        print(f"stopped early ({summary['stopped']}) after {summary['frames']} frames; everything so far is written")
    return INTERRUPTED if summary["stopped"] == "Ctrl-C" else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
