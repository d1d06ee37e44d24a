"""Eyeglasses on a view, without a face parser: whether the face wears them, and the pixels their frames cover.

FFHQ-UV's face region comes from its parser, whose eyeglasses label (CelebAMask-HQ's ``eye_g``: frames and
lenses) is not face (pipeline.md 2.4(a)). The landmark region keeps skin-hued frames (amber, tortoiseshell) as
face, and a rim lying on the brows is protected with them, so without this module the frames are unwrapped into
the map. Two steps:

- ``bridge_contrast``: the frame's bridge crosses the nose between the eyes, where a bare face is smooth skin
  from the brows down to the nose. The median luma of each row of that strip, resampled to ``PROFILE_ROWS`` rows,
  minus its own running mean: Grace Hopper's amber frames measure 14 luma levels (thin black frames drawn on
  015309 in the tests 89), the bare faces of the shared photos and of FFHQ-UV's views 1.3-6.5 (obama's frown
  lines the most), so ``WEARS_GLASSES_CONTRAST`` lies between;
- ``glasses_footprint``: for a face that wears them, where the frames lie, from the eyes' landmarks: around each
  eye an elliptic ring from a large lens's outline (its top on the brows, where top rims sit) in to the lens's
  middle, the bridge between them and the temple arms out to the face's outline. The parser's label also takes
  the lenses; the skin seen through their middle is kept here, as most of what the map has of the eyes' surround.

Limits: Grace Hopper is the only wearer among the images the project has, so the geometry is hers and the drawn
frames' (large and cat-eye frames are covered; a lens reaching lower than 0.48 pupil distances below the eyes is
not), and rimless glasses, whose bridge is a thin wire, are not told from a bare face.

Shapes: images (H, W, 3) uint8 RGB, landmarks (468, 2) pixels (x right, y down), masks (H, W) bool.
"""

from __future__ import annotations

import cv2
import numpy as np

from stages.face.landmarks import EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT

INNER_CORNERS = (133, 362)  # mediapipe's inner eye corners, image-left then image-right eye
NASION, NOSE_BRIDGE = 168, 6  # between the eyes; the bridge a little lower
PROFILE_ROWS = 100
PROFILE_MEAN_ROWS = 15  # running mean of the profile: what is left is a structure a few rows tall
WEARS_GLASSES_CONTRAST = 10.0  # luma levels; see the module docstring
# The strip: the middle half between the inner corners, from half the corners' distance above the nasion to a
# fifth below the bridge point.
STRIP_HALF_WIDTH, STRIP_ABOVE, STRIP_BELOW = 0.25, 0.5, 0.2
# Glasses geometry in pupil distances (between the eyes' centres). Grace Hopper's frames measure 0.92 wide and
# 0.65 tall, centred 0.13 below the eyes, with cat-eye corners up to 0.3 above that centre. Each lens is an
# ellipse with these semi-axes, its centre LENS_DROP below the eye's.
LENS_HALF_WIDTH, LENS_HALF_HEIGHT, LENS_DROP = 0.48, 0.38, 0.1
# The lens's middle, an ellipse with these semi-axes about the lens centre, stays face: frames sit outside it
# (the tests' drawn 0.38 x 0.28 frames too), and the skin seen through it is most of what the map has of the eyes'
# surround.
KEPT_HALF_WIDTH, KEPT_HALF_HEIGHT = 0.33, 0.22
BRIDGE_HALF_HEIGHT = 0.1  # the bridge: a band between the lens centres
# Temple arms: from ARM_START out from the lens centre and ARM_RAISE above it (hinges sit at the rim's upper
# corner, which a cat-eye frame sweeps up past the ellipse), ARM_HALF_HEIGHT thick, out to the face's outline.
ARM_START, ARM_RAISE, ARM_HALF_HEIGHT = 0.3, 0.28, 0.09


def bridge_contrast(image: np.ndarray, landmarks: np.ndarray) -> float:
    """Largest deviation (luma levels) of the nose-bridge strip's row profile from its running mean.

    The strip is sampled in the face's own frame (rows along the line through the inner eye corners), so a tilted
    head's bridge still lies along its rows."""
    left, right = landmarks[INNER_CORNERS[0]].astype(np.float64), landmarks[INNER_CORNERS[1]].astype(np.float64)
    across = right - left
    distance = float(np.linalg.norm(across))
    if distance < 4:
        return 0.0
    across /= distance
    down = np.array([-across[1], across[0]])
    centre = (left + right) / 2
    # Strip rows from STRIP_ABOVE above the nasion to STRIP_BELOW below the bridge point, along ``down``.
    top = float((landmarks[NASION] - centre) @ down) - STRIP_ABOVE * distance
    bottom = float((landmarks[NOSE_BRIDGE] - centre) @ down) + STRIP_BELOW * distance
    half_width = STRIP_HALF_WIDTH * distance
    cols, rows = max(2, round(2 * half_width)), max(4, round(bottom - top))
    origin = centre - half_width * across + top * down  # the strip's top-left corner in the image
    # strip (u, v) -> image: origin + u * across + v * down
    to_image = np.array([[across[0], down[0], origin[0]], [across[1], down[1], origin[1]]])
    strip = cv2.warpAffine(image, to_image, (cols, rows), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    luma = cv2.cvtColor(strip, cv2.COLOR_RGB2YCrCb)[..., 0].astype(np.float64)
    profile_rows = np.median(luma, axis=1)
    profile = np.interp(np.linspace(0, rows - 1, PROFILE_ROWS), np.arange(rows), profile_rows)
    mean = np.convolve(profile, np.ones(PROFILE_MEAN_ROWS) / PROFILE_MEAN_ROWS, mode="same")
    edge = PROFILE_MEAN_ROWS // 2 + 3  # the running mean is short of samples at the ends
    return float(np.abs(profile - mean)[edge:-edge].max())


def wears_glasses(image: np.ndarray, landmarks: np.ndarray) -> bool:
    return contrast_shows_glasses(bridge_contrast(image, landmarks))


def contrast_shows_glasses(contrast: float) -> bool:
    """Whether a ``bridge_contrast`` reading (luma levels) is a frame's bridge rather than a bare nose."""
    return contrast > WEARS_GLASSES_CONTRAST


def glasses_footprint(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool: frames, bridge and temple arms of glasses worn on the face (module docstring)."""
    eyes = [landmarks[list(eye)].mean(axis=0) for eye in (EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT)]
    across = eyes[1] - eyes[0]
    pupils = max(float(np.linalg.norm(across)), 1.0)
    across /= pupils
    down = np.array([-across[1], across[0]])  # image y is down: the face's downward direction
    angle = float(np.degrees(np.arctan2(across[1], across[0])))

    def pixel(point: np.ndarray) -> tuple[int, int]:
        return int(round(point[0])), int(round(point[1]))

    def thickness(half: float) -> int:
        return max(1, round(2 * half * pupils))

    mask = np.zeros((height, width), dtype=np.uint8)
    lenses = [eye + LENS_DROP * pupils * down for eye in eyes]
    axes = (max(1, round(LENS_HALF_WIDTH * pupils)), max(1, round(LENS_HALF_HEIGHT * pupils)))
    for lens in lenses:
        cv2.ellipse(mask, pixel(lens), axes, angle, 0, 360, 1, -1)
    cv2.line(mask, pixel(lenses[0]), pixel(lenses[1]), 1, thickness(BRIDGE_HALF_HEIGHT))
    reach = 2.0 * (height + width)  # to the image border: the face region's own outline cuts the arms
    for lens, sign in ((lenses[0], -1.0), (lenses[1], 1.0)):
        hinge = lens + sign * ARM_START * pupils * across - ARM_RAISE * pupils * down
        cv2.line(mask, pixel(hinge), pixel(hinge + sign * reach * across), 1, thickness(ARM_HALF_HEIGHT))
    kept = (max(1, round(KEPT_HALF_WIDTH * pupils)), max(1, round(KEPT_HALF_HEIGHT * pupils)))
    for lens in lenses:
        cv2.ellipse(mask, pixel(lens), kept, angle, 0, 360, 0, -1)
    return mask.astype(bool)
