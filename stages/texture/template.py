"""The template UV map that fills what no view shows (pipeline.md 2.4 (e)-(g), section 3).

FFHQ-UV's own template is ``topo_assets/template_base_uv.png`` (authors only): a
skin texture with closed eyes and dark hair in the HiFi3D++ layout. When that file
is in the weights folder it is used for the ``hifi3dpp`` topology. Otherwise, and
always for ``mediapipe468``, the project builds its template from the topology's
region masks, deterministically, with no data file:

1. Skin: one mid skin tone (``SKIN_RGB``), unshaded: a UV map holds albedo, and FFHQ-UV's maps carry their neck
   and ears in the face's own tone (a periphery darkened as if turning away, colour-matched to a face, came out a
   greyish mauve).
2. Closed eyes, as in FFHQ-UV's template: the ``eye_l`` / ``eye_r`` regions get a
   slightly darker eyelid and a soft, faint lid seam along each region's horizontal
   midline (the mean row of the region in each column), in a darker skin tone.
3. Brows: each eye region widened, flattened and moved 1.6 eye heights up;
   "up" is the direction from the mouth's centroid to the eyes' centroid, so the
   recipe does not depend on the UV layout's orientation.
4. A soft lip tint on the ``mouth`` region with a thin, soft, darker seam along its
   midline where the closed lips meet; each ``nostril`` region a graded shadow of the
   skin (darkest at its centre, fading to plain skin before the region's edge), not a
   flat brown patch.
5. Hair on the ``hair`` region: a dark brown with a fixed-seed strand texture (white
   noise blurred strongly along the layout's vertical axis).

Every painted layer is feathered with a Gaussian and the facial features are only
tints of the skin (``*_OPACITY``), so the Poisson fill, which copies the template's
gradients into the eye, nose and mouth boxes, brings in skin shading, not a drawing:
no hard lash lines, flat red lips or dark nostril blobs around the boxes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Optional

import cv2
import numpy as np

# FFHQ-UV's template asset, relative to models.weights_dir (README_ckp_topo).
TEMPLATE_ASSET = "topo_assets/template_base_uv.png"
# Only the HiFi3D++ layout matches the official template's texels.
OFFICIAL_TEMPLATE_TOPOLOGY = "hifi3dpp"

# Colours of the built template, sRGB 0-255 (our choices, not FFHQ-UV's values).
SKIN_RGB = (200, 152, 128)
LIP_RGB = (172, 98, 94)
LIP_SEAM_RGB = (110, 58, 56)
LID_SEAM_RGB = (150, 104, 90)
BROW_RGB = (78, 58, 48)
HAIR_RGB = (44, 34, 30)
# Opacity of the facial features over the skin (1 = the colour above): tints, not paint.
LID_SEAM_OPACITY = 0.35
LIP_OPACITY = 0.35
LIP_SEAM_OPACITY = 0.45
FEATURE_FEATHER = 2.0  # the lip tint and eyelids are feathered this many times more than FEATHER_SIGMA
LIP_SEAM_FEATHER = 0.8  # the seam where the lips meet: a soft line (fraction of FEATHER_SIGMA), not a stroke
# A nostril is the skin darkened by up to NOSTRIL_DARKENING at its centre, falling off as a Gaussian whose
# spread is NOSTRIL_CORE times the region's own (per axis): the opening's shadow, fading out inside the region.
NOSTRIL_DARKENING = 0.4
NOSTRIL_CORE = 0.9

EYELID_SHADE = 0.9  # eyelids are this much darker than the surrounding skin
BROW_OFFSET = 1.6  # brow centre this many eye heights above the eye centre
BROW_SCALE = (1.15, 0.45)  # brow size relative to the eye region (width, height)
BROW_OPACITY = 0.65
HAIR_STRAND_CONTRAST = 0.35
HAIR_SEED = 20230  # fixed so every run builds the same template
REFERENCE_WIDTH = 1024.0  # lengths below are in texels at this width and scale with the map
FEATHER_SIGMA = 2.0  # edge softness of painted regions
LINE_FEATHER = 0.7  # the lid seam is feathered less (fraction of FEATHER_SIGMA)
BROW_FEATHER = 3.0  # brows are feathered more (multiple of FEATHER_SIGMA)
LINE_HALF_WIDTH = 1.5
MIDLINE_SMOOTHING = 6.0  # texels (at REFERENCE_WIDTH) along which a seam's row is averaged
STRAND_SIGMA = (0.8, 14.0)  # (across, along) the strands


def load_official_template(weights_dir: Optional[str], size: int) -> Optional[np.ndarray]:
    """FFHQ-UV's template from ``<weights_dir>/topo_assets/template_base_uv.png`` resized to (size, size, 3) float32
    RGB in [0, 255], or None when the file is absent."""
    if not weights_dir:
        return None
    import fsspec

    from stages.networks import under_weights_dir

    url = under_weights_dir(weights_dir, TEMPLATE_ASSET)
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return None
    return load_template_file(url, size)


def load_template_file(url: str, size: int) -> np.ndarray:
    """A template UV map from a path or fsspec URL, resized to (size, size, 3) float32 RGB in [0, 255]."""
    import fsspec
    from PIL import Image

    with fsspec.open(url, "rb") as handle:
        image = np.asarray(Image.open(io.BytesIO(handle.read())).convert("RGB"), dtype=np.float32)
    if image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return image


def _feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma), 0.0, 1.0)


def _paint(image: np.ndarray, alpha: np.ndarray, rgb: tuple[int, int, int],
           shading: np.ndarray | float = 1.0) -> np.ndarray:
    """``rgb`` times ``shading`` ((H, W) or a scalar) laid over ``image`` with opacity ``alpha`` (H, W)."""
    colour = np.asarray(rgb, np.float32) * np.atleast_3d(np.asarray(shading, np.float32))
    return image * (1.0 - alpha[:, :, None]) + colour * alpha[:, :, None]


def _midline(region: np.ndarray, half_width: float) -> np.ndarray:
    """(H, W) mask of a horizontal line through the region's mean row in each of its columns."""
    inside = region > 0.5
    line = np.zeros(region.shape, np.float32)
    counts = inside.sum(axis=0)
    columns = np.nonzero(counts)[0]
    if columns.size == 0:
        return line
    rows = (inside[:, columns] * np.arange(region.shape[0])[:, None]).sum(axis=0) / counts[columns]
    # A smooth curve, not the mask's texel staircase: the mean rows are low-passed along the columns.
    rows = cv2.GaussianBlur(rows.astype(np.float32)[None, :], (0, 0), MIDLINE_SMOOTHING * region.shape[1]
                            / REFERENCE_WIDTH, borderType=cv2.BORDER_REPLICATE).ravel()
    grid = np.arange(region.shape[0])[:, None]
    line[:, columns] = (np.abs(grid - rows[None, :]) <= half_width).astype(np.float32)
    return line * inside


def _centroid(region: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(region > 0.5)
    return np.array([rows.mean(), cols.mean()]) if rows.size else np.array([np.nan, np.nan])


def _brow(eye: np.ndarray, up: np.ndarray) -> np.ndarray:
    """One brow: the eye region widened and flattened (``BROW_SCALE``), moved ``BROW_OFFSET`` eye heights along
    ``up`` (unit (row, col) vector)."""
    rows, cols = np.nonzero(eye > 0.5)
    if rows.size == 0:
        return np.zeros(eye.shape, np.float32)
    height = rows.max() - rows.min() + 1
    centre = np.array([cols.mean(), rows.mean()])  # (x, y) for OpenCV
    shift = np.array([up[1], up[0]]) * BROW_OFFSET * height
    scale = np.diag(BROW_SCALE)
    # Destination point q = centre + shift + scale (p - centre), as an OpenCV 2x3 matrix.
    matrix = np.hstack([scale, (centre + shift - scale @ centre)[:, None]]).astype(np.float64)
    return cv2.warpAffine(eye.astype(np.float32), matrix, (eye.shape[1], eye.shape[0]), flags=cv2.INTER_LINEAR)


def _soft_spots(region: np.ndarray, core: float, feather: float) -> np.ndarray:
    """(H, W) float32 in [0, 1]: per connected part of ``region``, a Gaussian at its centroid with ``core`` times the
    part's own row and column spread (1 at the centre), kept inside the region feathered by ``feather`` texels, so
    neighbouring features stay untouched and no outline shows."""
    count, labels = cv2.connectedComponents((region > 0.5).astype(np.uint8))
    rows, cols = np.mgrid[0:region.shape[0], 0:region.shape[1]].astype(np.float32)
    spots = np.zeros(region.shape, np.float32)
    for part in range(1, count):
        r, c = np.nonzero(labels == part)
        spread = np.maximum([r.std(), c.std()], 0.5) * core
        distance = ((rows - r.mean()) / spread[0]) ** 2 + ((cols - c.mean()) / spread[1]) ** 2
        spots = np.maximum(spots, np.exp(-0.5 * distance))
    return spots * _feather(region > 0.5, feather)


def build_template(regions: Mapping[str, np.ndarray]) -> np.ndarray:
    """The project's procedural template (module docstring) from the topology's masks: (H, W, 3) float32 in [0, 255]."""
    height, width = regions["center_face"].shape
    scale = width / REFERENCE_WIDTH
    image = np.broadcast_to(np.asarray(SKIN_RGB, np.float32), (height, width, 3)).copy()
    feather = FEATHER_SIGMA * scale

    eyes = np.clip(regions["eye_l"] + regions["eye_r"], 0.0, 1.0)
    eyelid = _feather(eyes, FEATURE_FEATHER * feather) * (1.0 - EYELID_SHADE)  # a shade, no outline
    image = image * (1.0 - eyelid[:, :, None])
    seam = _midline(regions["eye_l"], LINE_HALF_WIDTH * scale) + _midline(regions["eye_r"], LINE_HALF_WIDTH * scale)
    image = _paint(image, _feather(seam, LINE_FEATHER * feather) * LID_SEAM_OPACITY, LID_SEAM_RGB)

    up = _centroid(eyes) - _centroid(regions["mouth"])
    if np.all(np.isfinite(up)) and np.linalg.norm(up) > 0:
        up = up / np.linalg.norm(up)
        brows = np.clip(_brow(regions["eye_l"], up) + _brow(regions["eye_r"], up), 0.0, 1.0)
        brows = brows * (regions["unwrap_mask"] > 0.5)
        image = _paint(image, _feather(brows, BROW_FEATHER * feather) * BROW_OPACITY, BROW_RGB)

    soft = FEATURE_FEATHER * feather
    image = _paint(image, _feather(regions["mouth"], soft) * LIP_OPACITY, LIP_RGB)
    seam = _midline(regions["mouth"], LINE_HALF_WIDTH * scale)
    image = _paint(image, _feather(seam, LIP_SEAM_FEATHER * feather) * LIP_SEAM_OPACITY, LIP_SEAM_RGB)
    image = image * (1.0 - NOSTRIL_DARKENING * _soft_spots(regions["nostril"], NOSTRIL_CORE, feather))[:, :, None]

    noise = np.random.default_rng(HAIR_SEED).standard_normal((height, width)).astype(np.float32)
    strands = cv2.GaussianBlur(noise, (0, 0), sigmaX=STRAND_SIGMA[0] * scale, sigmaY=STRAND_SIGMA[1] * scale)
    strands = strands / max(float(strands.std()), 1e-6)
    hair_shading = 1.0 + HAIR_STRAND_CONTRAST * np.clip(strands, -2.0, 2.0) / 2.0
    image = _paint(image, _feather(regions["hair"], feather), HAIR_RGB, hair_shading)
    return np.clip(image, 0.0, 255.0).astype(np.float32)


def template_for(topology: str, regions: Mapping[str, np.ndarray], weights_dir: Optional[str]) -> np.ndarray:
    """The template for a topology: FFHQ-UV's file for ``hifi3dpp`` when present, else ``build_template``."""
    size = regions["center_face"].shape[0]
    if topology == OFFICIAL_TEMPLATE_TOPOLOGY:
        official = load_official_template(weights_dir, size)
        if official is not None:
            return official
    return build_template(regions)
