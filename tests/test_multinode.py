"""Runs that span nodes, on a real multi-node Ray cluster on this machine.

``ray.cluster_utils.Cluster`` starts a head and worker nodes as separate raylets on
127.0.0.1, each with its own CPUs and a declared number of GPUs; ``ffhq-uv run
--address`` joins it from a process of its own, as on a real cluster. No GPU is
used (``models.device=cpu``): what is tested is where the actors go, what the
manifest records about it, the storage rule, the per-node weights cache and node
loss. The stages are the cheap test doubles of ``tests/doubles.py``; the S3 server
is moto behind a middleware that logs every request (``tests/faults.py``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.manifest import read_manifest
from tests.conftest import CLI, ROOT, cli_env, free_port, run_cli, write_images
from tests.doubles import PLUGINS
from tests.faults import FaultyS3Server
from tests.local_cluster import LocalCluster

STAGES = "stages.enabled=[attribute,relight,complete]"
# Small reservations: three raylets of one CPU each on a 2-core machine.
LIGHT = tuple(f"stages.{name}.num_cpus=0.25" for name in ("attribute", "relight", "complete"))
GPU_STAGE = ("stages.attribute.num_gpus=1", "stages.attribute.pool_size=auto")
GPUS_PER_WORKER = 2
WEIGHTS_KEY = "weights/double/weights.bin"


class MultiNode(LocalCluster):
    """The test cluster plus the request-logging S3 server and its bucket."""

    s3: FaultyS3Server
    bucket: str


@pytest.fixture(scope="module")
def multinode():
    """A head (1 CPU, no GPU) and two workers (1 CPU, 2 declared GPUs each), with S3 credentials in their env."""
    import s3fs

    s3 = FaultyS3Server(free_port(), rate=0.0)
    s3.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": s3.endpoint}
    try:
        nodes = MultiNode(workers=2, worker_gpus=GPUS_PER_WORKER, env=env)
    except BaseException:
        s3.stop()
        raise
    nodes.s3, nodes.bucket = s3, f"multinode-{free_port()}"
    try:
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir(nodes.bucket)
        fs.pipe(f"{nodes.bucket}/{WEIGHTS_KEY}", os.urandom(256 * 1024))
        yield nodes
    finally:
        nodes.shutdown()
        s3.stop()


def _args(nodes: MultiNode, inputs: str, output: str, *overrides: str) -> list[str]:
    return ["run", "--profile", "tiny", "--no-progress", "--no-visuals", "--address", nodes.address,
            "--input", inputs, "--output", output, STAGES, *PLUGINS, "shard_size=2", *LIGHT, *overrides]


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("ffhq-uv: error:")]


def _driver_log(output: Path) -> str:
    return "\n".join(path.read_text() for path in sorted((output / "logs").glob("driver-*.log")))


def _committed_files(output: Path) -> dict[str, str]:
    """sha256 of every file of every committed shard (stats, manifest, sample files)."""
    shards = sorted(p.parent for p in output.glob("shards/*/stats.json"))
    return {str(path.relative_to(output)): hashlib.sha256(path.read_bytes()).hexdigest()
            for shard in shards for path in sorted(shard.rglob("*")) if path.is_file()}


def _check_exactly_once(output: Path, ids: list[str]) -> list[dict]:
    rows = read_manifest(str(output)).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert all(r["status"] == "ok" for r in rows), [(r["id"], r["error_code"]) for r in rows if r["status"] != "ok"]
    for row in rows:
        for record in dict(row["outputs"] or []).values():
            assert hashlib.sha256((output / record["path"]).read_bytes()).hexdigest() == record["sha256"]
    return rows


def test_local_output_on_a_multinode_cluster_is_refused_before_anything_is_written(multinode, tmp_path):
    source = f"s3://{multinode.bucket}/refused-in"
    write_images(tmp_path / "in", 2)
    import s3fs

    s3fs.S3FileSystem(skip_instance_cache=True).put(str(tmp_path / "in") + "/", source + "/", recursive=True)
    output = tmp_path / "out"
    result = run_cli(_args(multinode, source, str(output)), env=cli_env(), check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = _error_lines(result)
    assert f"output {output} is a local path" in line and "3 nodes" in line and "storage.shared_filesystem" in line
    assert not output.exists()


def test_listed_local_paths_and_an_unshared_input_are_refused_at_start_up(multinode, tmp_path):
    import s3fs

    ids = write_images(tmp_path / "in", 2)
    listing = tmp_path / "list.csv"  # read by the driver alone: fine; the local paths in it are not
    listing.write_text("id,uri\n" + "".join(f"{i},{tmp_path / 'in' / i}.png\n" for i in ids))
    output = f"s3://{multinode.bucket}/listed-out"
    result = run_cli(_args(multinode, str(listing), output), env=cli_env(), check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = _error_lines(result)
    assert f"lists local paths ({tmp_path / 'in' / ids[0]}.png, ...)" in line and "3 nodes" in line
    written = s3fs.S3FileSystem(skip_instance_cache=True).find(f"{multinode.bucket}/listed-out")
    assert all("/logs/driver-" in path for path in written), written  # only the log of the refused command

    unseen = tmp_path / "not-mounted-here"  # a "shared" input that the nodes do not see
    result = run_cli(_args(multinode, str(unseen), str(tmp_path / "out"), "storage.shared_filesystem=true"),
                     env=cli_env(), check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = _error_lines(result)
    assert "storage.shared_filesystem=true, but node" in line and f"does not see the input {unseen}" in line
    assert not list((tmp_path / "out").iterdir())  # the marker was removed; nothing else was written


def test_gpu_actors_on_gpu_nodes_weights_once_per_node_shared_filesystem_checked(multinode, tmp_path):
    ids = write_images(tmp_path / "in", 8)
    output = tmp_path / "out"
    weights = (f"models.weights_dir=s3://{multinode.bucket}/weights",
               "stages.attribute.weights_file=double/weights.bin")
    run_cli(_args(multinode, str(tmp_path / "in"), str(output), "storage.shared_filesystem=true", *GPU_STAGE,
                  *weights, f"models.weights_cache_dir={tmp_path / 'cache'}"), env=cli_env())
    rows = _check_exactly_once(output, ids)
    log = _driver_log(output)
    assert "shared filesystem checked on 3 nodes" in log
    assert "attribute: 4 actors" in log  # pool_size auto: one actor per declared GPU (2 workers x 2)
    gpu_nodes = {node.node_id for node in multinode.workers()}
    for row in rows:
        node, gpus = row["stage_node_id"]["attribute"], row["stage_gpu_ids"]["attribute"]
        assert node in gpu_nodes and len(gpus) == 1 and 0 <= gpus[0] < GPUS_PER_WORKER, (node, gpus)
        assert row["stage_gpu_ids"]["relight"] == [] and row["stage_node_id"]["relight"] is not None
    downloads = [p for method, p in multinode.s3.app.seen if method == "GET" and p.endswith(WEIGHTS_KEY)]
    assert len(downloads) == len(gpu_nodes)  # once per node, though 4 actors (2 per node) load the file
    cached = sorted(p.parent.name for p in (tmp_path / "cache").glob("*/*-weights.bin"))
    assert cached == sorted(gpu_nodes)


def _wait_for(condition, timeout: float = 180, what: str = "") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _start_run(nodes: MultiNode, inputs: Path, output: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(CLI + _args(nodes, str(inputs), str(output), "storage.shared_filesystem=true",
                                        *GPU_STAGE, *overrides),
                            env=cli_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_worker_node_lost_mid_run_redoes_only_its_samples(multinode, tmp_path):
    ids = write_images(tmp_path / "in", 6)
    output, markers = tmp_path / "out", tmp_path / "markers"
    markers.mkdir()
    stuck = ids[-1]  # in the last shard; hangs on the first node that runs it, which is then lost
    process = _start_run(multinode, tmp_path / "in", output, f"stages.attribute.hang_once_ids=[{stuck}]",
                         f"stages.attribute.marker_dir={markers}")
    marker = markers / f"attribute-{stuck}.hanging"
    _stuck_and_one_committed(marker, output, process)
    before = _committed_files(output)
    (victim,) = [node for node in multinode.workers() if node.node_id == marker.read_text()]
    multinode.kill(victim)  # preemption: SIGKILL the node's processes
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        multinode.add_worker()  # the next test gets its two GPU workers back
    assert process.returncode == 0, stderr[-3000:]
    after = _committed_files(output)
    assert {path: after.get(path) for path in before} == before  # committed shards byte-identical
    rows = {row["id"]: row for row in _check_exactly_once(output, ids)}
    redone = rows[stuck]["stage_node_id"]["attribute"]
    assert redone != victim.node_id and redone in {node.node_id for node in multinode.workers()}
    assert "(0 already done)" in stdout


def _stuck_and_one_committed(marker: Path, output: Path, process: subprocess.Popen) -> None:
    """Wait until the stuck sample hangs on a node (its marker names it) and a shard is committed.

    Ray Data hands a stage actor a bundle of blocks and returns its results when the
    task ends, so shards that share a task with the stuck sample wait for it too.
    """
    _wait_for(lambda: (marker.exists() and marker.read_text() and any(output.glob("shards/*/stats.json")))
              or process.poll() is not None, what="a committed shard and the stuck sample")
    assert process.poll() is None, process.communicate()[1][-3000:]


def test_losing_the_last_gpu_node_stops_after_the_wait_and_resumes(multinode, tmp_path):
    ids = write_images(tmp_path / "in", 6)
    output, markers = tmp_path / "out", tmp_path / "markers"
    markers.mkdir()
    hang = (f"stages.attribute.hang_once_ids=[{ids[-1]}]", f"stages.attribute.marker_dir={markers}")
    process = _start_run(multinode, tmp_path / "in", output, *hang, "ray.gpu_wait_s=2")
    _stuck_and_one_committed(markers / f"attribute-{ids[-1]}.hanging", output, process)
    for node in multinode.workers():
        multinode.kill(node)
    try:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 1, stderr[-3000:]
        (line,) = [line for line in stderr.splitlines() if line.startswith("ffhq-uv: error:")]
        assert "no GPU node in the cluster for 2 s" in line and "run the same command again" in line
    finally:
        multinode.add_worker()
        multinode.add_worker()
    stopped = _committed_files(output)  # shards committed up to the stop, kept as they are
    done = len({path.split("/")[1] for path in stopped})
    resumed = run_cli(_args(multinode, str(tmp_path / "in"), str(output), "storage.shared_filesystem=true",
                            *GPU_STAGE, *hang), env=cli_env())
    assert 0 < done < len(ids) // 2 and f"({done} already done)" in resumed.stdout, resumed.stdout
    assert {path: _committed_files(output).get(path) for path in stopped} == stopped
    _check_exactly_once(output, ids)
