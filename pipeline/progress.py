"""The live progress line of ``ffhq-uv run``: overall rate, per-stage throughput, the slowest stage.

The driver sees every finished sample as a small row; each row carries the wall
seconds every stage spent on it (``Sample.stage_seconds``). Summed per stage and
divided among the stage's actors, that busy time gives the rate the stage's pool
can sustain (samples/s). The stage with the lowest such rate is the bottleneck of
the streaming pipeline, the one to give more actors or GPUs:

    ffhq-uv  412/1000 [03:10<04:31, 2.17 sample/s] inversion 2.4/s | attribute 9.8/s | edit 2.2/s | slowest: edit

On a terminal this is a tqdm bar redrawn in place. When stderr is not a terminal
(a Ray job's log, CI) a plain line is printed every ``LOG_EVERY_S`` seconds instead,
so logs stay readable.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, TextIO

from stages.base import Sample

LOG_EVERY_S = 30.0  # plain-line interval when the output is not a terminal
REDRAW_EVERY_S = 0.5  # tqdm redraw interval on a terminal


@dataclass
class StageRate:
    """Throughput of one stage's actor pool, from the busy seconds its samples report."""

    name: str
    samples: int = 0  # samples the stage processed (ok or failed there)
    busy_s: float = 0.0  # summed wall seconds the stage spent on them
    pool_size: int = 1  # actors working in parallel

    @property
    def per_s(self) -> Optional[float]:
        """Samples per second the whole pool sustains; None before the first timed sample."""
        if self.samples == 0 or self.busy_s <= 0:
            return None
        return self.samples * self.pool_size / self.busy_s


class ProgressLine:
    """Counts finished samples and renders the run's progress line.

    The driver calls ``sample_done`` for every result row, ``batch_done`` after
    each batch it pulled from the dataset, and ``close`` at the end.
    """

    def __init__(self, total: int, pool_sizes: dict[str, int], enabled: bool = True,
                 stream: Optional[TextIO] = None, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.done = 0
        self.rates = {name: StageRate(name, pool_size=max(1, int(size))) for name, size in pool_sizes.items()}
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = clock()
        self._last_log = self.started
        self._bar = None
        if enabled and _is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="sample", desc="ffhq-uv", file=self.stream, dynamic_ncols=True,
                             mininterval=REDRAW_EVERY_S)

    def sample_done(self, sample: Sample) -> None:
        """Account for one finished sample (any status)."""
        self.done += 1
        for name, seconds in sample.stage_seconds.items():
            if seconds is None:
                continue
            rate = self.rates.setdefault(name, StageRate(name))
            rate.samples += 1
            rate.busy_s += float(seconds)
        if self._bar is not None:
            self._bar.update(1)

    def batch_done(self) -> None:
        """Refresh the display after a batch of results."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self.stage_summary(), refresh=False)
            return
        now = self.clock()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        """Final state of the line."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self.stage_summary(), refresh=False)
            self._bar.close()
        else:
            print(self.line(), file=self.stream, flush=True)

    # -- figures -----------------------------------------------------------------------------
    def samples_per_s(self) -> float:
        """Overall finished samples per wall second since the start."""
        return self.done / max(self.clock() - self.started, 1e-6)

    def slowest(self) -> Optional[str]:
        """The stage whose pool sustains the fewest samples per second (the bottleneck)."""
        timed = [rate for rate in self.rates.values() if rate.per_s is not None]
        return min(timed, key=lambda rate: rate.per_s).name if timed else None

    def stage_summary(self) -> str:
        """``attribute 9.8/s | edit 2.2/s | slowest: edit`` (stages in pipeline order)."""
        parts = [f"{rate.name} {rate.per_s:.3g}/s" if rate.per_s is not None else f"{rate.name} -"
                 for rate in self.rates.values()]
        slowest = self.slowest()
        if slowest is not None and len(self.rates) > 1:
            parts.append(f"slowest: {slowest}")
        return " | ".join(parts)

    def line(self) -> str:
        """The whole progress line as plain text."""
        elapsed = self.clock() - self.started
        rate = self.samples_per_s()
        eta = (self.total - self.done) / rate if rate > 0 and self.done else None
        eta_text = f", ETA {_clock(eta)}" if eta is not None and self.done < self.total else ""
        return (f"ffhq-uv {self.done}/{self.total} [{_clock(elapsed)}{eta_text}, {rate:.3g} sample/s] "
                f"{self.stage_summary()}").rstrip()


def _is_terminal(stream: TextIO) -> bool:
    """A terminal with a width: a pseudo-terminal without a window size (0 columns) gets plain lines."""
    isatty = getattr(stream, "isatty", None)
    if not (isatty and isatty()):
        return False
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60:02d}:{seconds % 60:02d}"
