"""Sparse Poisson fill of a patch from a source's gradients (pipeline.md 2.4 (f)4).

Inside the mask the result keeps the source's 5-point Laplacian (the template's
shading, closed eyelids, lips), and it meets the target continuously at the mask
edge; outside the mask the target is returned untouched. FFHQ-UV builds the full
``mask * L + (1 - mask) * I`` system per channel; we solve the equivalent reduced
system on the masked texels only (the identity rows fix the rest), factorised once
for all channels. The Laplacian of each patch size is built once and cached.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sparse
from scipy.sparse.linalg import splu


@lru_cache(maxsize=32)
def laplacian_matrix(height: int, width: int) -> sparse.csr_matrix:
    """5-point Laplacian of a row-major (height, width) patch: (h*w, h*w) CSR, 4 on the diagonal, -1 per neighbour.

    Neighbours outside the patch are simply absent, so rows of border texels are
    only meaningful for known (unmasked) texels, which never use them.
    """
    index = np.arange(height * width).reshape(height, width)
    rows = [index.ravel()]
    cols = [index.ravel()]
    values = [np.full(height * width, 4.0)]
    for a, b in ((index[1:, :], index[:-1, :]), (index[:, 1:], index[:, :-1])):
        rows += [a.ravel(), b.ravel()]
        cols += [b.ravel(), a.ravel()]
        values += [np.full(a.size, -1.0), np.full(a.size, -1.0)]
    matrix = sparse.coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(height * width, height * width))
    return matrix.tocsr()


def patch_laplacian(image: np.ndarray) -> np.ndarray:
    """5-point Laplacian ``4x - (up + down + left + right)`` of (H, W, C) float; reflect-101 borders like cv2."""
    padded = np.pad(np.asarray(image, dtype=np.float64), ((1, 1), (1, 1), (0, 0)), mode="reflect")
    return (4.0 * padded[1:-1, 1:-1] - padded[:-2, 1:-1] - padded[2:, 1:-1]
            - padded[1:-1, :-2] - padded[1:-1, 2:])


def poisson_fill(target: np.ndarray, source: np.ndarray, mask: np.ndarray,
                 laplacian: sparse.csr_matrix | None = None) -> np.ndarray:
    """Replace ``target`` inside ``mask`` by the function whose Laplacian is ``source``'s, continuous at the edge.

    target, source: (H, W, C) float (any scale; the solve is linear); mask: (H, W),
    unknown where > 0.5. Texels on the patch's outer ring are always kept (their
    Laplacian would need texels outside the patch). ``laplacian``: a cached
    ``laplacian_matrix(H, W)``. Returns (H, W, C) float64; equal to ``target``
    wherever the mask is off, bit for bit.
    """
    target = np.asarray(target, dtype=np.float64)
    height, width, channels = target.shape
    unknown = np.asarray(mask) > 0.5
    unknown[[0, -1], :] = False
    unknown[:, [0, -1]] = False
    result = target.copy()
    if not unknown.any():
        return result
    if laplacian is None:
        laplacian = laplacian_matrix(height, width)
    flat_unknown = unknown.ravel()
    rows = laplacian[flat_unknown]
    system = rows[:, flat_unknown].tocsc()
    known_part = rows[:, ~flat_unknown] @ target.reshape(-1, channels)[~flat_unknown]
    rhs = patch_laplacian(source).reshape(-1, channels)[flat_unknown] - known_part
    result[unknown] = splu(system).solve(rhs)
    return result
