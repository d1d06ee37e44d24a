"""Preview renders of textured meshes: orthographic camera turned by a yaw, Lambert shading, on the CPU rasteriser.

World frame of the meshes: x to the subject's left, y up, z towards the viewer (HiFi3D++ and FLAME heads).
A positive yaw turns the camera towards the subject's left (the view shows more of the left cheek).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stages.geometry.obj import Mesh
from stages.geometry.rasterize import interpolate, rasterize

# Preview views: FFHQ-UV shows heads from the front and turned both ways.
PREVIEW_YAWS_DEG: tuple[float, ...] = (-45.0, 0.0, 45.0)
# Light from the camera: ambient + diffuse weights of the shading factor.
AMBIENT = 0.35
DIFFUSE = 0.65
# Fraction of the image the framed mesh's bounding sphere fills.
FRAME_FILL = 0.95


@dataclass
class TexturedPart:
    """Faces of a mesh drawn with one texture.

    ``texture`` (H, W, 3) uint8 RGB, addressed by the mesh's UVs (v up) with wrap-around, so UV tiles such as
    FLAME's eyeball tile (u in [2,3]) read the texture like u in [0,1]; ``faces`` selects face indices
    (None = all faces).
    """

    mesh: Mesh
    texture: np.ndarray
    faces: np.ndarray | None = None


@dataclass(frozen=True)
class Camera:
    """Orthographic camera: rotates world points by ``yaw_deg`` about the vertical axis through ``center``."""

    center: np.ndarray  # (3,) world point at the image centre
    pixels_per_unit: float
    size: int  # square image side, pixels
    yaw_deg: float

    def rotation(self) -> np.ndarray:
        """(3,3) world -> camera rotation (about +y)."""
        a = np.deg2rad(self.yaw_deg)
        # Turning the camera towards +x (subject's left) is turning the head by -yaw about y.
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N,3) world points -> (N,3) screen: x, y in y-down pixels, depth (smaller = closer, world units)."""
        p = (np.asarray(points, dtype=np.float64) - self.center) @ self.rotation().T
        half = self.size / 2.0
        return np.stack([half + p[:, 0] * self.pixels_per_unit, half - p[:, 1] * self.pixels_per_unit, -p[:, 2]], 1)


def frame_camera(vertices: np.ndarray, size: int, yaw_deg: float) -> Camera:
    """A camera that fits the bounding sphere of (N,3) ``vertices`` into a ``size`` pixel image at any yaw."""
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    center = (lo + hi) / 2.0
    radius = float(np.linalg.norm(vertices - center, axis=1).max())
    return Camera(center=center, pixels_per_unit=FRAME_FILL * size / (2.0 * max(radius, 1e-12)), size=size,
                  yaw_deg=yaw_deg)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N,3) unit area-weighted vertex normals (zero for unused vertices)."""
    corners = vertices[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices, dtype=np.float64)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup with wrap-around: (H,W,3) uint8 texture, (P,2) UV (v up) -> (P,3) float in [0,255]."""
    h, w = texture.shape[:2]
    uv = uv - np.floor(uv)
    x = uv[:, 0] * w - 0.5
    y = (1.0 - uv[:, 1]) * h - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    x1, y1 = np.clip(x0 + 1, 0, w - 1), np.clip(y0 + 1, 0, h - 1)
    x0, y0 = np.clip(x0, 0, w - 1), np.clip(y0, 0, h - 1)
    tex = texture.astype(np.float32)
    top = tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx
    bottom = tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def render(
    parts: Sequence[TexturedPart],
    camera: Camera,
    background: tuple[int, int, int] = (255, 255, 255),
    backend: str = "cpu",
) -> np.ndarray:
    """Render textured parts through ``camera``; returns (size, size, 3) uint8 RGB."""
    positions, triangles, corner_uv, corner_normal, part_of = [], [], [], [], []
    offset = 0
    for index, part in enumerate(parts):
        mesh = part.mesh
        if mesh.face_uvs is None:
            raise ValueError(f"part {index}: mesh has no texture coordinates")
        if part.texture.ndim != 3 or part.texture.shape[2] != 3 or part.texture.dtype != np.uint8:
            shape, dtype = part.texture.shape, part.texture.dtype
            raise ValueError(f"part {index}: texture must be (H, W, 3) uint8, got {shape} {dtype}")
        faces = np.arange(len(mesh.faces)) if part.faces is None else np.asarray(part.faces, dtype=np.int64)
        normals = vertex_normals(mesh.vertices, mesh.faces) @ camera.rotation().T
        positions.append(camera.project(mesh.vertices))
        triangles.append(mesh.faces[faces] + offset)
        corner_uv.append(mesh.uvs[mesh.face_uvs[faces]])
        corner_normal.append(normals[mesh.faces[faces]])
        part_of.append(np.full(len(faces), index))
        offset += len(mesh.vertices)
    size = camera.size
    raster = rasterize(np.concatenate(positions), np.concatenate(triangles), size, size, backend=backend)
    uv = interpolate(np.concatenate(corner_uv), raster)
    normal = interpolate(np.concatenate(corner_normal), raster)
    part_map = np.concatenate(part_of)

    image = np.empty((size, size, 3), dtype=np.float32)
    image[...] = np.asarray(background, dtype=np.float32)
    covered = raster.mask
    # Camera looks down -z: a surface facing it has normal z > 0. Both sides are lit so open meshes read well.
    facing = np.abs(normal[..., 2]) / np.maximum(np.linalg.norm(normal, axis=-1), 1e-12)
    shade = AMBIENT + DIFFUSE * facing
    pixel_part = np.where(covered, part_map[np.maximum(raster.triangle_id, 0)], -1)
    for index, part in enumerate(parts):
        sel = pixel_part == index
        if sel.any():
            image[sel] = sample_texture(part.texture, uv[sel].astype(np.float64)) * shade[sel][:, None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_views(
    parts: Sequence[TexturedPart],
    size: int = 512,
    yaws_deg: Sequence[float] = PREVIEW_YAWS_DEG,
    background: tuple[int, int, int] = (255, 255, 255),
    backend: str = "cpu",
) -> np.ndarray:
    """Views side by side, framed on the first part's mesh: (size, size * len(yaws), 3) uint8 RGB."""
    framing = parts[0].mesh.vertices
    views = [render(parts, frame_camera(framing, size, yaw), background, backend) for yaw in yaws_deg]
    return np.concatenate(views, axis=1)
