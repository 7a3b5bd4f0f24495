"""A stage's run folder: one writer at a time, finished once, resumed only from a checkpoint that
matches.

Every stage writes into its own folder (runs/<preset>/<stage>[/<name>]) and follows one protocol,
which `run_once` spells out for the stages:

    def train_thing(cfg, force=False):
        return run_once(folder, key, force, "thing", lambda run: _train(cfg, run))

    with RunFolder(folder, key, force, name) as run:  # the folder's lock (pipeline.lock)
        # finished before with this key: skip, and say so
        if run.finished():
            return run.result
        payload = run.resume(checkpoint_path, kind)   # None, or a checkpoint made with this key
        ... train; run.save_checkpoint(path, payload) now and then ...
        run.finish(metrics)                           # metrics.json with the key: the run is done

The key holds everything a run's result depends on: the config fields that change results
(core.config.result_fields) of the sections the stage reads, the content of the data it reads
(core.data.data_digest) and the fingerprints of the files it reads (the CLIP, the base model, the
evaluator). A finished run or a checkpoint made with another key is refused, with the list of what
changed and how to start over (--force), never silently reused or continued. --force deletes the
folder's files first. metrics.json is written only when a run is complete, so an interrupted or
failed run never replaces the figures of a finished one.

A model's fingerprint is the hash of its weights (core.checkpoint.fingerprint), not of its file: a
file also holds the training clock and the config it was saved with, and a retrain that gives the
same weights must not invalidate the runs built on it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from core import checkpoint, distributed
from core.cache import cache_root
from core.config import Config, field_default, result_fields
from core.data import data_digest
from core.errors import CheckpointMismatch, DataError, UserError
from core.files import as_json, read_json, write_json
from pipeline.lock import LOCK, FolderLock

PATHS = "paths."   # run-key entries that say where an input lies (never compared)


def stage_dir(cfg: Config, *parts: str) -> Path:
    """<out_dir>/<preset>/<parts...> (not created: readers must not write)."""
    return Path(cfg.run.out_dir, cfg.run.preset, *parts)


def run_key(cfg: Config, fields: tuple[str, ...], digests: dict | None = None, **inputs) -> dict:
    """What a run's result depends on, flat: 'section.field' -> value for every result field
    (core.config result_fields) named by `fields` ('clip' for a whole section, 'data.concept_class'
    for one field), the run seed, 'inputs.data' -> the content of the data (core.data.data_digest),
    and 'inputs.<name>' -> the fingerprint of each input file (name=path) and each given digest.
    Tuples are stored as lists, as JSON would, so a stored key compares equal to a fresh one."""
    key = {"run.seed": cfg.run.seed, "data.dataset": cfg.data.dataset,
           "data.resolution": cfg.data.resolution,
           "inputs.data": data_digest(cfg.data, cache_root(cfg)),
           **{f"inputs.{name}": d for name, d in (digests or {}).items()}}
    for name in fields:
        section, _, only = name.partition(".")
        key.update({f"{section}.{k}": v for k, v in result_fields(getattr(cfg, section)).items()
                    if not only or k == only})
    key.update({f"inputs.{name}": checkpoint.fingerprint(path) for name, path in inputs.items()})
    # where each input file lies, relative to the output folder: not compared (a moved folder keeps
    # its runs), but read by the tables to check that a run's inputs are still the current ones
    # (eval/results.py)
    key.update({f"{PATHS}{name}": Path(os.path.relpath(path, cfg.run.out_dir)).as_posix()
                for name, path in inputs.items()})
    return json.loads(json.dumps(key))


def fields_except(cfg: Config, section: str, but: tuple[str, ...]) -> tuple[str, ...]:
    """('diffusion.lr', ...): the result fields of one section but the named ones (for run_key)."""
    return tuple(f"{section}.{k}" for k in result_fields(getattr(cfg, section)) if k not in but)


def differences(old: dict | None, new: dict) -> list[str]:
    """'diffusion.lr: 0.003 -> 0.001' for every entry that differs between a stored key and a new
    one. A field added to the config after the run was made counts only if it is set away from its
    default (a new field's default keeps the old behaviour)."""
    if old is None:
        return ["made by an older version of this code (no run key)"]
    added_at_default = {k for k in set(new) - set(old) if as_json(field_default(k)) == new[k]}
    return [f"{k}: {old.get(k, '(none)')} -> {new.get(k, '(none)')}"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in added_at_default and not k.startswith(PATHS)]


def require_finished(folder: Path, artifact: str, command: str) -> Path:
    """folder/artifact of a finished run (metrics.json written),
    else a UserError with the command to run."""
    if not (folder / "metrics.json").exists() or not (folder / artifact).exists():
        raise UserError(f"{folder} has no finished run: run `{command}` first")
    return folder / artifact


class RunFolder:
    def __init__(self, folder: Path, key: dict, force: bool = False, name: str = ""):
        self.folder, self.key, self.force, self.name = (Path(folder), key, force,
                                                        name or Path(folder).name)
        self.result: dict | None = None
        self.main = distributed.is_main()   # under torchrun, rank 0 alone locks and writes

    def __enter__(self) -> "RunFolder":
        if self.main:
            self.lock = FolderLock(self.folder, self.name).__enter__()
            if self.force:
                for f in self.folder.iterdir():
                    if f.is_file() and f.name != LOCK:
                        f.unlink()
        distributed.barrier()
        return self

    def __exit__(self, *exc) -> None:
        if self.main:
            self.lock.__exit__(*exc)

    # ------------------------------------------------------------------------- done, resume, save

    def _refuse(self, what: str, stored_key: dict | None) -> None:
        changes = "\n  ".join(differences(stored_key, self.key))
        raise CheckpointMismatch(f"{what} was made with other settings or inputs than this run:\n"
                                 f"  {changes}\n"
                                 "pass the same settings to use it, "
                                 "or start over with --force (deletes it)")

    def finished(self) -> bool:
        """True (and self.result set) if this folder holds a finished run with this key; a finished
        run with another key is refused."""
        path = self.folder / "metrics.json"
        if not path.exists():
            return False
        stored = read_json(path)
        if not isinstance(stored, dict):
            raise DataError(f"{path} is not a run's results (it holds {json.dumps(stored)[:40]}, "
                            "not an object with a run key); delete it, or rerun with --force")
        if differences(stored.get("run_key"), self.key):
            self._refuse(str(path), stored.get("run_key"))
        self.result = stored
        if self.main:
            print(f"[{self.name}] finished before: {stored.get('summary', path)} "
                  "(--force reruns it)", flush=True)
        return True

    def resume(self, path: Path, kind: str) -> dict | None:
        """The checkpoint at `path` to continue from, None to start afresh;
        refused if another key made it."""
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
        """Write metrics.json (with the key): from now on the run counts as finished. Returns what a
        later run.finished() reads back (JSON types: lists, and None for NaN or infinity)."""
        self.result = as_json({**metrics, "run_key": self.key})
        if self.main:
            write_json(self.folder / "metrics.json", self.result)
        return self.result


def run_once(folder: Path, key: dict, force: bool, name: str,
             work: Callable[[RunFolder], dict]) -> dict:
    """A stage's whole protocol: lock the folder, return the figures of a run finished before with
    this key, else work(run) (which may resume from run.resume and save with run.save_checkpoint)
    and finish with its metrics."""
    with RunFolder(folder, key, force, name) as run:
        if run.finished():
            return run.result
        return run.finish(work(run))
