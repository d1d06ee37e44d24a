"""Laplacian-pyramid blending of two images under a soft mask (pipeline.md 2.4 (g)4).

FFHQ-UV's recipe: 5 levels; each level is blurred with the 5x5 binomial kernel
[1, 4, 6, 4, 1]/16 (outer product) and decimated by 2; a coarse level is brought
back up by pixel replication followed by the same binomial blur. The mask pyramid
is decimated first and then smoothed by a 5x5 Gaussian with sigma 1. Blending
band by band hides seams at every frequency. Borders are reflect-101 (OpenCV's
default). Images are (H, W, C) float, masks (H, W) float in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np

from stages.texture.masks import channels

LEVELS = 5  # FFHQ-UV's ``laplacian_pyramid_blend(..., times=5)``: 4 band-pass levels + 1 low-pass residual
BINOMIAL_1D = np.array([1.0, 4.0, 6.0, 4.0, 1.0], dtype=np.float32) / 16.0
MASK_GAUSSIAN_SIZE = 5
MASK_GAUSSIAN_SIGMA = 1.0


def _binomial_blur(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W, C) float32, separable 5x5 binomial blur."""
    return cv2.sepFilter2D(image, cv2.CV_32F, BINOMIAL_1D, BINOMIAL_1D, borderType=cv2.BORDER_REFLECT_101)


def _as_hwc(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return image[:, :, None] if image.ndim == 2 else image


def _expand(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w, C) -> (H, W, C): replicate each pixel 2x2, crop to ``shape`` and blur."""
    up = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[: shape[0], : shape[1]]
    return _as_hwc(_binomial_blur(np.ascontiguousarray(up)))


def laplacian_pyramid(image: np.ndarray, levels: int = LEVELS) -> list[np.ndarray]:
    """(H, W, C) float -> ``levels`` arrays: band-pass levels at H, H/2, ... and the low-pass residual last."""
    current = _as_hwc(image)
    pyramid = []
    for _ in range(levels - 1):
        coarse = _as_hwc(_binomial_blur(current))[::2, ::2]
        pyramid.append(current - _expand(coarse, current.shape[:2]))
        current = np.ascontiguousarray(coarse)
    pyramid.append(current)
    return pyramid


def mask_pyramid(mask: np.ndarray, levels: int = LEVELS) -> list[np.ndarray]:
    """(H, W) float mask -> ``levels`` (h, w, 1) masks matching ``laplacian_pyramid``'s sizes."""
    pyramid = [_as_hwc(mask)]
    for _ in range(levels - 1):
        decimated = np.ascontiguousarray(pyramid[-1][::2, ::2])
        smoothed = cv2.GaussianBlur(decimated, (MASK_GAUSSIAN_SIZE, MASK_GAUSSIAN_SIZE), MASK_GAUSSIAN_SIGMA,
                                    borderType=cv2.BORDER_REFLECT_101)
        pyramid.append(_as_hwc(smoothed))
    return pyramid


def reconstruct(pyramid: list[np.ndarray]) -> np.ndarray:
    """Inverse of ``laplacian_pyramid``: (H, W, C) float32."""
    image = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        image = band + _expand(image, band.shape[:2])
    return image


def pyramid_blend(base: np.ndarray, top: np.ndarray, mask: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """Blend ``top`` over ``base`` with weight ``mask`` band by band.

    base, top: (H, W, C) float (e.g. RGB in [0, 255]); mask: (H, W) in [0, 1], 1 = top.
    Returns (H, W, C) float32, not clipped.
    """
    blended = [t * m + b * (1.0 - m) for b, t, m in zip(laplacian_pyramid(base, levels),
                                                         laplacian_pyramid(top, levels),
                                                         [np.clip(m, 0.0, 1.0) for m in mask_pyramid(mask, levels)])]
    return reconstruct(blended)


def pull_push_fill(image: np.ndarray, known: np.ndarray, coarsest: int = 8) -> np.ndarray:
    """Fill the unknown texels of ``image`` by continuing the known ones (pull-push, Gortler et al. 1996).

    Pull: colour times weight and the weight itself are averaged down a pyramid (OpenCV's ``pyrDown``) until
    the short side is ``coarsest`` or less. Push: from the coarsest level up, each level keeps its own average
    where its weight is full and takes the level below's (``pyrUp``) where it is not, in proportion. Unknown
    texels therefore get the colour of the nearest known ones, smoothly blending to the broader average further
    away, never a flat constant.

    image: (H, W, C) float; known: (H, W) in [0, 1]. Returns (H, W, C) float32, known texels unchanged.
    """
    image = _as_hwc(image)
    count = image.shape[2]
    weight = np.clip(np.asarray(known, dtype=np.float32), 0.0, 1.0)
    levels = [(image * _per_channel(weight, count), weight)]
    while min(levels[-1][1].shape) > coarsest:
        colour, w = levels[-1]
        levels.append((_as_hwc(cv2.pyrDown(colour)), cv2.pyrDown(w)))
    colour, w = levels[-1]
    filled = colour / _per_channel(np.maximum(w, 1e-6), count)
    for colour, w in reversed(levels[:-1]):
        up = _as_hwc(cv2.pyrUp(filled, dstsize=(w.shape[1], w.shape[0])))
        average = colour / _per_channel(np.maximum(w, 1e-6), count)
        trust = _per_channel(np.clip(w * 2.0, 0.0, 1.0), count)  # a half-covered texel is already a reliable average
        filled = (average - up) * trust + up
    return np.where(_per_channel(weight, count) > 0.5, image, filled).astype(np.float32)


def _per_channel(mask: np.ndarray, count: int) -> np.ndarray:
    """(H, W) -> (H, W, count) float32 (``channels``: faster arithmetic than a ``[..., None]`` broadcast)."""
    return _as_hwc(channels(mask, count))
