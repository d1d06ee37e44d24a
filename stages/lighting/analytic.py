"""Analytic relighting for machines without DPR: fit 2nd-order SH shading on landmark-mesh normals, divide it out.

Model (DPR's, gray): Lab L / 255 = albedo * shading(normal), with the albedo taken as
constant over the skin so that it folds into the 9 fitted coefficients. Relighting
multiplies L by target shading / fitted shading inside the face (the target scaled to
keep the mean skin brightness), in full up to the edge of the landmark hull and fading
to 1 outside it (``FEATHER_FRACTION``). Everything is fitted at a small working resolution: shading is low-frequency.

The correction is smoothed over the face (``SMOOTH_FRACTION``) before it is applied. The landmark mesh's
normals turn sharply at the nose wings, the nasolabial folds and the lip line, where the real face is not as
dark as the fitted light predicts for such normals (the photo's shading there is mostly occlusion and albedo,
which 9 SH cannot hold), so the raw ratio reached its 2x clip in thin lines there and drew bright blobs beside
the nostrils and a dark ridge down the nose. The light's direction across the face (left/right, top/bottom),
which is what relighting is for, varies over the whole face width and survives the smoothing: on the shared
photos the left/right asymmetry after relighting is within 0.006 of the unsmoothed correction's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.lighting.face_region import FaceRegion, face_region
from stages.lighting.sh import SH_COEFFS, camera_to_dpr, fit_sh, sh_basis

WORK_SIZE = 256  # longest side of the image the shading is fitted on, in pixels
RATIO_RANGE = (0.5, 2.0)  # a shading correction beyond 2x is a fitting failure (beard, occluder), not light
FEATHER_FRACTION = 0.1  # Gaussian fade of the correction outside the landmark hull, fraction of the working image side
SMOOTH_FRACTION = 0.05  # Gaussian sigma of the correction inside the face, fraction of the face's width
LIGHT_FIT_FAILED = "lighting_fit_failed"  # error code: too little skin visible for the analytic fit
MIN_SKIN_PIXELS = 200  # fewer skin pixels at working size: the fit is not trusted


@dataclass(frozen=True)
class ShadingFit:
    """A fitted face shading at working resolution.

    ``sh`` (9,) in DPR order and L/255 units (albedo folded in); ``region`` the face
    geometry at working size; ``lum`` (h, w) float L/255; ``scale`` working / input pixels.
    """

    sh: np.ndarray
    region: FaceRegion
    lum: np.ndarray
    scale: float


def fit_shading(rgb: np.ndarray, points: np.ndarray) -> ShadingFit:
    """Fit SH shading to the skin of an (H, W, 3) uint8 RGB face with its (468, 3) landmarks in pixels.

    Raises ValueError when too little skin is visible to fit 9 coefficients.
    """
    import cv2

    height, width = rgb.shape[:2]
    scale = min(1.0, WORK_SIZE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    lum = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)[:, :, 0].astype(np.float64) / 255.0
    region = face_region(np.asarray(points, dtype=np.float64) * scale, size[1], size[0])
    if region.skin.sum() < MIN_SKIN_PIXELS:
        raise ValueError(f"only {int(region.skin.sum())} skin pixels to fit shading on")
    normals = camera_to_dpr(region.normals[region.skin])
    sh = fit_sh(normals, lum[region.skin])
    return ShadingFit(sh=sh.astype(np.float32), region=region, lum=lum, scale=scale)


def fit_shading_or_fail(rgb: np.ndarray, points: np.ndarray) -> ShadingFit:
    """``fit_shading`` for a stage: a failed fit becomes the sample's ``lighting_fit_failed`` error."""
    from stages.errors import SampleError

    try:
        return fit_shading(rgb, points)
    except ValueError as error:
        raise SampleError(LIGHT_FIT_FAILED, str(error)) from None


def divide_shading(rgb: np.ndarray, fit: ShadingFit, target_sh: np.ndarray) -> np.ndarray:
    """Relight an (H, W, 3) uint8 RGB image from its fit to ``target_sh`` (9,); returns uint8 RGB, same size."""
    import cv2

    region = fit.region
    basis = sh_basis(camera_to_dpr(region.normals[region.hull]))
    before = basis @ fit.sh.astype(np.float64)
    target = basis @ np.asarray(target_sh, dtype=np.float64).reshape(SH_COEFFS)
    skin_in_hull = region.skin[region.hull]
    # Keep the mean skin brightness: only the shading pattern changes, not the exposure.
    target *= before[skin_in_hull].mean() / max(target[skin_in_hull].mean(), 1e-6)
    ratio_hull = np.clip(target / np.maximum(before, 1e-6), *RATIO_RANGE)

    log_ratio = _smooth_inside(np.log(ratio_hull), region.hull)
    ratio = np.exp(_fade_outside(log_ratio, region.hull, FEATHER_FRACTION * max(region.hull.shape)))
    height, width = rgb.shape[:2]
    ratio = cv2.resize(ratio, (width, height), interpolation=cv2.INTER_LINEAR)

    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float64)
    lab[:, :, 0] = np.clip(lab[:, :, 0] * ratio, 0, 255)
    return cv2.cvtColor(np.round(lab).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _smooth_inside(values: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """Gaussian-smooth (N,) values given on the (h, w) hull's pixels, only over the hull (normalised
    convolution, so the outside's zeros do not pull the edge down); (h, w), 0 outside the hull."""
    import cv2

    columns = np.flatnonzero(hull.any(axis=0))
    sigma = SMOOTH_FRACTION * (columns[-1] - columns[0] + 1)
    field = np.zeros(hull.shape, dtype=np.float64)
    field[hull] = values
    weight = cv2.GaussianBlur(hull.astype(np.float64), (0, 0), sigma)
    smoothed = cv2.GaussianBlur(field, (0, 0), sigma) / np.maximum(weight, 1e-6)
    return np.where(hull, smoothed, 0.0)


def _fade_outside(values: np.ndarray, hull: np.ndarray, sigma: float) -> np.ndarray:
    """(h, w) values given on the hull (0 outside), continued past the hull's edge and faded to 0 over ``sigma``
    pixels outside it; unchanged inside.

    The whole face gets its full correction, up to the landmarks' outline: fading inside the hull instead left the
    shading of the cheeks' and jaw's outer band in the map, the darkest part of a face lit from the front. Outside,
    each pixel continues its nearest hull pixel's value (so there is no step at the edge), blurred, times a Gaussian
    of the distance.
    """
    import cv2
    from scipy.ndimage import distance_transform_edt

    distance, (rows, cols) = distance_transform_edt(~hull, return_indices=True)
    # Blurred, so that the nearest-pixel rays do not streak the hair and background.
    continued = cv2.GaussianBlur(values[rows, cols], (0, 0), sigma / 2)
    return np.where(hull, values, continued * np.exp(-0.5 * (distance / sigma) ** 2))
