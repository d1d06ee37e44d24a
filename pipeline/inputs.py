"""Listing the inputs and cutting them into shards: the run's plan.

Sources (``input.source``):
- a folder, glob or fsspec URL of images (``./photos``, ``s3://bucket/ffhq/**.png``);
- a list file, ``.csv`` or ``.parquet`` with columns ``id,uri`` (relative URIs are
  resolved against the list file's folder), read in record batches;
- FFHQ's own layout (``images1024x1024/00000/00000.png``), which is a folder whose
  ids are the five-digit file stems;
- FFHQ-UV's released face latents (``input.format=latents``): one sample per folder
  ``face-latents/<clip>/<id>/`` (or the project's ``edit/<id>/``) holding
  ``<id>_<view>_latent.pt``, its URI that folder; and flat ``dataset_project`` files
  ``latents/<id>.pt``, their URI the file (``stages/latents.py``, read by ``stages/render.py``);
- ``views``: ready-made multi-view images, one sample per id: FFHQ-UV's
  ``edit/<id>/<id>_<view>.png`` layout, a flat folder of ``<id>_<view>.png`` or a folder
  per sample holding ``front/left/right`` images; the samples start with the edit
  stage's ``view_<view>`` keys, so ``unwrap`` + ``complete`` run on them directly;
- ``builtin:samples``: the face photos that ship with installed packages
  (scikit-image's astronaut, matplotlib's Grace Hopper portrait), copied into the run folder.

Each format (``INPUT_FORMATS``) declares the file keys its samples start with
(``provides``); the start-up check (``pipeline.preflight``) matches them against what
the first enabled stages read. A new format is one more entry in ``INPUT_FORMATS``.

Only ids and URIs are held (70k rows are a few MB); images are opened by the
stages. Ids are sorted, so shard ``k`` always holds the same samples for the same
input; the plan's fingerprint lets a resume refuse a changed input set.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pipeline import layout
from pipeline.storage import Storage, describe_storage_error
from stages.base import PHOTO
from stages.errors import ConfigError
from stages.latents import LATENT_SUFFIX, LATENTS
from stages.views import FRONT, VIEW, VIEW_NAMES, view_key

PLAN_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("uri", pa.string()),
    ("index", pa.int64()),
    ("shard", pa.int32()),
    ("duplicate", pa.bool_()),  # a later occurrence of an id already listed: a failed row, never processed
    ("inputs", pa.map_(pa.string(), pa.string())),  # file key -> URI the format provides besides uri; null if none
])

BUILTIN_SAMPLES = "builtin:samples"  # input.source of the pipeline's own default run
# id -> (package, file inside the installed package): the face photos the project's dependencies ship.
BUILTIN_FACES = {"astronaut": ("skimage", "data/astronaut.png"),
                 "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")}


@dataclass(frozen=True)
class Plan:
    table: pa.Table  # PLAN_SCHEMA, sorted by (id, uri)
    shard_size: int
    fingerprint: str  # sha256 over the sorted (id, uri) pairs and the shard size

    @property
    def num_samples(self) -> int:
        return self.table.num_rows

    @property
    def num_shards(self) -> int:
        return 0 if self.num_samples == 0 else int(pc.max(self.table["shard"]).as_py()) + 1

    def shard_table(self, shard: int) -> pa.Table:
        start = shard * self.shard_size
        return self.table.slice(start, self.shard_size)


def resolve_format(source: str, input_format: str) -> InputFormatSpec:
    """The format that lists ``source``: ``auto`` is a list file for .csv/.parquet, else a folder."""
    if source == BUILTIN_SAMPLES:
        return BUILTIN_FORMAT
    if input_format == "auto":
        input_format = "list" if source.lower().endswith((".csv", ".parquet")) else "folder"
    return INPUT_FORMATS[input_format]


def list_inputs(source: str, input_format: str, extensions: list[str], storage: Storage,
                storage_options: dict | None = None) -> pa.Table:
    """The (id, uri, inputs) rows of a source, unsorted. Raises ConfigError if unreadable or empty."""
    if source == BUILTIN_SAMPLES:
        return _with_inputs(_builtin_samples(storage))
    spec = resolve_format(source, input_format)
    table = spec.lister(source, extensions, storage_options or {})
    if table.num_rows == 0:
        if spec.name == "latents":
            raise ConfigError(f"no input latent files (*.pt) found at {source}")
        raise ConfigError(f"no input images found at {source} (input.format={spec.name}, "
                          f"extensions {', '.join(extensions)})")
    return _with_inputs(table)


def _with_inputs(table: pa.Table) -> pa.Table:
    """``table`` with an ``inputs`` column (null where the format provides nothing besides ``uri``)."""
    if "inputs" in table.column_names:
        return table.select(["id", "uri", "inputs"])
    nulls = pa.nulls(table.num_rows, PLAN_SCHEMA.field("inputs").type)
    return table.select(["id", "uri"]).append_column("inputs", nulls)


def make_plan(pairs: pa.Table, shard_size: int, limit: int | None = None) -> Plan:
    """Sort the listed (id, uri, inputs) rows, flag duplicate ids and assign shards."""
    pairs = _with_inputs(pairs).sort_by([("id", "ascending"), ("uri", "ascending")])
    if limit is not None:
        pairs = pairs.slice(0, limit)
    ids = pairs["id"]
    previous = pa.concat_arrays([pa.array([None], pa.string()), ids.combine_chunks().slice(0, max(len(ids) - 1, 0))]) \
        if len(ids) else pa.array([], pa.string())
    duplicate = pc.fill_null(pc.equal(ids, previous), False)
    index = pa.array(range(pairs.num_rows), pa.int64())
    shard = pc.cast(pc.divide(index, shard_size), pa.int32())
    table = pa.Table.from_arrays([ids, pairs["uri"], index, shard, duplicate, pairs["inputs"]], schema=PLAN_SCHEMA)
    digest = hashlib.sha256(f"shard_size={shard_size}\n".encode())
    for batch in table.select(["id", "uri", "inputs"]).to_batches(max_chunksize=65536):
        for sample_id, uri, inputs in zip(*(column.to_pylist() for column in batch.columns)):
            extra = "".join(f"\t{key}={value}" for key, value in sorted(inputs)) if inputs else ""
            digest.update(f"{sample_id}\t{uri}{extra}\n".encode())
    return Plan(table=table, shard_size=shard_size, fingerprint=digest.hexdigest())


def _builtin_samples(storage: Storage) -> pa.Table:
    import importlib

    ids, uris = [], []
    for sample_id, (package, filename) in BUILTIN_FACES.items():
        source = Path(importlib.import_module(package).__file__).parent / filename
        relpath = f"{layout.INPUTS}/{Path(filename).name}"
        if not storage.exists(relpath):
            storage.write_bytes(relpath, source.read_bytes())
        ids.append(sample_id)
        uris.append(storage.url(relpath))
    return pa.table({"id": ids, "uri": uris})


def _list_latents(source: str, _extensions: list[str], storage_options: dict) -> pa.Table:
    """FFHQ-UV latents: a folder per sample for ``<id>_<view>_latent.pt`` files, else one flat ``<id>.pt``."""
    paths, protocol = _find_files(source, [".pt"], storage_options)
    samples: dict[str, str] = {}  # uri -> id
    for path in paths:
        folder, name = posixpath.split(path)
        sample_id = posixpath.basename(folder)
        if name.endswith(LATENT_SUFFIX) and name.startswith(f"{sample_id}_"):
            samples[folder] = sample_id  # the three view files of one sample share their folder
        else:
            samples[path] = PurePosixPath(name).stem
    uris = sorted(samples)
    full = [u if protocol == "file" else f"{protocol}://{u}" for u in uris]
    return pa.table({"id": pa.array([samples[u] for u in uris], pa.string()), "uri": pa.array(full, pa.string())})


def _list_folder(source: str, extensions: list[str], storage_options: dict) -> pa.Table:
    paths, protocol = _find_files(source, extensions, storage_options)
    ids = [PurePosixPath(p).stem for p in paths]
    uris = [p if protocol == "file" else f"{protocol}://{p}" for p in paths]
    return pa.table({"id": pa.array(ids, pa.string()), "uri": pa.array(uris, pa.string())})


def _find_files(source: str, extensions: list[str], storage_options: dict) -> tuple[list[str], str]:
    """(paths under a folder, glob or file URL with one of ``extensions``, the filesystem's protocol)."""
    try:
        fs, root = url_to_fs(source, **storage_options)
    except Exception as error:  # noqa: BLE001 - unknown protocols, missing credentials...
        raise ConfigError(f"cannot open input {source}: {error}") from None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    wanted = tuple(e.lower() for e in extensions)
    try:
        if any(ch in root for ch in "*?["):
            paths = fs.glob(root)
        elif fs.isdir(root):
            paths = fs.find(root)
        elif fs.exists(root):
            paths = [root]
        else:
            raise ConfigError(f"input path {source} does not exist")
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - permission, credentials, network
        raise ConfigError(f"cannot list input {source}: {describe_storage_error(error)}") from None
    return [p for p in paths if p.lower().endswith(wanted)], protocol


def _read_list_file(source: str, storage_options: dict) -> pa.Table:
    try:
        fs, path = url_to_fs(source, **storage_options)
        with fs.open(path, "rb") as handle:
            if source.lower().endswith(".parquet"):
                table = pq.read_table(handle, columns=["id", "uri"])
            else:
                table = pacsv.read_csv(handle, convert_options=pacsv.ConvertOptions(
                    include_columns=["id", "uri"], column_types={"id": pa.string(), "uri": pa.string()}))
    except FileNotFoundError:
        raise ConfigError(f"input list file {source} does not exist") from None
    except (KeyError, pa.ArrowInvalid) as error:
        raise ConfigError(f"input list file {source} must have columns id,uri: {error}") from None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    base = posixpath.dirname(path) + "/"
    if protocol != "file":
        base = f"{protocol}://{base}"
    # Vectorised (no Python string per row): relative URIs are resolved against the list's folder.
    uri = table["uri"]
    absolute = pc.or_(pc.match_substring(uri, "://"), pc.starts_with(uri, "/"))
    resolved = pc.if_else(absolute, uri, pc.binary_join_element_wise(pa.scalar(base), uri, ""))
    return pa.table({"id": table["id"], "uri": resolved})


def _list_ffhq(source: str, extensions: list[str], storage_options: dict) -> pa.Table:
    table = _list_folder(source, extensions, storage_options)
    bad = [i for i in table["id"].to_pylist()[:100000] if not (len(i) == 5 and i.isdigit())]
    if bad:
        raise ConfigError(f"{source} is not FFHQ's layout: ids like {bad[:3]} are not five-digit numbers "
                          "(use input.format=folder)")
    return table


_VIEW_STEM = re.compile(rf"^(?P<id>.+)_(?P<view>{'|'.join(VIEW_NAMES)})$")


def _list_views(source: str, extensions: list[str], storage_options: dict) -> pa.Table:
    """One row per sample id: ``<id>_<view>.<ext>`` anywhere below ``source``, or ``<id>/<view>.<ext>``.

    ``uri`` is the front view (else the first view found); ``inputs`` maps ``view_<view>`` to each
    view's URI. Other images (``<id>_preview.png``) are ignored; a view found twice is an error.
    """
    files = _list_folder(source, extensions, storage_options)
    views: dict[str, dict[str, str]] = {}
    for stem, uri in sorted(zip(files["id"].to_pylist(), files["uri"].to_pylist())):
        match = _VIEW_STEM.match(stem)
        if match:
            sample_id, view = match["id"], match["view"]
        elif stem in VIEW_NAMES:
            sample_id, view = PurePosixPath(uri).parent.name, stem
        else:
            continue
        key = view_key(VIEW, view)
        if key in views.setdefault(sample_id, {}):
            raise ConfigError(f"sample {sample_id} has two {view} views: {views[sample_id][key]} and {uri}")
        views[sample_id][key] = uri
    ids = sorted(views)
    uris = [views[i].get(view_key(VIEW, FRONT)) or min(views[i].values()) for i in ids]
    inputs = [sorted(views[i].items()) for i in ids]
    return pa.table({"id": pa.array(ids, pa.string()), "uri": pa.array(uris, pa.string()),
                     "inputs": pa.array(inputs, PLAN_SCHEMA.field("inputs").type)})


@dataclass(frozen=True)
class InputFormatSpec:
    """One ``input.format``: how it lists a source and which file keys its samples start with."""

    name: str
    provides: tuple[str, ...]  # file keys (``stages.base.PHOTO``, ``view_{view}``, ...) every sample has at the start
    lister: Callable[[str, list[str], dict], pa.Table]  # (source, extensions, storage options) -> id, uri[, inputs]


INPUT_FORMATS: dict[str, InputFormatSpec] = {
    "folder": InputFormatSpec("folder", (PHOTO,), _list_folder),
    "list": InputFormatSpec("list", (PHOTO,), lambda source, _extensions, options: _read_list_file(source, options)),
    "ffhq": InputFormatSpec("ffhq", (PHOTO,), _list_ffhq),
    "views": InputFormatSpec("views", (VIEW,), _list_views),
    "latents": InputFormatSpec("latents", (LATENTS,), _list_latents),
}
BUILTIN_FORMAT = InputFormatSpec("builtin", (PHOTO,), lambda *_: pa.table({}))  # listed by _builtin_samples
# input.format: a format's name, or auto (a list file for .csv/.parquet, else a folder).
InputFormat = Literal[("auto", *INPUT_FORMATS)]  # type: ignore[valid-type]  # built from the table above
