"""Run one chain of stages in a background process while this process runs another (`train.py`).

On the CPU the two papers' chains (diffusion, GAN) are independent except for the evaluator, and these
small models barely use a second thread: two threads train the quick UNet about 1.2x faster than one,
two single-threaded processes do about twice the work (bench/roofline.py; README, "Speed"). So
`train.py` runs the evaluator and the GAN chain in a child process with one thread while the diffusion
chain runs here; once its chain is done, the child takes paper 1's customizations from the end of the list
while this process takes them from the start (claim() decides which process runs which), and a process
left alone takes every core.
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


def claim(folder: Path, name: str) -> bool:
    """Take `name` for this process: of all the processes that ask, exactly one gets True (the file's
    exclusive creation is atomic), so two processes walking one list of work never run an item twice."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


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
