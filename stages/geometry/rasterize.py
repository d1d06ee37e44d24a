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
class _Fragments:
    """The covered pixels of one chunk of triangles: per fragment its triangle id, flat pixel index
    (row * width + column), barycentrics (F, 3) and interpolated depth."""

    tri: np.ndarray
    pix: np.ndarray
    bary: np.ndarray
    z: np.ndarray


def _triangle_boxes(xyz: np.ndarray, triangles: np.ndarray, height: int, width: int) -> tuple[_Boxes, np.ndarray]:
    """The triangles' pixel bounding boxes, and the ids of those that cover a pixel centre, sorted by box size."""
    corners = xyz[triangles]  # (M, 3, 3)
    x, y = corners[..., 0], corners[..., 1]
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    finite = np.isfinite(corners).all(axis=(1, 2))
    x0 = np.clip(np.ceil(np.where(finite, x.min(axis=1), 0.0)), 0, width).astype(np.int64)
    x1 = np.clip(np.floor(np.where(finite, x.max(axis=1), -1.0)), -1, width - 1).astype(np.int64)
    y0 = np.clip(np.ceil(np.where(finite, y.min(axis=1), 0.0)), 0, height).astype(np.int64)
    y1 = np.clip(np.floor(np.where(finite, y.max(axis=1), -1.0)), -1, height - 1).astype(np.int64)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    live = np.flatnonzero(finite & (np.abs(area) > 1e-12) & (bw > 0) & (bh > 0))
    # Sorted by a size class (height then width, each rounded up to a step of about 1.25x) so that a chunk's
    # boxes are padded to at most ~1.25x per side: padding to the chunk's largest box was 6x the candidates.
    live = live[np.lexsort((bw[live], bh[live], _size_class(bw[live]), _size_class(bh[live])))]
    return _Boxes(corners, area, x0, y0, bw, bh), live


def _size_class(extent: np.ndarray) -> np.ndarray:
    """Box extents (pixels) -> size class: exact up to 4, then steps of about 1.25x."""
    return np.where(extent <= 4, extent, 4 + np.ceil(np.log(np.maximum(extent, 1) / 4.0) / np.log(1.25)))


def _chunks(boxes: _Boxes, live: np.ndarray):
    """Consecutive runs of ``live`` that share a size class and fit the candidate budget."""
    classes = _size_class(boxes.bh[live]) * 1000 + _size_class(boxes.bw[live])
    starts = np.flatnonzero(np.r_[True, classes[1:] != classes[:-1]])
    for begin, end in zip(starts, np.r_[starts[1:], len(live)]):
        ids = live[begin:end]
        per_chunk = max(1, _CHUNK_CANDIDATES // int(boxes.bw[ids].max() * boxes.bh[ids].max()))
        for first in range(0, len(ids), per_chunk):
            yield ids[first:first + per_chunk]


def _chunk_fragments(ids: np.ndarray, boxes: _Boxes, width: int) -> _Fragments:
    """Test every pixel centre of the chunk's (padded) boxes against its triangle; the covered ones."""
    corners, area, x0, y0, bw, bh = boxes.corners, boxes.area, boxes.x0, boxes.y0, boxes.bw, boxes.bh
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
    fb0, fb1, fb2 = b0[t, r, q], b1[t, r, q], b2[t, r, q]
    tri = ids[t]
    z = corners[tri, 0, 2] * fb0 + corners[tri, 1, 2] * fb1 + corners[tri, 2, 2] * fb2
    pix = (y0[tri] + r) * width + (x0[tri] + q)
    return _Fragments(tri, pix, np.stack([fb0, fb1, fb2], axis=1), z)


def _rasterize_numpy(xyz: np.ndarray, triangles: np.ndarray, height: int, width: int) -> Raster:
    """Vectorised CPU rasteriser: triangles grouped by bounding-box size, tested in batches of candidate pixels."""
    depth = np.full(height * width, np.inf, dtype=np.float64)
    tri_buf = np.full(height * width, -1, dtype=np.int64)
    bary_buf = np.zeros((height * width, 3), dtype=np.float64)
    boxes, live = _triangle_boxes(xyz, triangles, height, width)
    for ids in _chunks(boxes, live):
        frag = _chunk_fragments(ids, boxes, width)
        # Per pixel the closest fragment, ties to the lowest triangle id, then against what earlier chunks wrote.
        order = np.lexsort((frag.tri, frag.z, frag.pix))
        pix = frag.pix[order]
        first = np.ones(len(pix), dtype=bool)
        first[1:] = pix[1:] != pix[:-1]
        sel = order[first]
        pix, z, tri = frag.pix[sel], frag.z[sel], frag.tri[sel]
        better = (z < depth[pix]) | ((z == depth[pix]) & (tri < tri_buf[pix]))
        pix, sel = pix[better], sel[better]
        depth[pix] = z[better]
        tri_buf[pix] = tri[better]
        bary_buf[pix] = frag.bary[sel]
    return Raster(
        triangle_id=tri_buf.reshape(height, width).astype(np.int32),
        barycentrics=bary_buf.reshape(height, width, 3).astype(np.float32),
        depth=depth.reshape(height, width).astype(np.float32),
    )


def rasterize_depth(screen_xyz: np.ndarray, triangles: np.ndarray, height: int, width: int,
                    backend: str = "cpu") -> np.ndarray:
    """Only the z-buffer of ``rasterize``: (height, width) float32 closest depth, +inf where empty.

    On the CPU it skips the per-pixel sort that picks each pixel's triangle and barycentrics (a minimum per
    pixel is enough), about half the cost of a full raster; same inputs and conventions as ``rasterize``.
    """
    if backend != "cpu":
        return rasterize(screen_xyz, triangles, height, width, backend=backend).depth
    xyz = np.asarray(screen_xyz, dtype=np.float64)
    depth = np.full(height * width, np.inf, dtype=np.float64)
    boxes, live = _triangle_boxes(xyz, np.asarray(triangles, dtype=np.int64), height, width)
    for ids in _chunks(boxes, live):
        frag = _chunk_fragments(ids, boxes, width)
        np.minimum.at(depth, frag.pix, frag.z)
    return depth.reshape(height, width).astype(np.float32)


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
