"""Triangle rasterisation with one interface and two backends: vectorised numpy (CPU) and nvdiffrast (CUDA).

Conventions (shared by both backends):
- screen coordinates are pixels, x to the right, y down; pixel ``(row i, col j)`` is sampled at ``(x=j, y=i)``,
  the same convention as ``cv2.remap``;
- depth ``z`` is any value where smaller is closer; it is interpolated affinely in screen space, so pass a
  depth that is affine in screen space (orthographic depth, or NDC ``z/w``) when exact occlusion matters;
- barycentrics ``(b0, b1, b2)`` weight the triangle's corners in the order of ``triangles``; with
  ``perspective_w`` (clip-space w per vertex) they are perspective-correct, otherwise affine in screen space;
- ties in depth go to the lowest triangle id, so shared edges are deterministic.

UV rasterisation maps ``(u, v)`` in [0,1] (OBJ convention: v up) to texels of an SxS grid whose row 0 is
``v = 1``: texel ``(r, c)`` has its centre at ``u = (c + 0.5) / S``, ``v = 1 - (r + 0.5) / S``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BACKENDS: tuple[str, ...] = ("cpu", "nvdiffrast")

# Candidate pixels tested per numpy chunk: bounds memory (about 100 bytes per candidate) on big images.
_CHUNK_CANDIDATES = 2_000_000
# Inside test tolerance on barycentrics: keeps pixels exactly on a shared edge covered by one of the triangles.
_EDGE_EPS = 1e-9
# One nvdiffrast RasterizeCudaContext per CUDA device per process (a Ray actor): making one costs a CUDA
# context set-up and GPU memory, so it is made once (prepare_backend, from a stage's setup) and reused.
_CUDA_CONTEXTS: dict[int, Any] = {}


@dataclass
class Raster:
    """Per-pixel result of rasterising a mesh.

    ``triangle_id`` (H, W) int32, -1 where empty; ``barycentrics`` (H, W, 3) float32 (zeros where empty);
    ``depth`` (H, W) float32, +inf where empty.
    """

    triangle_id: np.ndarray
    barycentrics: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: pixels covered by a triangle."""
        return self.triangle_id >= 0


def rasterize(
    screen_xyz: np.ndarray,
    triangles: np.ndarray,
    height: int,
    width: int,
    backend: str = "cpu",
    perspective_w: np.ndarray | None = None,
) -> Raster:
    """Rasterise triangles given in screen space.

    ``screen_xyz`` (N, 3) float: x, y in y-down pixels, z depth (smaller = closer); ``triangles`` (M, 3) int
    vertex indices; ``perspective_w`` optional (N,) positive clip-space w for perspective-correct barycentrics.
    """
    screen_xyz = np.asarray(screen_xyz, dtype=np.float64)
    triangles = np.asarray(triangles, dtype=np.int64)
    if screen_xyz.ndim != 2 or screen_xyz.shape[1] != 3:
        raise ValueError(f"screen_xyz must be (N, 3), got {screen_xyz.shape}")
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise ValueError(f"triangles must be (M, 3), got {triangles.shape}")
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if backend == "cpu":
        raster = _rasterize_numpy(screen_xyz, triangles, height, width)
    elif backend == "nvdiffrast":
        raster = _rasterize_nvdiffrast(screen_xyz, triangles, height, width)
    else:
        raise ValueError(f"unknown rasteriser backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if perspective_w is not None:
        raster.barycentrics = _perspective_correct(raster, triangles, np.asarray(perspective_w, dtype=np.float64))
    return raster


def uv_to_texel(uv: np.ndarray, size: int) -> np.ndarray:
    """(N, 2) UV in [0,1] (v up) -> (N, 2) texel coordinates (x = column, y = row, y-down) of an SxS grid."""
    uv = np.asarray(uv, dtype=np.float64)
    return np.stack([uv[:, 0] * size - 0.5, (1.0 - uv[:, 1]) * size - 0.5], axis=1)


def rasterize_uv(uv: np.ndarray, uv_triangles: np.ndarray, size: int, backend: str = "cpu") -> Raster:
    """Rasterise triangles given in UV space onto an SxS texel grid (row 0 = v 1).

    ``uv`` (K, 2) in [0,1]; ``uv_triangles`` (M, 3) indices into ``uv``. Returns per-texel triangle id and
    barycentrics (affine, exact in UV space); depth is 0 where covered.
    """
    texel = uv_to_texel(uv, size)
    xyz = np.concatenate([texel, np.zeros((len(texel), 1))], axis=1)
    return rasterize(xyz, uv_triangles, size, size, backend=backend)


def interpolate(values: np.ndarray, raster: Raster, triangles: np.ndarray | None = None) -> np.ndarray:
    """Interpolate attributes over the covered pixels; (H, W, C) float32, zeros where empty.

    ``values`` is either (N, C) per vertex (then ``triangles`` (M, 3) is required) or (M, 3, C) per corner.
    """
    values = np.asarray(values)
    squeeze = values.ndim == 1 or (triangles is None and values.ndim == 2)
    if values.ndim == 1:
        values = values[:, None]
    if triangles is not None:
        corner = values[np.asarray(triangles)]  # (M, 3, C)
    else:
        corner = values if values.ndim == 3 else values[..., None]
    h, w = raster.triangle_id.shape
    out = np.zeros((h, w, corner.shape[-1]), dtype=np.float32)
    covered = raster.triangle_id >= 0
    tid = raster.triangle_id[covered]
    bary = raster.barycentrics[covered].astype(np.float64)
    out[covered] = np.einsum("pk,pkc->pc", bary, corner[tid].astype(np.float64))
    return out[..., 0] if squeeze else out


def _perspective_correct(raster: Raster, triangles: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Turn screen-space barycentrics into perspective-correct ones using per-vertex clip w."""
    covered = raster.triangle_id >= 0
    out = np.zeros_like(raster.barycentrics)
    inv_w = 1.0 / w[triangles[raster.triangle_id[covered]]]  # (P, 3)
    b = raster.barycentrics[covered].astype(np.float64) * inv_w
    out[covered] = (b / b.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


@dataclass
class _Boxes:
    """The triangles' screen corners (M, 3, 3), signed areas (M,) and pixel bounding boxes (origin, size)."""

    corners: np.ndarray
    area: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    bw: np.ndarray
    bh: np.ndarray


@dataclass
class _Buffers:
    """Flat (height * width) fragment buffers: closest depth, its triangle id (-1 = none) and barycentrics."""

    width: int
    depth: np.ndarray
    tri: np.ndarray
    bary: np.ndarray


def _rasterize_numpy(xyz: np.ndarray, triangles: np.ndarray, height: int, width: int) -> Raster:
    """Vectorised CPU rasteriser: triangles grouped by bounding-box size, tested in batches of candidate pixels."""
    buffers = _Buffers(width, np.full(height * width, np.inf, dtype=np.float64),
                       np.full(height * width, -1, dtype=np.int64), np.zeros((height * width, 3), dtype=np.float64))

    corners = xyz[triangles]  # (M, 3, 3)
    x, y = corners[..., 0], corners[..., 1]
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    finite = np.isfinite(corners).all(axis=(1, 2))
    x0 = np.clip(np.ceil(np.where(finite, x.min(axis=1), 0.0)), 0, width).astype(np.int64)
    x1 = np.clip(np.floor(np.where(finite, x.max(axis=1), -1.0)), -1, width - 1).astype(np.int64)
    y0 = np.clip(np.ceil(np.where(finite, y.min(axis=1), 0.0)), 0, height).astype(np.int64)
    y1 = np.clip(np.floor(np.where(finite, y.max(axis=1), -1.0)), -1, height - 1).astype(np.int64)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    boxes = _Boxes(corners, area, x0, y0, bw, bh)
    live = np.flatnonzero(finite & (np.abs(area) > 1e-12) & (bw > 0) & (bh > 0))
    # Sorting by box size keeps the padding small inside a chunk.
    live = live[np.lexsort((bw[live], bh[live]))]

    start = 0
    while start < len(live):
        # Grow the chunk while (count x largest box) fits the candidate budget; boxes only grow along `live`.
        end = start + 1
        step = 1
        while end < len(live):
            probe = min(len(live), end + step)
            last = live[probe - 1]
            if (probe - start) * int(bw[live[start:probe]].max()) * int(bh[last]) > _CHUNK_CANDIDATES:
                break
            end = probe
            step *= 2
        ids = live[start:end]
        start = end
        _raster_chunk(ids, boxes, buffers)

    return Raster(
        triangle_id=buffers.tri.reshape(height, width).astype(np.int32),
        barycentrics=buffers.bary.reshape(height, width, 3).astype(np.float32),
        depth=buffers.depth.reshape(height, width).astype(np.float32),
    )


def _raster_chunk(ids: np.ndarray, boxes: _Boxes, buffers: _Buffers) -> None:
    """Rasterise one chunk of triangles and merge its fragments into the buffers (closest, then lowest id)."""
    corners, area, x0, y0, bw, bh = boxes.corners, boxes.area, boxes.x0, boxes.y0, boxes.bw, boxes.bh
    width, depth_buf, tri_buf, bary_buf = buffers.width, buffers.depth, buffers.tri, buffers.bary
    mw, mh = int(bw[ids].max()), int(bh[ids].max())
    gx = x0[ids, None, None] + np.arange(mw)[None, None, :]  # (T, 1, mw)
    gy = y0[ids, None, None] + np.arange(mh)[None, :, None]  # (T, mh, 1)
    in_box = (np.arange(mw)[None, None, :] < bw[ids, None, None]) & (np.arange(mh)[None, :, None] < bh[ids, None, None])
    c = corners[ids]
    xa, ya = c[:, 0, 0, None, None], c[:, 0, 1, None, None]
    dx1, dy1 = c[:, 1, 0, None, None] - xa, c[:, 1, 1, None, None] - ya
    dx2, dy2 = c[:, 2, 0, None, None] - xa, c[:, 2, 1, None, None] - ya
    inv_area = 1.0 / area[ids, None, None]
    px, py = gx - xa, gy - ya
    b1 = (px * dy2 - dx2 * py) * inv_area
    b2 = (dx1 * py - px * dy1) * inv_area
    b0 = 1.0 - b1 - b2
    inside = in_box & (b0 >= -_EDGE_EPS) & (b1 >= -_EDGE_EPS) & (b2 >= -_EDGE_EPS)
    t, r, q = np.nonzero(inside)
    if len(t) == 0:
        return
    fb0, fb1, fb2 = b0[t, r, q], b1[t, r, q], b2[t, r, q]
    tri = ids[t]
    z = corners[tri, 0, 2] * fb0 + corners[tri, 1, 2] * fb1 + corners[tri, 2, 2] * fb2
    pix = (y0[tri] + r) * width + (x0[tri] + q)
    order = np.lexsort((tri, z, pix))
    pix, z, tri = pix[order], z[order], tri[order]
    first = np.ones(len(pix), dtype=bool)
    first[1:] = pix[1:] != pix[:-1]
    sel = order[first]
    pix, z, tri = pix[first], z[first], tri[first]
    better = (z < depth_buf[pix]) | ((z == depth_buf[pix]) & (tri < tri_buf[pix]))
    pix, sel = pix[better], sel[better]
    depth_buf[pix] = z[better]
    tri_buf[pix] = tri[better]
    bary_buf[pix] = np.stack([fb0[sel], fb1[sel], fb2[sel]], axis=1)


def _rasterize_nvdiffrast(xyz: np.ndarray, triangles: np.ndarray, height: int, width: int) -> Raster:
    """CUDA rasteriser through nvdiffrast (imported lazily; needs a GPU)."""
    import nvdiffrast.torch as dr
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("the nvdiffrast rasteriser needs CUDA; use backend='cpu' on this machine")
    # Pixel centres map to NDC (j + 0.5) / W * 2 - 1; nvdiffrast's image row 0 is NDC y = -1, which matches y-down.
    ndc_x = (xyz[:, 0] + 0.5) / width * 2.0 - 1.0
    ndc_y = (xyz[:, 1] + 0.5) / height * 2.0 - 1.0
    z = xyz[:, 2]
    finite = np.isfinite(z)
    lo, hi = (z[finite].min(), z[finite].max()) if finite.any() else (0.0, 1.0)
    # Depth into (-1, 1) with a margin so the near/far planes never clip a vertex; affine, so order is kept.
    ndc_z = (z - lo) / max(hi - lo, 1e-12) * 1.8 - 0.9
    clip = np.stack([ndc_x, ndc_y, ndc_z, np.ones_like(z)], axis=1)
    ctx, device = cuda_context()
    pos = torch.as_tensor(clip[None], dtype=torch.float32, device=device).contiguous()
    tri = torch.as_tensor(triangles, dtype=torch.int32, device=device).contiguous()
    rast, _ = dr.rasterize(ctx, pos, tri, resolution=[height, width])
    rast = rast[0].cpu().numpy().astype(np.float64)
    tri_id = rast[..., 3].astype(np.int64) - 1
    covered = tri_id >= 0
    u, v = rast[..., 0], rast[..., 1]
    bary = np.stack([u, v, 1.0 - u - v], axis=-1) * covered[..., None]
    depth = np.where(covered, (rast[..., 2] + 0.9) / 1.8 * max(hi - lo, 1e-12) + lo, np.inf)
    return Raster(
        triangle_id=tri_id.astype(np.int32),
        barycentrics=bary.astype(np.float32),
        depth=depth.astype(np.float32),
    )


def cuda_context() -> tuple[Any, Any]:
    """This process's nvdiffrast context on its current CUDA device (made on first use), and that device."""
    import nvdiffrast.torch as dr
    import torch

    index = torch.cuda.current_device()
    if index not in _CUDA_CONTEXTS:
        _CUDA_CONTEXTS[index] = dr.RasterizeCudaContext(device=torch.device("cuda", index))
    return _CUDA_CONTEXTS[index], torch.device("cuda", index)


def prepare_backend(backend: str, device: str) -> None:
    """Make the GPU resources of ``backend`` once, in a stage's ``setup``, on ``device`` (the GPU Ray assigned).

    For nvdiffrast: select ``device`` as this process's current CUDA device and make its
    rasteriser context, which every later ``rasterize`` call of the process reuses.
    """
    if backend != "nvdiffrast":
        return
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("the nvdiffrast rasteriser needs CUDA; use backend='cpu' on this machine")
    torch.cuda.set_device(torch.device(device if device.startswith("cuda") else "cuda"))
    cuda_context()


def backend_for_device(device: str) -> str:
    """The rasteriser backend for a torch device string: nvdiffrast on CUDA, numpy otherwise."""
    return "nvdiffrast" if str(device).startswith("cuda") else "cpu"
