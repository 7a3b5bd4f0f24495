"""One writer per run folder: an exclusive lock that the kernel releases when its holder dies.

    # RunInUse (naming the holder) while another live process holds it
    with FolderLock(folder, name):
        ...

The lock is `flock` on <folder>/.lock, held for the run's whole life. A process that dies in any way
(kill -9 included) releases it, so there is no stale lock to detect and take over: no pid check, no
race between reading a dead owner and unlinking its file, no pid reused by another program after a
reboot. The file also names its holder (pid, host, command) for the error message; that text is only
information, and an unreadable one makes the message say so.

The holder unlinks the file when it is done. A second process may have opened the old file just
before: once it has the lock it checks that the path still names the file it locked, and tries again
otherwise, so two processes never both hold the folder. Without fcntl (Windows) msvcrt's byte-range
lock plays the same part.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from core.errors import RunInUse

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

LOCK = ".lock"
# seconds between open and lock: tests widen the race
_PAUSE = float(os.environ.get("PIPELINE_LOCK_PAUSE", "0"))


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on fd without waiting; False if another process holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def describe_holder(path: Path) -> str:
    """'process 123 on host (python train.py ...)' from a lock file, or what is wrong with it."""
    try:
        owner = json.loads(path.read_text())
        return f"process {owner['pid']} on {owner['host']} ({owner.get('command', '')})"
    except FileNotFoundError:
        return "a process that has just finished"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"another process (its lock file {path} does not say which)"


class FolderLock:
    def __init__(self, folder: str | os.PathLike, name: str = ""):
        self.folder, self.name = Path(folder), name or Path(folder).name
        self.path = self.folder / LOCK
        self.fd: int | None = None

    def __enter__(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            time.sleep(_PAUSE)
            if not _try_lock(fd):
                os.close(fd)
                raise RunInUse(f"{self.folder} is being written by {describe_holder(self.path)}; "
                               f"wait for it to finish or stop it")
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:  # the file we locked is still the lock file: the folder is ours
                self.fd = fd
                self._write_holder()
                return self
            os.close(fd)  # its holder unlinked it meanwhile: lock the new file instead
        raise RunInUse(f"could not take {self.path}: other processes keep replacing it")

    def _write_holder(self) -> None:
        text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                           "command": " ".join(sys.argv)}).encode()
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, text)

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            try:
                # before closing: whoever locks next checks the path
                self.path.unlink(missing_ok=True)
            except OSError:  # Windows cannot unlink an open file; the next holder overwrites it
                pass
            os.close(self.fd)
            self.fd = None
