"""FFHQ face alignment (networks.md section 6, FFHQ's ``recreate_aligned_images``) to any size.

The oriented square comes from the eye centres and mouth corners; the image is
shrunk when the face is much larger than the output, cropped, reflect-padded with
blur / median feathering where the square leaves the image, and resampled with
Pillow's QUAD transform. FFHQ uses output 1024 with a 4096 transform; e4e and FFHQ-UV
step 1 use 256 / 256.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

# FFHQ's constants (download_ffhq.py::recreate_aligned_images).
EYE_SCALE = 2.0  # the square's half-side is at least 2x the eye distance ...
MOUTH_SCALE = 1.8  # ... and at least 1.8x the eye-to-mouth distance
CENTRE_SHIFT = 0.1  # centre = eye midpoint + 0.1 * eye-to-mouth
BORDER_FRACTION = 0.1  # crop border, fraction of the quad size (at least MIN_BORDER px)
MIN_BORDER = 3
PAD_FRACTION = 0.3  # reflect padding, fraction of the quad size
BLUR_FRACTION = 0.02  # feathering blur sigma, fraction of the quad size


@dataclass(frozen=True)
class AlignedFace:
    """An aligned face and where it came from.

    ``image``: (S, S, 3) uint8 RGB. ``quad``: (4, 2) float64 corners of the oriented
    square in source pixels (y down), in the order top-left, bottom-left,
    bottom-right, top-right of the output. ``matrix``: (2, 3) affine map from source
    pixel coordinates to output pixel coordinates (pixel centres at integers).
    """

    image: np.ndarray
    quad: np.ndarray
    matrix: np.ndarray

    def map_points(self, points: np.ndarray) -> np.ndarray:
        """Source pixel coordinates (N, 2) -> aligned-image pixel coordinates (N, 2)."""
        pts = np.asarray(points, dtype=np.float64)[:, :2]
        return pts @ self.matrix[:, :2].T + self.matrix[:, 2]


def ffhq_quad(eye_left: np.ndarray, eye_right: np.ndarray, mouth_left: np.ndarray,
              mouth_right: np.ndarray) -> tuple[np.ndarray, float]:
    """FFHQ's oriented square from (x, y) pixel points: ((4, 2) corners, side length in pixels)."""
    eye_left, eye_right = np.asarray(eye_left, np.float64), np.asarray(eye_right, np.float64)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (np.asarray(mouth_left, np.float64) + np.asarray(mouth_right, np.float64)) * 0.5 - eye_avg
    # The square's x axis bisects the eye line and the perpendicular of the eye-mouth line.
    x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1.0, 1.0])
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * EYE_SCALE, np.hypot(*eye_to_mouth) * MOUTH_SCALE)
    y = np.flipud(x) * np.array([-1.0, 1.0])
    centre = eye_avg + eye_to_mouth * CENTRE_SHIFT
    quad = np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])
    return quad, float(np.hypot(*x) * 2.0)


def align_face(rgb: np.ndarray, points5: np.ndarray, output_size: int, transform_size: int | None = None,
               enable_padding: bool = True) -> AlignedFace:
    """FFHQ-align an (H, W, 3) uint8 RGB image from its 5 points (see ``detectors.ffhq_points``).

    ``points5``: (5, 2) pixels, rows eye-left, eye-right, nose, mouth-left, mouth-right
    (image left/right). ``transform_size`` defaults to ``output_size``.
    """
    transform_size = transform_size or output_size
    if output_size < 1 or transform_size < output_size:
        raise ValueError(f"need 1 <= output_size <= transform_size, got {output_size}, {transform_size}")
    points5 = np.asarray(points5, dtype=np.float64)
    source_quad, qsize = ffhq_quad(points5[0], points5[1], points5[3], points5[4])
    quad = source_quad.copy()
    image = Image.fromarray(rgb)

    # Shrink a face much larger than the output first, so the QUAD resampling
    # (bilinear) does not alias.
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        size = (int(np.rint(image.size[0] / shrink)), int(np.rint(image.size[1] / shrink)))
        image = image.resize(size, Image.LANCZOS)
        quad /= shrink
        qsize /= shrink
    else:
        shrink = 1

    border = max(int(np.rint(qsize * BORDER_FRACTION)), MIN_BORDER)
    left, top = np.floor(quad.min(axis=0)).astype(int)
    right, bottom = np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(left - border, 0), max(top - border, 0),
            min(right + border, image.size[0]), min(bottom + border, image.size[1]))
    if crop[2] - crop[0] < image.size[0] or crop[3] - crop[1] < image.size[1]:
        image = image.crop(crop)
        quad -= crop[:2]

    left, top = np.floor(quad.min(axis=0)).astype(int)
    right, bottom = np.ceil(quad.max(axis=0)).astype(int)
    pad = np.array([max(-left + border, 0), max(-top + border, 0),
                    max(right - image.size[0] + border, 0), max(bottom - image.size[1] + border, 0)])
    if enable_padding and pad.max() > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * PAD_FRACTION)))
        image = Image.fromarray(_feathered_pad(np.asarray(image, dtype=np.float32), pad, qsize))
        quad += pad[:2]

    image = image.transform((transform_size, transform_size), Image.QUAD, (quad + 0.5).flatten(), Image.BILINEAR)
    if output_size < transform_size:
        image = image.resize((output_size, output_size), Image.LANCZOS)
    matrix = _source_to_output(source_quad, shrink, output_size)
    return AlignedFace(image=np.asarray(image), quad=source_quad, matrix=matrix)


def _feathered_pad(img: np.ndarray, pad: np.ndarray, qsize: float) -> np.ndarray:
    """Reflect-pad (H, W, 3) float32 by (left, top, right, bottom) and fade the padding to blur and median."""
    img = np.pad(img, ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
    height, width, _ = img.shape
    y, x, _ = np.ogrid[:height, :width, :1]
    # 0 inside the original image, rising to 1 at the outer edge of the padding.
    mask = np.maximum(1.0 - np.minimum(x.astype(np.float32) / pad[0], (width - 1 - x).astype(np.float32) / pad[2]),
                      1.0 - np.minimum(y.astype(np.float32) / pad[1], (height - 1 - y).astype(np.float32) / pad[3]))
    sigma = qsize * BLUR_FRACTION
    img += (gaussian_filter(img, [sigma, sigma, 0]) - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _source_to_output(quad: np.ndarray, shrink: int, output_size: int) -> np.ndarray:
    """(2, 3) affine map from source pixels to output pixels for FFHQ's resampling chain.

    Pillow samples pixel centres at +0.5; the shrink maps source centre p to
    (p + 0.5) / s - 0.5 while the quad is divided by s, so in source units a point
    sits at p + 0.5 (1 - s) relative to the quad corners.
    """
    origin = quad[0]
    axes = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1)  # columns: output x and y directions
    to_unit = np.linalg.inv(axes)
    linear = to_unit * output_size
    offset = -linear @ (origin - 0.5 * (1 - shrink)) - 0.5
    return np.concatenate([linear, offset[:, None]], axis=1)
