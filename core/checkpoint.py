"""Checkpoints: atomic writes, safe loads, config checks and RNG state for exact resume.

A checkpoint is a dict saved with torch.save: {"kind", "config" (Config.to_dict()), "step", then
state dicts and extras}. Only tensors, numbers, strings, lists, tuples and dicts go in, so it loads
with torch.load(weights_only=True): no pickled code runs on load.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from core.config import arch_fields
from core.errors import CheckpointMismatch, DataError, Diverged
from core.files import atomic_write


def non_finite(payload, prefix: str = "") -> str | None:
    """The name of the first floating-point tensor in a (nested) payload holding NaN or inf, else
    None."""
    if isinstance(payload, torch.Tensor):
        finite = not payload.is_floating_point() or bool(torch.isfinite(payload).all())
        return None if finite else prefix or "tensor"
    items = payload.items() if isinstance(payload, dict) else enumerate(payload) \
        if isinstance(payload, (list, tuple)) else ()
    for key, value in items:
        name = non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if name:
            return name
    return None


def save(path: str | os.PathLike, payload: dict) -> None:
    """torch.save, atomically (core.files.atomic_write); a payload holding NaN or inf weights is
    refused (Diverged) and the file already at `path` is kept, so a checkpoint on disk is never a
    diverged one."""
    bad = non_finite(payload)
    if bad:
        raise Diverged(f"{path} not written: {bad} holds NaN or inf (training diverged); the "
                       "previous checkpoint is kept")
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    # a full disk: torch.save's RuntimeError, or the OS's own error
    except (RuntimeError, OSError) as err:
        raise OSError(f"could not write {path}: {_first_line(err)}; the previous "
                      "checkpoint is kept") from None


def _first_line(err: BaseException, with_type: bool = False) -> str:
    """An exception's message cut to one line (its first sentence where that line runs on), for
    `error: ...`."""
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    if len(text) > 120 and ". " in text:
        text = text[:text.index(". ") + 1]
    return f"{type(err).__name__}: {text}" if with_type and text else text or type(err).__name__


def load(path: str | os.PathLike, kind: str | None = None) -> dict:
    """Load a checkpoint on the CPU; with `kind`, refuse checkpoints of another kind."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(f"{path} is not a readable checkpoint "
                        f"({_first_line(err, with_type=True)}); delete it and rerun the command "
                        "that wrote it") from None
    if not isinstance(payload, dict):
        raise DataError(f"{path} holds a {type(payload).__name__}, not a checkpoint of this "
                        "project; delete it and rerun the command that wrote it")
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointMismatch(f"{path} holds a {payload.get('kind')!r} checkpoint, expected "
                                 f"{kind!r}")
    return payload


def check_arch(payload: dict, sections: dict[str, object], path: str = "checkpoint") -> None:
    """Raise CheckpointMismatch naming every architecture field that differs.

    sections: {"diffusion": cfg.diffusion, "clip": cfg.clip, ...}, the config the model is built
    from.
    """
    stored = payload["config"]
    diffs = []
    for name, section in sections.items():
        for key, value in arch_fields(section).items():
            old = stored.get(name, {}).get(key)
            old = tuple(old) if isinstance(old, list) else old
            if old != value:
                diffs.append(f"{name}.{key}: checkpoint has {old!r}, config has {value!r}")
    if diffs:
        raise CheckpointMismatch(f"{path} was made with a different model configuration:\n  "
                                 + "\n  ".join(diffs))


def fingerprint(path: str | os.PathLike) -> str:
    """12 hex digits naming what a checkpoint holds: the sha256 of its tensors, integers and strings
    (the weights, the step, a vocabulary), in key order, leaving out what does not define the model
    (the config it was saved with, training clocks, metrics and run keys). A retrain that gives the
    same weights keeps the same fingerprint, so the runs built on the model stay valid; any other
    file: the hash of its bytes."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a checkpoint: its bytes name it
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:12]
    _hash_into(digest, payload, "")
    return digest.hexdigest()[:12]


# settings, clocks, results and where a file was: not the model
SKIPPED_KEYS = ("config", "metrics", "run_key", "train_seconds", "seconds", "log", "loss",
                "base_path", "base_relative_path")


def _hash_into(digest, value, name: str) -> None:
    if isinstance(value, torch.Tensor):
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            if key not in SKIPPED_KEYS:
                _hash_into(digest, value[key], f"{name}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _hash_into(digest, v, f"{name}[{i}]")
    elif isinstance(value, (int, str)):  # bool is an int; floats (clocks, losses) are left out
        digest.update(f"{name}={value!r}".encode())


def key_digest(key) -> str:
    """16 hex digits naming a cache entry: the sha256 of `key` (anything JSON can write, e.g. a list
    of the settings and fingerprints the cached thing depends on)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rng_state() -> dict:
    """Every RNG stream a training loop draws from (CPU, and CUDA where present)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
