"""The documentation's code examples run as written: the README's library example on a small mp4 with the shipped
model, and the example policy plug-in of docs/policies.md (registered into a copy of the registry)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from base.io import read_index_png, write_index_png
from lib.engine import policies
from lib.engine.paths import COMPUTE, TRANSLATE
from lib.engine.policies import ObjectFrame, PolicyConfig

ROOT = Path(__file__).resolve().parents[1]


DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))


def _block(marker: str) -> tuple:
    """The one python block of the README and docs/*.md that contains ``marker``, and its file's name."""
    found = [(block, path.relative_to(ROOT).as_posix()) for path in DOCS
             for block in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S) if marker in block]
    assert len(found) == 1, f"the README and docs/ have {len(found)} python blocks with {marker!r}"
    return found[0]


@pytest.mark.slow
def test_the_library_example_segments_a_video_file(tmp_path, monkeypatch, capsys):
    height, width, frames = 96, 160, 5
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (width, height))
    rng = np.random.default_rng(0)
    background = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
    for t in range(frames):
        frame = background.copy()
        frame[30:70, 40 + 4 * t:90 + 4 * t] = (230, 50, 40)
        writer.write(frame)
    writer.release()
    mask = np.zeros((height, width), np.uint8)
    mask[30:70, 40:90] = 1
    write_index_png(tmp_path / "first_mask.png", mask)
    monkeypatch.chdir(tmp_path)
    exec(compile(*_block("open_custom_video"), "exec"), {"__name__": "readme"})
    written = sorted((tmp_path / "masks").glob("*.png"))
    assert [p.stem for p in written] == [f"{i:05d}" for i in range(frames)]
    labels = [read_index_png(p) for p in written]
    assert all(lab.shape == (height, width) for lab in labels)
    np.testing.assert_array_equal(labels[0], mask)  # the given mask on its frame
    assert all((lab == 1).any() for lab in labels[1:])
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == frames + 1 and "FPS" in printed[-1] and "of 4 object-frames reused" in printed[-1]
    assert "{1: '" in printed[1]  # the path of object 1 on frame 1


def test_the_example_policy_is_one_class(monkeypatch):
    monkeypatch.setattr(policies, "_REGISTRY", dict(policies._REGISTRY))
    namespace: dict = {"__name__": "readme_policy"}
    exec(compile(*_block("@register"), "exec"), namespace)
    config = PolicyConfig.of("gate-limit", 0.5, max_reuse=2)
    policy = config.create()
    assert policy.decide(ObjectFrame(1, 3, 2, p_gate=0.9)) is TRANSLATE
    assert policy.decide(ObjectFrame(1, 3, 3, p_gate=0.9)) is COMPUTE  # too long since the last computed frame
    assert policy.decide(ObjectFrame(1, 3, 1, p_gate=0.5)) is COMPUTE  # strict: P_gate > tau
    assert config.needs_gate and "gate-limit" in policies.policy_names()


def test_the_readmes_demo_commands_parse():
    """Every ``python demo.py ...`` command of the README (continuation lines joined) is a valid command line:
    its flags exist and take the values shown."""
    import shlex

    import demo

    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("python demo.py")]
    assert len(commands) >= 4
    for command in commands:
        argv = shlex.split(command.split("#", 1)[0])[2:]
        args = demo.build_parser().parse_args(argv)
        assert args.video and args.out
