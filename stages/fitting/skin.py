"""Deep3D's skin prior, as FFHQ-UV's RGB fitting uses it: a YCbCr Gaussian mixture posterior per pixel.

Constants from FFHQ-UV ``RGB_Fitting/third_party/skin_mask/skin_mask.py`` (Deep3DFaceRecon's ``util/skin_mask.py``):
4 skin and 4 non-skin full-covariance components over (Y, Cb, Cr) in [0, 255], skin prior 0.8. The mixtures are
stored as FFHQ-UV stores them (weights, means, covariance determinants, inverse covariances).
"""

from __future__ import annotations

import numpy as np

SKIN_PRIOR = 0.8

# ITU-R BT.601 RGB [0,255] -> YCbCr (studio swing), the matrix of Deep3D's ``_rgb2ycbcr``.
_YCBCR_MATRIX = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])

SKIN_WEIGHTS = (0.24063933, 0.16365987, 0.26034665, 0.33535415)
SKIN_MEANS = ((113.71862, 103.39613, 164.08226), (150.19858, 105.18467, 155.51428),
              (183.92976, 107.62468, 152.71820), (114.90524, 113.59782, 151.38217))
SKIN_COV_DETS = (5692842.5, 5851930.5, 2329131.0, 1585971.0)
SKIN_COV_INVS = (
    ((0.0019472069, 0.0020450759, -0.00060243998), (0.0020450759, 0.017700525, 0.0051420014),
     (-0.00060243998, 0.0051420014, 0.0081308950)),
    ((0.0027110141, 0.0011036990, 0.0023122299), (0.0011036990, 0.010707724, 0.010742856),
     (0.0023122299, 0.010742856, 0.017481629)),
    ((0.0048026871, 0.00022935172, 0.0077668377), (0.00022935172, 0.011729696, 0.0081661865),
     (0.0077668377, 0.0081661865, 0.025374353)),
    ((0.0011989699, 0.0022453172, -0.0010748957), (0.0022453172, 0.047758564, 0.020332102),
     (-0.0010748957, 0.020332102, 0.024502251)),
)
NONSKIN_WEIGHTS = (0.12791070, 0.31130761, 0.34245777, 0.21832393)
NONSKIN_MEANS = ((99.200851, 112.07533, 140.20602), (110.91392, 125.52969, 130.19237),
                 (129.75864, 129.96107, 126.96808), (112.29587, 128.85121, 129.05431))
NONSKIN_COV_DETS = (458703648.0, 6466488.0, 90611376.0, 133097.63)
NONSKIN_COV_INVS = (
    ((0.00085371657, 0.00071197288, 0.00023958916), (0.00071197288, 0.0025935620, 0.00076557708),
     (0.00023958916, 0.00076557708, 0.0015042332)),
    ((0.00024650150, 0.00045542428, 0.00015019422), (0.00045542428, 0.026412144, 0.018419769),
     (0.00015019422, 0.018419769, 0.037497383)),
    ((0.00037054974, 0.00038146760, 0.00040408765), (0.00038146760, 0.0085505722, 0.0079136286),
     (0.00040408765, 0.0079136286, 0.010982352)),
    ((0.00013709733, 0.00051228428, 0.00012777430), (0.00051228428, 0.28237113, 0.10528370),
     (0.00012777430, 0.10528370, 0.23468947)),
)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 255] -> (..., 3) float64 YCbCr (Y in 16-235, Cb/Cr in 16-240)."""
    return np.asarray(rgb, dtype=np.float64) @ _YCBCR_MATRIX.T + _YCBCR_OFFSET


def _mixture_likelihood(data: np.ndarray, weights, means, dets, invs) -> np.ndarray:
    """(P, 3) samples -> (P,) density of a 3-D Gaussian mixture given by determinants and inverse covariances."""
    total = np.zeros(len(data))
    for weight, mean, det, inv in zip(weights, means, dets, invs):
        centred = data - np.asarray(mean)
        power = -0.5 * np.einsum("pi,ij,pj->p", centred, np.asarray(inv), centred)
        total += weight * np.exp(power) / ((2 * np.pi) ** 1.5 * np.sqrt(det))
    return total


def skin_posterior(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float64 posterior probability of skin in [0, 1]."""
    data = rgb_to_ycbcr(rgb.reshape(-1, 3))
    skin = SKIN_PRIOR * _mixture_likelihood(data, SKIN_WEIGHTS, SKIN_MEANS, SKIN_COV_DETS, SKIN_COV_INVS)
    other = (1 - SKIN_PRIOR) * _mixture_likelihood(data, NONSKIN_WEIGHTS, NONSKIN_MEANS, NONSKIN_COV_DETS,
                                                   NONSKIN_COV_INVS)
    with np.errstate(invalid="ignore", divide="ignore"):
        post = skin / (skin + other)
    # Both densities underflow to 0 far from every component: FFHQ-UV's division gives NaN there, which its
    # uint8 cast turns into 0; take 0 (not skin) directly.
    return np.clip(np.nan_to_num(post, nan=0.0), 0.0, 1.0).reshape(rgb.shape[:2])


def skin_mask_uint8(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 skin mask, FFHQ-UV's ``skinmask(..., return_uint8=True)``."""
    return np.round(skin_posterior(rgb) * 255).astype(np.uint8)
