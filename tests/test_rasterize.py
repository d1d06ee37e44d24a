"""The rasteriser backends against a brute-force per-pixel reference on small meshes."""

from __future__ import annotations

import numpy as np
import pytest

from stages.geometry.rasterize import Raster, interpolate, rasterize, rasterize_depth, rasterize_uv, uv_to_texel
from tests.conftest import gpu_reason


def brute_force(xyz: np.ndarray, tris: np.ndarray, h: int, w: int) -> Raster:
    """Reference: every pixel against every triangle, closest depth wins, ties to the lowest id."""
    tri_id = np.full((h, w), -1, dtype=np.int32)
    bary = np.zeros((h, w, 3), dtype=np.float32)
    depth = np.full((h, w), np.inf, dtype=np.float32)
    for i in range(h):
        for j in range(w):
            best = (np.inf, -1, None)
            for t, (a, b, c) in enumerate(tris):
                p0, p1, p2 = xyz[a], xyz[b], xyz[c]
                m = np.array([[p0[0] - p2[0], p1[0] - p2[0]], [p0[1] - p2[1], p1[1] - p2[1]]])
                if abs(np.linalg.det(m)) < 1e-12:
                    continue
                l0, l1 = np.linalg.solve(m, np.array([j - p2[0], i - p2[1]]))
                lam = np.array([l0, l1, 1 - l0 - l1])
                if (lam < -1e-9).any():
                    continue
                z = lam @ np.array([p0[2], p1[2], p2[2]])
                if z < best[0]:
                    best = (z, t, lam)
            if best[1] >= 0:
                depth[i, j], tri_id[i, j], bary[i, j] = best[0], best[1], best[2]
    return Raster(tri_id, bary, depth)


def random_mesh(seed: int, n_tris: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xyz = np.concatenate([rng.uniform(-4, size + 4, (3 * n_tris, 2)), rng.uniform(0, 10, (3 * n_tris, 1))], axis=1)
    return xyz, np.arange(3 * n_tris).reshape(n_tris, 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cpu_matches_brute_force_on_overlapping_triangles(seed):
    xyz, tris = random_mesh(seed, 6, 20)
    h, w = 17, 23
    ref = brute_force(xyz, tris, h, w)
    got = rasterize(xyz, tris, h, w, backend="cpu")
    # Coverage and depth agree everywhere; ids agree where the depth order is unambiguous.
    np.testing.assert_array_equal(got.mask, ref.mask)
    np.testing.assert_allclose(got.depth[ref.mask], ref.depth[ref.mask], atol=1e-4)
    assert (got.triangle_id == ref.triangle_id).mean() > 0.99
    same = got.triangle_id == ref.triangle_id
    np.testing.assert_allclose(got.barycentrics[same], ref.barycentrics[same], atol=1e-4)
    assert ref.mask.sum() > 50  # the test mesh really covers pixels


def test_shared_edge_grid_has_no_gaps_and_interpolates_exactly():
    # A 4x4 vertex grid (two triangles per cell) covering pixels 0..15: every pixel covered, linear field exact.
    n = 4
    gx, gy = np.meshgrid(np.linspace(0, 15, n), np.linspace(0, 15, n))
    xyz = np.stack([gx.ravel(), gy.ravel(), np.ones(n * n)], axis=1)
    tris = []
    for r in range(n - 1):
        for c in range(n - 1):
            a = r * n + c
            tris += [[a, a + 1, a + n], [a + 1, a + n + 1, a + n]]
    tris = np.array(tris)
    got = rasterize(xyz, tris, 16, 16)
    assert got.mask.all()
    field = interpolate(2 * xyz[:, 0] + 3 * xyz[:, 1], got, tris)
    jj, ii = np.meshgrid(np.arange(16), np.arange(16))
    np.testing.assert_allclose(field, 2 * jj + 3 * ii, atol=1e-4)
    ref = brute_force(xyz, tris, 16, 16)
    np.testing.assert_array_equal(got.triangle_id, ref.triangle_id)


def test_occlusion_front_triangle_wins():
    back = [[0, 0, 5.0], [30, 0, 5.0], [0, 30, 5.0]]
    front = [[0, 0, 1.0], [30, 0, 1.0], [0, 30, 1.0]]
    xyz = np.array(back + front)
    got = rasterize(xyz, np.array([[0, 1, 2], [3, 4, 5]]), 10, 10)
    assert (got.triangle_id[got.mask] == 1).all()
    np.testing.assert_allclose(got.depth[got.mask], 1.0)


def test_perspective_correct_barycentrics_sum_to_one_and_differ_from_affine():
    xyz = np.array([[0.0, 0, 1], [20, 0, 1], [0, 20, 1]])
    w = np.array([1.0, 4.0, 1.0])
    affine = rasterize(xyz, np.array([[0, 1, 2]]), 16, 16)
    persp = rasterize(xyz, np.array([[0, 1, 2]]), 16, 16, perspective_w=w)
    m = persp.mask
    np.testing.assert_allclose(persp.barycentrics[m].sum(axis=1), 1.0, atol=1e-5)
    # The far corner (large w) gets less weight than in screen space.
    assert (persp.barycentrics[m][:, 1] <= affine.barycentrics[m][:, 1] + 1e-6).all()


def test_uv_rasterisation_texel_centres():
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    raster = rasterize_uv(uv, np.array([[0, 1, 2], [0, 2, 3]]), 8)
    assert raster.mask.all()
    # Texel (row 0, col 0) is near UV (0, 1): top-left.
    texel = uv_to_texel(np.array([[0.5 / 8, 1 - 0.5 / 8]]), 8)
    np.testing.assert_allclose(texel, [[0.0, 0.0]], atol=1e-12)
    u = interpolate(uv[:, 0], raster, np.array([[0, 1, 2], [0, 2, 3]]))
    np.testing.assert_allclose(u[0], (np.arange(8) + 0.5) / 8, atol=1e-5)


def test_large_mesh_chunks_match_reference_on_subimage():
    xyz, tris = random_mesh(7, 400, 64)
    got = rasterize(xyz, tris, 64, 64)
    ref = brute_force(xyz[:, :], tris, 12, 12)  # top-left corner only: brute force is slow
    np.testing.assert_array_equal(got.mask[:12, :12], ref.mask)
    np.testing.assert_allclose(got.depth[:12, :12][ref.mask], ref.depth[ref.mask], atol=1e-4)


@pytest.mark.parametrize("seed", [3, 4])
def test_depth_only_raster_equals_the_full_rasters_depth(seed):
    # Mixed triangle sizes (from sub-pixel to the whole image) exercise every size class of the chunking.
    xyz, tris = random_mesh(seed, 300, 48)
    rng = np.random.default_rng(seed)
    small = xyz.reshape(-1, 3, 3)[:200]
    small[:, :, :2] = small[:, :1, :2] + rng.uniform(-1.5, 1.5, (200, 3, 2))
    full = rasterize(xyz, tris, 40, 56)
    depth = rasterize_depth(xyz, tris, 40, 56)
    assert depth.dtype == np.float32 and depth.shape == (40, 56)
    np.testing.assert_array_equal(depth, full.depth)
    assert np.isfinite(depth).mean() > 0.5 and (~np.isfinite(depth)).any()


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="unknown rasteriser backend"):
        rasterize(np.zeros((3, 3)), np.array([[0, 1, 2]]), 4, 4, backend="opengl")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(not _has_cuda(), reason=gpu_reason("the nvdiffrast backend"))
def test_nvdiffrast_agrees_with_cpu():
    pytest.importorskip("nvdiffrast.torch", reason=gpu_reason("nvdiffrast is not installed"))
    xyz, tris = random_mesh(3, 50, 64)
    cpu = rasterize(xyz, tris, 64, 64, backend="cpu")
    gpu = rasterize(xyz, tris, 64, 64, backend="nvdiffrast")
    assert (cpu.mask == gpu.mask).mean() > 0.99
    both = cpu.mask & gpu.mask & (cpu.triangle_id == gpu.triangle_id)
    np.testing.assert_allclose(cpu.barycentrics[both], gpu.barycentrics[both], atol=1e-3)


@pytest.mark.skipif(not _has_cuda(), reason="needs a GPU")
def test_nvdiffrast_context_is_made_once_per_process_on_the_prepared_device():
    pytest.importorskip("nvdiffrast.torch", reason=gpu_reason("nvdiffrast is not installed"))
    from stages.geometry import rasterize as module

    module.prepare_backend("nvdiffrast", "cuda:0")
    made = dict(module._CUDA_CONTEXTS)
    xyz, tris = random_mesh(3, 50, 64)
    for _ in range(3):  # per view, per sample: the same context
        rasterize(xyz, tris, 64, 64, backend="nvdiffrast")
    assert module._CUDA_CONTEXTS == made and len(made) == 1
