"""Run a list of steps in order, skipping finished ones, and run a second list in a background process.

A step is finished when its output file exists. On the CPU the two papers' chains (diffusion, GAN) are
independent except for the evaluator, and these small models barely use a second core (2 threads train the
quick UNet only ~15% faster than 1), so `train.py` runs the evaluator and the GAN chain in a child process
with one thread while the diffusion chain runs in this one, taking the second core back when the child is
done: the wall clock becomes the longer chain, not the sum.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch


@dataclasses.dataclass
class Step:
    name: str
    run: Callable[[], object]
    output: Path   # exists once the step has finished
    command: str   # how to rerun just this step


class StepFailed(RuntimeError):
    pass


def run_steps(steps: list[Step], force: bool = False, start: float | None = None,
              before_each: Callable[[], None] | None = None) -> None:
    """Run each unfinished step (every step with force); a failure names the step and its rerun command."""
    start = time.time() if start is None else start
    for step in steps:
        if step.output.exists() and not force:
            print(f"[{step.name}] done before ({step.output}), skipped; --force reruns it", flush=True)
            continue
        if before_each is not None:
            before_each()
        threads = torch.get_num_threads()
        shared = f", {threads} thread{'s' * (threads > 1)}" if before_each is not None else ""
        print(f"[{step.name}] starting ({time.time() - start:.0f}s into the pipeline{shared})", flush=True)
        try:
            step.run()
        except Exception as err:
            raise StepFailed(f"step '{step.name}' failed: {type(err).__name__}: {err}\n"
                             f"fix the cause, then rerun just this step with:\n  {step.command}") from err


def start_background(argv: list[str], log: Path) -> subprocess.Popen:
    """Start `argv` with its output going to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)


def share_cores(process: subprocess.Popen) -> None:
    """One thread while the background process runs (it has the other core), every core once it is done."""
    torch.set_num_threads(1 if process.poll() is None else os.cpu_count() or 1)


def wait_for(path: Path, process: subprocess.Popen, log: Path, since: float = 0.0) -> None:
    """Block until the background process has written `path` (modified at or after `since`)."""
    while not (path.exists() and path.stat().st_mtime >= since):
        if process.poll() is not None:
            raise StepFailed(f"the background chain ended without writing {path} (log: {log})")
        time.sleep(1)


def wait_background(process: subprocess.Popen, log: Path, name: str) -> None:
    """Wait for a background chain; on failure raise with the end of its log (which names the step)."""
    if process.wait() != 0:
        tail = log.read_text().splitlines()[-15:]
        raise StepFailed(f"the {name} chain failed (full log: {log}):\n" + "\n".join(tail))
