"""Deterministic synthetic videos, written in the real DAVIS 2017 and YouTube-VOS 2018 on-disk layouts.

The generated trees are read by the project's ordinary dataset readers, so training, inference and
scoring can run end to end without any downloaded data. Every video is a pure function of
``(seed, format, split, index)``: the same arguments give byte-identical files.

Content is built to give a reuse gate something to learn:

* textured backgrounds (colour gradients, stripes / checkers / rings / blobs, fixed fine noise) and
  textured objects of several shape kinds (``ellipse``, ``polygon``, ``star``, ``roundrect``);
* motion in segments of three regimes. ``regimes[t]`` describes the step from frame ``t - 1`` to
  frame ``t`` (``regimes[0]`` is the regime of the first segment; frame 0 has no predecessor):

  - ``still``: nothing moves, frame ``t`` is pixel-identical to frame ``t - 1`` and so is its mask;
  - ``slow``: objects move about 1 px per frame (0.7-1.3), tiny scale and rotation changes;
  - ``fast``: objects jump 8-15 px per frame, with larger scale / rotation / heading changes;

  on some moving segments the camera pans slightly (the whole background shifts);
* occlusions: objects have a fixed z-order, and in every multi-object video a larger convex object is
  steered over a smaller one for a while, so the smaller one is partly (often briefly fully) hidden;
* for YouTube-VOS, objects that first appear in the middle of a video (on an annotated 5-stride frame).

Every object is visible on its first frame, and the objects never cover the whole image.
``<out>/synthetic_meta.json`` records the generation: seed, size and, per sequence, the per-frame
regimes, camera offsets, mask IoU with the previous frame and, per object, its shape kind, first
frame, z-order and per-frame visible / unoccluded pixel counts.

Layout: :mod:`.scenes` renders videos in memory, :mod:`.writers` writes the two on-disk layouts, :mod:`.cli` is
the command line::

    python -m dataset.synthetic --format davis2017 --out data/synthetic-davis
    python -m dataset.synthetic --format youtubevos --out data/synthetic-ytvos --seed 3 --size 96 160
"""

from dataset.synthetic.cli import main
from dataset.synthetic.scenes import REGIMES, SHAPE_KINDS, SyntheticObject, SyntheticVideo, render_video
from dataset.synthetic.writers import FORMATS, GENERATOR_VERSION, generate, generate_davis2017, generate_youtubevos

__all__ = [
    "FORMATS",
    "GENERATOR_VERSION",
    "REGIMES",
    "SHAPE_KINDS",
    "SyntheticObject",
    "SyntheticVideo",
    "generate",
    "generate_davis2017",
    "generate_youtubevos",
    "main",
    "render_video",
]
