"""YUV colour matching of a texture to another (FFHQ-UV's ``match_color_in_yuv``, pipeline.md 2.4 (e)1).

The colour space is scikit-image's YUV (``skimage.color.rgb2yuv``) applied to
0-255 values without rescaling, exactly as FFHQ-UV calls
``convert_colorspace(tex, "rgb", "yuv")`` on float images in [0, 255]. The matrices
are inlined so that matching a 1024x1024 map is OpenCV's masked moments and one per-pixel affine transform.
"""

from __future__ import annotations

import cv2
import numpy as np

# scikit-image's YUV matrix (skimage/color/colorconv.py ``yuv_from_rgb``); its inverse is ``rgb_from_yuv``.
YUV_FROM_RGB = np.array([[0.299, 0.587, 0.114],
                         [-0.14714119, -0.28886916, 0.43601035],
                         [0.61497538, -0.51496512, -0.10001026]], dtype=np.float64)
RGB_FROM_YUV = np.linalg.inv(YUV_FROM_RGB)

# FFHQ-UV divides the normalised source by 1.5 before rescaling to the target's spread
# (``match_color_in_yuv(..., w=1.5)``): the matched template keeps less contrast than the view.
SPREAD_DIVISOR = 1.5


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB (any scale, e.g. [0, 255]) -> (..., 3) float32 YUV on the same scale."""
    return np.asarray(rgb, dtype=np.float32) @ YUV_FROM_RGB.T.astype(np.float32)


def yuv_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """(..., 3) YUV -> (..., 3) float32 RGB on the same scale (inverse of ``rgb_to_yuv``)."""
    return np.asarray(yuv, dtype=np.float32) @ RGB_FROM_YUV.T.astype(np.float32)


def match_color_yuv(source: np.ndarray, target: np.ndarray, mask: np.ndarray,
                    spread_divisor: float = SPREAD_DIVISOR) -> np.ndarray:
    """Recolour ``source`` so its YUV statistics over ``mask`` follow ``target``'s.

    source, target: (H, W, 3) float RGB in [0, 255]; mask: (H, W), valid where > 0.5.
    Per YUV channel: ``(src - mu_s) / sigma_s / spread_divisor * sigma_t + mu_t``, with
    the moments of both images taken over the same valid pixels. Returns (H, W, 3)
    float32 RGB clipped to [0, 255]. With no valid pixel the source is returned unchanged.
    """
    valid = (np.asarray(mask) > 0.5).astype(np.uint8)
    source = np.ascontiguousarray(source, dtype=np.float32)
    if not valid.any():
        return np.clip(source, 0.0, 255.0)
    yuv = YUV_FROM_RGB.astype(np.float32)
    # OpenCV's per-pixel 3x3 transform and masked moments (accumulated in double, population std as numpy's): no
    # (P, 3) copies of the masked texels, which made this the merge's costliest step at 1024.
    mu_s, sigma_s = (m.ravel() for m in cv2.meanStdDev(cv2.transform(source, yuv), mask=valid))
    target = np.ascontiguousarray(target, dtype=np.float32)
    mu_t, sigma_t = (m.ravel() for m in cv2.meanStdDev(cv2.transform(target, yuv), mask=valid))
    # A flat source channel (sigma 0) has nothing to rescale: only its mean moves.
    gain = np.where(sigma_s > 0, sigma_t / np.where(sigma_s > 0, sigma_s, 1.0) / spread_divisor, 0.0)
    # yuv -> (yuv - mu_s) * gain + mu_t -> rgb is one affine map of the source's RGB: [A | b], applied at once.
    linear = RGB_FROM_YUV @ np.diag(gain) @ YUV_FROM_RGB
    offset = RGB_FROM_YUV @ (mu_t - gain * mu_s)
    matched = cv2.transform(source, np.hstack([linear, offset[:, None]]).astype(np.float32))
    return np.clip(matched, 0.0, 255.0)
