"""Fine skin texture for the texels a single view did not see, copied from the sample's own skin.

``pull_push_fill`` continues the colour of the seen skin into the unseen face texels (the far jaw, the forehead
under masked hair), but it is an average: smooth, with no pores or mottling, so the filled areas look airbrushed
next to the real skin. This module makes the missing high-frequency layer, which the completion adds on top:

1. detail: the map minus its Gaussian low-pass (``DETAIL_SIGMA_1024``), the low-pass taken over the skin source
   only (normalised convolution), so a brow or a hair edge next to the skin does not leak into the residual;
   it is clipped to a few robust standard deviations, so a mole or a specular dot is not stamped
   around;
2. source: skin-only texels (``skin_source``): seen squarely, away from the eyes and brows, the
   lips, the nose base and nostrils (the topology's masks, widened), and candidate windows
   (``TILE_1024`` square, fully inside the source) whose detail energy or mean brightness is an outlier (a brow
   hair, a strand the skin model left, a shadowed crease) are dropped;
3. synthesis (``synthesise_detail``): the target is covered by tiles at half-tile stride; each tile copies one
   candidate chosen at random (fixed seed: deterministic) among the ``NEAREST`` closest to it, so the jaw gets
   the jaw's and cheek's texture and the forehead the forehead's, weighted by a separable sine window whose
   squares sum to one over the overlaps. Uncorrelated copies therefore keep the source's variance everywhere
   and no tile edge shows: the layer has the seen skin's amplitude right up to the seen/unseen boundary, so it
   needs no distance attenuation to avoid a seam (copying by reflection across the boundary would, since the
   nearest-boundary map folds the texture along creases and runs out of mirrored skin far from the boundary).

Textures are (H, W, 3) float RGB in [0, 255], masks (H, W) in [0, 1]; sizes scale with the map (given at 1024).
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
from scipy.spatial import cKDTree

from stages.texture.masks import channels

DETAIL_SIGMA_1024 = 3.0  # Gaussian sigma of the low-pass the detail is taken above (pores, fine mottling)
TILE_1024 = 32  # side of a copied window; tiles overlap by half
CANDIDATE_STRIDE_1024 = 8  # grid step of the source windows considered
NEAREST = 32  # a tile copies one of this many source windows closest to it
CLIP_SIGMAS = 3.0  # detail clipped to this many robust standard deviations (all channels together)
ENERGY_OUTLIER = 2.0  # windows with more than this times the median detail energy are not copied
LUMA_OUTLIER_SIGMAS = 2.5  # nor windows whose mean luma is this many robust deviations from the median
SOURCE_ERODE_1024 = 5  # source texels stay this far inside the seen region (its edge carries hair and background)
FEATURE_MARGIN_1024 = 12  # eyes, lips, nose base and nostrils are widened by this much before being excluded
BROW_HEIGHTS = 1.0  # the brows: above each eye, up to this many eye-mask heights
MIN_CANDIDATES = 4  # fewer clean windows than this: no detail (the smooth fill stays)
DETAIL_SEED = 0
ROBUST_SAMPLES = 20000  # robust spreads are taken from at most this many values
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def scaled(size_1024: float, uv_size: int, minimum: int = 1) -> int:
    """A length given at 1024 texels, for a map ``uv_size`` wide."""
    return max(minimum, int(round(size_1024 * uv_size / 1024)))


def feature_mask(regions: Mapping[str, np.ndarray]) -> np.ndarray:
    """(H, W) bool: the eyes with the brows above them, the lips, the nose base and nostrils, widened: texels
    whose texture is not skin and must never be copied into skin."""
    size = regions["center_face"].shape[0]
    features = np.zeros((size, size), bool)
    for eye in ("eye_l", "eye_r"):
        left, top, width, height = cv2.boundingRect((regions[eye] > 0.5).astype(np.uint8))
        if width:
            features[max(0, int(top - BROW_HEIGHTS * height)):top + height, left:left + width] = True
    for name in ("mouth_contrast", "nosal_base", "nostril"):
        features |= regions[name] > 0.5
    margin = scaled(FEATURE_MARGIN_1024, size)
    return cv2.dilate(features.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)) > 0


def skin_source(seen: np.ndarray, regions: Mapping[str, np.ndarray]) -> np.ndarray:
    """(H, W) bool skin-only texels detail may be copied from: seen (``seen`` > 0.5, eroded off its edge), where a
    frontal view sees the surface squarely (``major_valid_front``: towards the silhouette a photo's texels are
    smeared along the view direction, and a single view's mirrored copy meets its own texels in a seam), outside
    ``feature_mask``."""
    radius = scaled(SOURCE_ERODE_1024, seen.shape[0])
    inner = cv2.erode((np.asarray(seen) > 0.5).astype(np.uint8), np.ones((2 * radius + 1,) * 2, np.uint8)) > 0
    return inner & (regions["major_valid_front"] > 0.5) & ~feature_mask(regions)


def robust_spread(values: np.ndarray) -> np.ndarray:
    """Robust standard deviation (1.4826 x the median absolute deviation) of (N, ...) values along axis 0, from
    at most ``ROBUST_SAMPLES`` of them (an even subsample: a map's skin has ~10^5 texels)."""
    values = values[::max(1, len(values) // ROBUST_SAMPLES)]
    return 1.4826 * np.median(np.abs(values - np.median(values, axis=0)), axis=0)


def skin_detail(texture: np.ndarray, source: np.ndarray, sigma: float) -> np.ndarray:
    """(h, w, 3) float32 high-pass of ``texture`` ((h, w, 3) float) above a Gaussian of ``sigma`` texels, taken over
    ``source`` (bool (h, w)), zero elsewhere, clipped to ``CLIP_SIGMAS`` robust deviations."""
    weight = source.astype(np.float32)
    weight3 = channels(weight, texture.shape[2])
    ksize = (2 * int(np.ceil(2.5 * sigma)) + 1,) * 2  # +-2.5 sigma: OpenCV would take +-4 sigma for floats
    lowpass = cv2.GaussianBlur(texture * weight3, ksize, sigma)
    lowpass /= channels(np.maximum(cv2.GaussianBlur(weight, ksize, sigma), 1e-6), texture.shape[2])
    detail = np.subtract(texture, lowpass, out=lowpass)
    detail *= weight3
    inside = np.flatnonzero(source)
    if inside.size:  # one limit for all channels, in place: per-channel limits or np.clip are several times slower
        samples = detail.reshape(-1, detail.shape[2])[inside[::max(1, inside.size // ROBUST_SAMPLES)]]
        limit = max(CLIP_SIGMAS * float(robust_spread(samples.ravel())), 1e-3)
        np.minimum(detail, limit, out=detail)
        np.maximum(detail, -limit, out=detail)
    return detail


def window_sums(image: np.ndarray, corners: np.ndarray, tile: int) -> np.ndarray:
    """Sums of an (h, w) image over the ``tile``-square windows with (N, 2) top-left ``corners`` (integral image)."""
    total = cv2.integral(np.ascontiguousarray(image, np.float64))
    r, c = corners[:, 0], corners[:, 1]
    return total[r + tile, c + tile] - total[r, c + tile] - total[r + tile, c] + total[r, c]


def clean_windows(detail: np.ndarray, texture: np.ndarray, source: np.ndarray, tile: int, stride: int) -> np.ndarray:
    """(N, 2) int top-left corners (row, col) of ``tile``-square windows fully inside ``source`` ((h, w) bool) on a
    grid of step ``stride``, without the outliers in detail energy or mean luma (brow hairs, stray strands,
    creases). detail, texture: (h, w, 3)."""
    height, width = source.shape
    grid = np.stack(np.meshgrid(np.arange(0, height - tile + 1, stride), np.arange(0, width - tile + 1, stride),
                                indexing="ij"), axis=-1).reshape(-1, 2)
    corners = grid[window_sums(source, grid, tile) >= tile * tile - 0.5]
    if len(corners) < MIN_CANDIDATES:
        return np.zeros((0, 2), int)
    energy = window_sums(np.square(detail) @ np.ones(detail.shape[2], np.float32), corners, tile)
    luma = window_sums(texture @ LUMA, corners, tile)
    keep = (energy <= ENERGY_OUTLIER * np.median(energy)) & \
           (np.abs(luma - np.median(luma)) <= LUMA_OUTLIER_SIGMAS * robust_spread(luma) + 1e-3)
    return corners[keep]


def synthesise_detail(detail: np.ndarray, windows: np.ndarray, target: np.ndarray, tile: int,
                      offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(H, W, 3) float32: ``target`` (bool (H, W)) covered by sine-windowed copies of ``detail``'s ``windows``
    ((N, 2) top-left corners in ``detail``, which sits at ``offset`` (row, col) of the map), each tile copying one of
    the ``NEAREST`` windows closest to it, at random."""
    size = target.shape[0]
    half = tile // 2
    ramp = np.sin(np.pi * (np.arange(tile) + 0.5) / tile).astype(np.float32)
    window = channels(ramp[:, None] * ramp[None, :], detail.shape[2])  # squares of half-shifted copies sum to one
    # Tile corners on a half-tile grid starting half a tile before the map, so every texel lies under four tiles.
    touched = cv2.dilate(np.pad(target, ((half, 0), (half, 0))).astype(np.uint8), np.ones((tile, tile), np.uint8),
                         anchor=(0, 0))[::half, ::half] > 0
    tiles = np.argwhere(touched) * half - half if len(windows) else np.zeros((0, 2), int)
    out = np.zeros((size + 2 * tile, size + 2 * tile, detail.shape[2]), np.float32)  # padded by a tile each side
    if len(tiles) == 0:
        return out[tile:tile + size, tile:tile + size]
    k = min(NEAREST, len(windows))
    _, nearest = cKDTree(windows + np.asarray(offset)).query(tiles, k=k)
    nearest = np.asarray(nearest).reshape(len(tiles), k)
    choice = nearest[np.arange(len(tiles)), np.random.default_rng(DETAIL_SEED).integers(0, k, len(tiles))]
    for (r, c), (sr, sc) in zip(tiles + tile, windows[choice]):
        out[r:r + tile, c:c + tile] += detail[sr:sr + tile, sc:sc + tile] * window
    return out[tile:tile + size, tile:tile + size]


def own_skin_detail(texture: np.ndarray, source: np.ndarray, unseen: np.ndarray) -> np.ndarray:
    """The fine-texture layer for the ``unseen`` texels ((H, W) > 0.5) of a map, copied from its skin ``source``
    (``skin_source``, (H, W) bool). texture: (H, W, 3) float RGB in [0, 255].
    Returns (H, W, 3) float32, zero mean, zero outside ``unseen`` (and everywhere when the map shows fewer than
    ``MIN_CANDIDATES`` clean skin windows).
    """
    size = texture.shape[0]
    tile = scaled(TILE_1024, size, minimum=4) // 2 * 2
    target = np.asarray(unseen) > 0.5
    left, top, width, height = cv2.boundingRect(source.astype(np.uint8))
    if width == 0 or not target.any():
        return np.zeros(texture.shape, np.float32)
    # Work on the source's bounding box (plus the low-pass's reach): the face centre, not the whole map.
    reach = int(np.ceil(3 * DETAIL_SIGMA_1024 * size / 1024))
    r0, r1 = max(0, top - reach), min(size, top + height + reach)
    c0, c1 = max(0, left - reach), min(size, left + width + reach)
    crop = np.asarray(texture[r0:r1, c0:c1], np.float32)
    detail = skin_detail(crop, source[r0:r1, c0:c1], DETAIL_SIGMA_1024 * size / 1024)
    windows = clean_windows(detail, crop, source[r0:r1, c0:c1], tile, scaled(CANDIDATE_STRIDE_1024, size))
    synthesised = synthesise_detail(detail, windows, target, tile, (r0, c0))
    synthesised *= channels(target.astype(np.float32), texture.shape[2])
    return synthesised
