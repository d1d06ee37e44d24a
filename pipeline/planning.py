"""Planning a run: the listing and its shards, what an earlier invocation already committed, what to redo.

``plan_run`` lists the inputs, refuses to resume a run whose input set or shard
size changed (that would re-shard it), and saves ``plan.parquet``, ``config.yaml``
and ``run.json``. ``pending_shards`` is the resume step: every shard without a
completion marker (``pipeline.commit``) is redone from scratch, its stale files
deleted. ``failed_samples_plan`` is what ``retry-failed`` re-runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

import pipeline
from pipeline import layout
from pipeline.cluster_checks import check_listed_inputs
from pipeline.config import as_overrides, enabled_stages, load_config, redacted_yaml
from pipeline.inputs import Plan, list_inputs, make_plan
from pipeline.manifest import MANIFEST_VERSION, committed_shards, manifest_dataset, table_to_bytes
from pipeline.runner import DUPLICATE_ID, PLAN_COLUMNS
from pipeline.storage import Storage, endpoint_options, open_storage
from stages.base import Status
from stages.errors import ConfigError


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{pipeline.__version__}+{commit}" if commit else pipeline.__version__


def plan_run(config: DictConfig, storage: Storage, restart: bool) -> Plan:
    """List the inputs, check them against an existing run, and save run metadata."""
    options = endpoint_options(config.storage.endpoint_url)
    pairs = list_inputs(str(config.input.source), str(config.input.format), list(config.input.extensions),
                        storage, options)
    plan = make_plan(pairs, int(config.shard_size), config.input.limit)
    check_listed_inputs(config, plan.table["uri"].to_pylist())  # before anything is written
    if storage.exists(layout.RUN_JSON):
        previous = json.loads(storage.read_bytes(layout.RUN_JSON))
        changed = []
        if previous["shard_size"] != plan.shard_size:
            changed.append(f"shard_size {previous['shard_size']} -> {plan.shard_size}")
        if previous["input_fingerprint"] != plan.fingerprint:
            changed.append(f"input set ({previous['num_samples']} -> {plan.num_samples} samples or different ids)")
        if changed and not restart:
            raise ConfigError(f"{storage.root_url} holds a run with a different {'; '.join(changed)}; resuming "
                              "would re-shard it. Use the same input and shard_size, another output, "
                              "or --restart to delete it and start over")
    if restart:
        for relpath in (layout.SHARDS, layout.PLAN, layout.RUN_JSON, layout.PROGRESS_JSON):
            storage.delete(relpath, recursive=True)
    storage.write_bytes(layout.PLAN, table_to_bytes(plan.table))
    storage.write_bytes(layout.CONFIG_YAML, redacted_yaml(config).encode())
    run_meta = {
        "manifest_version": MANIFEST_VERSION, "code_version": code_version(),
        "input_fingerprint": plan.fingerprint, "shard_size": plan.shard_size,
        "num_samples": plan.num_samples, "num_shards": plan.num_shards,
        "profile": str(config.profile), "stages": enabled_stages(config),
        "config_sha256": hashlib.sha256(redacted_yaml(config).encode()).hexdigest(),
        "updated_at": _now(),
    }
    storage.write_bytes(layout.RUN_JSON, json.dumps(run_meta, indent=2).encode())
    return plan



def pending_shards(storage: Storage, plan: Plan) -> tuple[list[int], dict[int, dict]]:
    """(shards still to do, the committed shards' stats). Stale files of an unfinished shard are deleted."""
    done = committed_shards(storage)
    pending = [shard for shard in range(plan.num_shards) if shard not in done]
    for shard in pending:  # a half-written shard is never reused: its files may predate a crash
        storage.delete(layout.shard_dir(shard), recursive=True)
    return pending, done


def failed_samples_plan(storage: Storage, shards: dict[int, dict], error_codes: Optional[list[str]]) -> pa.Table:
    """Plan rows (``PLAN_COLUMNS``) of the committed samples that failed (optionally with one of ``error_codes``).

    The rows come from ``plan.parquet``, which holds what the input format listed (uri and inputs).
    Duplicate ids are never retried: their failure is the input's.
    """
    condition = (pc.field("status") == Status.FAILED.value) & (pc.field("error_code") != DUPLICATE_ID)
    if error_codes:
        condition = condition & pc.field("error_code").isin(error_codes)
    failed = manifest_dataset(storage, shards).to_table(columns=["input_index"], filter=condition)
    plan = pq.read_table(pa.BufferReader(storage.read_bytes(layout.PLAN)))
    rows = plan.filter(pc.is_in(plan["index"], value_set=failed["input_index"].combine_chunks())).select(PLAN_COLUMNS)
    return rows.set_column(rows.schema.get_field_index("duplicate"), "duplicate", pa.array([False] * rows.num_rows))


def by_shard(rows: pa.Table) -> dict[int, pa.Table]:
    """Plan rows grouped by their shard number."""
    return {shard: rows.filter(pc.equal(rows["shard"], shard)) for shard in sorted(set(rows["shard"].to_pylist()))}


def load_run_config(output: str, overrides: tuple[str, ...] = (), endpoint_url: Optional[str] = None) -> DictConfig:
    """The config saved with a run (plus overrides), to resume or retry it."""
    storage = open_storage(output, endpoint_options(endpoint_url))
    if not storage.exists(layout.CONFIG_YAML):
        raise ConfigError(f"{output} is not a run folder (no {layout.CONFIG_YAML})")
    with tempfile.NamedTemporaryFile("wb", suffix=".yaml", delete=False) as handle:
        handle.write(storage.read_bytes(layout.CONFIG_YAML))
    try:
        saved = OmegaConf.load(handle.name)
    finally:
        os.unlink(handle.name)
    # The run may have been moved or copied since: the folder given is the output.
    pinned = {"output": output, **({"storage": {"endpoint_url": endpoint_url}} if endpoint_url else {})}
    saved_values = _upgraded(OmegaConf.to_container(saved, resolve=True))
    saved_values.pop("profile", None)
    return load_config(str(saved.profile), files=(),
                       overrides=tuple(as_overrides(saved_values) + as_overrides(pinned)) + overrides)


# Settings an earlier version kept elsewhere: (old section, old key) -> (new section, new key).
_MOVED_SETTINGS = {("stages.unwrap", "topology"): ("topology", "name"),
                   ("stages.unwrap", "topology_obj"): ("topology", "obj"),
                   ("stages.unwrap", "cache_dir"): ("topology", "cache_dir")}


def _upgraded(values: dict) -> dict:
    """A saved config with settings that moved since it was written put in their new place."""
    for (old_section, old_key), (new_section, new_key) in _MOVED_SETTINGS.items():
        section = values
        for part in old_section.split("."):
            section = section.get(part) or {}
        if old_key in section:
            values.setdefault(new_section, {})[new_key] = section.pop(old_key)
    return values


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

