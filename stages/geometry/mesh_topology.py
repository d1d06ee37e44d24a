"""Named topology data of the HiFi3D++ head, FFHQ-UV's template eyeballs and FLAME, plus mesh checks.

The index lists live in ``data/mesh_topology.json`` (documented there, field by field); this module loads them
into typed records, validates them once, and checks that a given mesh has the topology they refer to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from stages.geometry import hifi3dpp
from stages.geometry.obj import Mesh

TOPOLOGY_FILE = Path(__file__).resolve().parent / "data" / "mesh_topology.json"


class TopologyError(ValueError):
    """A mesh does not have the topology an operation needs (vertex count, UVs, manifoldness)."""


@dataclass(frozen=True)
class HeadTopology:
    """HiFi3D++ head: vertex count and the eye-region vertex lists (0-based, subject's left/right)."""

    num_vertices: int
    eye_contour: dict[str, np.ndarray]  # side -> (19,) eyelid-rim vertices
    eye_bag: dict[str, np.ndarray]  # side -> (5,) eye-socket vertices


@dataclass(frozen=True)
class EyeballTopology:
    """FFHQ-UV's template eyeball mesh: vertex count and index lists on it."""

    num_vertices: int
    anchor: dict[str, np.ndarray]  # side -> (5,) vertices matching HeadTopology.eye_bag[side]
    front_half: np.ndarray  # (417,) cornea-side vertices of either ball


@dataclass(frozen=True)
class FlameTopology:
    """FLAME head: vertex count and the eyeball vertex range (inclusive)."""

    num_vertices: int
    eyeball_first: int
    eyeball_last: int

    def eyeball_vertex_mask(self) -> np.ndarray:
        """(num_vertices,) bool: True for the vertices of FLAME's two eyeballs."""
        mask = np.zeros(self.num_vertices, dtype=bool)
        mask[self.eyeball_first : self.eyeball_last + 1] = True
        return mask


SIDES: tuple[str, ...] = ("left", "right")


@lru_cache(maxsize=1)
def _raw() -> dict:
    with open(TOPOLOGY_FILE, encoding="utf-8") as handle:
        return json.load(handle)


def _indices(values: list[int], limit: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.int64)
    if array.ndim != 1 or len(array) == 0 or array.min() < 0 or array.max() >= limit:
        raise TopologyError(f"{TOPOLOGY_FILE.name}: {name} must be a non-empty list of indices in [0, {limit})")
    return array


@lru_cache(maxsize=1)
def hifi3dpp_head() -> HeadTopology:
    """The HiFi3D++ head topology record (validated against its own vertex count)."""
    raw = _raw()["head"]
    n = hifi3dpp.NUM_VERTICES
    return HeadTopology(
        num_vertices=n,
        eye_contour={s: _indices(raw[f"eye_contour_{s}"], n, f"head.eye_contour_{s}") for s in SIDES},
        eye_bag={s: _indices(raw[f"eye_bag_{s}"], n, f"head.eye_bag_{s}") for s in SIDES},
    )


@lru_cache(maxsize=1)
def eyeball_template() -> EyeballTopology:
    """The template eyeball topology record."""
    raw = _raw()["eyeball"]
    n = int(raw["num_vertices"])
    anchor = {s: _indices(raw[f"anchor_{s}"], n, f"eyeball.anchor_{s}") for s in SIDES}
    head = hifi3dpp_head()
    for side in SIDES:
        if len(anchor[side]) != len(head.eye_bag[side]):
            raise TopologyError(f"{TOPOLOGY_FILE.name}: eyeball.anchor_{side} and head.eye_bag_{side} differ in length")
    front_half = _indices(raw["front_half"], n, "eyeball.front_half")
    return EyeballTopology(num_vertices=n, anchor=anchor, front_half=front_half)


@lru_cache(maxsize=1)
def flame() -> FlameTopology:
    """The FLAME topology record."""
    raw = _raw()["flame"]
    first, last = (int(i) for i in raw["eyeball_vertex_range"])
    n = int(raw["num_vertices"])
    if not 0 <= first <= last < n:
        raise TopologyError(f"{TOPOLOGY_FILE.name}: flame.eyeball_vertex_range must lie in [0, {n})")
    return FlameTopology(num_vertices=n, eyeball_first=first, eyeball_last=last)


def require_vertex_count(mesh: Mesh, expected: int, topology: str, source: str = "mesh") -> None:
    """Raise TopologyError unless ``mesh`` has exactly ``expected`` vertices (``topology`` names the family)."""
    if len(mesh.vertices) != expected:
        raise TopologyError(
            f"{source}: has {len(mesh.vertices)} vertices, but a {topology} mesh has {expected}; "
            f"this tool needs the {topology} vertex order"
        )


def require_uvs(mesh: Mesh, source: str = "mesh") -> None:
    """Raise TopologyError unless every face corner of ``mesh`` has a texture coordinate."""
    if not mesh.has_uvs:
        raise TopologyError(f"{source}: has no texture coordinates (no 'vt' / 'f v/vt' entries); a UV map needs them")


def require_manifold(mesh: Mesh, source: str = "mesh") -> None:
    """Raise TopologyError if a face is degenerate or repeated, or an edge is shared by more than two faces."""
    faces = mesh.faces
    degenerate = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
    if degenerate.any():
        raise TopologyError(
            f"{source}: not a manifold mesh: {int(degenerate.sum())} faces repeat a vertex "
            f"(first: face {int(np.flatnonzero(degenerate)[0])})"
        )
    _, face_counts = np.unique(np.sort(faces, axis=1), axis=0, return_counts=True)
    if (face_counts > 1).any():
        raise TopologyError(f"{source}: not a manifold mesh: {int((face_counts > 1).sum())} faces are repeated")
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique_edges, counts = np.unique(edges, axis=0, return_counts=True)
    bad = counts > 2
    if bad.any():
        a, b = unique_edges[bad][0]
        raise TopologyError(
            f"{source}: not a manifold mesh: {int(bad.sum())} edges are shared by more than two faces "
            f"(first: vertices {int(a)}-{int(b)}, {int(counts[bad][0])} faces)"
        )
