"""Every command of the README starts as a real program (a subprocess: its own interpreter and imports) and prints
its help; the other tests call the same ``main(argv)`` in-process (tests/cli.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["train.py", "evaluate.py", "demo.py", "pretrain_backbone.py"]
MODULES = ["lib.evaluation.report", "lib.tools.checkpoint", "lib.tools.flops", "dataset.synthetic",
           "benchmarks.speed", "benchmarks.backbone_probe"]


@pytest.mark.slow
@pytest.mark.parametrize("command", [[s] for s in SCRIPTS] + [["-m", m] for m in MODULES],
                         ids=SCRIPTS + MODULES)
def test_the_command_starts_and_prints_its_help(command):
    proc = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:") and "Traceback" not in proc.stderr
