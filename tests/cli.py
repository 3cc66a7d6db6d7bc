"""Calling the command-line programs in-process: ``call(main, *args)`` as their ``__main__`` would run them.

A subprocess costs a Python start and the torch import (seconds) per call; the in-process call runs the same
``main(argv)`` through :func:`lib.tools.cli.run_cli`, so one-line errors and exit codes are those of the shell.
Each program keeps at least one real subprocess test (marked ``slow``) to prove that the script itself runs.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from lib.tools.cli import run_cli


@dataclass
class Result:
    """What a shell would see: exit status, standard output and standard error."""

    returncode: int
    stdout: str
    stderr: str


def call(main: Callable[[Optional[Sequence[str]]], int], *args: object, cwd: Optional[Path] = None) -> Result:
    """Run ``main(args)`` as ``python program.py args`` would (argparse exits included); torch's thread count and
    the working directory are restored afterwards."""
    out, err = io.StringIO(), io.StringIO()
    threads, here = torch.get_num_threads(), Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = run_cli(main, [str(a) for a in args])
            except SystemExit as exit_:  # argparse: --help or a bad flag
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.chdir(here)
        torch.set_num_threads(threads)
    return Result(int(code or 0), out.getvalue(), err.getvalue())
