"""One cache for everything derived that is costly to make and depends only on inputs that can be
named: rendered shapes, reference statistics of real images, base-model generations, the base
model's side of a drift measurement.

    images = cached(root, "generations", [base_fingerprint, prompts, steps, guidance],
                    lambda: {...})

The value (a dict of tensors and plain values) is computed once and stored atomically as
<root>/<name>/<sha256 of the key>.pt. The key must hold everything the value depends on
(settings, and checkpoint fingerprints for models), so a retrained model or another setting makes a
new entry and a stale one is never reused. An unreadable entry (a crash from before atomic writes, a
full disk) is computed again. Two processes that need one entry at once compute it once: the second
waits.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from core import checkpoint
from core.errors import DataError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def cache_root(cfg) -> Path:
    """<run.out_dir>/cache: shared by every preset and stage of one output folder."""
    return Path(cfg.run.out_dir) / "cache"


def cached(root: Path | None, name: str, key, compute: Callable[[], dict]) -> dict:
    """compute(), stored under root/name/ by key and loaded from there afterwards; root None: no
    cache."""
    if root is None:
        return compute()
    path = Path(root) / name / f"{checkpoint.key_digest(key)}.pt"
    # a second process that needs the entry meanwhile waits for it instead of redoing it
    with computing(path):
        if path.exists():
            try:
                return checkpoint.load(path, kind="cache")["value"]
            except DataError as err:
                print(f"cache: recomputing an unreadable entry ({err})")
        value = compute()
        checkpoint.save(path, {"kind": "cache", "name": name, "key": key, "value": value})
        return value


@contextlib.contextmanager
def computing(path: Path):
    """Hold an exclusive lock on <path>.lock (flock: released by the kernel if the process dies, so
    no lock is ever left stale); without fcntl (Windows) no lock, and two processes may compute the
    same entry."""
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
