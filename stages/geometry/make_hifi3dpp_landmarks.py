"""Generate ``hifi3dpp_landmarks.json``: where mediapipe's 468 face-mesh landmarks lie on the HiFi3D++ head.

Run ``python -m stages.geometry.make_hifi3dpp_landmarks [head.obj] [texture.png]`` (defaults: the teaser head
and texture in ``../shared/data/hifi3dpp``). The result (triangle id + barycentrics per landmark) depends only
on the HiFi3D++ topology, which every HiFi3D++ OBJ shares, so it is generated once and committed; at run time
the topology needs only the OBJ.

Method: render the textured head from the front with our rasteriser (orthographic, so screen barycentrics
are exact), detect the 468 landmarks with mediapipe on the render, and back-project each landmark onto the
surface: the triangle under it and the barycentrics of the exact sub-pixel point in that triangle.

The head and its UV layout are mirror-symmetric (the layout's axis is FFHQ-UV's, the column halfway between its
eye boxes), but one detection on one render is not: mediapipe placed the nose and mouth of the teaser render
1-3 % of the eye distance to the image right, which shifted every map's features by up to 14 texels against
FFHQ-UV's layout. Each landmark is therefore averaged with the mirror image of its mirror partner (mediapipe's
canonical face pairs them) before the back-projection, so the embedding is symmetric like the head.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

OUTPUT = Path(__file__).resolve().parent / "hifi3dpp_landmarks.json"
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hifi3dpp"
RENDER_SIZE = 1024
FACE_FILL = 0.75  # height of the head's front half in the render, as a fraction of the image


def frontal_projection(vertices: np.ndarray, size: int) -> np.ndarray:
    """(N, 3) head vertices (y up, z to the viewer) -> (N, 3) screen x, y (y-down pixels), depth (smaller = closer)."""
    front = vertices[vertices[:, 2] > np.median(vertices[:, 2])]
    lo, hi = front.min(axis=0), front.max(axis=0)
    scale = FACE_FILL * size / (hi[1] - lo[1])
    centre = (lo + hi) / 2
    return np.stack([size / 2 + scale * (vertices[:, 0] - centre[0]),
                     size / 2 - scale * (vertices[:, 1] - centre[1]),
                     -vertices[:, 2]], axis=1)


def render_textured(vertices, faces, uvs, face_uvs, texture: np.ndarray, size: int):
    """Render the textured head from the front: ((size, size, 3) uint8 on white, screen xyz, Raster)."""
    import cv2

    from stages.geometry.rasterize import interpolate, rasterize

    screen = frontal_projection(vertices, size)
    raster = rasterize(screen, faces, size, size)
    uv = interpolate(uvs[face_uvs], raster)
    h, w = texture.shape[:2]
    map_x = (uv[..., 0] * w - 0.5).astype(np.float32)
    map_y = ((1 - uv[..., 1]) * h - 0.5).astype(np.float32)
    image = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    image[~raster.mask] = 255
    return image, screen, raster


def main_uv_island(face_uvs: np.ndarray) -> np.ndarray:
    """(M,) bool: faces of the largest connected UV island (the face and head, not the small inner islands)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    k = int(face_uvs.max()) + 1
    rows = np.concatenate([face_uvs[:, 0], face_uvs[:, 1]])
    cols = np.concatenate([face_uvs[:, 1], face_uvs[:, 2]])
    _, label = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(k, k)), directed=False)
    face_label = label[face_uvs[:, 0]]
    return face_label == np.bincount(face_label).argmax()


def back_project(points_xy: np.ndarray, screen: np.ndarray, faces: np.ndarray, raster,
                 allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L, 2) screen points -> (triangle ids (L,), barycentrics (L, 3)) of the visible surface under them.

    Only ``allowed`` (M,) faces are used: eyelid points of a render can hit the eye sockets, whose UVs lie on
    separate islands far from the face.
    """
    from scipy.ndimage import distance_transform_edt

    h, w = raster.triangle_id.shape
    cols = np.clip(np.round(points_xy[:, 0]).astype(int), 0, w - 1)
    rows = np.clip(np.round(points_xy[:, 1]).astype(int), 0, h - 1)
    # Face-oval points of a frontal view can sit a pixel beyond the silhouette: snap them to the nearest
    # covered pixel of an allowed face.
    usable = raster.mask & allowed[np.maximum(raster.triangle_id, 0)]
    _, (near_rows, near_cols) = distance_transform_edt(~usable, return_indices=True)
    rows, cols = near_rows[rows, cols], near_cols[rows, cols]
    tri = raster.triangle_id[rows, cols].astype(np.int64)
    corners = screen[faces[tri]][:, :, :2]  # (L, 3, 2)
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    area = np.cross(b - a, c - a)
    b1 = np.cross(points_xy - a, c - a) / area
    b2 = np.cross(b - a, points_xy - a) / area
    bary = np.clip(np.stack([1 - b1 - b2, b1, b2], axis=1), 0.0, None)
    return tri, bary / bary.sum(axis=1, keepdims=True)


def mirror_partners_468() -> np.ndarray:
    """(468,) mediapipe landmark -> its mirror partner, from the symmetric canonical face (``mediapipe468``)."""
    from stages.geometry.mediapipe468 import load_mediapipe468

    canonical = load_mediapipe468(cache_dir=None).vertices
    mirrored = canonical * np.array([-1.0, 1.0, 1.0])
    return np.argmin(((mirrored[:, None, :] - canonical[None, :, :]) ** 2).sum(-1), axis=1)


def symmetrize(points_xy: np.ndarray, axis_x: float, partners: np.ndarray) -> np.ndarray:
    """(L, 2) screen points averaged with their partners' mirror images about the column ``axis_x``."""
    mirrored = points_xy[partners] * np.array([-1.0, 1.0]) + np.array([2 * axis_x, 0.0])
    return (points_xy + mirrored) / 2


def embed_landmarks(obj_path: Path, texture_path: Path) -> dict:
    """The landmark embedding record for a HiFi3D++ head and a texture in its UV layout."""
    from stages.face.landmarks import FaceLandmarker
    from stages.geometry.obj import read_obj
    from stages.imageio import decode_image

    mesh = read_obj(obj_path)
    texture = decode_image(texture_path.read_bytes(), source=str(texture_path))
    image, screen, raster = render_textured(mesh.vertices, mesh.faces, mesh.uvs, mesh.face_uvs, texture, RENDER_SIZE)
    with FaceLandmarker(max_faces=1) as landmarker:
        face = landmarker.detect_one(image)
    # The head's mid-plane is at the mean x of its vertices (it is symmetric to 1 % of the eye distance); screen x
    # is linear in x, so its column is the mean screen x.
    axis_x = float(screen[:, 0].mean())
    points = symmetrize(face.points[:, :2].astype(np.float64), axis_x, mirror_partners_468())
    tri, bary = back_project(points, screen, mesh.faces, raster, main_uv_island(mesh.face_uvs))
    return {
        "method": "stages/geometry/make_hifi3dpp_landmarks.py (see its docstring)",
        "num_vertices": len(mesh.vertices),
        "num_faces": len(mesh.faces),
        "triangles": tri.tolist(),
        "barycentrics": np.round(bary, 6).tolist(),
    }


def main(argv: list[str]) -> None:
    """Write the committed embedding file."""
    obj_path = Path(argv[0]) if argv else DEFAULT_DATA / "head_teaser1.obj"
    texture_path = Path(argv[1]) if len(argv) > 1 else DEFAULT_DATA / "tex_teaser1.png"
    record = embed_landmarks(obj_path, texture_path)
    OUTPUT.write_text(json.dumps(record, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main(sys.argv[1:])
