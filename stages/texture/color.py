"""YUV colour matching of a texture to another (FFHQ-UV's ``match_color_in_yuv``, pipeline.md 2.4 (e)1).

The colour space is scikit-image's YUV (``skimage.color.rgb2yuv``) applied to
0-255 values without rescaling, exactly as FFHQ-UV calls
``convert_colorspace(tex, "rgb", "yuv")`` on float images in [0, 255]. The matrices
are inlined so that matching 1024x1024 maps stays a single float32 matmul.
"""

from __future__ import annotations

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
    valid = np.asarray(mask) > 0.5
    source_yuv = rgb_to_yuv(source)
    if not valid.any():
        return np.clip(np.asarray(source, dtype=np.float32), 0.0, 255.0)
    target_yuv = rgb_to_yuv(np.asarray(target)[valid])
    source_valid = source_yuv[valid].astype(np.float64)
    mu_s, sigma_s = source_valid.mean(axis=0), source_valid.std(axis=0)
    mu_t, sigma_t = target_yuv.astype(np.float64).mean(axis=0), target_yuv.astype(np.float64).std(axis=0)
    # A flat source channel (sigma 0) has nothing to rescale: only its mean moves.
    gain = np.where(sigma_s > 0, sigma_t / np.where(sigma_s > 0, sigma_s, 1.0) / spread_divisor, 0.0)
    matched = (source_yuv - mu_s.astype(np.float32)) * gain.astype(np.float32) + mu_t.astype(np.float32)
    return np.clip(yuv_to_rgb(matched), 0.0, 255.0)
