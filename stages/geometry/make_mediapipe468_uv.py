"""Generate the open ``mediapipe468`` topology: triangles, a symmetric 3D template and a UV layout.

Run ``python -m stages.geometry.make_mediapipe468_uv`` to rewrite ``mediapipe468_uv.json`` beside this file.

Method (everything from what packages ship, no downloads):
1. **Triangles**: the faces of mediapipe's ``FACEMESH_TESSELATION`` edge list are its 3-cliques, minus the few
   "separating" cliques whose three edges are each shared by three cliques (they are not faces). Interior
   boundary loops (eyes, mouth) are closed by ear clipping in the template's frontal projection, so the eyes
   and mouth have texels too; no vertex is added, so vertex ``i`` stays landmark ``i``.
2. **Template**: mediapipe's 3D landmarks on scikit-image's ``astronaut`` photo, turned into a head frame
   (x from the image-left outer eye corner 33 to the image-right one 263, y up from chin 152 to forehead 10,
   z towards the viewer), scaled to a unit outer-eye-corner distance and made left/right symmetric by
   averaging every point with the mirror image of its mirror partner (nearest neighbour after mirroring).
3. **UV layout**: a cylindrical projection around a vertical axis behind the face, u = radius x angle and
   v = height, both in template units so the texels are about square, then scaled uniformly into
   [margin, 1 - margin] and centred. Row 0 of the UV image is the forehead (v = 1), image-left is u < 0.5,
   like a frontal photo and like FFHQ-UV's maps.
Triangles are oriented so that their normals point out of the face (towards +z on the frontal template).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np

OUTPUT = Path(__file__).resolve().parent / "mediapipe468_uv.json"
NUM_POINTS = 468
UV_MARGIN = 0.04  # empty border of the UV square, in UV units
# Landmarks that define the head frame (mediapipe face-mesh indices).
OUTER_EYE_IMAGE_LEFT, OUTER_EYE_IMAGE_RIGHT, CHIN, FOREHEAD = 33, 263, 152, 10
# The cylinder axis sits this far behind the deepest face point, in units of the face width: a radius close to
# a real head's keeps the cheeks from being squeezed at the sides of the layout.
AXIS_DEPTH = 0.6


def tessellation_triangles(edges: set[tuple[int, int]]) -> np.ndarray:
    """(M, 3) unoriented triangles: the 3-cliques of an edge set that are faces of the surface."""
    undirected = {tuple(sorted(e)) for e in edges}
    adjacency: dict[int, set[int]] = {}
    for a, b in undirected:
        adjacency.setdefault(a, set()).add(b)
        adjacency.setdefault(b, set()).add(a)
    cliques = sorted({tuple(sorted((a, b, c))) for a, b in undirected for c in adjacency[a] & adjacency[b]})
    use = Counter(e for t in cliques for e in itertools.combinations(t, 2))
    faces = [t for t in cliques if not all(use[e] >= 3 for e in itertools.combinations(t, 2))]
    return np.array(faces, dtype=np.int64)


def boundary_loops(triangles: np.ndarray) -> list[list[int]]:
    """Closed loops of the edges used by exactly one triangle, each as an ordered vertex list."""
    from stages.geometry.uv_topology import edge_loops

    use = Counter(tuple(sorted(e)) for t in triangles for e in itertools.combinations(t, 2))
    return edge_loops([edge for edge, count in use.items() if count == 1])


def ear_clip(loop: list[int], xy: np.ndarray) -> list[tuple[int, int, int]]:
    """Triangulate a simple polygon (vertex ids in order) by ear clipping in 2D coordinates ``xy``."""
    ids = list(loop)
    pts = {i: xy[i] for i in ids}
    area = sum(pts[ids[k]][0] * pts[ids[(k + 1) % len(ids)]][1] - pts[ids[(k + 1) % len(ids)]][0] * pts[ids[k]][1]
               for k in range(len(ids)))
    if area < 0:
        ids.reverse()
    out = []
    while len(ids) > 3:
        for k in range(len(ids)):
            a, b, c = ids[k - 1], ids[k], ids[(k + 1) % len(ids)]
            pa, pb, pc = pts[a], pts[b], pts[c]
            if np.cross(pb - pa, pc - pb) <= 0:
                continue
            others = [pts[i] for i in ids if i not in (a, b, c)]
            if any(_inside(p, pa, pb, pc) for p in others):
                continue
            out.append((a, b, c))
            ids.pop(k)
            break
        else:
            raise RuntimeError("ear clipping found no ear: the hole is not a simple polygon")
    out.append(tuple(ids))
    return out


def _inside(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> bool:
    d1, d2, d3 = np.cross(b - a, p - a), np.cross(c - b, p - b), np.cross(a - c, p - c)
    return bool(d1 >= 0 and d2 >= 0 and d3 >= 0)


def head_frame_template(points: np.ndarray) -> np.ndarray:
    """(468, 3) mediapipe landmarks (x, y pixels y-down, z smaller = nearer) -> symmetric head-frame template."""
    p = np.asarray(points, dtype=np.float64) * np.array([1.0, -1.0, -1.0])  # y up, z towards the viewer
    x_axis = p[OUTER_EYE_IMAGE_RIGHT] - p[OUTER_EYE_IMAGE_LEFT]
    scale = np.linalg.norm(x_axis)
    x_axis /= scale
    up = p[FOREHEAD] - p[CHIN]
    y_axis = up - x_axis * (up @ x_axis)
    y_axis /= np.linalg.norm(y_axis)
    z_axis = np.cross(x_axis, y_axis)
    centre = (p[OUTER_EYE_IMAGE_LEFT] + p[OUTER_EYE_IMAGE_RIGHT]) / 2
    local = (p - centre) @ np.stack([x_axis, y_axis, z_axis], axis=1) / scale
    mirrored = local * np.array([-1.0, 1.0, 1.0])
    partner = np.argmin(((mirrored[:, None, :] - local[None, :, :]) ** 2).sum(-1), axis=1)
    return (local + mirrored[partner]) / 2


def cylindrical_uv(template: np.ndarray) -> np.ndarray:
    """(N, 3) head-frame template -> (N, 2) UV in [0,1] (v up) by projection on a vertical cylinder."""
    width = template[:, 0].max() - template[:, 0].min()
    axis_z = template[:, 2].min() - AXIS_DEPTH * width
    radius = np.hypot(template[:, 0], template[:, 2] - axis_z)
    arc = radius.mean() * np.arctan2(template[:, 0], template[:, 2] - axis_z)
    uv = np.stack([arc, template[:, 1]], axis=1)
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    scale = (1 - 2 * UV_MARGIN) / (hi - lo).max()
    return (uv - (lo + hi) / 2) * scale + 0.5


def orient_outwards(triangles: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Flip triangles whose normal points into the head (towards a point well behind the face)."""
    behind = np.array([0.0, vertices[:, 1].mean(), vertices[:, 2].min() - 2.0])
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    normal = np.cross(b - a, c - a)
    outward = np.einsum("ij,ij->i", (a + b + c) / 3 - behind, normal)
    out = triangles.copy()
    out[outward < 0] = out[outward < 0][:, [0, 2, 1]]
    return out


def build(points: np.ndarray, edges: set[tuple[int, int]]) -> dict:
    """The topology record from detected landmarks and the tessellation edges."""
    template = head_frame_template(points)
    uv = cylindrical_uv(template)
    triangles = tessellation_triangles(edges)
    loops = boundary_loops(triangles)
    outer = max(loops, key=len)  # the face oval; the others are the eye and mouth openings
    holes = [tuple(t) for loop in loops if loop is not outer for t in ear_clip(loop, uv)]
    triangles = np.concatenate([triangles, np.array(holes, dtype=np.int64).reshape(-1, 3)])
    triangles = orient_outwards(triangles, template)
    return {
        "method": "stages/geometry/make_mediapipe468_uv.py (see its docstring)",
        "vertices": np.round(template, 6).tolist(),
        "uvs": np.round(uv, 6).tolist(),
        "triangles": triangles.tolist(),
    }


def main() -> None:
    """Detect the landmarks on skimage's astronaut and write the topology JSON."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION
    from skimage import data

    from stages.face.landmarks import FaceLandmarker

    with FaceLandmarker(max_faces=1) as landmarker:
        face = landmarker.detect_one(data.astronaut())
    record = build(face.points, set(FACEMESH_TESSELATION))
    OUTPUT.write_text(json.dumps(record, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(record['triangles'])} triangles)")


if __name__ == "__main__":
    main()
