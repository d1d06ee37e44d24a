"""Box-filter erosion and soft blend weights of FFHQ-UV's merge (pipeline.md 2.4 (e)2-3, (g)3, (g)5).

FFHQ-UV builds every blend weight from normalised box filters (``cv2.blur``) on
[0, 1] masks: a box blur followed by ``>= 1`` is an erosion, a box blur of a
binary mask is a linear ramp. All masks here are (H, W) float32 in [0, 1]; the
box sizes are FFHQ-UV's (``tex/tex_func.py``) and named below.
"""

from __future__ import annotations

import cv2
import numpy as np

# Erosion of a view's mask before blending: box3 -> box5 (E1) -> box9 (E2).
ERODE_BOXES = (3, 5, 9)
# Major/minor soft weight: minor region blurred by box51 and scaled by 0.8, then box31 overall.
MINOR_BLUR_BOX = 51
MINOR_WEIGHT = 0.8
MAJOR_MINOR_BLUR_BOX = 31
# Final feathering of a view's weight inside its eroded mask.
VIEW_FEATHER_BOX = 21
# Hair override: erode with box11 (>= 1), then feather with box15.
HAIR_ERODE_BOX = 11
HAIR_FEATHER_BOX = 15
# A box sum of ones can come out a few ulp below 1 in float32; ">= 1" keeps that slack.
FULL_COVERAGE = 1.0 - 1e-5


def box_blur(mask: np.ndarray, size: int) -> np.ndarray:
    """Normalised ``size`` x ``size`` box filter of an (H, W) float mask (reflect-101 borders, as cv2.blur)."""
    return cv2.blur(np.asarray(mask, dtype=np.float32), (size, size))


def binarize(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(H, W) -> (H, W) float32 in {0, 1}: 1 where ``mask > threshold``."""
    return (np.asarray(mask) > threshold).astype(np.float32)


def full_coverage(mask: np.ndarray) -> np.ndarray:
    """(H, W) blurred mask -> float32 {0, 1}: 1 where the box was entirely inside the mask (FFHQ-UV's ``>= 1``)."""
    return (mask >= FULL_COVERAGE).astype(np.float32)


def erode_view_mask(mask: np.ndarray, mouth_contrast: np.ndarray) -> np.ndarray:
    """A view's valid mask eroded FFHQ-UV's way: lightly (E1) around the mouth, strongly (E2) elsewhere.

    mask, mouth_contrast: (H, W) float in [0, 1]. E1 = box5(box3(mask)) >= 1, E2 =
    box9 of the same blur >= 1 (about 3 and 7 texels of erosion); the mouth keeps
    more texels because its region is thin. Returns (H, W) float32.
    """
    blurred = box_blur(box_blur(mask, ERODE_BOXES[0]), ERODE_BOXES[1])
    light = full_coverage(blurred)
    strong = full_coverage(box_blur(blurred, ERODE_BOXES[2]))
    return light * mouth_contrast + strong * (1.0 - mouth_contrast)


def major_minor_weight(mask: np.ndarray, major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """Soft weight that trusts texels in the ``major`` region fully and the ``minor`` region less.

    mask, major, minor: (H, W) float in [0, 1] (major is inside minor).
    ``box31(m_major + (1 - m_major) * 0.8 * box51(mask * minor))`` with
    ``m_major = mask * major``. Returns (H, W) float32 in [0, 1].
    """
    minor_soft = box_blur(mask * minor, MINOR_BLUR_BOX) * MINOR_WEIGHT
    in_major = mask * major
    return box_blur(in_major + (1.0 - in_major) * minor_soft, MAJOR_MINOR_BLUR_BOX)


def view_blend_weight(mask: np.ndarray, eroded: np.ndarray, major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """Weight of a view over the canvas (pipeline.md 2.4 (e)3), zero wherever the view has no texel.

    mask: (H, W) the view's valid mask; eroded: ``erode_view_mask(mask, ...)``;
    major, minor: the view's ``major_valid_*`` / ``minor_valid_*`` masks.
    ``box21(eroded * major_minor_weight(eroded, ...)) * mask``: the view fades out
    before its mask edge so no black texel beyond it leaks into the blend.
    """
    weight = major_minor_weight(eroded, major, minor)
    return box_blur(eroded * weight, VIEW_FEATHER_BOX) * mask


def hair_weight(hair: np.ndarray, erode_box: int = HAIR_ERODE_BOX, feather_box: int = HAIR_FEATHER_BOX) -> np.ndarray:
    """Weight of the template's hair: ``box15(box11(hair) >= 1)`` by default, (H, W) float32 in [0, 1]; the RGB
    fitting's cropface blends use other boxes (``stages/fitting/cropface_texture.py``)."""
    return box_blur(full_coverage(box_blur(hair, erode_box)), feather_box)


def channels(mask: np.ndarray, count: int = 3) -> np.ndarray:
    """(H, W) float32 -> (H, W, count) copies: multiplying by a ``[..., None]`` broadcast runs numpy's inner loop
    over 3 values at a time, several times slower on a whole map than two arrays of the same shape."""
    return cv2.merge([np.asarray(mask, np.float32)] * count)
