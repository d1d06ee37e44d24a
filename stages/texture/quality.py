"""Per-sample quality metrics of a completed UV map, and the thresholds that filter samples.

FFHQ-UV released 54,165 of 69,620 maps after filtering on "BS Error, valid texture
area ratio, expression detection, etc." without publishing the formulas
(pipeline.md 2.5). Ours, documented here:

- valid ratio: ``|mask & center_face| / |center_face|`` per view (its unwrap mask)
  and merged (the union of the views' fill masks, i.e. texels that really come from
  the photos after erosion);
- brightness-symmetry (BS) error: the luma Y (skimage YUV, 0-255) is low-passed by a
  Gaussian of sigma ``BS_SIGMA_FRACTION * width`` (brightness, not pores or moles),
  mirrored about the face's vertical axis (the column halfway between the two eye
  regions' centroids; the centre-face mask itself need not be symmetric), and
  ``mean |Y(p) - Y(mirror(p))|`` is taken over the centre-face texels p whose mirror
  is also in the region. 0 for a perfectly symmetric shading, in Y units;
- landmark reprojection error: measured by the unwrap stage, only compared here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from stages.texture.color import rgb_to_yuv

# Low-pass of the luma before the mirror difference: sigma = 8 texels at 1024.
BS_SIGMA_FRACTION = 8.0 / 1024.0


def valid_ratio(mask: np.ndarray, region: np.ndarray) -> float:
    """Fraction of ``region`` (H, W, > 0.5) covered by ``mask`` (H, W, > 0.5), in [0, 1]."""
    inside = np.asarray(region) > 0.5
    total = int(inside.sum())
    return float(np.count_nonzero((np.asarray(mask) > 0.5) & inside) / total) if total else 0.0


def symmetry_axis(eye_l: np.ndarray, eye_r: np.ndarray) -> float:
    """UV column (texels, may be fractional) of the face's mirror axis: halfway between the eye regions' centroids."""
    return float((np.nonzero(np.asarray(eye_l) > 0.5)[1].mean() + np.nonzero(np.asarray(eye_r) > 0.5)[1].mean()) / 2)


def brightness_symmetry_error(uv: np.ndarray, region: np.ndarray, axis: float) -> float:
    """BS error of a UV map (module docstring) in Y units.

    uv: (H, W, 3) RGB in [0, 255]; region: (H, W) in [0, 1]; axis: mirror column in texels (``symmetry_axis``).
    """
    luma = rgb_to_yuv(np.asarray(uv, dtype=np.float32))[:, :, 0]
    sigma = BS_SIGMA_FRACTION * uv.shape[1]
    luma = cv2.GaussianBlur(luma, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    inside = np.asarray(region) > 0.5
    mirror = int(round(2.0 * axis)) - np.arange(uv.shape[1])  # nearest-texel mirror of each column
    in_range = (mirror >= 0) & (mirror < uv.shape[1])
    rows, cols = np.nonzero(inside & in_range[None, :])
    partner = mirror[cols]
    paired = inside[rows, partner]
    if not paired.any():
        return 0.0
    return float(np.abs(luma[rows[paired], cols[paired]] - luma[rows[paired], partner[paired]]).mean())


@dataclass(frozen=True)
class QualityThresholds:
    """Limits beyond which a sample is marked ``filtered``; None disables a check."""

    min_valid_ratio: Optional[float] = None  # merged valid ratio over the centre face, in [0, 1]
    max_bs_error: Optional[float] = None  # brightness-symmetry error, Y units (0-255)
    max_landmark_error: Optional[float] = None  # landmark reprojection error, fraction of the face width


def filter_reason(metrics: Mapping[str, Optional[float]], thresholds: QualityThresholds) -> Optional[str]:
    """The first failed check as a stable reason string (e.g. ``valid_ratio 0.41 < 0.60``), or None.

    metrics: ``valid_ratio``, ``bs_error`` and ``landmark_error`` (None when not measured).
    """
    checks = (("valid_ratio", thresholds.min_valid_ratio, "<", lambda v, t: v < t),
              ("bs_error", thresholds.max_bs_error, ">", lambda v, t: v > t),
              ("landmark_error", thresholds.max_landmark_error, ">", lambda v, t: v > t))
    for name, limit, symbol, fails in checks:
        value = metrics.get(name)
        if limit is not None and value is not None and fails(value, limit):
            return f"{name} {value:.3f} {symbol} {limit:.3f}"
    return None
