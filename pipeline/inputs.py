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
- ``builtin:samples``: the face photos that ship with installed packages
  (scikit-image's astronaut), copied into the run folder.

Only ids and URIs are held (70k rows are a few MB); images are opened by the
stages. Ids are sorted, so shard ``k`` always holds the same samples for the same
input; the plan's fingerprint lets a resume refuse a changed input set.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pipeline.storage import Storage, describe_storage_error
from stages.errors import ConfigError

PLAN_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("uri", pa.string()),
    ("index", pa.int64()),
    ("shard", pa.int32()),
    ("duplicate", pa.bool_()),  # a later occurrence of an id already listed: a failed row, never processed
])

# input.format: how a source is listed (``auto`` picks list for .csv/.parquet, else folder).
InputFormat = Literal["auto", "folder", "list", "ffhq"]
INPUT_FORMATS: tuple[str, ...] = get_args(InputFormat)

BUILTIN_FACES = {"astronaut": "astronaut.png"}  # id -> file in skimage's data folder


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


def input_kind(source: str, input_format: str) -> str:
    """The input format in effect: ``auto`` resolved (a .csv/.parquet file is a list, anything else a folder)."""
    if input_format != "auto":
        return input_format
    return "list" if source.lower().endswith((".csv", ".parquet")) else "folder"


def list_inputs(source: str, input_format: str, extensions: list[str], storage: Storage,
                storage_options: dict | None = None) -> pa.Table:
    """The (id, uri) pairs of a source, unsorted. Raises ConfigError if unreadable or empty."""
    storage_options = storage_options or {}
    if source == "builtin:samples":
        return _builtin_samples(storage)
    kind = input_kind(source, input_format)
    if kind == "list":
        table = _read_list_file(source, storage_options)
    elif kind == "latents":
        table = _list_latents(source, storage_options)
    elif kind in ("folder", "ffhq"):
        table = _list_folder(source, extensions, storage_options)
        if kind == "ffhq":
            _check_ffhq_ids(table, source)
    else:
        raise ConfigError(f"input.format must be auto, folder, list, ffhq or latents, not {input_format!r}")
    if table.num_rows == 0:
        if kind == "latents":
            raise ConfigError(f"no input latent files (*.pt) found at {source}")
        raise ConfigError(f"no input images found at {source} (extensions {', '.join(extensions)})")
    return table


def make_plan(pairs: pa.Table, shard_size: int, limit: int | None = None) -> Plan:
    """Sort the (id, uri) pairs, flag duplicate ids and assign shards."""
    pairs = pairs.select(["id", "uri"]).sort_by([("id", "ascending"), ("uri", "ascending")])
    if limit is not None:
        pairs = pairs.slice(0, limit)
    ids = pairs["id"]
    previous = pa.concat_arrays([pa.array([None], pa.string()), ids.combine_chunks().slice(0, max(len(ids) - 1, 0))]) \
        if len(ids) else pa.array([], pa.string())
    duplicate = pc.fill_null(pc.equal(ids, previous), False)
    index = pa.array(range(pairs.num_rows), pa.int64())
    shard = pc.cast(pc.divide(index, shard_size), pa.int32())
    table = pa.Table.from_arrays([ids, pairs["uri"], index, shard, duplicate], schema=PLAN_SCHEMA)
    digest = hashlib.sha256(f"shard_size={shard_size}\n".encode())
    for batch in table.select(["id", "uri"]).to_batches(max_chunksize=65536):
        for sample_id, uri in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            digest.update(f"{sample_id}\t{uri}\n".encode())
    return Plan(table=table, shard_size=shard_size, fingerprint=digest.hexdigest())


def _builtin_samples(storage: Storage) -> pa.Table:
    import skimage

    data_dir = Path(skimage.__file__).parent / "data"
    ids, uris = [], []
    for sample_id, filename in BUILTIN_FACES.items():
        relpath = f"inputs/{filename}"
        if not storage.exists(relpath):
            storage.write_bytes(relpath, (data_dir / filename).read_bytes())
        ids.append(sample_id)
        uris.append(storage.url(relpath))
    return pa.table({"id": ids, "uri": uris})


def _list_latents(source: str, storage_options: dict) -> pa.Table:
    """FFHQ-UV latents: a folder per sample for ``<id>_<view>_latent.pt`` files, else one flat ``<id>.pt``."""
    from stages.latents import LATENT_SUFFIX

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


def _check_ffhq_ids(table: pa.Table, source: str) -> None:
    bad = [i for i in table["id"].to_pylist()[:100000] if not (len(i) == 5 and i.isdigit())]
    if bad:
        raise ConfigError(f"{source} is not FFHQ's layout: ids like {bad[:3]} are not five-digit numbers "
                          "(use input.format=folder)")
