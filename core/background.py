"""Run one chain of stages in a background process while this process runs another (`train.py`).

On the CPU the two papers' chains (diffusion, GAN) are independent except for the evaluator, and these
small models barely use a second core (2 threads train the quick UNet only ~15% faster than 1), so
`train.py` runs the evaluator and the GAN chain in a child process with one thread while the diffusion
chain runs here, taking the second core back when the child is done: the wall clock becomes the longer
chain, not the sum.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch

from core.errors import UserError


class BackgroundFailed(UserError):
    """The background chain stopped with an error (its log says which stage and why)."""


def start(argv: list[str], log: Path) -> subprocess.Popen:
    """Start `argv` with its output going to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)


def share_cores(process: subprocess.Popen) -> None:
    """One thread while the background process runs (it has the other core), every core once it is done."""
    torch.set_num_threads(1 if process.poll() is None else os.cpu_count() or 1)


def _failure(process: subprocess.Popen, log: Path, what: str) -> BackgroundFailed:
    tail = "\n  ".join(log.read_text().splitlines()[-8:]) if log.exists() else ""
    return BackgroundFailed(f"the background chain {what} (exit status {process.returncode}; log: {log}):\n  {tail}")


def wait_for(ready: Callable[[], bool], process: subprocess.Popen, log: Path, what: str) -> None:
    """Block until ready() holds; fail if the background process ends without making it so."""
    while not ready():
        if process.poll() is not None and not ready():
            raise _failure(process, log, f"ended before {what}")
        time.sleep(1)


def wait(process: subprocess.Popen, log: Path) -> None:
    """Wait for the background process; on failure raise with the end of its log (which names the stage)."""
    if process.wait() != 0:
        raise _failure(process, log, "failed")
