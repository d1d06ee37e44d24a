"""Which surface points a camera sees: FFHQ-UV's normal test and a z-buffer depth test.

FFHQ-UV (pipeline.md 2.4(c)) calls a vertex visible iff its camera-space normal faces the camera with
n_z > 0.1 (its camera looks down -z; in the OpenCV frame used here that is -n_z > 0.1). The normal test alone
lets the far cheek show through the nose on turned views, so a depth test against a z-buffer of the fitted
mesh is added.
"""

from __future__ import annotations

import numpy as np

from stages.geometry.rasterize import rasterize_depth

NORMAL_Z_MIN = 0.1  # FFHQ-UV's threshold on the camera-space normal
DEPTH_TOLERANCE = 0.01  # a point is occluded if it lies this far behind the z-buffer (fraction of head depth)
# On a surface seen at a grazing angle the depth changes fast across one buffer pixel, so its own nearer part in the
# neighbourhood the buffer is read at would occlude it: the tolerance grows by this many buffer pixels of its slope.
GRAZING_PIXELS = 2.0


def normal_visible(normals_camera: np.ndarray) -> np.ndarray:
    """(N, 3) unit normals in the OpenCV camera frame -> (N,) bool: facing the camera (FFHQ-UV's test)."""
    return -normals_camera[:, 2] > NORMAL_Z_MIN


def depth_buffer(screen: np.ndarray, triangles: np.ndarray, height: int, width: int, backend: str = "cpu",
                 scale: float = 0.5) -> tuple[np.ndarray, float]:
    """A z-buffer of the mesh at ``scale`` times the image size: ((h, w) float32 depth, scale used).

    ``screen`` (N, 3): x, y in y-down pixels of the full image, camera depth z. A half-size buffer is
    enough for occlusion by whole face parts and costs a quarter of the time.
    """
    h, w = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
    scaled = np.concatenate([(screen[:, :2] + 0.5) * scale - 0.5, screen[:, 2:3]], axis=1)
    return rasterize_depth(scaled, triangles, h, w, backend=backend), scale


def depth_visible(points: np.ndarray, zbuffer: np.ndarray, scale: float, tolerance: float) -> np.ndarray:
    """(P, 3) points (x, y full-image pixels, depth) -> (P,) bool: not behind the z-buffer by more than tolerance.

    The buffer is read at the 2x2 neighbourhood's farthest value so that points on silhouette edges (where
    the nearest buffer pixel may already be background or another surface) are judged leniently.
    """
    h, w = zbuffer.shape
    x = (points[:, 0] + 0.5) * scale - 0.5
    y = (points[:, 1] + 0.5) * scale - 0.5
    x0 = np.clip(np.floor(x).astype(int), 0, w - 1)
    y0 = np.clip(np.floor(y).astype(int), 0, h - 1)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ref = np.stack([zbuffer[y0, x0], zbuffer[y0, x1], zbuffer[y1, x0], zbuffer[y1, x1]], axis=1)
    finite = np.where(np.isfinite(ref), ref, -np.inf).max(axis=1)
    reference = np.where(np.isfinite(finite), finite, np.inf)
    return points[:, 2] <= reference + tolerance


def grazing_tolerance(depth: np.ndarray, slope: np.ndarray, focal: float, scale: float) -> np.ndarray:
    """(P,) extra tolerance (camera depth units) of points at camera ``depth`` on a surface whose depth changes by
    ``slope`` per unit of sideways travel (|n_xy| / |n_z| of its camera-space normal): ``GRAZING_PIXELS`` buffer
    pixels (1 / ``scale`` image pixels, ``depth / focal`` units each) of that slope. Without it the silhouette of a
    cheek seen edge-on came out of the depth test as a comb of one-pixel notches, stretched into spikes in UV."""
    return GRAZING_PIXELS * depth / (focal * scale) * slope
