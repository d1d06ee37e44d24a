"""The pipeline core on a real local Ray with test-double stages: rows, files, resume, retry, S3."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.manifest import read_manifest
from pipeline.storage import open_storage
from tests.conftest import CLI, cli_env, kill_process_group, run_cli, write_images
from tests.doubles import PLUGINS

STAGES = "stages.enabled=[attribute,relight,complete]"


def _manifest(output: str, endpoint: str | None = None) -> list[dict]:
    options = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    return read_manifest(open_storage(output, options)).to_pylist()


def _stats_bytes(output: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(output.glob("shards/*/stats.json"))}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """51 inputs (50 images + 1 corrupt file), shard size 8, one sample told to fail."""
    root = tmp_path_factory.mktemp("core")
    ids = write_images(root / "in", 50)
    (root / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    output = root / "out"
    args = ["run", "--profile", "tiny", "--no-progress", "--input", str(root / "in"), "--output", str(output),
            STAGES, *PLUGINS, "shard_size=8", "stages.relight.fail_ids=[img_017]"]
    result = run_cli(args, cli_env())
    return {"root": root, "ids": ids, "output": output, "args": args, "stdout": result.stdout}


def test_every_row_and_file_is_accounted_for(finished_run):
    output: Path = finished_run["output"]
    rows = _manifest(str(output))
    assert sorted(r["id"] for r in rows) == sorted(finished_run["ids"] + ["broken"])
    assert sorted(r["input_index"] for r in rows) == list(range(51))
    by_id = {r["id"]: r for r in rows}

    broken = by_id["broken"]
    assert (broken["status"], broken["failed_stage"], broken["error_code"]) == ("failed", "attribute", "not_an_image")
    failed = by_id["img_017"]
    assert (failed["status"], failed["failed_stage"], failed["error_code"]) == ("failed", "relight", "test_failure")
    assert failed["stage_seconds"]["complete"] is None  # later stages skip a failed sample
    assert dict(failed["outputs"]).keys() == {"aligned"}  # the first stage's file is kept

    for sample_id in finished_run["ids"]:
        if sample_id == "img_017":
            continue
        row = by_id[sample_id]
        assert row["status"] == "ok", row
        assert row["attribute_size"] == [80, 96]
        assert all(row["stage_seconds"][s] >= 0 for s in ("attribute", "relight", "complete"))
        outputs = dict(row["outputs"])
        assert outputs.keys() == {"aligned", "relit_front"}
        # The second stage read the first one's file and wrote its negative: checked on the files themselves.
        thumbnail = np.asarray(Image.open(output / outputs["aligned"]["path"]), dtype=np.float64)
        negative = np.asarray(Image.open(output / outputs["relit_front"]["path"]), dtype=np.float64)
        assert np.array_equal(negative, 255 - thumbnail)
        assert row["relight_mean"] == pytest.approx(negative.mean())
        for record in outputs.values():
            data = (output / record["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == record["sha256"] and len(data) == record["bytes"]
            assert record["path"].startswith(f"shards/{row['shard']:05d}/samples/{sample_id}/")

    # Shards: sorted ids cut into 8s; stats.json counts agree with the manifest.
    assert sorted(p.name for p in (output / "shards").iterdir()) == [f"{i:05d}" for i in range(7)]
    for shard_dir in (output / "shards").iterdir():
        stats = json.loads((shard_dir / "stats.json").read_text())
        table = pq.read_table(output / stats["manifest"])
        assert stats["num_samples"] == table.num_rows == (8 if stats["shard"] < 6 else 3)
        assert sum(stats["status_counts"].values()) == table.num_rows
    run_meta = json.loads((output / "run.json").read_text())
    assert run_meta["num_samples"] == 51 and run_meta["shard_size"] == 8
    saved = (output / "config.yaml").read_text()
    assert "shard_size: 8" in saved and "img_017" in saved
    assert list((output / "logs").glob("driver-*.log"))
    assert "49 ok, 2 failed" in finished_run["stdout"]


def test_status_failed_and_query(finished_run):
    output = str(finished_run["output"])
    status = run_cli(["status", output]).stdout
    assert "7 done, 0 partial, 0 pending" in status
    assert "49 ok, 2 failed, 0 filtered" in status
    assert "not_an_image" in status and "test_failure" in status

    failed = run_cli(["failed", output]).stdout.splitlines()
    assert len(failed) == 3  # header + 2 rows
    assert "broken" in failed[1] and "not_an_image" in failed[1]
    assert "img_017" in failed[2] and "relight" in failed[2]

    query = run_cli(["query", output, "SELECT status, count(*) AS n FROM manifest GROUP BY status ORDER BY status",
                     "--format", "json"]).stdout
    assert json.loads(query) == [{"status": "failed", "n": 2}, {"status": "ok", "n": 49}]
    paths = json.loads(run_cli(["query", output, "SELECT outputs['relit_front'].path AS p FROM manifest "
                                "WHERE id = 'img_003'", "--format", "json"]).stdout)
    assert paths == [{"p": "shards/00000/samples/img_003/relit_front.png"}]
    # A wrong column is a user's mistake: one line with DuckDB's hint (its candidates) and where the columns are.
    wrong = run_cli(["query", output, "SELECT sample_id FROM manifest"], check=False)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    assert '"sample_id" not found' in wrong.stderr and "Candidate bindings" in wrong.stderr
    assert "DESCRIBE manifest" in wrong.stderr
    columns = json.loads(run_cli(["query", output, "DESCRIBE manifest", "--format", "json"]).stdout)
    assert {"id", "status", "error_code"} <= {row["column_name"] for row in columns}


def test_rerun_is_a_no_op_and_changed_sharding_is_refused(finished_run):
    output: Path = finished_run["output"]
    before = _stats_bytes(output)
    again = run_cli(finished_run["args"], cli_env()).stdout
    assert "0 samples processed, 0 shards committed (7 already done)" in again
    assert _stats_bytes(output) == before

    changed = [a if not a.startswith("shard_size=") else "shard_size=5" for a in finished_run["args"]]
    refused = run_cli(changed, cli_env(), check=False)
    assert refused.returncode == 2
    assert "different shard_size 8 -> 5" in refused.stderr and "Traceback" not in refused.stderr
    assert _stats_bytes(output) == before


def test_retry_failed_fixes_only_failed_samples(finished_run, tmp_path):
    # Work on a copy so the other tests keep their run.
    import shutil

    output = tmp_path / "out"
    shutil.copytree(finished_run["output"], output)
    before = _stats_bytes(output)
    result = run_cli(["retry-failed", str(output), "stages.relight.fail_ids=[]", "--no-progress"], cli_env())
    assert "2 samples processed" in result.stdout
    after = _stats_bytes(output)
    rows = {r["id"]: r for r in _manifest(str(output))}
    assert rows["img_017"]["status"] == "ok" and rows["img_017"]["error_code"] is None
    assert rows["broken"]["error_code"] == "not_an_image"  # still broken
    assert len(rows) == 51
    changed = {shard for shard in before if before[shard] != after[shard]}
    assert changed == {"00000", "00002"}  # broken sorts first; img_017 is in shard 2
    stats = json.loads(after["00002"])
    assert stats["revision"] == 1 and stats["manifest"].endswith("manifest-1.parquet")
    assert not (output / "shards/00002/manifest-0.parquet").exists()


def test_killed_driver_resumes_without_loss_or_duplicates(tmp_path):
    ids = write_images(tmp_path / "in", 40, seed=1)
    output = tmp_path / "out"
    args = ["run", "--profile", "tiny", "--no-progress", "--input", str(tmp_path / "in"), "--output", str(output),
            STAGES, *PLUGINS, "shard_size=4", "stages.attribute.sleep_s=0.3"]
    process = subprocess.Popen(CLI + args, env=cli_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).parents[1])
    deadline = time.time() + 240
    while len(list(output.glob("shards/*/stats.json"))) < 3 or not (output / "progress.json").exists():
        assert process.poll() is None, "the run finished before it could be killed"
        assert time.time() < deadline, "no shard was committed in time"
        time.sleep(0.2)
    live = run_cli(["status", str(output)]).stdout  # while the driver is alive: throughput and ETA
    assert re.search(r"running +[0-9.]+ samples/s, ETA \d+m\d+s", live), live
    assert re.search(r"stages +attribute [0-9.]+/s \| relight [0-9.]+/s \| complete [0-9.]+/s \| slowest: attribute",
                     live), live
    kill_process_group(process)  # SIGKILL: no cleanup handlers run
    committed = _stats_bytes(output)
    assert 3 <= len(committed) < 10

    run_cli(args, cli_env())
    after = _stats_bytes(output)
    assert len(after) == 10
    assert {k: after[k] for k in committed} == committed
    rows = _manifest(str(output))
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert all(r["status"] == "ok" for r in rows)


def test_s3_input_and_output(s3_bucket, tmp_path):
    endpoint, bucket, fs = s3_bucket
    ids = write_images(tmp_path / "in", 12, seed=2)
    fs.put(str(tmp_path / "in") + "/", f"{bucket}/inputs/", recursive=True)
    output = f"s3://{bucket}/runs/one"
    run_cli(["run", "--profile", "tiny", "--no-progress", "--input", f"s3://{bucket}/inputs", "--output", output,
             STAGES, *PLUGINS, "shard_size=5", f"storage.endpoint_url={endpoint}"], cli_env())
    rows = _manifest(output, endpoint)
    assert sorted(r["id"] for r in rows) == ids
    for row in rows:
        assert row["status"] == "ok" and row["source_uri"].startswith(f"s3://{bucket}/inputs/")
        for record in dict(row["outputs"]).values():
            data = fs.cat_file(f"{bucket}/runs/one/{record['path']}")
            assert hashlib.sha256(data).hexdigest() == record["sha256"]
    assert fs.exists(f"{bucket}/runs/one/shards/00002/stats.json")
    status = run_cli(["status", output, "--endpoint-url", endpoint]).stdout
    assert "3 done, 0 partial, 0 pending" in status and "12 ok" in status
    count = run_cli(["query", output, "SELECT count(*) AS n FROM manifest", "--endpoint-url", endpoint,
                     "--format", "csv"]).stdout
    assert count.split() == ["\"n\"", "12"]
