"""The topologies by name: ``load_topology`` and the run's own (``topology_from_config``).

Each topology module (``hifi3dpp``, ``mediapipe468``) builds a ``uv_topology.Topology``;
this is the one module that knows them all, so none of them imports another.
"""

from __future__ import annotations

from pathlib import Path

from stages.base import configured_weights_dir
from stages.geometry.hifi3dpp import load_hifi3dpp
from stages.geometry.mediapipe468 import load_mediapipe468
from stages.geometry.uv_topology import DEFAULT_CACHE_DIR, TOPOLOGIES, UV_SIZE, Topology


def load_topology(name: str, obj_path: str | None = None, weights_dir: str | None = None,
                  cache_dir: str | Path | None = DEFAULT_CACHE_DIR, uv_size: int = UV_SIZE) -> Topology:
    """Load a topology by name (``TOPOLOGIES``); ``obj_path`` / ``weights_dir`` locate hifi3dpp's sources."""
    if name == "hifi3dpp":
        return load_hifi3dpp(obj_path=obj_path, weights_dir=weights_dir, cache_dir=cache_dir, uv_size=uv_size)
    if name == "mediapipe468":
        return load_mediapipe468(cache_dir=cache_dir, uv_size=uv_size)
    raise ValueError(f"unknown topology {name!r}; choose one of {', '.join(TOPOLOGIES)}")


def topology_from_config(config) -> Topology:
    """The run's topology, from the run-level ``topology`` section (unwrap, complete and later stages share it)."""
    settings = config.topology
    return load_topology(str(settings.name), obj_path=settings.obj or None, weights_dir=configured_weights_dir(config),
                         cache_dir=settings.cache_dir or DEFAULT_CACHE_DIR)
