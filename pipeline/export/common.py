"""What every export format shares: the ordered selection, its units, per-sample metadata."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.export.state import ExportState
from pipeline.run_samples import RunSample, attribute_meta, ffhq_index, iter_run_samples, selection_fingerprint
from pipeline.storage import Storage, open_storage
from stages.errors import ConfigError


@dataclass
class ExportSummary:
    dest: str
    samples: int = 0  # samples in the export
    units: int = 0  # clips / image groups / shards
    units_skipped: int = 0  # finished by an earlier invocation
    files_written: int = 0  # by this invocation
    seconds: float = 0.0

    def render(self) -> str:
        rate = self.samples / self.seconds if self.seconds > 0 else 0.0
        return (f"exported {self.samples} samples to {self.dest} in {self.seconds:.1f}s ({rate:.1f} samples/s): "
                f"{self.units} units, {self.units_skipped} already done, {self.files_written} files written")



class Selection:
    """The exported samples of a run: ok (and optionally filtered) samples with a UV map, in input order."""

    def __init__(self, source: Storage, include_filtered: bool):
        self.source, self.include_filtered = source, include_filtered
        self.ids = [s.id for s in self._samples()]  # a first, cheap pass: ids only (no file is read)
        if not self.ids:
            raise ConfigError(f"{source.root_url} has no {'ok or filtered' if include_filtered else 'ok'} "
                              "sample with a UV map to export")
        self.fingerprint = selection_fingerprint(self.ids)

    def _samples(self) -> Iterator[RunSample]:
        return (s for s in iter_run_samples(self.source, self.include_filtered) if s.uv_path)

    def units(self, size: int) -> Iterator[tuple[int, list[tuple[int, RunSample]]]]:
        """(unit number, [(export index, sample), ...]) for consecutive groups of ``size`` samples."""
        unit: list[tuple[int, RunSample]] = []
        for index, sample in enumerate(self._samples()):
            unit.append((index, sample))
            if len(unit) == size:
                yield index // size, unit
                unit = []
        if unit:
            yield unit[0][0] // size, unit


def open_destination(dest: str, options: Any, selection: Selection, storage_options: dict) -> tuple[Storage,
                                                                                                    ExportState]:
    """The destination storage and its resume state (refusing an export of another selection or options)."""
    storage = open_storage(dest, storage_options)
    storage.check_writable()
    identity = {"format": options.format, "include_filtered": options.include_filtered, "labels": options.labels,
                "crop": options.crop, "shard_size": options.shard_size, "samples": len(selection.ids),
                "selection_sha256": selection.fingerprint}
    return storage, ExportState(storage, identity)


def sample_meta(sample: RunSample) -> dict[str, Any]:
    """FFHQ-UV's meta-info entry of a sample (FFHQ index, gender, age, beard) plus its run status; values from
    the front view's StyleFlow condition (pipeline.md 2.3), ``null`` when the run measured no attributes."""
    return {"ffhq_index": ffhq_index(sample.id), **attribute_meta(sample.attribute), "status": sample.status}


def write_if_changed(dest: Storage, relpath: str, data: bytes, sizes: dict[str, int]) -> bool:
    """Write unless the file is already there with this size (a resumed, unfinished unit); True if written."""
    if sizes.get(relpath) == len(data):
        return False
    dest.write_bytes(relpath, data)
    return True


def dumps(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True).encode()
