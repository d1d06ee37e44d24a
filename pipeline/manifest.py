"""The manifest: one Parquet row per input sample, success or failure.

Schema version ``MANIFEST_VERSION`` (recorded in every shard's stats.json and in the
Parquet metadata). Core columns:

| column | type | meaning |
|---|---|---|
| id | string | sample id (file stem by default) |
| source_uri | string | where the input came from |
| shard | int32 | shard number |
| input_index | int64 | position in the sorted input listing |
| status | string | ``ok``, ``failed`` or ``filtered`` |
| failed_stage | string | stage that failed the sample (``input`` for listing problems) |
| error_code | string | stable snake_case code (README "Error codes") |
| error_message | string | one line for humans |
| filter_reason | string | why a quality threshold filtered the sample |
| stage_seconds | struct<stage: double> | wall seconds per stage; null where a stage did not run |
| outputs | map<string, struct<path, sha256, bytes>> | files written, paths relative to the run root |
| stage_node_id | struct<stage: string> | Ray node id (hex) of the actor that ran each stage |
| stage_gpu_ids | struct<stage: list<int32>> | ids of the GPUs Ray reserved for that actor (empty on CPU) |

Then the columns each stage declares in ``Stage.manifest_fields`` (prefixed with the
stage name), for every registered stage, null where the stage did not run. The
full list is printed by ``ffhq-uv schema``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pyarrow.fs import FSSpecHandler, LocalFileSystem, PyFileSystem

from pipeline import layout
from pipeline.storage import Storage
from stages import STAGES, StageRegistry
from stages.base import Sample

MANIFEST_VERSION = 2  # 2: stage_node_id, stage_gpu_ids

OUTPUT_FILE_TYPE = pa.struct([("path", pa.string()), ("sha256", pa.string()), ("bytes", pa.int64())])


def core_fields(registry: StageRegistry = STAGES) -> list[pa.Field]:
    """Columns every manifest has, whatever stages ran (``stage_seconds`` has one entry per registered stage)."""
    return [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string()),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("input_index", pa.int64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("failed_stage", pa.string()),
        pa.field("error_code", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("filter_reason", pa.string()),
        pa.field("stage_seconds", pa.struct([(name, pa.float64()) for name in registry.names])),
        pa.field("outputs", pa.map_(pa.string(), OUTPUT_FILE_TYPE)),
        pa.field("stage_node_id", pa.struct([(name, pa.string()) for name in registry.names])),
        pa.field("stage_gpu_ids", pa.struct([(name, pa.list_(pa.int32())) for name in registry.names])),
    ]


def manifest_schema(registry: StageRegistry = STAGES) -> pa.Schema:
    """Core columns plus the declared columns of every registered stage."""
    fields = core_fields(registry)
    seen = {f.name for f in fields}
    for name in registry.names:
        for stage_field in registry.stage_class(name).manifest_fields:
            if stage_field.name in seen:
                raise ValueError(f"manifest column {stage_field.name!r} declared twice (stage {name})")
            seen.add(stage_field.name)
            fields.append(stage_field)
    return pa.schema(fields, metadata={"ffhq_uv_manifest_version": str(MANIFEST_VERSION)})


def _cell(value: Any, arrow_type: pa.DataType) -> Any:
    """A sample field value -> something pyarrow accepts for ``arrow_type``."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return value.reshape(-1).tolist() if pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(
            arrow_type) else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def samples_to_table(samples: Iterable[Sample], registry: StageRegistry = STAGES) -> pa.Table:
    """Build a manifest table (sorted by input index) from finished samples."""
    schema = manifest_schema(registry)
    core = {f.name for f in core_fields(registry)}
    columns: dict[str, list[Any]] = {f.name: [] for f in schema}
    for sample in sorted(samples, key=lambda s: s.index):
        row = {
            "id": sample.id, "source_uri": sample.uri, "shard": sample.shard, "input_index": sample.index,
            "status": sample.status, "failed_stage": sample.failed_stage, "error_code": sample.error_code,
            "error_message": sample.error_message, "filter_reason": sample.filter_reason,
            "stage_seconds": {name: sample.stage_seconds.get(name) for name in registry.names},
            "outputs": [(name, {"path": o.path, "sha256": o.sha256, "bytes": o.bytes})
                        for name, o in sorted(sample.outputs.items())],
            "stage_node_id": {name: sample.stage_nodes.get(name) for name in registry.names},
            "stage_gpu_ids": {name: sample.stage_gpus.get(name) for name in registry.names},
        }
        for stage_field in schema:
            name = stage_field.name
            value = row[name] if name in core else _cell(sample.fields.get(name), stage_field.type)
            columns[name].append(value)
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def table_to_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def committed_shards(storage: Storage) -> dict[int, dict[str, Any]]:
    """Shard number -> its stats.json, for every committed shard."""
    result = {}
    for path in storage.glob(f"{layout.SHARDS}/*/stats.json"):
        stats = json.loads(storage.read_bytes(path))
        result[int(stats["shard"])] = stats
    return result


def manifest_dataset(storage: Storage, shards: Optional[dict[int, dict[str, Any]]] = None) -> pads.Dataset:
    """All committed manifests as one lazily-read pyarrow dataset (local or object storage)."""
    shards = committed_shards(storage) if shards is None else shards
    files = [storage.full_path(stats["manifest"]) for _, stats in sorted(shards.items())]
    # Local runs use Arrow's native filesystem: a Python fsspec handler called from Arrow's I/O
    # threads can abort the interpreter at exit ("terminate called without an active exception").
    filesystem = LocalFileSystem() if storage.is_local else PyFileSystem(FSSpecHandler(storage.fs))
    # The schema comes from the files themselves (every shard of a run is written with
    # the same one), so a reader needs no stage code to query a run.
    return pads.dataset(files, format="parquet", filesystem=filesystem)


def read_manifest(output: str | Storage, columns: Optional[list[str]] = None) -> pa.Table:
    """Every committed manifest row of a run as one table."""
    from pipeline.storage import open_storage

    storage = output if isinstance(output, Storage) else open_storage(output)
    return manifest_dataset(storage).to_table(columns=columns)
