"""Differentiable rendering for the fitting: the project's rasteriser for coverage, torch for the gradients.

Each call rasterises the current projected mesh without gradient (``stages/geometry/rasterize.py``, numpy on the
CPU or nvdiffrast on CUDA) to find the triangle under every pixel; the pixel's barycentrics are then recomputed
in torch from the projected vertex positions, so gradients reach the pose (and shape) through the barycentric
interpolation, and the colour through the texture lookup and the SH shading. Coverage itself is not
differentiable (as with nvdiffrast without its antialiasing op).

Conventions: pixels x right, y down, sampled at integer coordinates (``rasterize``'s convention); the camera is
``stages/geometry/fitting.py``'s OpenCV pinhole (x right, y down, z forward); texture (3, S, S) in [0, 1] with
row 0 at v = 1; SH is 3 x 9 coefficients (one row per RGB channel) in DPR's basis (``stages/lighting/sh.py``),
lit by camera-frame normals turned into DPR's frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stages.geometry.rasterize import rasterize
from stages.lighting.sh import BAND_ATTENUATION, SH_COEFFS, SH_CONSTANTS

# The SH value that makes a unit-albedo surface shade to 1 under DC-only light (the neutral light).
NEUTRAL_DC = 1.0 / float(SH_CONSTANTS[0] * BAND_ATTENUATION[0])


@dataclass
class MeshBuffers:
    """The fixed mesh data the renderer needs, as tensors.

    ``triangles`` (M, 3) int64 (numpy copy for the rasteriser), ``corner_uv`` (M, 3, 2) float32 UVs per corner
    (v up), ``vertex_count`` N.
    """

    triangles: np.ndarray
    triangles_t: torch.Tensor
    corner_uv: torch.Tensor
    vertex_count: int

    @staticmethod
    def from_topology(topology) -> MeshBuffers:
        corner = topology.uvs[topology.face_uvs]
        return MeshBuffers(np.asarray(topology.triangles, dtype=np.int64),
                           torch.as_tensor(topology.triangles, dtype=torch.int64),
                           torch.as_tensor(corner, dtype=torch.float32), len(topology.vertices))


@dataclass
class Camera:
    """Pinhole intrinsics in pixels of the rendered image."""

    focal: float
    centre: tuple[float, float]
    size: int  # square image side


@dataclass
class Rendered:
    """One render: ``image`` (H, W, 3) float in [0, 1] (0 where empty), ``coverage`` (H, W) float {0, 1},
    ``screen`` (N, 3) projected vertices (x, y pixels, camera depth)."""

    image: torch.Tensor
    coverage: torch.Tensor
    screen: torch.Tensor


def rotation_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """(3,) axis-angle (radians) -> (3, 3) rotation (Rodrigues), differentiable at 0."""
    theta2 = (rotvec * rotvec).sum()
    theta = torch.sqrt(theta2 + 1e-12)
    k = rotvec / theta
    zero = torch.zeros((), dtype=rotvec.dtype)
    cross = torch.stack([torch.stack([zero, -k[2], k[1]]), torch.stack([k[2], zero, -k[0]]),
                         torch.stack([-k[1], k[0], zero])])
    eye = torch.eye(3, dtype=rotvec.dtype)
    return eye + torch.sin(theta) * cross + (1 - torch.cos(theta)) * (cross @ cross)


def project(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(N, 3) template-frame points -> (N, 3): x, y in y-down pixels, camera depth."""
    cam = points @ rotation.T + translation
    z = cam[:, 2]
    return torch.stack([camera.focal * cam[:, 0] / z + camera.centre[0],
                        camera.focal * cam[:, 1] / z + camera.centre[1], z], dim=1)


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """(N, 3) unit area-weighted vertex normals, differentiable."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    face = torch.cross(b - a, c - a, dim=1)
    normals = torch.zeros_like(vertices).index_add(0, triangles.reshape(-1), face.repeat_interleave(3, dim=0))
    return normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-12)


def sh_basis(normals_dpr: torch.Tensor) -> torch.Tensor:
    """(P, 3) unit normals in DPR's frame -> (P, 9) attenuated SH basis (``stages.lighting.sh.sh_basis``)."""
    x, y, z = normals_dpr.unbind(dim=1)
    raw = torch.stack([torch.ones_like(x), y, z, x, y * x, y * z, 3 * z ** 2 - 1, x * z, x ** 2 - y ** 2], dim=1)
    return raw * torch.as_tensor(SH_CONSTANTS * BAND_ATTENUATION, dtype=normals_dpr.dtype)


def neutral_sh() -> torch.Tensor:
    """(3, 9) SH that shades every normal to 1 (DC only)."""
    sh = torch.zeros(3, SH_COEFFS)
    sh[:, 0] = NEUTRAL_DC
    return sh


def _pixel_barycentrics(screen: torch.Tensor, tri: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Perspective-correct barycentrics (P, 3) of pixel centres (px, py) in triangles ``tri`` (P, 3)."""
    a, b, c = (screen[tri[:, k]] for k in range(3))
    d1, d2 = b[:, :2] - a[:, :2], c[:, :2] - a[:, :2]
    area = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    area = torch.where(area.abs() < 1e-9, torch.full_like(area, 1e-9), area)
    qx, qy = px - a[:, 0], py - a[:, 1]
    b1 = (qx * d2[:, 1] - d2[:, 0] * qy) / area
    b2 = (d1[:, 0] * qy - qx * d1[:, 1]) / area
    affine = torch.stack([1 - b1 - b2, b1, b2], dim=1)
    weighted = affine / torch.stack([a[:, 2], b[:, 2], c[:, 2]], dim=1)
    return weighted / weighted.sum(dim=1, keepdim=True)


def rasterize_pixels(screen: torch.Tensor, triangles: np.ndarray, size: int, backend: str = "cpu"
                     ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """The covered pixels of a (size, size) image of the mesh: flat pixel indices (P,) numpy, their triangle ids
    (P,) int64 and differentiable perspective-correct barycentrics (P, 3) from ``screen`` (N, 3) (x, y pixels,
    depth); the coverage itself comes from the project's rasteriser, without gradient."""
    raster = rasterize(screen.detach().double().cpu().numpy(), triangles, size, size, backend=backend)
    covered = np.flatnonzero(raster.triangle_id.ravel() >= 0)
    ids = raster.triangle_id.ravel()[covered].astype(np.int64)
    device = screen.device
    tri = torch.as_tensor(np.asarray(triangles, dtype=np.int64)[ids], device=device)
    rows = torch.as_tensor(covered // size, dtype=screen.dtype, device=device)
    cols = torch.as_tensor(covered % size, dtype=screen.dtype, device=device)
    return covered, torch.as_tensor(ids, device=device), _pixel_barycentrics(screen, tri, cols, rows)


def render(vertices: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor, texture: torch.Tensor,
           sh: torch.Tensor, mesh: MeshBuffers, camera: Camera, backend: str = "cpu") -> Rendered:
    """Render the textured, SH-lit mesh: ``vertices`` (N, 3) template frame, ``texture`` (3, S, S), ``sh`` (3, 9)."""
    screen = project(vertices, rotation, translation, camera)
    size = camera.size
    covered, tri_ids, bary = rasterize_pixels(screen, mesh.triangles, size, backend)
    tri = mesh.triangles_t[tri_ids]

    uv = (bary[:, :, None] * mesh.corner_uv[tri_ids].to(screen.dtype)).sum(dim=1)  # (P, 2), v up
    grid = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], dim=1).to(texture.dtype)
    albedo = torch.nn.functional.grid_sample(texture[None], grid[None, None], mode="bilinear",
                                             padding_mode="border", align_corners=False)[0, :, 0].T  # (P, 3)
    normals = vertex_normals(vertices, mesh.triangles_t) @ rotation.T  # OpenCV camera frame
    n = (bary[:, :, None] * normals[tri]).sum(dim=1)
    n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n_dpr = torch.stack([n[:, 0], n[:, 2], -n[:, 1]], dim=1)  # DPR: X = x, Y = z (away), Z = -y (up)
    shading = sh_basis(n_dpr).to(sh.dtype) @ sh.T  # (P, 3)
    colour = (albedo * shading).to(texture.dtype)
    index = torch.as_tensor(covered, dtype=torch.int64)
    image = torch.zeros(size * size, 3, dtype=texture.dtype).index_put((index,), colour)
    coverage = torch.zeros(size * size, dtype=texture.dtype)
    coverage[index] = 1.0
    return Rendered(image.reshape(size, size, 3), coverage.reshape(size, size), screen)
