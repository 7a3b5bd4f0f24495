"""Writing files so that a crash never leaves a half-written one, and reading JSON results with
clear errors."""
from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from pathlib import Path

from core.errors import DataError


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 checks without sending
    anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _remove_orphans(path: Path) -> None:
    """Delete temp files of `path` left by writers that were killed mid-write (their process is
    gone)."""
    for tmp in path.parent.glob(f"{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 1:].split(".")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write) -> None:
    """write(f) fills a temp file `<name>.<pid>.<random>.tmp` in path's folder, which is flushed to
    disk and renamed over `path`. A crash mid-write leaves the previous file intact and no partial
    file under `path` (the next write of `path` removes the dead writer's temp file); writers racing
    for the same path (DDP ranks, the pipeline's two processes sharing a cache) each rename their
    own complete file, the last one winning. The file gets the usual permissions of a new file under
    the current umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finite(obj):
    """obj with non-finite floats replaced by None: JSON has no NaN or Infinity."""
    # float, numpy floats
    if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def as_json(obj):
    """obj as write_json stores it and read_json gives it back: tuples as lists, NaN and infinities
    as None."""
    return json.loads(json.dumps(_finite(obj), default=float, allow_nan=False))


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically; NaN and infinities become null (JSON has neither)."""
    text = json.dumps(_finite(obj), indent=2, default=float, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: str | os.PathLike):
    """The JSON in `path`; a missing file or broken JSON is a DataError naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); delete it and rerun the command that "
                        "wrote it") from None
