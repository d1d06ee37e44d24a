"""Rendering the HiFi3D++ 3DMM face as FFHQ-UV's fitting does (pipeline.md section 7), on the project's rasteriser.

FFHQ-UV's renderer (nvdiffrast, FoV 2 atan(112 / 1015), 224 px) interpolates two per-vertex attributes over the
face triangles (``tri``): the UV position ``vtx_vt`` (0..512, row/col) and the Deep3D SH shading of the vertex
normal; the pixel's colour is the *nearest* texel of the UV map at ``uv * S / 512`` times the shading (stage 1:
the 3DMM albedo instead of a texel). Here the coverage comes from ``stages.fitting.render.rasterize_pixels``
(numpy on the CPU, nvdiffrast on CUDA, no gradient) and the interpolation is torch, so gradients reach the
shading (light, shape, pose), the sampled texels (the texture GAN) and, through the landmarks, the geometry.

Frames: Deep3D's camera (x right, y up, camera at z = 10 looking down -z); the image is y down with pixel
(r, c) at x = c, y_up = 223 - r, the frame of the 224 landmarks (``FitInput.landmarks_down``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stages.fitting import face_model as fm
from stages.fitting.render import rasterize_pixels


@dataclass
class FaceRender:
    """``image`` (1, 3, 224, 224) in [0, 1] (0 off the face), ``mask`` (1, 1, 224, 224) coverage {0, 1},
    ``landmarks`` (1, 68, 2) projected keypoints, 224 pixels, y up."""

    image: torch.Tensor
    mask: torch.Tensor
    landmarks: torch.Tensor


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor, point_buf: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """(N, 3) Deep3D vertex normals: the sum of the unit normals of the (head) triangles around a vertex, unit.

    ``point_buf`` (N, K) 0-based triangle ids per vertex, -1 = padding (Deep3D's table); None = all triangles."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    face = torch.nn.functional.normalize(torch.cross(a - b, b - c, dim=1), dim=1)
    if point_buf is not None:  # -1 picks the appended zero row, as Deep3D pads
        summed = torch.cat([face, face.new_zeros(1, 3)])[point_buf].sum(dim=1)
    else:
        summed = torch.zeros_like(vertices).index_add(0, triangles.reshape(-1), face.repeat_interleave(3, dim=0))
    return torch.nn.functional.normalize(summed, dim=1)


def _screen(camera_vertices: torch.Tensor) -> torch.Tensor:
    """(N, 3) camera-frame vertices -> (N, 3) x, y-down pixels of the 224 image and depth (distance along -z)."""
    pixels = fm.project(camera_vertices[None])[0]
    depth = fm.CAMERA_DISTANCE - camera_vertices[:, 2]
    return torch.stack([pixels[:, 0], fm.IMAGE_SIZE - 1 - pixels[:, 1], depth], dim=1)


def nearest_texels(uv_map: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """(1, 3, S, S) map, (P, 2) row/col positions in 0..512 -> (P, 3) the nearest texels (FFHQ-UV's lookup)."""
    size = uv_map.shape[-1]
    index = (uv * size / 512).long().clamp(0, size - 1)
    flat = uv_map[0].reshape(3, -1)
    return flat[:, index[:, 0] * size + index[:, 1]].T


@dataclass
class FaceRaster:
    """The geometry part of a render: covered pixels ``index`` (P,) flat, their interpolated ``uv`` (P, 2) in
    0..512, ``shading`` (P, 3) and vertex ``colour`` (P, 3) (albedo x shading, for untextured renders), the
    coverage ``mask`` (1, 1, 224, 224) and ``landmarks`` (1, 68, 2) y up. Constant while the shape is (stage 2)."""

    index: torch.Tensor
    uv: torch.Tensor
    shading: torch.Tensor
    colour: torch.Tensor
    mask: torch.Tensor
    landmarks: torch.Tensor


def raster_face(model: fm.HiFi3DModel, parts: fm.Coefficients, backend: str = "cpu") -> FaceRaster:
    """Rasterise batch element 0 of ``parts`` and interpolate its per-vertex attributes."""
    shape = model.shape(parts.id, parts.exp)
    camera = fm.to_camera(shape, parts.angle, parts.trans)[0]
    normals = vertex_normals(shape[0], model.head_tri, model.point_buf) @ fm.rotation(parts.angle)[0].T
    shading = fm.sh_shading(normals[None], parts.gamma)[0]  # (N, 3)
    size = fm.IMAGE_SIZE
    covered, tri_ids, bary = rasterize_pixels(_screen(camera), model.face_tri_numpy, size, backend)
    corners = model.face_tri[tri_ids]  # (P, 3) vertex ids

    def interpolate(values: torch.Tensor) -> torch.Tensor:
        return (bary[:, :, None] * values[corners]).sum(dim=1)

    index = torch.as_tensor(covered, dtype=torch.int64, device=shading.device)
    mask = torch.zeros(size * size, dtype=shading.dtype, device=shading.device)
    mask[index] = 1.0
    return FaceRaster(index, interpolate(model.vtx_vt), interpolate(shading),
                      interpolate(model.albedo(parts.tex)[0] / 255.0 * shading), mask.reshape(1, 1, size, size),
                      fm.project(camera[model.keypoints][None]))


def shade(raster: FaceRaster, uv_map: torch.Tensor | None) -> FaceRender:
    """The image of a raster: UV-textured if ``uv_map`` (1, 3, S, S) is given, else the albedo."""
    colour = raster.colour if uv_map is None else nearest_texels(uv_map, raster.uv) * raster.shading
    size = fm.IMAGE_SIZE
    image = torch.zeros(size * size, 3, dtype=colour.dtype, device=colour.device).index_put((raster.index,), colour)
    return FaceRender(image.T.reshape(1, 3, size, size), raster.mask, raster.landmarks)


def render_face(model: fm.HiFi3DModel, parts: fm.Coefficients, uv_map: torch.Tensor | None,
                backend: str = "cpu") -> FaceRender:
    """Render batch element 0 of ``parts``: UV-textured if ``uv_map`` (1, 3, S, S) is given, else the albedo."""
    return shade(raster_face(model, parts, backend), uv_map)


def composite(render: FaceRender, photo: torch.Tensor) -> torch.Tensor:
    """FFHQ-UV's ``render_face``: the render where the face covers the image (coverage detached), the photo
    elsewhere; (1, 3, 224, 224)."""
    mask = render.mask.detach()
    return render.image * mask + (1 - mask) * photo


def image_numpy(tensor: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) tensor -> (H, W, C) float numpy (detached, on the CPU)."""
    return tensor.detach()[0].permute(1, 2, 0).float().cpu().numpy()
