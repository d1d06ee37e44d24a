"""Soak run: thousands of cheap samples while stage workers, or whole nodes, are SIGKILLed every few seconds.

Runs ``ffhq-uv run`` on generated 64x64 PNGs with the three test-double stages
(``tests/doubles.py``: decode + thumbnail, invert, score), and meanwhile every
``--kill-every`` seconds:
- by default (its own local Ray) SIGKILLs a random stage actor process
  (``ray::MapWorker(MapBatches(StageRunner))`` among the driver's descendants);
- with ``--kill-nodes``, runs against a multi-node cluster on this machine
  (``tests/local_cluster.py``: a head and ``--workers`` worker raylets declaring one
  GPU each; the first stage asks for a GPU, one actor per GPU) and SIGKILLs a whole
  random worker node (preemption), starting a fresh one in its place.
Then reads the manifest and prints completed / expected, duplicates and lost, plus
the kills, the duplicate results the driver discarded and the throughput. Asserts nothing.

    .venv/bin/python bench/soak.py [--samples 2000] [--kill-every 3] [--shard-size 50] [--keep DIR]
    .venv/bin/python bench/soak.py --kill-nodes [--workers 2] [--samples 400] [--kill-every 15]
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
from tests.local_cluster import LocalCluster  # noqa: E402


def _run_with_kills(command: list[str], log_path: Path, every: float, rng: random.Random,
                    cluster: LocalCluster | None) -> tuple[int, float, list[tuple[float, str]], int]:
    """Run the CLI, killing a stage worker (or, with ``cluster``, a worker node) every ``every`` seconds.

    Returns the exit status, the wall seconds, the kills (time, victim) and how many stage worker
    processes were seen.
    """
    kills: list[tuple[float, str]] = []
    seen_workers: set[int] = set()
    with open(log_path, "w") as log:
        started = time.time()
        process = subprocess.Popen(command, env=cli_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        next_kill = time.time() + every
        while process.poll() is None:
            workers = stage_worker_processes(process.pid) if cluster is None else []
            seen_workers.update(p.pid for p in workers)
            if time.time() >= next_kill and (workers or cluster is not None):
                victim = _kill_one(rng, workers, cluster)
                if victim:
                    kills.append((time.time() - started, victim))
                next_kill = time.time() + every
            time.sleep(0.2)
    return process.returncode, time.time() - started, kills, len(seen_workers)


def _kill_one(rng: random.Random, workers: list, cluster: LocalCluster | None) -> str | None:
    """SIGKILL one stage worker, or one worker node (then start a fresh node in its place)."""
    if cluster is not None:
        node = rng.choice(cluster.workers())
        cluster.kill(node)
        for attempt in range(3):  # a raylet can time out starting on a loaded machine: try again
            try:
                cluster.add_worker()
                break
            except Exception as error:  # noqa: BLE001 - Ray raises a bare Exception on a start-up timeout
                print(f"starting a replacement node failed ({error}); attempt {attempt + 1} of 3", flush=True)
        return f"node {node.node_id[:8]}"
    victim = rng.choice(workers)
    try:
        victim.send_signal(signal.SIGKILL)
        return f"pid {victim.pid}"
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between SIGKILLs")
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one, deleted)")
    parser.add_argument("--kill-nodes", action="store_true",
                        help="SIGKILL whole worker nodes of a local multi-node cluster instead of stage workers")
    parser.add_argument("--workers", type=int, default=2, help="worker nodes with --kill-nodes (1 CPU, 1 GPU each)")
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
    command = CLI + ["run", "--profile", "tiny", "--no-progress", "--input", str(inputs),
                     "--output", str(output), "stages.enabled=[attribute,relight,complete]", *PLUGINS,
                     f"shard_size={args.shard_size}",
                     *(f"stages.{name}.batch_size={args.batch_size}" for name in ("attribute", "relight", "complete"))]
    rng = random.Random(args.seed)
    cluster = None
    if args.kill_nodes:
        cluster = LocalCluster(workers=args.workers, worker_gpus=1)
        command[command.index("run") + 1:1 + command.index("run")] = ["--address", cluster.address]
        command += ["storage.shared_filesystem=true", "stages.attribute.num_gpus=1",
                    "stages.attribute.pool_size=auto",
                    *(f"stages.{name}.num_cpus=0.25" for name in ("attribute", "relight", "complete"))]
    try:
        returncode, seconds, kills, seen = _run_with_kills(command, work / "driver.out", args.kill_every, rng, cluster)
    finally:
        if cluster is not None:
            cluster.shutdown()
    log_path = work / "driver.out"
    text = log_path.read_text(errors="replace")
    if returncode != 0:
        errors = [line for line in text.splitlines() if line.startswith("ffhq-uv: error:")]
        print("\n".join(errors) or text[-3000:])
        raise SystemExit(f"the run failed with exit status {returncode}")

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

    victim = f"a worker node of {args.workers} (replaced)" if args.kill_nodes else "a stage worker"
    print(f"samples: {args.samples}, shard size {args.shard_size}, batch size {args.batch_size}, "
          f"{victim} SIGKILLed every {args.kill_every:g}s")
    losses = (f"node losses: {len(kills)}" if args.kill_nodes
              else f"{len(kills)} workers killed, {seen} stage worker processes seen")
    print(f"run: {seconds:.1f}s wall ({args.samples / seconds:.1f} samples/s including Ray start), {losses}")
    if args.kill_nodes:
        nodes = Counter(node for row in rows for node in (row["stage_node_id"] or {}).values() if node)
        print(f"nodes that ran stages: {len(nodes)}; samples of the first stage on a declared GPU: "
              f"{sum(1 for r in rows if (r['stage_gpu_ids'] or {}).get('attribute'))}")
    print(f"statuses: {dict(statuses)}; files with a wrong checksum: {bad_files}; "
          f"duplicate results discarded by the driver: {discarded}")
    print(f"completed / expected: {completed} / {len(expected)}")
    print(f"duplicates: {duplicates}")
    print(f"lost: {lost}")


if __name__ == "__main__":
    main()
