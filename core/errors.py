"""The errors a person running the code can fix: bad settings, missing or broken files, a run folder
in use, a diverged run. `train.py` and `evaluate.py` print them as one line, `error: ...`, and exit
with status 2 (`--debug` shows the traceback); every other exception is a bug and keeps its
traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user asked for or gave cannot work; the message says what, where, and what to
    do."""


class ConfigError(UserError, ValueError):
    """A config field, override or command-line option is unknown, badly typed or out of range."""


class DataError(UserError, ValueError):
    """A data or results file is missing, unreadable or holds something other than what it
    should."""


class CheckpointMismatch(UserError, ValueError):
    """A checkpoint was made for another model, another config or other inputs than the ones
    given."""


class RunInUse(UserError):
    """Another live process is writing the same run folder."""


class Diverged(UserError, FloatingPointError):
    """Training produced a NaN or infinite loss or weights; nothing non-finite was written."""
