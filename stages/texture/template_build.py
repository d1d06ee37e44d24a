"""A template UV map built from data: the robust mean of a finished run's per-sample maps (``ffhq-uv template``).

FFHQ-UV's template (``template_base_uv.png``, authors only) is a skin texture with closed eyes and dark hair. A
team without it, or with a dataset of its own, builds one from its maps: for every texel the median over the
samples that really saw it (their per-view masks), plus the eye, nose and mouth boxes where each map holds its
closed lids and mouth (``fill_regions``); texels under the hair mask or seen by no sample keep the procedural
template (``template.build_template``), blended in smoothly. The median ignores a minority of samples with
hair strands, glasses or shadows at a texel, which a mean would smear in. Samples are taken in id order, so the
output is deterministic for a run.

Shapes: maps (S, S, 3) uint8 RGB, masks (S, S) bool, the template (S, S, 3) uint8.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import cv2
import numpy as np

MIN_SAMPLES = 3  # a texel needs this many samples for the data to replace the fallback fully
SEAM_SIGMA = 6.0  # texels: feathering of the border between data and fallback (at 1024)
CHUNK_ROWS = 64  # rows per median pass: bounds the working memory to samples x 64 x S x 3


def sample_validity(view_masks: Iterable[np.ndarray], regions: Mapping[str, np.ndarray],
                    boxes: Iterable[tuple[int, int, int, int]]) -> np.ndarray:
    """(S, S) bool: texels of one sample's final map taken from its views or its closed-feature boxes, not hair."""
    valid = np.zeros(regions["center_face"].shape, dtype=bool)
    for mask in view_masks:
        valid |= mask
    for row0, row1, col0, col1 in boxes:
        valid[row0:row1, col0:col1] = True
    return valid & (regions["hair"] < 0.5) & (regions["unwrap_mask"] > 0.5)


def robust_mean(maps: list[np.ndarray], valid: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-texel median over the samples valid there: ((S, S, 3) float32 median, (S, S) int count)."""
    size = maps[0].shape[0]
    median = np.zeros((size, size, 3), dtype=np.float32)
    count = np.zeros((size, size), dtype=np.int32)
    for top in range(0, size, CHUNK_ROWS):
        rows = slice(top, min(size, top + CHUNK_ROWS))
        stack = np.stack([m[rows].astype(np.float32) for m in maps])  # (N, r, S, 3)
        ok = np.stack([v[rows] for v in valid])  # (N, r, S)
        stack[~ok] = np.nan
        count[rows] = ok.sum(axis=0)
        with warnings.catch_warnings():  # texels no sample saw are all-NaN: they become 0 and count 0
            warnings.simplefilter("ignore", RuntimeWarning)
            chunk = np.nanmedian(stack, axis=0)
        median[rows] = np.nan_to_num(chunk, nan=0.0)
    return median, count


def build_data_template(maps: list[np.ndarray], valid: list[np.ndarray], fallback: np.ndarray) -> np.ndarray:
    """The template: the samples' robust mean where enough saw a texel, ``fallback`` (S, S, 3) elsewhere."""
    if not maps:
        raise ValueError("no finished UV maps to build a template from")
    median, count = robust_mean(maps, valid)
    sigma = SEAM_SIGMA * fallback.shape[0] / 1024
    # Shrink the data's support by two sigmas before feathering, so the blend reaches the fallback inside it.
    radius = max(1, int(round(2 * sigma)))
    inner = cv2.erode((count > 0).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))
    weight = np.clip(count / MIN_SAMPLES, 0.0, 1.0).astype(np.float32) * inner
    weight = cv2.GaussianBlur(weight, (0, 0), sigma)
    out = median * weight[..., None] + np.asarray(fallback, np.float32) * (1.0 - weight[..., None])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
