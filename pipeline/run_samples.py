"""A finished run's samples as export and interpolation see them: ordered, with attributes and latents.

One record per committed manifest row that is ``ok`` (and ``filtered`` on request), in
input order, read shard by shard (a run of 100,000 samples is never held as one table
with its latents). What each record carries, whichever stages made the run:

- ``attribute``: the front view's 17-dim StyleFlow condition (pipeline.md 2.3), from the
  render stage (FFHQ-UV's released latents), the edit stage, or the attribute stage;
- ``latents``: per view ``(W+ (18, w_dim), condition (17,))``: from the released latent
  files a ``from-latents`` run read (``source_uri``), or the edit stage's columns; none for
  a run that never had latents (the photo profile);
- ``uv_path``: the run-relative final UV map, and the quality columns interpolation filters on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.manifest import committed_shards, manifest_dataset
from pipeline.storage import Storage
from stages.base import Status
from stages.latents import read_view_latent, view_file_name
from stages.views import VIEW_NAMES

# Index of the StyleFlow condition entries used to describe and classify a face (pipeline.md 2.3).
GENDER, BEARD, AGE, EXPRESSION = 9, 14, 15, 16
QUALITY_COLUMNS = ("complete_bs_error", "complete_valid_ratio", "edit_expression_happy")
ATTRIBUTE_COLUMNS = ("render_attribute_front", "edit_attribute_front", "attribute_vector")


@dataclass
class RunSample:
    """One exported / interpolated sample of a run."""

    id: str
    status: str
    shard: int
    source_uri: str
    uv_path: Optional[str]  # run-relative; None if the run wrote no final map
    attribute: Optional[np.ndarray]  # (17,) float32, front view
    quality: dict[str, Any]  # QUALITY_COLUMNS present in the run
    row: dict[str, Any]  # the manifest row's columns but the edit latents (large) and outputs
    _table: pa.Table  # the shard's rows, for the edit latents (read only when asked for)
    _index: int

    def latents(self, storage: Storage) -> dict[str, tuple[np.ndarray, Optional[np.ndarray]]]:
        """View -> (W+ (num_ws, w_dim) float32, condition (17,) or None); {} if the run has none."""
        views: dict[str, tuple[np.ndarray, Optional[np.ndarray]]] = {}
        if self.row.get("render_layout") == "released":
            for view in VIEW_NAMES:
                uri = f"{self.source_uri.rstrip('/')}/{view_file_name(self.id, view)}"
                latent = read_view_latent(storage.read_source(uri), uri)
                views[view] = (latent.latent, latent.attribute)
            return views
        for view in VIEW_NAMES:
            w, a = self._cell(f"edit_latent_{view}"), self.row.get(f"edit_attribute_{view}")
            if w is None:
                return {}
            views[view] = (w.reshape(18, -1), None if a is None else np.asarray(a, np.float32))
        return views

    def latent_files(self, storage: Storage) -> dict[str, bytes]:
        """View -> FFHQ-UV's ``<id>_<view>_latent.pt`` bytes: the released files as read, else written anew."""
        from stages.latents import write_view_latent

        if self.row.get("render_layout") == "released":
            return {view: storage.read_source(f"{self.source_uri.rstrip('/')}/{view_file_name(self.id, view)}")
                    for view in VIEW_NAMES}
        return {view: write_view_latent(w, a) for view, (w, a) in self.latents(storage).items()}

    def _cell(self, column: str) -> Optional[np.ndarray]:
        if column not in self._table.column_names:
            return None
        value = self._table[column][self._index]
        return None if not value.is_valid else value.values.to_numpy(zero_copy_only=False).astype(np.float32)


def iter_run_samples(storage: Storage, include_filtered: bool = False) -> Iterator[RunSample]:
    """The run's ok (and, on request, filtered) samples in input order, one shard in memory at a time."""
    shards = committed_shards(storage)
    statuses = [Status.OK.value, Status.FILTERED.value] if include_filtered else [Status.OK.value]
    for shard in sorted(shards):
        dataset = manifest_dataset(storage, {shard: shards[shard]})
        table = dataset.to_table(filter=pc.field("status").isin(statuses))
        table = table.sort_by("input_index")
        yield from _records(table)


def _records(table: pa.Table) -> Iterator[RunSample]:
    names = set(table.column_names)
    scalar = [n for n in table.column_names if not n.startswith("edit_latent_") and n != "outputs"]
    rows = table.select(scalar).to_pylist()
    outputs = table["outputs"].to_pylist() if "outputs" in names else [None] * table.num_rows
    for i, row in enumerate(rows):
        files = dict(outputs[i] or [])
        attribute = next((row[c] for c in ATTRIBUTE_COLUMNS if row.get(c) is not None), None)
        yield RunSample(
            id=row["id"], status=row["status"], shard=row["shard"], source_uri=row.get("source_uri") or "",
            uv_path=files["uv"]["path"] if "uv" in files else None,
            attribute=None if attribute is None else np.asarray(attribute, np.float32),
            quality={c: row.get(c) for c in QUALITY_COLUMNS if c in names}, row=row, _table=table, _index=i,
        )


def selection_fingerprint(ids: list[str]) -> str:
    """sha256 over the ordered ids: an export or interpolation resumed on a changed run is refused."""
    import hashlib

    digest = hashlib.sha256()
    for sample_id in ids:
        digest.update(sample_id.encode() + b"\n")
    return digest.hexdigest()


def attribute_meta(attribute: Optional[np.ndarray]) -> dict[str, Any]:
    """FFHQ-UV's meta-info values of a 17-dim condition: gender (``male`` if index 9 >= 0.5, Face API's
    1 = male), age (years) and beard (0-1); ``None`` where unknown."""

    def value(index: int) -> Optional[float]:
        return None if attribute is None or not np.isfinite(attribute[index]) else float(attribute[index])

    gender = value(GENDER)
    return {"gender": None if gender is None else ("male" if gender >= 0.5 else "female"), "age": value(AGE),
            "beard": value(BEARD)}


def ffhq_index(sample_id: str) -> Optional[int]:
    """FFHQ's image number for an FFHQ id (``01223`` -> 1223); None for other samples."""
    return int(sample_id) if len(sample_id) == 5 and sample_id.isdigit() else None

