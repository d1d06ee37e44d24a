"""Export as WebDataset tar shards: ``shard-000000.tar``, ... of ``--shard-size`` samples (default 1,000).

Each sample is two members sharing a key (the sample id; WebDataset splits a key at its first dot, so
dots become underscores): ``<key>.png``, the final UV map as the run wrote it, and ``<key>.json``, its
metadata (id, FFHQ index, gender, age, beard, status, the 17-dim condition, the quality metrics). A shard
is built in a local temporary file and uploaded whole, so a destination never holds half a shard; members
carry fixed times and owners, so the same run gives byte-identical shards.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile

from pipeline.export.common import ExportSummary, Selection, open_destination, sample_meta
from pipeline.layout import safe_component
from pipeline.run_samples import RunSample
from pipeline.storage import Storage


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


def sample_key(sample_id: str) -> str:
    return safe_component(sample_id).replace(".", "_")


def sample_json(sample: RunSample) -> bytes:
    record = {"id": sample.id, **sample_meta(sample),
              "attribute": None if sample.attribute is None else [float(v) for v in sample.attribute],
              **{name: value for name, value in sample.quality.items()}}
    return json.dumps(record, sort_keys=True).encode()


def export(source: Storage, dest_url: str, options, storage_options: dict):
    selection = Selection(source, options.include_filtered)
    dest, state = open_destination(dest_url, options, selection, storage_options)
    summary = ExportSummary(dest=dest.root_url, samples=len(selection.ids))
    for number, unit in selection.units(options.shard_size):
        summary.units += 1
        name = shard_name(number)
        if state.is_done(name) or dest.exists(name):  # uploads are whole: a shard that is there is complete
            if not state.is_done(name):
                state.mark_done(name, {"shard": name, "samples": len(unit), "first": unit[0][1].id})
            summary.units_skipped += 1
            continue
        handle, tmp = tempfile.mkstemp(suffix=".tar")
        os.close(handle)
        try:
            with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                for _, sample in unit:
                    key = sample_key(sample.id)
                    _add(tar, f"{key}.png", source.read_bytes(sample.uv_path))
                    _add(tar, f"{key}.json", sample_json(sample))
            dest.put_file(name, tmp)
        finally:
            os.unlink(tmp)
        summary.files_written += 1
        state.mark_done(name, {"shard": name, "samples": len(unit), "first": unit[0][1].id})
    return summary


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
    tar.addfile(info, io.BytesIO(data))
