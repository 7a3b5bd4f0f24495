"""Run a list of units on N worker processes, each unit once its dependencies have finished.

    units = [clip := Unit("clip", cfg), Unit("diffusion", cfg, after=(clip,)), ...]
    run_units(units, jobs=2, force=False, worker_argv=[sys.executable, "train.py"], log_dir=...)

A unit is one stage (a name in the table the workers run, train.py's STAGES) with its full config.
The parent validates every config before any work, sends each unit's config to a worker when its
dependencies are done (the unit that unblocks the most others first), and prints one line when a
unit starts and one when it ends (its figures, or its error). Workers never read settings of their
own, and each unit runs with the same number of threads whatever N is, so the results do not depend
on N. A failed unit's dependants are skipped; independent units go on, and the failures are listed
at the end.

Workers (pipeline/worker.py) are processes of their own, in one process group, logging to
<log_dir>/worker-<i>.log. They die with the parent however it ends: kill -9 (their stdin
reaches EOF; on Linux also PR_SET_PDEATHSIG), Ctrl-C, SIGTERM or a closed terminal (the parent
stops them itself).

`plan()` turns the same units into standalone commands with the units each waits for, so that
another scheduler (a SLURM job array, GNU parallel) can spread them over machines that share the
output folder; the run folders' locks and keys keep that safe (pipeline/runs.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import selectors
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from core.config import Config, as_override
from core.errors import UserError
from core.files import write_json
from core.validate import validate


@dataclass(eq=False)
class Unit:
    stage: str                          # a name in the workers' stage table
    config: Config
    after: tuple["Unit", ...] = ()      # units that must finish first

    def key(self) -> str:
        return self.stage + json.dumps(self.config.to_dict(), sort_keys=True)


def changed_fields(cfg: Config, base: Config) -> list[tuple[str, object]]:
    """[('customize.method', 'lora'), ...]: every field where cfg differs from base,
    in declaration order."""
    out = []
    for section in dataclasses.fields(cfg):
        new, old = getattr(cfg, section.name), getattr(base, section.name)
        out += [(f"{section.name}.{f.name}", getattr(new, f.name)) for f in dataclasses.fields(new)
                if getattr(new, f.name) != getattr(old, f.name)]
    return out


def label(unit: Unit, base: Config) -> str:
    """'customize diffusion.seed=1 method=lora reg=functional customize.seed=0': the stage and what
    sets this unit apart from the pipeline's config (the section is dropped where the field name
    alone is clear)."""
    fields = changed_fields(unit.config, base)
    names = [k.split(".")[1] for k, _ in fields]
    short = [(k.split(".")[1] if names.count(k.split(".")[1]) == 1 else k) for k, _ in fields]
    return " ".join([unit.stage] + [f"{n}={as_override(v)}" for n, (_, v) in zip(short, fields)])


def unique(units: list[Unit]) -> list[Unit]:
    """The units once each (two units of one stage with one config are one piece of work), every
    unit after the units it waits for, every config checked (core.validate: a bad one stops here,
    before any work); a dependency missing from the list, or a cycle, is a bug."""
    for u in units:
        validate(u.config)
    given = {u.key() for u in units}
    out: dict[str, Unit] = {}               # key -> the unit, in an order that respects `after`

    def visit(u: Unit, path: tuple[str, ...] = ()) -> Unit:
        key = u.key()
        if key not in given:
            raise ValueError(f"a unit waits for a {u.stage} unit that is not in the list")
        if key in path:
            raise ValueError(f"units wait for each other in a cycle ({u.stage})")
        if key not in out:
            after = tuple(visit(d, path + (key,)) for d in u.after)
            out[key] = dataclasses.replace(u, after=after)
        return out[key]
    for u in units:
        visit(u)
    return list(out.values())


def priorities(units: list[Unit]) -> dict[int, int]:
    """id(unit) -> how many units wait for it, directly or not:
    the ones that unblock the most go first."""
    below = {id(u): set() for u in units}
    for u in reversed(units):           # dependants come after their dependencies
        for d in u.after:
            below[id(d)] |= below[id(u)] | {id(u)}
    return {k: len(v) for k, v in below.items()}


def plan(units: list[Unit], base: Config, command: list[str], threads: int) -> list[dict]:
    """Each unit as a standalone command: {'level' (0: waits for nothing; n: after units of lower
    levels), 'id', 'after' (ids), 'command'}. `command` is the pipeline's own command for one stage,
    e.g. ['python', 'train.py', '--preset', 'quick'] plus the user's overrides."""
    units = unique(units)
    ids = {id(u): f"u{i + 1:03d}" for i, u in enumerate(units)}
    level: dict[int, int] = {}
    rows = []
    for u in units:
        level[id(u)] = 1 + max((level[id(d)] for d in u.after), default=-1)
        argv = [*command, u.stage,
                *[f"--{k}={as_override(v)}" for k, v in changed_fields(u.config, base)],
                f"--run.threads={threads}"]
        rows.append({"level": level[id(u)], "id": ids[id(u)],
                     "after": [ids[id(d)] for d in u.after], "command": shlex.join(argv)})
    return rows


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP reached the parent: stop like Ctrl-C."""


def _raise_interrupted(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


@dataclass(eq=False)
class Worker:
    index: int
    process: subprocess.Popen
    results: object                     # the read end of its result pipe, as a file
    log: Path
    unit: Unit | None = None
    started: float = 0.0


class Scheduler:
    def __init__(self, units: list[Unit], base: Config, jobs: int, force: bool,
                 worker_argv: list[str], log_dir: Path, threads: int = 1):
        self.units, self.base, self.jobs, self.force = unique(units), base, max(1, jobs), force
        self.worker_argv, self.log_dir, self.threads = worker_argv, Path(log_dir), threads
        self.ids = {id(u): i + 1 for i, u in enumerate(self.units)}
        self.priority = priorities(self.units)
        self.workers: list[Worker] = []
        self.selector = selectors.DefaultSelector()
        self.done: dict[int, dict] = {}  # id(unit) -> the worker's reply (or a skip / death record)
        self.group = 0                   # the workers' process group

    # ------------------------------------------------------------------------------ workers

    def start_worker(self, index: int) -> Worker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        read_end, write_end = os.pipe()
        log = self.log_dir / f"worker-{index}.log"
        with open(log, "a") as out:
            process = subprocess.Popen([*self.worker_argv, "--worker", str(write_end)],
                                       stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                       pass_fds=(write_end,), text=True, process_group=self.group,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        os.close(write_end)
        self.group = self.group or process.pid
        worker = Worker(index, process, os.fdopen(read_end), log)
        self.selector.register(worker.results, selectors.EVENT_READ, worker)
        return worker

    def stop_workers(self) -> None:
        """Close every worker's stdin (EOF: it exits), then make sure:
        SIGTERM, SIGKILL after 3 s."""
        for w in self.workers:
            try:
                w.process.stdin.close()
            except OSError:
                pass
        deadline = time.time() + 3
        for w in self.workers:
            try:
                w.process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait()

    def kill_workers(self) -> None:
        if self.group:
            try:
                os.killpg(self.group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for w in self.workers:
            w.process.wait()

    # ------------------------------------------------------------------------------ units

    def ready(self) -> list[Unit]:
        running = {id(w.unit) for w in self.workers if w.unit is not None}
        waiting = [u for u in self.units if id(u) not in self.done and id(u) not in running
                   and all(id(d) in self.done for d in u.after)]
        return sorted(waiting, key=lambda u: -self.priority[id(u)])

    def skip_dependants(self) -> None:
        """Units that wait for a failed or skipped unit are skipped: they cannot run."""
        changed = True
        while changed:
            changed = False
            for u in self.units:
                bad = [d for d in u.after if id(d) in self.done and not self.done[id(d)]["ok"]]
                if id(u) not in self.done and bad:
                    self.done[id(u)] = {"ok": False, "skipped": True, "seconds": 0.0,
                                        "cpu_seconds": 0.0}
                    changed = True

    def send(self, worker: Worker, unit: Unit) -> None:
        worker.unit, worker.started = unit, time.time()
        task = {"id": self.ids[id(unit)], "stage": unit.stage, "config": unit.config.to_dict(),
                "force": self.force, "threads": self.threads}
        worker.process.stdin.write(json.dumps(task) + "\n")
        worker.process.stdin.flush()
        self.say(f"start {label(unit, self.base)} (worker {worker.index})", unit)

    def say(self, text: str, unit: Unit | None = None) -> None:
        tag = (f"[{self.ids[id(unit)]:>{len(str(len(self.units)))}}/{len(self.units)}] " if unit
               else "")
        tqdm.write(tag + text)
        sys.stdout.flush()  # a pipe (`| tee log`) sees each line when it happens

    def receive(self, worker: Worker, reply: dict) -> None:
        unit, worker.unit = worker.unit, None
        self.done[id(unit)] = reply
        if reply["ok"]:
            self.say(f"done  {label(unit, self.base)} in {reply['seconds']:.0f}s: "
                     f"{reply['summary']}", unit)
        else:
            self.say(f"error: {label(unit, self.base)}: {reply['error']}"
                     + (f"\n{reply['traceback']}" if "traceback" in reply
                        else f" (log: {worker.log})"), unit)
            self.skip_dependants()

    def lost(self, worker: Worker) -> None:
        """A worker died without answering (killed, out of memory): its unit failed;
        replace the worker."""
        self.selector.unregister(worker.results)
        code = worker.process.wait()
        if worker.unit is not None:
            self.receive(worker, {"ok": False,
                                  "error": f"worker {worker.index} died (exit status {code})",
                                  "seconds": time.time() - worker.started, "cpu_seconds": 0.0})
        self.workers[self.workers.index(worker)] = self.start_worker(worker.index)

    # ------------------------------------------------------------------------------ the loop

    def run(self) -> dict:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError("the pipeline runs its own workers; "
                            "under torchrun run one stage at a time")
        handlers = {s: signal.signal(s, _raise_interrupted)
                    for s in (signal.SIGTERM, signal.SIGHUP)}
        start = time.time()
        try:
            self.workers = [self.start_worker(i + 1)
                            for i in range(min(self.jobs, len(self.units)))]
            with tqdm(total=len(self.units), desc="pipeline", unit="unit", leave=False,
                      disable=not sys.stderr.isatty()) as bar:
                while len(self.done) < len(self.units):
                    for worker, unit in zip([w for w in self.workers if w.unit is None],
                                            self.ready()):
                        self.send(worker, unit)
                    for key, _ in self.selector.select(timeout=1.0):
                        worker = key.data
                        line = worker.results.readline()
                        if line:
                            self.receive(worker, json.loads(line))
                        else:
                            self.lost(worker)
                    for worker in [w for w in self.workers if w.process.poll() is not None]:
                        self.lost(worker)
                    bar.n = len(self.done)
                    bar.refresh()
            self.stop_workers()
        except BaseException:
            self.kill_workers()
            raise
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        return self.summary(time.time() - start)

    def summary(self, wall: float) -> dict:
        replies = list(self.done.values())
        busy = sum(r["seconds"] for r in replies)
        cpu = sum(r["cpu_seconds"] for r in replies)
        n = len(self.workers)
        failed = [u for u in self.units
                  if not self.done[id(u)]["ok"] and not self.done[id(u)].get("skipped")]
        skipped = sum(bool(r.get("skipped")) for r in replies)
        stats = {"units": len(self.units), "failed": len(failed), "workers": n,
                 "wall_seconds": wall, "unit_seconds": busy, "cpu_seconds": cpu,
                 "busy_share": busy / (wall * n) if wall else 0.0,
                 "cpu_share": cpu / (wall * n) if wall else 0.0,
                 "per_unit": [{"label": label(u, self.base), **self.done[id(u)]}
                              for u in self.units]}
        write_json(self.log_dir / "pipeline.json", stats)     # bench/pipeline_cores.py reads it
        tqdm.write(f"pipeline: {len(self.units)} units in {wall:.0f}s on {n} worker(s); "
                   f"{cpu:.0f} core-seconds of work (CPU time) = "
                   f"{100 * stats['cpu_share']:.0f}% of {n} x {wall:.0f}s "
                   f"(units running {100 * stats['busy_share']:.0f}% of the time)")
        if failed:
            names = "; ".join(label(u, self.base) for u in failed[:5])
            raise UserError(f"{len(failed)} of {len(self.units)} units failed "
                            f"({names}{' ...' if len(failed) > 5 else ''})"
                            f"{f' and {skipped} that wait for them did not run' if skipped else ''}"
                            "; the lines above give each error, "
                            f"the worker logs are in {self.log_dir}")
        return stats


def run_units(units: list[Unit], base: Config, jobs: int, force: bool, worker_argv: list[str],
              log_dir: Path, threads: int = 1) -> dict:
    """Run the units (see the module docstring); returns the timing summary. Raises UserError if any
    unit failed, after every unit that could run has run."""
    return Scheduler(units, base, jobs, force, worker_argv, log_dir, threads).run()


def default_jobs(device: str, gib_per_worker: float = 3.0) -> int:
    """Workers for this machine: one per core this process may use, at most one per gib_per_worker
    of memory; one on a GPU (its units would share it)."""
    if device.startswith("cuda") or device == "mps":
        return 1
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        memory = float("inf")
    return max(1, min(cores, int(memory // gib_per_worker)))
