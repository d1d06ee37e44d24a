"""Soak run: thousands of cheap samples while stage workers are SIGKILLed every few seconds.

Runs ``ffhq-uv run`` (its own local Ray) on generated 64x64 PNGs with the three
test-double stages (``tests/doubles.py``: decode + thumbnail, invert, score), and
meanwhile SIGKILLs a random stage actor process (``ray::MapWorker(MapBatches(StageRunner))``
among the driver's descendants) every ``--kill-every`` seconds. Then reads the
manifest and prints completed / expected, duplicates and lost, plus the kills, the
duplicate results the driver discarded and the throughput. Asserts nothing.

    .venv/bin/python bench/soak.py [--samples 2000] [--kill-every 3] [--shard-size 50] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.manifest import read_manifest  # noqa: E402
from tests.conftest import CLI, cli_env, write_images  # noqa: E402
from tests.doubles import PLUGINS  # noqa: E402
from tests.faults import stage_worker_processes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between SIGKILLs")
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one, deleted)")
    args = parser.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        soak(work, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def soak(work: Path, args: argparse.Namespace) -> None:
    inputs, output = work / "in", work / "out"
    started = time.time()
    ids = write_images(inputs, args.samples, size=(64, 64), seed=args.seed, prefix="s")
    print(f"wrote {len(ids)} inputs in {time.time() - started:.1f}s")
    command = CLI + ["run", "--profile", "tiny", "--no-progress", "--input", str(inputs), "--output", str(output),
                     "stages.enabled=[attribute,relight,complete]", f"shard_size={args.shard_size}",
                     *(f"stages.{name}.batch_size={args.batch_size}" for name in ("attribute", "relight", "complete"))]
    log_path = work / "driver.out"
    rng = random.Random(args.seed)
    kills: list[tuple[float, int]] = []
    seen_workers: set[int] = set()
    with open(log_path, "w") as log:
        started = time.time()
        process = subprocess.Popen(command, env=cli_env(PLUGINS), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        next_kill = time.time() + args.kill_every
        while process.poll() is None:
            workers = stage_worker_processes(process.pid)
            seen_workers.update(p.pid for p in workers)
            if workers and time.time() >= next_kill:
                victim = rng.choice(workers)
                try:
                    victim.send_signal(signal.SIGKILL)
                    kills.append((time.time() - started, victim.pid))
                except OSError:
                    pass
                next_kill = time.time() + args.kill_every
            time.sleep(0.2)
        seconds = time.time() - started
    text = log_path.read_text(errors="replace")
    if process.returncode != 0:
        print(text[-3000:])
        raise SystemExit(f"the run failed with exit status {process.returncode}")

    table = read_manifest(str(output))
    rows = table.to_pylist()
    counts = Counter(r["id"] for r in rows)
    expected = set(ids)
    completed = len(expected & set(counts))
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    lost = len(expected - set(counts))
    statuses = Counter(r["status"] for r in rows)
    bad_files = 0
    for row in rows:
        for record in dict(row["outputs"] or []).values():
            data = (output / record["path"]).read_bytes()
            bad_files += hashlib.sha256(data).hexdigest() != record["sha256"]
    discarded = sum(p.read_text(errors="replace").count("ignoring a duplicate result")
                    for p in (output / "logs").glob("driver-*.log"))

    print(f"samples: {args.samples}, shard size {args.shard_size}, batch size {args.batch_size}, "
          f"a worker SIGKILLed every {args.kill_every:g}s")
    print(f"run: {seconds:.1f}s wall ({args.samples / seconds:.1f} samples/s including Ray start), "
          f"{len(kills)} workers killed, {len(seen_workers)} stage worker processes seen")
    print(f"statuses: {dict(statuses)}; files with a wrong checksum: {bad_files}; "
          f"duplicate results discarded by the driver: {discarded}")
    print(f"completed / expected: {completed} / {len(expected)}")
    print(f"duplicates: {duplicates}")
    print(f"lost: {lost}")


if __name__ == "__main__":
    main()
