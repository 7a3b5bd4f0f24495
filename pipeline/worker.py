"""A worker process of the scheduler (pipeline/scheduler.py): it runs the units its parent sends,
one at a time, and dies with its parent.

The parent writes one JSON line per unit to the worker's stdin: {"id", "stage", "config", "force",
"threads"}. The worker runs stages[stage](Config.from_dict(config), force) and answers on its result
pipe with one JSON line: {"id", "ok", "summary" | "error" (one line) and "traceback" (a bug's),
"seconds", "cpu_seconds"}. It reads no settings of its own: everything a unit computes comes from
the config its parent sent.

Dying with the parent, whatever ends it: a thread blocks on stdin, and the end of that pipe
(EOF) means the parent has gone (exited, killed with -9, or closed the pipe on purpose): the
worker exits at once, mid-unit or not. On Linux the kernel also sends it SIGKILL when the
parent dies (PR_SET_PDEATHSIG). The worker ignores SIGINT: Ctrl-C reaches the parent, which
stops its workers itself.
"""
from __future__ import annotations

import ctypes
import json
import os
import queue
import resource
import signal
import sys
import threading
import time
import traceback
from typing import Callable

import torch

from core.config import Config
from core.errors import UserError

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the parent process dies (Linux);
    elsewhere the stdin watch alone."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass


def read_units(tasks: "queue.Queue[dict]") -> None:
    """Feed the parent's unit lines to `tasks`;
    at EOF the parent is gone (or done with us): exit now."""
    for line in sys.stdin:
        tasks.put(json.loads(line))
    os._exit(0)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_unit(stages: dict[str, Callable], task: dict) -> dict:
    """One unit: its stage function on its config;
    what the parent needs to know about how it went."""
    torch.set_num_threads(task["threads"])
    start, cpu = time.time(), cpu_seconds()
    reply = {"id": task["id"], "ok": True}
    try:
        result = stages[task["stage"]](Config.from_dict(task["config"]), task["force"]) or {}
        reply["summary"] = result.get("summary", "")
    except (UserError, OSError) as err:  # something the user can fix: its message is the error
        reply.update(ok=False, error=str(err) or type(err).__name__)
        traceback.print_exc()  # the worker's log keeps the whole story
    except Exception as err:  # a bug: the parent shows the traceback
        reply.update(ok=False, error=f"{type(err).__name__}: {err}",
                     traceback=traceback.format_exc())
        traceback.print_exc()
    reply.update(seconds=time.time() - start, cpu_seconds=cpu_seconds() - cpu)
    return reply


def serve(stages: dict[str, Callable], result_fd: int) -> None:
    """The worker's life: take units from the parent until it closes the pipe,
    answer on result_fd."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tasks: "queue.Queue[dict]" = queue.Queue()
    threading.Thread(target=read_units, args=(tasks,), daemon=True).start()
    with os.fdopen(result_fd, "w") as results:
        while True:
            task = tasks.get()
            print(f"=== unit {task['id']}: {task['stage']}", flush=True)
            results.write(json.dumps(run_unit(stages, task)) + "\n")
            results.flush()
