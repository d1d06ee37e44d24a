"""Where things live inside a run's output root (all paths relative to it).

    run.json                      run metadata: config hash, code version, input fingerprint
    config.yaml                   the resolved config (secrets redacted)
    plan.parquet                  the sorted input listing with shard assignment
    progress.json                 the running driver's heartbeat (``ffhq-uv status``)
    report.html                   the static HTML report written at the end of ``ffhq-uv run``
    inputs/                       copies of built-in input samples (``builtin:samples``)
    logs/                         driver logs
    shards/00042/stats.json       completion marker, written last; names the manifest file
    shards/00042/manifest-<n>.parquet
    shards/00042/samples/<id>/    the sample's files (UV map, views, ...)
"""

from __future__ import annotations

import hashlib
import re

RUN_JSON = "run.json"
CONFIG_YAML = "config.yaml"
PLAN = "plan.parquet"
PROGRESS_JSON = "progress.json"
REPORT_HTML = "report.html"
INPUTS = "inputs"
LOGS = "logs"
SHARDS = "shards"
SHARD_DIGITS = 5  # 00000..99999 shards; FFHQ at 1000/shard needs 70

_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def shard_name(shard: int) -> str:
    return f"{shard:0{SHARD_DIGITS}d}"


def shard_dir(shard: int) -> str:
    return f"{SHARDS}/{shard_name(shard)}"


def stats_path(shard: int) -> str:
    return f"{shard_dir(shard)}/stats.json"


def manifest_path(shard: int, revision: int) -> str:
    return f"{shard_dir(shard)}/manifest-{revision}.parquet"


def safe_component(sample_id: str) -> str:
    """A path component for a sample id that can never escape its folder.

    Plain ids (``01223``) are kept as they are; anything else (``../x``, unicode,
    slashes) becomes a slug plus a short hash, so distinct ids stay distinct.
    """
    if _SAFE_COMPONENT.match(sample_id) and ".." not in sample_id:
        return sample_id
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", sample_id).strip("_")[:60] or "id"
    digest = hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:12]
    return f"{slug}-{digest}"


def sample_dir(shard: int, sample_id: str) -> str:
    return f"{shard_dir(shard)}/samples/{safe_component(sample_id)}"
