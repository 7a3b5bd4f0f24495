"""A stage's run folder: one writer at a time, finished once, resumed only from a checkpoint that matches.

Every stage writes into its own folder (runs/<preset>/<stage>[/<run>]) and follows one protocol:

    with RunFolder(folder, key, force, "diffusion") as run:   # the folder's lock (refused while a live
        if run.finished():                                    #   process holds it); finished before with
            return run.result                                 #   this key: skip, and say so with its figures
        payload = run.resume(checkpoint_path, kind)           # None, or a checkpoint made with this key
        ... train; run.save_checkpoint(path, payload) now and then ...
        run.finish(metrics)                                   # metrics.json with the key: the run is done

The key holds everything a run's result depends on: the config fields that change results
(core.config.result_fields) of the sections the stage reads, and the fingerprints of the files it reads
(the CLIP, the base model, the evaluator). A finished run or a checkpoint made with another key is refused,
with the list of what changed and how to start over (--force), never silently reused or continued.
--force deletes the folder's files first. metrics.json is written only when a run is complete, so an
interrupted or failed run never replaces the figures of a finished one.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from core import checkpoint, distributed
from core.config import Config, field_default, result_fields
from core.errors import CheckpointMismatch, RunInUse, UserError
from core.files import as_json, pid_alive, read_json, write_json

LOCK = ".lock"
STALE_EMPTY_LOCK_SECONDS = 60  # a lock file with no owner written yet is someone creating it, or debris


def stage_dir(cfg: Config, *parts: str) -> Path:
    """<out_dir>/<preset>/<parts...> (not created: readers must not write)."""
    return Path(cfg.run.out_dir, cfg.run.preset, *parts)


def run_key(cfg: Config, fields: tuple[str, ...], **inputs) -> dict:
    """What a run's result depends on, flat: 'section.field' -> value for every result field (core.config
    result_fields) named by `fields` ('clip' for a whole section, 'data.resolution' for one field), the run
    seed, and 'inputs.<name>' -> the fingerprint of each input file (name=path). Tuples are stored as lists,
    as JSON would, so a stored key compares equal to a fresh one."""
    key = {"run.seed": cfg.run.seed}
    for name in fields:
        section, _, only = name.partition(".")
        key.update({f"{section}.{k}": v for k, v in result_fields(getattr(cfg, section)).items()
                    if not only or k == only})
    key.update({f"inputs.{name}": checkpoint.fingerprint(path) for name, path in inputs.items()})
    return json.loads(json.dumps(key))


def differences(old: dict | None, new: dict) -> list[str]:
    """'diffusion.lr: 0.003 -> 0.001' for every entry that differs between a stored key and a new one. A field
    added to the config after the run was made counts only if it is set away from its default (a new field's
    default keeps the old behaviour)."""
    if old is None:
        return ["made by an older version of this code (no run key)"]
    added_at_default = {k for k in set(new) - set(old) if as_json(field_default(k)) == new[k]}
    return [f"{k}: {old.get(k, '(none)')} -> {new.get(k, '(none)')}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in added_at_default]


def is_finished(folder: Path, key: dict, since: float = 0.0) -> bool:
    """Whether folder holds a run finished with `key`, its metrics.json written at or after `since`."""
    path = Path(folder) / "metrics.json"
    try:
        return path.stat().st_mtime >= since and not differences(read_json(path).get("run_key"), key)
    except (FileNotFoundError, UserError):  # not there yet, or being replaced
        return False


def require_finished(folder: Path, artifact: str, command: str) -> Path:
    """folder/artifact of a finished run (metrics.json written), else a UserError with the command to run."""
    if not (folder / "metrics.json").exists() or not (folder / artifact).exists():
        raise UserError(f"{folder} has no finished run: run `{command}` first")
    return folder / artifact


class RunFolder:
    def __init__(self, folder: Path, key: dict, force: bool = False, name: str = ""):
        self.folder, self.key, self.force, self.name = Path(folder), key, force, name or Path(folder).name
        self.result: dict | None = None
        self.main = distributed.is_main()   # under torchrun, rank 0 alone locks and writes

    # ------------------------------------------------------------------------------ lock

    def __enter__(self) -> "RunFolder":
        if self.main:
            self._lock()
            if self.force:
                for f in self.folder.iterdir():
                    if f.is_file() and f.name != LOCK:
                        f.unlink()
        distributed.barrier()
        return self

    def __exit__(self, *exc) -> None:
        if self.main:
            lock = self.folder / LOCK
            if self._owner(lock).get("pid") == os.getpid():
                lock.unlink(missing_ok=True)

    @staticmethod
    def _owner(lock: Path) -> dict:
        try:
            return json.loads(lock.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _lock(self) -> None:
        """Create folder/.lock holding this process's id; a lock whose process is gone is taken over."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = self.folder / LOCK
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner(lock)
                here = owner.get("host") == socket.gethostname()
                dead = here and not pid_alive(owner["pid"])
                debris = not owner and time.time() - lock.stat().st_mtime > STALE_EMPTY_LOCK_SECONDS
                if dead or debris:
                    print(f"{self.name}: taking over {lock}, left by a process that no longer runs")
                    lock.unlink(missing_ok=True)
                    continue
                raise RunInUse(f"{self.folder} is being written by process {owner.get('pid', '?')} on "
                               f"{owner.get('host', '?')} ({owner.get('command', '')}); wait for it to finish or "
                               f"stop it (if that process is gone, delete {lock})") from None
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                           "command": " ".join(sys.argv)}, f)
            return
        raise RunInUse(f"could not take {lock}: other processes keep creating it")

    # ------------------------------------------------------------------------------ done, resume, save

    def _refuse(self, what: str, stored_key: dict | None) -> None:
        changes = "\n  ".join(differences(stored_key, self.key))
        raise CheckpointMismatch(f"{what} was made with other settings or inputs than this run:\n  {changes}\n"
                                 f"pass the same settings to use it, or start over with --force (deletes it)")

    def finished(self) -> bool:
        """True (and self.result set) if this folder holds a finished run with this key; a finished run
        with another key is refused."""
        path = self.folder / "metrics.json"
        if not path.exists():
            return False
        stored = read_json(path)
        if differences(stored.get("run_key"), self.key):
            self._refuse(str(path), stored.get("run_key"))
        self.result = stored
        if self.main:
            print(f"[{self.name}] finished before: {stored.get('summary', path)} (--force reruns it)", flush=True)
        return True

    def resume(self, path: Path, kind: str) -> dict | None:
        """The checkpoint at `path` to continue from, None to start afresh; refused if another key made it."""
        if not path.exists():
            return None
        payload = checkpoint.load(path, kind)
        if differences(payload.get("run_key"), self.key):
            self._refuse(str(path), payload.get("run_key"))
        return payload

    def save_checkpoint(self, path: Path, payload: dict) -> None:
        if self.main:
            checkpoint.save(path, {**payload, "run_key": self.key})

    def finish(self, metrics: dict) -> dict:
        """Write metrics.json (with the key): from now on the run counts as finished. Returns what a later
        run.finished() reads back (JSON types: lists, and None for NaN or infinity)."""
        self.result = as_json({**metrics, "run_key": self.key})
        if self.main:
            write_json(self.folder / "metrics.json", self.result)
        return self.result
