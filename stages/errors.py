"""The errors every layer shares, and what each one does to a run.

Two kinds, and nothing in between:

- ``SampleError``: one sample cannot be processed (corrupt file, no face, ...). It
  becomes a failed manifest row with its ``code``; the run goes on.
- ``FatalError``: the run cannot go on as configured. It stops the run with one line,
  wherever it is raised: on the driver at start-up, or inside a Ray worker (the
  runner re-raises it, the driver translates it back). Its subclasses say whose
  fault it is: ``ConfigError`` (settings, missing weights), ``CheckpointError`` (a
  weights file not in its declared format), ``StorageError`` (the output storage).

This module imports nothing of the project, so ``stages`` and ``pipeline`` both use it
without depending on each other.
"""

from __future__ import annotations


class SampleError(Exception):
    """An expected, per-sample failure: becomes a failed manifest row, never a failed run.

    ``code`` is a stable snake_case error code (documented in README's error table),
    ``message`` a one-line human explanation.
    """

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self):  # pickles with both arguments (Ray ships exceptions between processes)
        return type(self), (self.code, self.message)


class FatalError(Exception):
    """A problem that stops the whole run with its one-line message (never a failed row)."""


class ConfigError(FatalError):
    """A problem the user must fix before the run can start (missing weights, bad option)."""


class CheckpointError(ConfigError):
    """A checkpoint file does not have the structure of its declared format."""


class StorageError(FatalError):
    """A storage problem the user must fix (permission denied, disk full, no credentials)."""


# The exceptions the worker side re-raises and the driver turns back into themselves
# (Ray re-raises a worker's exception wrapped in its own; the driver finds these in the chain).
FATAL_ERRORS: tuple[type[FatalError], ...] = (CheckpointError, ConfigError, StorageError)
