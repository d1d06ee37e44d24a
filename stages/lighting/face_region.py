"""The face region of an image from its 468 landmarks: per-pixel normals, skin mask, brightness symmetry.

The surface is the Delaunay triangulation of the landmarks' image positions lifted to
their 3D positions (x, y pixels, mediapipe's z depth): triangles never overlap on the
image, so every pixel inside the landmark hull gets one interpolated normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.face.landmarks import EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, NUM_LANDMARKS

# mediapipe face-mesh contours (face_mesh_connections.py) kept out of the skin mask.
BROW_IMAGE_LEFT = (46, 52, 53, 55, 63, 65, 66, 70, 105, 107)  # FACEMESH_RIGHT_EYEBROW
BROW_IMAGE_RIGHT = (276, 282, 283, 285, 293, 295, 296, 300, 334, 336)  # FACEMESH_LEFT_EYEBROW
LIPS_OUTER = (0, 17, 37, 39, 40, 61, 84, 91, 146, 181, 185, 267, 269, 270, 291, 314, 321, 375, 405, 409)
# Landmarks on the face's vertical symmetry line, forehead to chin.
MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 11, 12, 13, 14, 15, 16, 17, 18, 200, 199,
           175, 152)
# Features are grown by this fraction of the inter-ocular distance so that their
# rims (lashes, lip line, brow hair) stay out of the skin mask.
FEATURE_MARGIN = 0.08
MIN_HALF_PIXELS = 50  # fewer skin pixels on one side of the midline: no symmetry score


@dataclass(frozen=True)
class FaceRegion:
    """Per-pixel geometry of the face at an image's resolution (H, W).

    ``normals`` (H, W, 3) unit normals in image-camera axes (x right, y down, z away
    from the viewer), zero outside the hull; ``hull`` (H, W) bool, pixels inside the
    landmark mesh; ``skin`` (H, W) bool, the hull minus eyes, brows and lips.
    """

    normals: np.ndarray
    hull: np.ndarray
    skin: np.ndarray


def face_region(points: np.ndarray, height: int, width: int) -> FaceRegion:
    """Face geometry from (468, 3) landmarks (x, y pixels y-down, z depth in pixels) on an (H, W) image."""
    from scipy.spatial import Delaunay

    if points.shape != (NUM_LANDMARKS, 3):
        raise ValueError(f"expected ({NUM_LANDMARKS}, 3) landmarks, got {points.shape}")
    pts = np.asarray(points, dtype=np.float64)
    tri = Delaunay(pts[:, :2])
    vertex_normals = _vertex_normals(pts, tri.simplices)

    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    simplex = tri.find_simplex(pixels)
    inside = simplex >= 0
    transform = tri.transform[simplex[inside]]
    bary2 = np.einsum("nij,nj->ni", transform[:, :2], pixels[inside] - transform[:, 2])
    bary = np.concatenate([bary2, 1 - bary2.sum(axis=1, keepdims=True)], axis=1)
    corners = tri.simplices[simplex[inside]]
    normal = np.einsum("nk,nkc->nc", bary, vertex_normals[corners])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True).clip(1e-9)

    normals = np.zeros((height * width, 3), dtype=np.float32)
    normals[inside] = normal
    hull = inside.reshape(height, width)
    skin = hull & ~_feature_mask(pts, height, width)
    return FaceRegion(normals=normals.reshape(height, width, 3), hull=hull, skin=skin)


def _vertex_normals(pts: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(N, 3) area-weighted unit vertex normals, oriented towards the viewer (negative z)."""
    a, b, c = (pts[triangles[:, k]] for k in range(3))
    face = np.cross(b - a, c - a)
    # Triangles of a 2D Delaunay never fold over, so one consistent orientation is
    # "towards the camera"; flip each to that side.
    face *= np.where(face[:, 2] > 0, -1.0, 1.0)[:, None]
    normals = np.zeros_like(pts)
    for k in range(3):
        np.add.at(normals, triangles[:, k], face)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-9)


def _feature_mask(pts: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool: eyes, brows and lips (convex hulls), grown by FEATURE_MARGIN."""
    import cv2

    mask = np.zeros((height, width), dtype=np.uint8)
    for group in (EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, BROW_IMAGE_LEFT, BROW_IMAGE_RIGHT, LIPS_OUTER):
        hull = cv2.convexHull(np.round(pts[list(group), :2]).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1)
    ocular = np.linalg.norm(pts[list(EYE_IMAGE_RIGHT), :2].mean(0) - pts[list(EYE_IMAGE_LEFT), :2].mean(0))
    grow = max(1, int(round(FEATURE_MARGIN * ocular)))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return mask.astype(bool)


def brightness_symmetry(luminance: np.ndarray, points: np.ndarray, skin: np.ndarray) -> float:
    """Left/right brightness asymmetry of the skin: |mean_left - mean_right| / mean of both halves.

    ``luminance`` (H, W) any linear-ish brightness (e.g. Lab L), ``points`` (468, 2+)
    pixels, ``skin`` (H, W) bool. The halves are split at the face's midline
    (interpolated per row through the MIDLINE landmarks), so a turned head is split
    where its nose is. 0 = symmetric; NaN when a half has too few pixels.
    """
    mid = np.asarray(points, dtype=np.float64)[list(MIDLINE), :2]
    order = np.argsort(mid[:, 1])
    rows = np.arange(luminance.shape[0], dtype=np.float64)
    split = np.interp(rows, mid[order, 1], mid[order, 0])
    cols = np.arange(luminance.shape[1], dtype=np.float64)
    left = skin & (cols[None, :] < split[:, None])
    right = skin & (cols[None, :] > split[:, None])
    if left.sum() < MIN_HALF_PIXELS or right.sum() < MIN_HALF_PIXELS:
        return float("nan")
    mean_left = float(luminance[left].mean())
    mean_right = float(luminance[right].mean())
    denominator = (mean_left + mean_right) / 2
    return abs(mean_left - mean_right) / denominator if denominator > 0 else float("nan")
