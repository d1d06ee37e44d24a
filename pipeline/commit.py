"""The commit protocol of a shard (img2dataset / datatrove style, made atomic on object stores).

A shard's manifest is written as ``manifest-<revision>.parquet``, then its
``stats.json``, which names that manifest, is written **last**: it is the shard's
completion marker (datatrove's ``executor/base.py`` has the same pair,
``is_rank_completed`` / ``mark_rank_as_completed``). A shard is done iff its
stats.json exists; readers take the manifest that stats.json names, so a crash at
any point leaves either the old committed shard or an uncommitted one, never a
mix. ``retry-failed`` writes revision n+1 and then swaps stats.json. Before
anything is written, every file the rows name is checked in storage
(``verify_outputs``): a committed manifest never points at a missing file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import layout
from pipeline.manifest import MANIFEST_VERSION, committed_shards, core_fields, samples_to_table, table_to_bytes
from pipeline.planning import code_version
from pipeline.storage import Storage
from stages import STAGES, StageRegistry
from stages.base import OutputFile, Sample, Status

log = logging.getLogger("ffhq_uv")

OUTPUT_MISSING = "output_missing"  # error code: a stage recorded a file that is not in storage at commit


def is_shard_completed(storage: Storage, shard: int) -> bool:
    """Whether ``shard`` is committed: its completion marker (stats.json) exists."""
    return storage.exists(layout.stats_path(shard))


def mark_shard_completed(storage: Storage, shard: int, stats: dict[str, Any]) -> None:
    """Write the shard's stats.json, the completion marker: the last write of a commit."""
    storage.write_bytes(layout.stats_path(shard), json.dumps(stats, indent=2, sort_keys=True).encode())


def commit_shard(storage: Storage, shard: int, samples: list[Sample], revision: int, fingerprint: str,
                 previous_manifest: Optional[str] = None, registry: StageRegistry = STAGES) -> dict:
    """Check the samples' files, write the shard's manifest, then its stats.json (the completion marker) last."""
    verify_outputs(storage, shard, samples)
    table = samples_to_table(samples, registry)
    data = table_to_bytes(table)
    manifest = layout.manifest_path(shard, revision)
    storage.write_bytes(manifest, data)
    statuses = Counter(table["status"].to_pylist())
    errors = Counter(code for code in table["error_code"].to_pylist() if code)
    stage_seconds: dict[str, float] = {}
    for sample in samples:
        for name, seconds in sample.stage_seconds.items():
            stage_seconds[name] = stage_seconds.get(name, 0.0) + seconds
    stats = {
        "shard": shard, "revision": revision, "manifest": manifest,
        "manifest_sha256": hashlib.sha256(data).hexdigest(), "manifest_version": MANIFEST_VERSION,
        "num_samples": table.num_rows, "status_counts": dict(statuses), "error_counts": dict(errors),
        "stage_seconds": stage_seconds, "committed_at": time.time(), "input_fingerprint": fingerprint,
        "code_version": code_version(),
    }
    mark_shard_completed(storage, shard, stats)
    if previous_manifest and previous_manifest != manifest:
        storage.delete(previous_manifest)
    return stats


def verify_outputs(storage: Storage, shard: int, samples: list[Sample]) -> int:
    """Drop output records whose file is not in storage with its recorded size; returns how many.

    One listing of the shard's folder. A sample that lost a file fails with
    ``output_missing`` (unless it had already failed), so a committed manifest
    never points at a file that is not there and ``retry-failed`` can redo it.
    """
    prefix = layout.shard_dir(shard) + "/"
    sizes = storage.file_sizes(layout.shard_dir(shard)) if any(s.outputs for s in samples) else {}
    lost = 0
    for sample in samples:
        missing = sorted(name for name, record in sample.outputs.items()
                         if (sizes.get(record.path) != record.bytes if record.path.startswith(prefix)
                             else not storage.exists(record.path)))
        if not missing:
            continue
        lost += len(missing)
        paths = ", ".join(sample.outputs.pop(name).path for name in missing)
        log.error("sample %s: output file(s) missing or incomplete in storage: %s", sample.id, paths)
        if sample.status != Status.FAILED:
            sample.fail("commit", OUTPUT_MISSING, f"written output file(s) not found in storage: {paths}"[:500])
    return lost



def rewrite_shard(storage: Storage, shard: int, retried: list[Sample], old_stats: dict, fingerprint: str,
                  registry: StageRegistry = STAGES) -> dict:
    """Commit revision n+1 of a committed shard: its old rows, with the ``retried`` samples in their place."""
    old_rows = pq.read_table(pa.BufferReader(storage.read_bytes(old_stats["manifest"]))).to_pylist()
    by_index = {sample.index: sample for sample in retried}
    merged = [by_index.get(row["input_index"]) or sample_from_row(row)
              for row in sorted(old_rows, key=lambda row: row["input_index"])]
    return commit_shard(storage, shard, merged, revision=int(old_stats["revision"]) + 1, fingerprint=fingerprint,
                        previous_manifest=old_stats["manifest"], registry=registry)


def run_totals(storage: Storage) -> tuple[dict[str, int], dict[str, int]]:
    """(samples by status, failed samples by error code) over every committed shard."""
    statuses: Counter = Counter()
    errors: Counter = Counter()
    for stats in committed_shards(storage).values():
        statuses.update(stats["status_counts"])
        errors.update(stats["error_counts"])
    return dict(statuses), dict(errors)


def sample_from_row(row: dict) -> Sample:
    """Rebuild a committed manifest row as a Sample so that it can be written again unchanged."""
    core = {f.name for f in core_fields()}
    return Sample(
        id=row["id"], uri=row["source_uri"], shard=row["shard"], index=row["input_index"],
        fields={k: v for k, v in row.items() if k not in core},
        outputs={name: OutputFile(**record) for name, record in (row["outputs"] or [])},
        status=row["status"], failed_stage=row["failed_stage"], error_code=row["error_code"],
        error_message=row["error_message"], filter_reason=row["filter_reason"],
        stage_seconds={k: v for k, v in (row["stage_seconds"] or {}).items() if v is not None},
        stage_nodes={k: v for k, v in (row.get("stage_node_id") or {}).items() if v is not None},
        stage_gpus={k: v for k, v in (row.get("stage_gpu_ids") or {}).items() if v is not None},
    )

