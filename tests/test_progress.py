"""The run's progress line: per-stage throughput from Sample.stage_seconds and the slowest stage."""

from __future__ import annotations

import io

import pytest

from pipeline.progress import LOG_EVERY_S, ProgressLine
from stages.base import Sample


class Clock:
    """A settable clock so that rates are exact."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _sample(index: int, **seconds: float) -> Sample:
    return Sample(id=f"s{index}", uri=f"/in/s{index}.png", shard=0, index=index, stage_seconds=dict(seconds))


def test_rates_account_for_pool_sizes_and_name_the_bottleneck():
    clock = Clock()
    out = io.StringIO()
    line = ProgressLine(10, {"attribute": 1, "relight": 4, "complete": 2}, stream=out, clock=clock)
    for i in range(4):
        line.sample_done(_sample(i, attribute=0.5, relight=4.0, complete=1.0))
    clock.now += 8.0
    # attribute: 1 actor at 0.5 s/sample = 2/s; relight: 4 actors at 4 s = 1/s; complete: 2 actors at 1 s = 2/s.
    rates = {name: rate.per_s for name, rate in line.rates.items()}
    assert rates == pytest.approx({"attribute": 2.0, "relight": 1.0, "complete": 2.0})
    assert line.slowest() == "relight"
    assert line.samples_per_s() == pytest.approx(0.5)
    assert line.line() == ("ffhq-uv 4/10 [00:08, ETA 00:12, 0.5 sample/s] "
                           "attribute 2/s | relight 1/s | complete 2/s | slowest: relight")


def test_failed_samples_count_only_for_the_stages_they_reached():
    line = ProgressLine(3, {"attribute": 1, "relight": 1}, stream=io.StringIO(), clock=Clock())
    line.sample_done(_sample(0, attribute=1.0))  # failed in attribute: relight never ran
    line.sample_done(_sample(1, attribute=1.0, relight=3.0))
    assert (line.rates["attribute"].samples, line.rates["relight"].samples) == (2, 1)
    assert line.rates["relight"].per_s == pytest.approx(1 / 3)
    assert "slowest: relight" in line.stage_summary()


def test_before_any_timing_no_stage_is_named():
    line = ProgressLine(5, {"attribute": 1, "relight": 1}, stream=io.StringIO(), clock=Clock())
    assert line.slowest() is None
    assert line.stage_summary() == "attribute - | relight -"


def test_plain_lines_when_not_a_terminal():
    clock = Clock()
    out = io.StringIO()
    line = ProgressLine(2, {"attribute": 1}, stream=out, clock=clock)
    line.sample_done(_sample(0, attribute=0.25))
    line.batch_done()
    assert out.getvalue() == ""  # not yet time for a log line
    clock.now += LOG_EVERY_S
    line.batch_done()
    line.sample_done(_sample(1, attribute=0.25))
    line.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("ffhq-uv 1/2 [00:30, ETA 00:30, ") and lines[0].endswith("attribute 4/s")
    assert lines[1].startswith("ffhq-uv 2/2 [00:30, 0.0667 sample/s]")


def test_disabled_prints_nothing():
    out = io.StringIO()
    line = ProgressLine(1, {"attribute": 1}, enabled=False, stream=out, clock=Clock())
    line.sample_done(_sample(0, attribute=1.0))
    line.batch_done()
    line.close()
    assert out.getvalue() == "" and line.done == 1


def _run_in_terminal(code: str, columns: int) -> str:
    """Run ``code`` with stdout/stderr on a pseudo-terminal of the given width; return what it drew."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import subprocess
    import sys
    import termios

    from tests.conftest import ROOT

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen([sys.executable, "-c", code], stdout=slave, stderr=slave, stdin=slave, cwd=ROOT)
    os.close(slave)
    output = b""
    while select.select([master], [], [], 30)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert process.wait(timeout=30) == 0, output.decode(errors="replace")
    return output.decode(errors="replace")


TERMINAL_CODE = """
from pipeline.progress import ProgressLine
from stages.base import Sample
line = ProgressLine(3, {"attribute": 1, "relight": 2})
for i in range(3):
    line.sample_done(Sample(id=str(i), uri="u", shard=0, index=i, stage_seconds={"attribute": 0.5, "relight": 2.0}))
    line.batch_done()
line.close()
"""


def test_live_bar_on_a_terminal():
    drawn = _run_in_terminal(TERMINAL_CODE, columns=160).replace("\r", "\n")
    last = [line for line in drawn.splitlines() if line.strip()][-1]
    assert last.startswith("ffhq-uv: 100%") and "3/3" in last
    assert last.rstrip().endswith("attribute 2/s | relight 1/s | slowest: relight]")


def test_terminal_without_a_size_gets_plain_lines():
    drawn = _run_in_terminal(TERMINAL_CODE, columns=0)
    assert "ffhq-uv 3/3 [00:00, " in drawn and drawn.rstrip().endswith("slowest: relight")
