"""Keeping Ray's internals off the user's terminal, while the user's own warnings still show.

A plain ``ffhq-uv run`` on a laptop used to print three things that are Ray talking to
itself. Each is handled at its source where Ray has an option, and filtered where it has none:

- "Token authentication is enabled for this Ray cluster": Ray 2.60 turns token
  authentication on for a new local cluster and says so unless ``RAY_AUTH_MODE`` is
  set. ``streaming.init_ray`` sets it to ``token``, Ray's own default (the option).
- "The maximum number of concurrent tasks for 'MapBatches(initial_states)' is set to 2,
  but the operator only received 1 input(s)" (a ``UserWarning``): the first task's
  concurrency is capped at the number of shards instead (the option).
- "core_worker.cc: Actor ... has constructor arguments in the object store and
  max_restarts > 0": Ray Data always ``ray.put``s an actor pool's constructor
  arguments, and the stages' actors restart by default, so Ray's C++ core worker logs
  this at error level for every actor of every run. There is no option: the driver's
  standard error is filtered for that one message (``filtered_stderr``), at the file
  descriptor, where the C++ logger writes. ``--debug`` (``ray.log_to_driver``) keeps it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

# Lines of Ray's that say nothing about the user's data (module docstring).
RAY_NOISE: tuple[re.Pattern[bytes], ...] = (
    re.compile(rb"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store"),
)


@contextlib.contextmanager
def filtered_stderr(patterns: tuple[re.Pattern[bytes], ...] = RAY_NOISE) -> Iterator[None]:
    """Drop the lines matching ``patterns`` from this process's standard error (fd 2) while inside.

    Everything else is passed on as it comes, partial lines included (a progress bar
    redrawn with ``\\r`` stays live); only a line that starts like a Ray log line
    (``[``) is held until its end, to be matched whole.
    """
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, os.dup(original), patterns), daemon=True,
                            name="stderr-filter")
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe closes once no process holds its write end (Ray's children may)
        os.close(original)
        pump.join(timeout=1.0)


def _pump(read_end: int, out: int, patterns: tuple[re.Pattern[bytes], ...]) -> None:
    """Copy ``read_end`` to ``out`` (both closed at the end), dropping matching lines."""
    held = b""
    try:
        while chunk := os.read(read_end, 65536):
            held += chunk
            *lines, held = held.split(b"\n")
            for line in lines:
                if not any(pattern.search(line) for pattern in patterns):
                    os.write(out, line + b"\n")
            if held and not held.startswith(b"["):
                os.write(out, held)
                held = b""
        if held:
            os.write(out, held)
    finally:
        os.close(read_end)
        os.close(out)
