"""The open ``mediapipe468`` topology: mediapipe's 468-point face mesh with the project's own UV layout.

Vertex ``i`` is landmark ``i`` of mediapipe's face mesh, so the landmark embedding is exact. The triangles,
symmetric template and UV layout come from ``mediapipe468_uv.json``, written by ``make_mediapipe468_uv.py``
(its docstring documents the method). The mesh covers the face oval only: its hair mask is empty.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stages.geometry.uv_topology import DEFAULT_CACHE_DIR, UV_SIZE, LandmarkEmbedding, Topology

DATA_FILE = Path(__file__).resolve().parent / "mediapipe468_uv.json"
NUM_POINTS = 468


def vertex_embedding(triangles: np.ndarray, num_points: int) -> LandmarkEmbedding:
    """Landmarks that are mesh vertices: for vertex i, one triangle using it and a one-hot barycentric."""
    tri_of = np.full(num_points, -1, dtype=np.int64)
    corner_of = np.zeros(num_points, dtype=np.int64)
    for k in range(3):
        free = tri_of[triangles[:, k]] < 0
        rows = np.flatnonzero(free)
        tri_of[triangles[rows, k]] = rows
        corner_of[triangles[rows, k]] = k
    if (tri_of < 0).any():
        raise ValueError(f"{int((tri_of < 0).sum())} landmark vertices belong to no triangle")
    return LandmarkEmbedding(tri_of, np.eye(3)[corner_of])


def load_mediapipe468(cache_dir: str | Path | None = DEFAULT_CACHE_DIR, uv_size: int = UV_SIZE) -> Topology:
    """The mediapipe468 topology from the committed layout file."""
    record = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    vertices = np.asarray(record["vertices"], dtype=np.float64)
    triangles = np.asarray(record["triangles"], dtype=np.int64)
    if vertices.shape != (NUM_POINTS, 3):
        raise ValueError(f"{DATA_FILE.name}: expected {NUM_POINTS} vertices, got {vertices.shape}")
    return Topology(
        name="mediapipe468",
        vertices=vertices,
        triangles=triangles,
        uvs=np.asarray(record["uvs"], dtype=np.float64),
        face_uvs=triangles.copy(),  # one UV per vertex: the layout has no seams
        landmarks=vertex_embedding(triangles, NUM_POINTS),
        uv_size=uv_size,
        cache_dir=None if cache_dir is None else Path(cache_dir),
    )
