"""Reliability on a real local Ray: killed workers and drivers, flaky and failing storage, stragglers.

Most runs share one local Ray started in this process (starting Ray costs ~10 s on the
test machine); the driver-kill test needs a driver process of its own and uses the CLI.
The stages are the test doubles (``tests/doubles.py``); faults come from
``tests/faults.py`` (the ``faulty://`` filesystem and a throttling S3 server).
Every test ends by checking the run's manifest against its input: each id exactly
once, and every file a row names present with its recorded checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipeline import commit, driver, streaming
from pipeline.config import load_config, registry_for
from pipeline.manifest import read_manifest
from pipeline.storage import open_storage
from stages.base import OutputFile, Sample
from stages.errors import StorageError
from tests import faults
from tests.conftest import CLI, ROOT, cli_env, free_port, kill_process_group, run_cli, write_images
from tests.doubles import PLUGINS

STAGES = "stages.enabled=[attribute,relight,complete]"


@pytest.fixture(scope="module")
def local_ray(s3_server, tmp_path_factory):
    """One local Ray for this module, started with the doubles and the fault settings file in its environment."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    faults_file = tmp_path_factory.mktemp("faults") / "faults.json"
    faults_file.write_text("{}")
    saved = os.environ.get(faults.FAULTS_ENV)
    os.environ[faults.FAULTS_ENV] = str(faults_file)
    streaming.init_ray(load_config("tiny", overrides=(STAGES,)))  # workers inherit the environment above
    try:
        yield faults_file
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop(faults.FAULTS_ENV, None)
        else:
            os.environ[faults.FAULTS_ENV] = saved


def _config(inputs: Path, output: str, *overrides: str):
    return load_config("tiny", overrides=(f"input.source={inputs}", f"output={output}", STAGES, *PLUGINS,
                                          "shard_size=4", *overrides))


def _set_faults(faults_file: Path, **settings) -> None:
    faults_file.write_text(json.dumps(settings))


class _Background:
    """``driver.run`` in a thread, so that the test can misbehave while it runs."""

    def __init__(self, config):
        self.summary = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(config,), daemon=True)
        self.thread.start()

    def _run(self, config) -> None:
        try:
            self.summary = driver.run(config, registry_for(config), progress=False)
        except BaseException as error:  # noqa: BLE001 - inspected by the test
            self.error = error

    def join(self, timeout: float = 240):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not finish"
        return self


def _committed_shards(output: Path) -> list[Path]:
    return sorted(p.parent for p in output.glob("shards/*/stats.json"))


def _committed_files(output: Path) -> dict[str, str]:
    """sha256 of every file inside the committed shards (stats, manifest, samples)."""
    return {str(path.relative_to(output)): hashlib.sha256(path.read_bytes()).hexdigest()
            for shard in _committed_shards(output) for path in sorted(shard.rglob("*")) if path.is_file()}


def _check_run(output: str, ids: list[str], endpoint: str | None = None) -> dict[str, dict]:
    """Each id exactly once; every recorded file present with its checksum; stats agree with manifests."""
    options = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    storage = open_storage(output, options)
    rows = read_manifest(storage).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(ids)
    for row in rows:
        for record in dict(row["outputs"] or []).values():
            data = storage.read_bytes(record["path"])
            assert hashlib.sha256(data).hexdigest() == record["sha256"], record
    for path in storage.glob("shards/*/stats.json"):
        stats = json.loads(storage.read_bytes(path))
        manifest = storage.read_bytes(stats["manifest"])
        assert hashlib.sha256(manifest).hexdigest() == stats["manifest_sha256"]
    return {r["id"]: r for r in rows}


def test_killed_stage_workers_are_restarted_and_each_sample_is_processed_once(local_ray, tmp_path):
    ids = write_images(tmp_path / "in", 36, seed=3)
    output = tmp_path / "out"
    config = _config(tmp_path / "in", str(output), "stages.attribute.sleep_s=0.1", "stages.relight.sleep_s=0.1",
                     "stages.complete.sleep_s=0.1", "stages.attribute.max_restarts=4")
    run = _Background(config)
    rng = random.Random(0)
    killed: list[int] = []
    while run.thread.is_alive() and len(killed) < 4:
        workers = faults.stage_worker_processes(os.getpid())
        if len(workers) >= 3 and _committed_shards(output):  # all pools up, the run under way
            victim = rng.choice(workers)
            victim.send_signal(signal.SIGKILL)
            killed.append(victim.pid)
            time.sleep(1.5)
        time.sleep(0.1)
    run.join()
    assert run.error is None, run.error
    assert len(killed) >= 2, "the run ended before two workers could be killed"
    survivors = {p.pid for p in faults.stage_worker_processes(os.getpid())}
    assert not survivors & set(killed)
    rows = _check_run(str(output), ids)
    assert all(r["status"] == "ok" for r in rows.values())
    assert run.summary.samples_processed == len(ids) and run.summary.shards_committed == 9


def test_a_worker_that_may_not_restart_stops_the_run_with_a_clear_error(local_ray, tmp_path):
    ids = write_images(tmp_path / "in", 12, seed=10)
    config = _config(tmp_path / "in", str(tmp_path / "out"), "stages.relight.max_restarts=0",
                     "stages.relight.exit_ids=[img_009]", f"stages.relight.marker_dir={tmp_path}")
    with pytest.raises(RuntimeError, match="stage worker died and was not restarted") as caught:
        driver.run(config, registry_for(config), progress=False)
    assert "\n" not in str(caught.value)
    committed, shards_before = _committed_files(tmp_path / "out"), len(_committed_shards(tmp_path / "out"))
    # The marker says img_009 already killed a worker once.
    summary = driver.run(config, registry_for(config), progress=False)
    assert (summary.shards_skipped, summary.shards_committed) == (shards_before, 3 - shards_before)
    after = _committed_files(tmp_path / "out")
    assert {path: after.get(path) for path in committed} == committed
    rows = _check_run(str(tmp_path / "out"), ids)
    assert all(r["status"] == "ok" for r in rows.values())


def test_stragglers_fail_with_timeout_and_the_run_finishes(local_ray, tmp_path):
    ids = write_images(tmp_path / "in", 20, seed=4)
    hung_first = ["img_002", "img_005", "img_009", "img_013"]  # more than MAX_ABANDONED_THREADS: one recycle
    config = _config(tmp_path / "in", str(tmp_path / "out"),
                     "stages.attribute.sample_timeout_s=1", f"stages.attribute.hang_ids=[{','.join(hung_first)}]",
                     "stages.relight.sample_timeout_s=1", "stages.relight.batch_size=3",
                     "stages.relight.hang_ids=[img_017]")
    started = time.time()
    summary = driver.run(config, registry_for(config), progress=False)
    assert time.time() - started < 200  # the hour-long sleeps were cut short
    rows = _check_run(str(tmp_path / "out"), ids)
    for sample_id, row in rows.items():
        if sample_id in hung_first or sample_id == "img_017":
            assert (row["status"], row["error_code"]) == ("failed", "timeout"), row
            assert row["failed_stage"] == ("attribute" if sample_id in hung_first else "relight")
            assert row["error_message"] == "exceeded 1 s"
        else:
            assert row["status"] == "ok", row
    # The sample that hung in a batch of three keeps only what earlier stages wrote.
    assert dict(rows["img_017"]["outputs"]).keys() == {"aligned"}
    assert summary.error_counts == {"timeout": 5}


def test_flaky_storage_is_retried_and_the_run_completes(local_ray, tmp_path):
    ids = write_images(tmp_path / "in", 24, seed=5)
    _set_faults(local_ray, transient_rate=0.15, lost_ack_rate=0.1)
    try:
        config = _config(tmp_path / "in", f"faulty://{tmp_path}/out", "storage.retry_attempts=10",
                         "storage.retry_base_delay_s=0.01")
        summary = driver.run(config, registry_for(config), progress=False)
    finally:
        _set_faults(local_ray)
    injected = faults.injected_faults(str(local_ray))
    assert {kind for kind, _ in injected} == {"transient", "lost_ack"}
    assert {"pipe_file", "cat_file"} <= {call for _, call in injected}
    assert len(injected) >= 20
    rows = _check_run(str(tmp_path / "out"), ids)
    assert all(r["status"] == "ok" for r in rows.values())
    assert summary.shards_committed == 6


def test_s3_slowdown_and_internal_errors_are_retried(local_ray, s3_bucket, tmp_path):
    _, bucket, fs = s3_bucket
    ids = write_images(tmp_path / "in", 12, seed=6)
    server = faults.FaultyS3Server(free_port(), rate=0.1, seed=1)
    server.start()
    try:
        output = f"s3://{bucket}/flaky"
        config = _config(tmp_path / "in", output, f"storage.endpoint_url={server.endpoint}",
                         "storage.retry_base_delay_s=0.05")
        driver.run(config, registry_for(config), progress=False)
    finally:
        server.stop()
    statuses = {status.split()[0] for status, _, _ in server.app.injected}
    assert statuses == {"503", "500"}, server.app.injected[:5]
    assert len(server.app.injected) >= 5 and server.app.requests > 50
    rows = _check_run(output, ids, endpoint=s3_bucket[0])  # read back through the clean endpoint
    assert all(r["status"] == "ok" for r in rows.values())
    assert fs.exists(f"{bucket}/flaky/shards/00002/stats.json")


def test_disk_full_mid_run_stops_with_a_clear_error_and_keeps_committed_shards(local_ray, tmp_path):
    ids = write_images(tmp_path / "in", 28, seed=7)
    output = tmp_path / "out"
    config = _config(tmp_path / "in", f"faulty://{output}", "stages.relight.sleep_s=0.15")
    run = _Background(config)
    while run.thread.is_alive() and len(_committed_shards(output)) < 2:
        time.sleep(0.05)
    _set_faults(local_ray, write_errno="ENOSPC")  # the disk fills up
    try:
        run.join()
    finally:
        _set_faults(local_ray)
    assert isinstance(run.error, StorageError), repr(run.error)
    message = str(run.error)
    assert message.startswith("no space left on device writing faulty://") and "\n" not in message
    committed = _committed_files(output)
    assert 2 <= len(_committed_shards(output)) < 7

    summary = driver.run(config, registry_for(config), progress=False)  # space freed: resume
    assert summary.shards_skipped == len(_committed_shards(output)) - summary.shards_committed
    after = _committed_files(output)
    assert {path: after.get(path) for path in committed} == committed
    rows = _check_run(str(output), ids)
    assert all(r["status"] == "ok" for r in rows.values())


def test_permission_denied_on_the_output_is_one_line(tmp_path):
    write_images(tmp_path / "in", 2)
    faults_file = tmp_path / "faults.json"
    faults_file.write_text(json.dumps({"write_errno": "EACCES"}))
    result = run_cli(["run", "--profile", "tiny", "--no-progress", "--input", str(tmp_path / "in"), "--output",
                      f"faulty://{tmp_path}/out", STAGES, *PLUGINS], cli_env(**{faults.FAULTS_ENV: str(faults_file)}),
                     check=False, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ffhq-uv: error: permission denied writing faulty://"), lines


def test_a_shard_never_names_files_that_are_not_in_storage(tmp_path):
    storage = open_storage(str(tmp_path / "out"))
    samples = []
    for index, name in enumerate(["kept", "lost", "short", "already_failed"]):
        sample = Sample(id=name, uri=f"/in/{name}.png", shard=0, index=index)
        path = f"shards/00000/samples/{name}/aligned.png"
        data = f"pixels of {name}".encode()
        storage.write_bytes(path, data)
        sample.outputs["aligned"] = OutputFile.for_data(path, data)
        samples.append(sample)
    os.remove(storage.full_path("shards/00000/samples/lost/aligned.png"))  # acknowledged, then gone
    Path(storage.full_path("shards/00000/samples/short/aligned.png")).write_bytes(b"pix")  # cut short
    os.remove(storage.full_path("shards/00000/samples/already_failed/aligned.png"))
    samples[3].status, samples[3].failed_stage, samples[3].error_code = "failed", "relight", "no_face"

    stats = commit.commit_shard(storage, 0, samples, revision=0, fingerprint="f")
    rows = {r["id"]: r for r in read_manifest(storage).to_pylist()}
    assert rows["kept"]["status"] == "ok" and dict(rows["kept"]["outputs"]).keys() == {"aligned"}
    for name in ("lost", "short"):
        assert (rows[name]["status"], rows[name]["failed_stage"], rows[name]["error_code"]) == \
            ("failed", "commit", "output_missing")
        assert not rows[name]["outputs"] and f"samples/{name}/aligned.png" in rows[name]["error_message"]
    assert rows["already_failed"]["error_code"] == "no_face" and not rows["already_failed"]["outputs"]
    assert stats["error_counts"] == {"output_missing": 2, "no_face": 1}


def test_killed_driver_resumes_with_committed_shards_byte_identical(tmp_path):
    ids = write_images(tmp_path / "in", 21, seed=8)
    output = tmp_path / "out"
    args = ["run", "--profile", "tiny", "--no-progress", "--input", str(tmp_path / "in"), "--output", str(output),
            STAGES, *PLUGINS, "shard_size=3", "stages.relight.sleep_s=0.15"]
    process = subprocess.Popen(CLI + args, env=cli_env(), start_new_session=True, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(_committed_shards(output)) < 2 or not faults.stage_worker_processes(process.pid):
        assert process.poll() is None, "the run finished before it could be killed"
        assert time.time() < deadline, "no shard was committed in time"
        time.sleep(0.05)
    kill_process_group(process)  # SIGKILL the driver and its local Ray: no cleanup runs
    committed = _committed_files(output)
    committed_shards = _committed_shards(output)
    assert 2 <= len(committed_shards) < 7

    result = run_cli(args, cli_env())
    after = _committed_files(output)
    assert {path: after.get(path) for path in committed} == committed
    assert len(_committed_shards(output)) == 7
    rows = _check_run(str(output), ids)
    assert all(r["status"] == "ok" for r in rows.values())
    resumed = re.search(r"(\d+) shards committed \((\d+) already done\)", result.stdout)
    assert resumed and (int(resumed[1]), int(resumed[2])) == (7 - len(committed_shards), len(committed_shards))
