"""Operator views of a run: status, failed samples, SQL over the manifest."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import layout
from pipeline.manifest import committed_shards, manifest_dataset
from pipeline.storage import Storage
from stages.errors import FatalError

RUNNING_IF_BEAT_WITHIN_S = 60.0


@dataclass
class RunStatus:
    output: str
    num_samples: int
    num_shards: int
    shards_done: int
    shards_partial: int
    shards_pending: int
    status_counts: dict[str, int] = field(default_factory=dict)
    error_counts: dict[str, int] = field(default_factory=dict)
    running: bool = False
    samples_per_s: Optional[float] = None
    eta_s: Optional[float] = None
    stages: Optional[str] = None  # per-stage throughput and the slowest stage, from the driver

    def render(self) -> str:
        lines = [
            f"run        {self.output}",
            f"samples    {self.num_samples} in {self.num_shards} shards",
            f"shards     {self.shards_done} done, {self.shards_partial} partial, {self.shards_pending} pending",
            "samples    " + ", ".join(f"{self.status_counts.get(k, 0)} {k}" for k in ("ok", "failed", "filtered")),
        ]
        for code, count in sorted(self.error_counts.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"  {count:>7}  {code}")
        if self.running:
            rate = f"{self.samples_per_s:.2f} samples/s" if self.samples_per_s else "starting"
            eta = f", ETA {_duration(self.eta_s)}" if self.eta_s is not None else ""
            lines.append(f"running    {rate}{eta}")
            if self.stages:
                lines.append(f"stages     {self.stages}")
        return "\n".join(lines)


def run_status(storage: Storage) -> RunStatus:
    """Shards done / partial / pending and sample counts, from the run's files."""
    if not storage.exists(layout.RUN_JSON):
        raise FileNotFoundError(f"{storage.root_url} is not a run folder (no {layout.RUN_JSON})")
    meta = json.loads(storage.read_bytes(layout.RUN_JSON))
    done = committed_shards(storage)
    started_dirs = {int(p.split("/")[1]) for p in storage.glob(f"{layout.SHARDS}/*") if p.split("/")[1].isdigit()}
    partial = started_dirs - set(done)
    statuses: Counter = Counter()
    errors: Counter = Counter()
    for stats in done.values():
        statuses.update(stats["status_counts"])
        errors.update(stats["error_counts"])
    status = RunStatus(output=storage.root_url, num_samples=meta["num_samples"], num_shards=meta["num_shards"],
                       shards_done=len(done), shards_partial=len(partial),
                       shards_pending=meta["num_shards"] - len(done) - len(partial),
                       status_counts=dict(statuses), error_counts=dict(errors))
    if storage.exists(layout.PROGRESS_JSON):
        beat = json.loads(storage.read_bytes(layout.PROGRESS_JSON))
        if not beat.get("finished") and time.time() - beat["updated_at"] < RUNNING_IF_BEAT_WITHIN_S:
            status.running = True
            status.samples_per_s = beat.get("samples_per_s")
            status.eta_s = beat.get("eta_s")
            status.stages = beat.get("stages")
    return status


def failed_samples(storage: Storage, include_filtered: bool = False) -> pa.Table:
    """Failed (and optionally filtered) rows: id, shard, stage, code, message."""
    statuses = ["failed", "filtered"] if include_filtered else ["failed"]
    return manifest_dataset(storage).to_table(
        columns=["id", "shard", "status", "failed_stage", "error_code", "error_message", "filter_reason",
                 "source_uri"],
        filter=pc.field("status").isin(statuses)).sort_by([("shard", "ascending"), ("id", "ascending")])


class QueryError(FatalError):
    """SQL that DuckDB refused: a user's mistake, reported on one line with DuckDB's hint."""


def query(storage: Storage, sql: str) -> pa.Table:
    """Run DuckDB SQL over every committed manifest row, exposed as the table ``manifest``.

    The manifests are scanned lazily through pyarrow (local disk or object storage
    alike), so a query that touches a few columns never loads the latents.
    """
    import duckdb

    connection = duckdb.connect()
    connection.register("manifest", manifest_dataset(storage))
    try:
        return connection.sql(sql).to_arrow_table()
    except duckdb.Error as error:
        # DuckDB gives its hint (the candidate columns) on a second line, which a one-line error would drop.
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise QueryError(f"{text} (the manifest's columns: DESCRIBE manifest)") from error


def format_table(table: pa.Table, max_rows: int = 200, max_width: int = 60) -> str:
    """A plain-text rendering of a small table for the terminal."""
    rows = table.slice(0, max_rows).to_pylist()
    names = table.column_names
    cells = [[_short(row[name], max_width) for name in names] for row in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    if table.num_rows > max_rows:
        lines.append(f"... {table.num_rows - max_rows} more rows")
    return "\n".join(lines)


def _short(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
