"""Synthetic UV region masks under FFHQ-UV's names, for texture tests that must not wait for a real topology.

The layout imitates HiFi3D++'s 1024 UV map scaled to ``size``: face in the middle,
eyes around row 365, mouth around row 588, hair on top; the left view covers the
image-left half, the right view the image-right half (pipeline.md section 1).
"""

from __future__ import annotations

import numpy as np

# FFHQ-UV's Poisson boxes at 1024 (rows, cols), pipeline.md 2.4 (f)3.
BOXES_1024 = {"l_eye": (330, 400, 560, 710), "r_eye": (330, 400, 310, 460),
              "nosal_base": (465, 525, 440, 585), "mouth": (555, 620, 410, 610)}


def ellipse(size: int, center: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    """(size, size) float32 {0, 1} ellipse; centre and radii in 1024-texel units (row, col)."""
    scale = size / 1024.0
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    value = ((rows - center[0] * scale) / (radii[0] * scale)) ** 2
    value += ((cols - center[1] * scale) / (radii[1] * scale)) ** 2
    return (value <= 1.0).astype(np.float32)


def synthetic_regions(size: int = 256) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, int, int, int]]]:
    """Region masks (name -> (size, size) float32) and fill boxes (name -> (row0, row1, col0, col1))."""
    unwrap = ellipse(size, (512, 512), (490, 480))
    cols = (np.arange(size, dtype=np.float32) + 0.5) / size * 1024.0
    left_half = np.broadcast_to((cols < 512)[None, :], (size, size)).astype(np.float32)
    regions = {
        "unwrap_mask": unwrap,
        "center_face": ellipse(size, (480, 510), (240, 220)),
        "hair": ellipse(size, (40, 512), (150, 470)) * unwrap,
        "eye_l": ellipse(size, (365, 635), (22, 60)),
        "eye_r": ellipse(size, (365, 385), (22, 60)),
        "mouth": ellipse(size, (588, 510), (22, 75)),
        "mouth_contrast": ellipse(size, (588, 510), (45, 110)),
        "nosal_base": ellipse(size, (495, 512), (25, 60)),
        "nostril": np.maximum(ellipse(size, (500, 480), (8, 12)), ellipse(size, (500, 545), (8, 12))),
        "major_valid_front": ellipse(size, (480, 510), (230, 170)),
        "minor_valid_front": ellipse(size, (480, 510), (280, 240)),
        "minor_valid_alone": ellipse(size, (480, 510), (320, 330)),  # a lone front view's wider minor region
    }
    side_major = ellipse(size, (480, 510), (300, 420)) * unwrap
    side_minor = ellipse(size, (480, 510), (380, 470)) * unwrap
    regions["major_valid_left"] = side_major * left_half
    regions["minor_valid_left"] = side_minor * left_half
    regions["major_valid_right"] = side_major * (1 - left_half)
    regions["minor_valid_right"] = side_minor * (1 - left_half)
    for kind in ("major", "minor"):
        parts = [regions[f"{kind}_valid_{view}"] for view in ("front", "left", "right")]
        regions[f"{kind}_valid_whole"] = (sum(parts) > 0.5).astype(np.float32)
    scale = size / 1024.0
    boxes = {name: tuple(int(round(v * scale)) for v in box) for name, box in BOXES_1024.items()}
    return regions, boxes
