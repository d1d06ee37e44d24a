"""Orchestration cost of the pipeline core with zero-cost stages.

Prints samples/s through three no-op stages, the driver's peak memory for 10k and
70k simulated inputs (the ratio must stay near 1 as the input grows 7x), and how
long planning a resume of a fully committed 70k-sample run takes.

    .venv/bin/python bench/bench_orchestration.py [--sizes 10000 70000] [--shard-size 1000]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.doubles import NOOP_PLUGINS  # noqa: E402


def write_list(path: Path, count: int) -> None:
    """A list file of ``count`` simulated inputs (the no-op stages never open them)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "uri"])
        for i in range(count):
            writer.writerow([f"{i:05d}", f"/nonexistent/ffhq/{i // 1000:02d}000/{i:05d}.png"])


def run_driver(args: list[str]) -> tuple[float, float, float]:
    """Run ``ffhq-uv ARGS``; return (seconds, peak RSS, peak USS of the driver process in MB).

    RSS counts the pages of Ray's shared-memory object store that the driver has
    touched (they grow with the number of result blocks read and belong to the
    store, not the driver); USS is the driver's own private memory.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    driver = psutil.Process(process.pid)
    peak = peak_private = 0
    while process.poll() is None:
        try:
            memory = driver.memory_full_info()
            peak, peak_private = max(peak, memory.rss), max(peak_private, memory.uss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"run failed:\n{process.stderr.read()[-3000:]}")
    return seconds, peak / 2**20, peak_private / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 70000])
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    options = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in options.sizes:
            listing = Path(tmp) / f"inputs-{size}.csv"
            write_list(listing, size)
            output = Path(tmp) / f"run-{size}"
            args = ["run", "--profile", "tiny", "--no-progress", "--no-visuals", "--input", str(listing),
                    "--output", str(output), "stages.enabled=[attribute,relight,complete]", *NOOP_PLUGINS,
                    f"shard_size={options.shard_size}"]
            args += [f"stages.{s}.batch_size={options.batch_size}" for s in ("attribute", "relight", "complete")]
            seconds, peak_mb, private_mb = run_driver(args)
            resume_seconds, resume_mb, _ = run_driver(args)
            results[size] = (seconds, peak_mb, private_mb)
            print(f"{size:>7} inputs: {seconds:7.1f} s end to end ({size / seconds:7.0f} samples/s incl. Ray start), "
                  f"driver peak RSS {peak_mb:6.0f} MB, private (USS) {private_mb:6.0f} MB; resume of the committed "
                  f"run planned and checked in {resume_seconds:5.1f} s (peak RSS {resume_mb:.0f} MB)")
    if len(results) >= 2:
        small, large = min(results), max(results)
        print(f"driver peak memory ratio {large}/{small} inputs (input grew {large / small:.0f}x): "
              f"RSS {results[large][1] / results[small][1]:.2f}, private {results[large][2] / results[small][2]:.2f}")


if __name__ == "__main__":
    main()
