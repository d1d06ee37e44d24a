"""The fine-texture layer of a single view's fill (``stages/texture/skin_detail.py``) on synthetic maps."""

from __future__ import annotations

import numpy as np

from stages.texture.skin_detail import own_skin_detail, skin_source
from tests.uv_regions import synthetic_regions

SIZE = 512
SKIN_NOISE = 5.0  # std of the skin's fine texture, grey (the same in R, G and B)


def textured_map(regions: dict[str, np.ndarray], seen: np.ndarray) -> np.ndarray:
    """(SIZE, SIZE, 3) skin of one colour plus grey noise; the eyes, the brows above them, the lips, the nose base
    and the seen region's rim carry a green-only checkerboard, so a copied feature texel shows as G != R."""
    rng = np.random.default_rng(3)
    texture = np.array([180.0, 140.0, 120.0], np.float32) + rng.normal(0, SKIN_NOISE, (SIZE, SIZE, 1))
    features = (regions["eye_l"] + regions["eye_r"] + regions["mouth_contrast"] + regions["nosal_base"]) > 0.5
    for eye in ("eye_l", "eye_r"):
        rows, cols = np.nonzero(regions[eye] > 0.5)
        height = rows.max() - rows.min() + 1
        features[rows.min() - height:rows.min(), cols.min():cols.max() + 1] = True  # the brows
    inner = np.zeros_like(seen)
    inner[2:-2, 2:-2] = seen[2:-2, 2:-2] & seen[:-4, 2:-2] & seen[4:, 2:-2] & seen[2:-2, :-4] & seen[2:-2, 4:]
    features |= seen & ~inner  # a hair or background rim at the view's edge
    checker = (np.indices((SIZE, SIZE)).sum(axis=0) % 2 * 60.0 - 30.0).astype(np.float32)
    texture[..., 1] += checker * features
    return texture.astype(np.float32)


def seen_and_unseen(regions: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The face's image-left 60 % seen, the rest unseen (a turned photo's far cheek)."""
    face = regions["center_face"] > 0.5
    left = np.arange(SIZE)[None, :] < 0.6 * SIZE
    return face & left, face & ~left


def test_fill_detail_is_the_seen_skins_texture_and_never_a_feature():
    regions, _ = synthetic_regions(SIZE)
    seen, unseen = seen_and_unseen(regions)
    texture = textured_map(regions, seen)
    source = skin_source(seen.astype(np.float32), regions)
    assert source.sum() > 5000
    detail = own_skin_detail(texture, source, unseen.astype(np.float32))
    assert not detail[~unseen].any()  # only the unseen texels get the layer
    spread = detail[unseen].std(axis=0)
    assert np.all((spread > 0.8 * SKIN_NOISE) & (spread < 1.25 * SKIN_NOISE)), spread  # the skin's amplitude
    assert abs(detail[unseen].mean()) < 0.2 * SKIN_NOISE  # texture only, the colour stays the smooth fill's
    # Grey skin noise has R == G: any copied eye, brow, lip, nose or rim texel would bring its green checkerboard.
    assert np.abs(detail[..., 1] - detail[..., 0]).max() < 0.01


def test_fill_detail_is_deterministic_and_empty_without_clean_skin():
    regions, _ = synthetic_regions(SIZE)
    seen, unseen = seen_and_unseen(regions)
    texture = textured_map(regions, seen)
    source = skin_source(seen.astype(np.float32), regions)
    first = own_skin_detail(texture, source, unseen.astype(np.float32))
    np.testing.assert_array_equal(first, own_skin_detail(texture, source, unseen.astype(np.float32)))
    none = own_skin_detail(texture, np.zeros_like(source), unseen.astype(np.float32))
    assert not none.any()  # no seen skin to copy from: the smooth fill stays as it is
