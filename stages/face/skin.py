"""Which pixels of a view are the subject's skin: a per-sample YCbCr colour model (FFHQ-UV-style skin prior).

FFHQ-UV's RGB fitting masks non-skin pixels with a YCbCr Gaussian-mixture skin prior (Deep3D's, pipeline.md 7)
and its unwrap takes the face region from a face parser (BiSeNet). Without parser weights the project takes the
face region from the landmarks, and this module makes that region follow the skin the photo actually shows:

- ``fit_skin_model``: one Gaussian in YCbCr fitted to the sample's own skin (cheeks, forehead and nose inside the
  landmark face oval, away from eyes, brows and lips), trimmed twice so stray hair or shadow in the seed does not
  widen it. Luma is down-weighted (``LUMA_WEIGHT``): shading changes luma far more than chroma;
- ``skin_pixels``: pixels whose squared Mahalanobis distance to that model is below ``SKIN_DISTANCE2`` (the
  chi-square 99 % point for 3 degrees of freedom) and whose luma is not far below the skin's (hair, brows and
  shadows of the same hue are darker), as FFHQ-UV's prior separates skin from hair, background and glasses;
- ``strand_energy``: hair the colour of skin (a blonde fringe over the forehead) differs in texture: a band-pass
  of the luma at the scale of a strand, averaged locally, is several times stronger on hair than on skin.

``stages/face/region.py`` seeds its skin/hair segmentation with these.

Shapes: images (H, W, 3) uint8 RGB, masks (H, W) bool.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

LUMA_WEIGHT = 0.5  # luma deviations count half: shading moves luma, not chroma
SKIN_DISTANCE2 = 11.34  # chi-square(3) 99 % point
TRIM_DISTANCE2 = 7.81  # chi-square(3) 95 %: seed pixels beyond it are dropped before refitting
TRIM_ROUNDS = 2
# Covariance floor (YCbCr units squared): a nearly flat seed (a synthetic face) must still accept its own noise.
COVARIANCE_FLOOR = np.diag([25.0, 4.0, 4.0])
MIN_SEED_PIXELS = 50
# Pixels darker than the skin's mean luma by more than this many luma standard deviations are not skin (dark
# hair and brows share the skin's hue).
DARK_LUMA_SIGMAS = 2.5


@dataclass(frozen=True)
class SkinModel:
    """A Gaussian in (weighted) YCbCr: mean (3,), inverse covariance (3, 3), luma standard deviation."""

    mean: np.ndarray
    inverse_covariance: np.ndarray
    luma_std: float

    def distance2(self, ycc: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of (..., 3) weighted YCbCr values to the model."""
        centred = ycc - self.mean
        return np.einsum("...i,ij,...j->...", centred, self.inverse_covariance, centred)


def to_ycc(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) float32 (Y * LUMA_WEIGHT, Cb, Cr), BT.601 full range."""
    ycrcb = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YCrCb).astype(np.float32)
    return np.stack([ycrcb[..., 0] * LUMA_WEIGHT, ycrcb[..., 2], ycrcb[..., 1]], axis=-1)


def _gaussian(pixels: np.ndarray) -> SkinModel:
    mean = pixels.mean(axis=0)
    covariance = np.cov(pixels, rowvar=False) + COVARIANCE_FLOOR * np.array([LUMA_WEIGHT**2, 1.0, 1.0])
    return SkinModel(mean, np.linalg.inv(covariance), float(np.sqrt(covariance[0, 0])))


def fit_skin_model(ycc: np.ndarray, seed: np.ndarray) -> SkinModel | None:
    """The sample's skin Gaussian from its (H, W) bool ``seed`` pixels of ``to_ycc`` values; None if too few."""
    pixels = ycc[seed].astype(np.float64)
    if len(pixels) < MIN_SEED_PIXELS:
        return None
    model = _gaussian(pixels)
    for _ in range(TRIM_ROUNDS):
        kept = pixels[model.distance2(pixels) < TRIM_DISTANCE2]
        if len(kept) < MIN_SEED_PIXELS:
            break
        model = _gaussian(kept)
    return model


def skin_pixels(ycc: np.ndarray, model: SkinModel) -> np.ndarray:
    """(H, W) bool: pixels of ``to_ycc`` values the model takes for skin."""
    close = model.distance2(ycc) < SKIN_DISTANCE2
    not_dark = ycc[..., 0] > model.mean[0] - DARK_LUMA_SIGMAS * model.luma_std
    return close & not_dark


STRAND_SCALE = 0.006  # strand width, fraction of the face width: the band-pass is blur(s) - blur(3 s)


def strand_energy(ycc: np.ndarray, face_width: float) -> np.ndarray:
    """(H, W) float32 local band-pass energy of the luma at a hair strand's scale."""
    sigma = max(0.5, STRAND_SCALE * face_width)
    luma = ycc[..., 0]
    band = np.abs(cv2.GaussianBlur(luma, (0, 0), sigma) - cv2.GaussianBlur(luma, (0, 0), 3 * sigma))
    return cv2.GaussianBlur(band, (0, 0), 3 * sigma)
