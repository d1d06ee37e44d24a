"""The driver: ``run`` and ``retry-failed`` as three steps, each in its own module.

1. planning (``pipeline.planning``): list the inputs, cut them into shards, compare
   with what an earlier invocation committed (resume), save the run's metadata;
2. streaming (``pipeline.streaming``): the pending samples through the stages' actor
   pools on Ray, regrouped by shard as they come back;
3. the commit protocol (``pipeline.commit``): each complete shard's files checked,
   its manifest written, its completion marker last.

Before any of it, the start-up checks (``pipeline.preflight``) refuse a run that
could only fail, and nothing is written.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from pipeline import layout
from pipeline.cluster_checks import check_paths
from pipeline.commit import commit_shard, rewrite_shard, run_totals
from pipeline.config import enabled_stages, redact_text
from pipeline.manifest import committed_shards
from pipeline.planning import by_shard, failed_samples_plan, pending_shards, plan_run
from pipeline.preflight import check_run
from pipeline.runner import storage_for
from pipeline.storage import Storage
from pipeline.streaming import init_ray, stream_samples
from stages import StageRegistry
from stages.base import Sample

log = logging.getLogger("ffhq_uv")


@dataclass
class RunSummary:
    output: str
    shards_total: int = 0
    shards_skipped: int = 0  # already committed before this invocation
    shards_committed: int = 0  # committed by this invocation
    samples_processed: int = 0  # samples run through the stages by this invocation
    status_counts: dict[str, int] = field(default_factory=dict)  # whole run, after this invocation
    error_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0



def run(config: DictConfig, registry: StageRegistry, restart: bool = False, progress: bool = True) -> RunSummary:
    """Run (or resume) the pipeline described by ``config`` with the stages of ``registry``; returns a summary."""
    started = time.time()
    check_run(config, registry)  # before anything is written: a refused run leaves no run folder
    storage = storage_for(config)
    cluster_note = _join_cluster(config)
    storage.check_writable()
    with _run_log(storage):
        if cluster_note:
            log.info(cluster_note)
        plan = plan_run(config, storage, restart)
        pending, done = pending_shards(storage, plan)
        log.info("run %s: %d samples in %d shards; %d committed, %d to do; stages: %s", storage.root_url,
                 plan.num_samples, plan.num_shards, len(done), len(pending), ", ".join(enabled_stages(config)))
        summary = RunSummary(output=storage.root_url, shards_total=plan.num_shards, shards_skipped=len(done))

        def on_shard_done(shard: int, samples: list[Sample]) -> None:
            commit_shard(storage, shard, samples, revision=0, fingerprint=plan.fingerprint, registry=registry)
            summary.shards_committed += 1
            log.info("committed shard %s (%d samples)", layout.shard_name(shard), len(samples))

        shard_tables = {shard: plan.shard_table(shard) for shard in pending}
        summary.samples_processed = stream_samples(config, registry, storage, shard_tables, on_shard_done, progress)
        return _finish(storage, summary, started)


def retry_failed(config: DictConfig, registry: StageRegistry, error_codes: Optional[list[str]] = None,
                 progress: bool = True) -> RunSummary:
    """Re-run only the failed samples of a run and rewrite their shards (marker last)."""
    started = time.time()
    check_run(config, registry)
    storage = storage_for(config)
    _join_cluster(config)
    with _run_log(storage):
        run_meta = json.loads(storage.read_bytes(layout.RUN_JSON))
        shards = committed_shards(storage)
        failed = failed_samples_plan(storage, shards, error_codes)
        shard_tables = by_shard(failed)
        log.info("retrying %d failed samples in %d shards", failed.num_rows, len(shard_tables))
        summary = RunSummary(output=storage.root_url, shards_total=run_meta["num_shards"])

        def on_shard_done(shard: int, retried: list[Sample]) -> None:
            rewrite_shard(storage, shard, retried, shards[shard], run_meta["input_fingerprint"], registry)
            summary.shards_committed += 1
            log.info("rewrote shard %s (%d retried)", layout.shard_name(shard), len(retried))

        summary.samples_processed = stream_samples(config, registry, storage, shard_tables, on_shard_done, progress)
        return _finish(storage, summary, started)


def _join_cluster(config: DictConfig) -> Optional[str]:
    """On a cluster (``ray.address``), join it now and check its paths before anything is written."""
    if not config.ray.address:
        return None
    init_ray(config)
    return check_paths(config)


def _finish(storage: Storage, summary: RunSummary, started: float) -> RunSummary:
    summary.seconds = time.time() - started
    summary.status_counts, summary.error_counts = run_totals(storage)
    return summary


class _run_log:
    """Log to ``logs/driver-<time>.log`` in the run folder for the duration of a command.

    On a local disk the file is written as the run goes (it survives a killed
    driver); on object storage it is uploaded when the command ends.
    """

    def __init__(self, storage: Storage):
        self.storage = storage
        self.name = f"{layout.LOGS}/driver-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}.log"

    def __enter__(self) -> _run_log:
        if self.storage.is_local:
            self.path = self.storage.full_path(self.name)
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        else:
            handle, self.path = tempfile.mkstemp(suffix=".log")
            os.close(handle)
        self.handler = logging.FileHandler(self.path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.handler.addFilter(_RedactFilter())
        self.handler.setLevel(logging.INFO)
        root = logging.getLogger()
        root.addHandler(self.handler)
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)
            for handler in root.handlers:  # keep the terminal as quiet as it was
                if handler is not self.handler and handler.level == logging.NOTSET:
                    handler.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
        if not self.storage.is_local:
            try:
                self.storage.write_bytes(self.name, Path(self.path).read_bytes())
            except Exception as error:  # noqa: BLE001 - never hide the error that ended the command
                if exc[1] is None:
                    raise
                log.warning("could not upload the driver log %s: %s", self.name, error)
            finally:
                os.unlink(self.path)


class _RedactFilter(logging.Filter):
    """Strip user:password@ from URLs in log records before they reach the run log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True

