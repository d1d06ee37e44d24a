"""Packing a Sample into one bytes cell so it can ride through Ray Data between stages.

Rows between stage actors are ``{id, shard, state}``; ``state`` holds the whole
Sample (fields, output records, status) as msgpack, with numpy arrays stored as
raw little-endian buffers. One opaque column keeps Ray's block schema identical
whatever fields the stages add, and msgpack (unlike pickle) can only rebuild data.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import numpy as np

from stages.base import OutputFile, Sample

_NDARRAY = 1  # msgpack extension type code for numpy arrays


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        header = msgpack.packb([value.dtype.str, list(value.shape)])
        return msgpack.ExtType(_NDARRAY, header + np.ascontiguousarray(value).tobytes())
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} in a sample field")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != _NDARRAY:
        raise ValueError(f"unknown msgpack extension {code}")
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    dtype, shape = next(unpacker)
    offset = unpacker.tell()
    return np.frombuffer(data[offset:], dtype=np.dtype(dtype)).reshape(shape).copy()


def encode_sample(sample: Sample) -> bytes:
    """Sample -> bytes (see module docstring)."""
    state = dataclasses.asdict(sample)
    state["outputs"] = {name: dataclasses.astuple(record) for name, record in sample.outputs.items()}
    return msgpack.packb(state, default=_default, use_bin_type=True)


def decode_sample(data: bytes) -> Sample:
    """bytes -> Sample (inverse of ``encode_sample``)."""
    state = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    state["outputs"] = {name: OutputFile(*values) for name, values in state["outputs"].items()}
    return Sample(**state)
