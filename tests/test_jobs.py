"""``ffhq-uv submit / logs / stop / jobs`` against a real local Ray head node (Ray Jobs API).

The head node runs as ``ray start --head --block`` in its own process session on
127.0.0.1 with free ports, so that it never touches another Ray instance on the
machine; the test ends it by its own process group (which is what ``ray stop``
would do to it, without stopping anybody else's Ray).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import jobs
from pipeline.manifest import read_manifest
from tests.conftest import cli_env, free_port, kill_process_group, run_cli, write_images
from tests.doubles import PLUGINS

STAGES = "stages.enabled=[attribute,relight,complete]"
HEAD_START_TIMEOUT_S = 120


def _job_env(address: str) -> dict[str, str]:
    return cli_env(RAY_AUTH_MODE="disabled", RAY_ADDRESS=address)


@pytest.fixture(scope="module")
def head_node(tmp_path_factory):
    """A Ray head node on 127.0.0.1 with a dashboard on a free port; yields its dashboard URL."""
    temp_dir = tmp_path_factory.mktemp("rayhead")
    ports = [free_port() for _ in range(9)]
    # As from an activated virtualenv: the job's `python` is the one this project is installed in.
    bin_dir = str(Path(sys.executable).parent)
    env = cli_env(RAY_AUTH_MODE="disabled", PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    ray_cli = str(Path(bin_dir) / "ray")
    command = [ray_cli, "start", "--head", "--block", "--num-cpus=2", "--node-ip-address=127.0.0.1",
               "--dashboard-host=127.0.0.1", "--disable-usage-stats", "--include-dashboard=true",
               f"--temp-dir={temp_dir}", f"--port={ports[0]}", f"--dashboard-port={ports[1]}",
               f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
               f"--ray-client-server-port={ports[4]}", f"--metrics-export-port={ports[5]}",
               f"--runtime-env-agent-port={ports[6]}", f"--node-manager-port={ports[7]}",
               f"--object-manager-port={ports[8]}"]
    log = open(temp_dir / "head.log", "w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports[1]}"
    try:
        _wait_for_dashboard(address, process, temp_dir / "head.log")
        yield address
    finally:
        # SIGTERM lets `ray start --block` shut its node down; then make sure nothing of it is left.
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        kill_process_group(process)
        log.close()


def _wait_for_dashboard(address: str, process: subprocess.Popen, log: Path) -> None:
    os.environ.pop("RAY_ADDRESS", None)
    deadline = time.monotonic() + HEAD_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"ray start exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            os.environ["RAY_AUTH_MODE"] = "disabled"
            jobs.client(address).list_jobs()
            return
        except Exception:  # noqa: BLE001 - the dashboard is not up yet
            time.sleep(1)
    raise AssertionError(f"the dashboard at {address} did not come up:\n{log.read_text()[-3000:]}")


def test_submit_wait_logs_and_outputs(head_node, tmp_path):
    ids = write_images(tmp_path / "in", 6)
    output = tmp_path / "out"
    env = _job_env(head_node)
    result = run_cli(["submit", "--address", head_node, "--profile", "tiny", "--input", str(tmp_path / "in"),
                      "--output", str(output), STAGES, *PLUGINS, "shard_size=4", "stages.relight.fail_ids=[img_002]",
                      "--job-id", "ffhq-uv-test-ok", "--wait"], env)
    assert "submitted ffhq-uv-test-ok" in result.stdout
    assert "job ffhq-uv-test-ok SUCCEEDED" in result.stdout

    # The job wrote a complete run where the head node can see it.
    rows = {r["id"]: r for r in read_manifest(str(output)).to_pylist()}
    assert sorted(rows) == ids
    assert rows["img_002"]["status"] == "failed" and rows["img_002"]["error_code"] == "test_failure"
    assert all(rows[i]["status"] == "ok" for i in ids if i != "img_002")
    assert sorted(p.name for p in (output / "shards").iterdir()) == ["00000", "00001"]
    for row in rows.values():
        for record in dict(row["outputs"]).values():
            assert (output / record["path"]).stat().st_size == record["bytes"]

    # Its driver output: the progress line with per-stage rates, then the run summary.
    logs = run_cli(["logs", "ffhq-uv-test-ok", "--address", head_node], env).stdout
    assert "run total: 5 ok, 1 failed, 0 filtered" in logs
    progress_lines = [line for line in logs.splitlines() if line.startswith("ffhq-uv 6/6")]
    assert progress_lines and "slowest: " in progress_lines[-1], logs[-2000:]
    for stage in ("attribute", "relight", "complete"):
        assert f"{stage} " in progress_lines[-1]

    followed = run_cli(["logs", "ffhq-uv-test-ok", "--follow", "--address", head_node], env).stdout
    assert "run total: 5 ok, 1 failed, 0 filtered" in followed  # a finished job's log streams to its end

    listing = run_cli(["jobs", "--address", head_node], env).stdout
    assert any(line.startswith("ffhq-uv-test-ok  SUCCEEDED") and str(output) in line for line in listing.splitlines())


def test_stop_a_running_job_then_resume(head_node, tmp_path):
    write_images(tmp_path / "in", 4)
    output = tmp_path / "out"
    env = _job_env(head_node)
    slow = ["--input", str(tmp_path / "in"), "--output", str(output), STAGES, *PLUGINS, "shard_size=2",
            "stages.attribute.sleep_s=3"]
    run_cli(["submit", "--address", head_node, "--profile", "tiny", *slow, "--job-id", "ffhq-uv-test-stop"], env)
    deadline = time.monotonic() + 120
    while jobs.status(head_node, "ffhq-uv-test-stop") != "RUNNING":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.5)
    stopped = run_cli(["stop", "ffhq-uv-test-stop", "--address", head_node, "--wait"], env).stdout
    assert "ffhq-uv-test-stop stop requested: STOPPED" in stopped
    assert jobs.status(head_node, "ffhq-uv-test-stop") == "STOPPED"
    done_before = len(list(output.glob("shards/*/stats.json")))
    assert done_before < 2

    # Submitting the same run again resumes it to completion.
    run_cli(["submit", "--address", head_node, "--profile", "tiny", *slow, "stages.attribute.sleep_s=0",
             "--job-id", "ffhq-uv-test-resume", "--wait"], env)
    assert len(read_manifest(str(output))) == 4


def test_submit_refuses_bad_configs_before_uploading(head_node, tmp_path):
    env = _job_env(head_node)
    typo = run_cli(["submit", "--address", head_node, "--profile", "tiny", "shard_sise=3"], env, check=False)
    assert typo.returncode == 2 and "unknown config key: shard_sise" in typo.stderr
    relative = run_cli(["submit", "--address", head_node, "--profile", "tiny", "output=runs/x"], env, check=False)
    assert relative.returncode == 2 and "is relative" in relative.stderr
    assert not [j for j in jobs.list_jobs(head_node) if j["output"] == "runs/x"]


def test_config_files_travel_as_overrides(tmp_path):
    config = tmp_path / "extra.yaml"
    config.write_text("shard_size: 3\nname: from-file\noutput: /data/${name}\n"
                      "stages:\n  enabled: [inversion]\n")
    entrypoint, output = jobs.job_entrypoint("tiny", (str(config),), ("shard_size=5",))
    assert output == "/data/from-file"
    assert entrypoint.startswith("python -m pipeline.cli run --profile tiny ")
    assert entrypoint.index("shard_size=3") < entrypoint.index("shard_size=5")  # flags win over files
    assert entrypoint.endswith("ray.address=auto")
    assert "'output=\"${name}\"'" not in entrypoint and "'output=\"/data/${name}\"'" in entrypoint
