"""Tests of the texture-completion image operations (stages/texture): colour, masks, Poisson, pyramid, quality."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.sparse as sparse
import skimage.color
from PIL import Image
from scipy.sparse.linalg import spsolve

from stages.texture.color import SPREAD_DIVISOR, match_color_yuv, rgb_to_yuv, yuv_to_rgb
from stages.texture.masks import erode_view_mask, hair_weight, major_minor_weight, view_blend_weight
from stages.texture.merge import OWN_SKIN_COLOUR_REACH_1024, blend_with_template, continue_own_skin
from stages.texture.poisson import laplacian_matrix, patch_laplacian, poisson_fill
from stages.texture.pyramid import laplacian_pyramid, mask_pyramid, pyramid_blend, reconstruct
from stages.texture.quality import (
    QualityThresholds,
    brightness_symmetry_error,
    filter_reason,
    symmetry_axis,
    valid_ratio,
)
from stages.texture.template import TEMPLATE_ASSET, build_template, load_official_template, template_for
from tests.uv_regions import ellipse, synthetic_regions

RNG = np.random.default_rng(7)


def smooth_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth (H, W, C) float64 image in roughly [40, 220]."""
    rows, cols = np.mgrid[0:height, 0:width] / max(height, width)
    phases = np.random.default_rng(seed).uniform(0, 2 * np.pi, size=(channels, 2))
    return np.stack([130 + 60 * np.sin(3 * rows + p[0]) * np.cos(2 * cols + p[1]) for p in phases], axis=-1)


# ---------------------------------------------------------------- colour

def test_yuv_conversion_matches_skimage_on_0_255_values():
    rgb = RNG.uniform(0, 255, size=(16, 16, 3))
    expected = skimage.color.convert_colorspace(rgb, "rgb", "yuv")
    np.testing.assert_allclose(rgb_to_yuv(rgb), expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(yuv_to_rgb(expected), skimage.color.convert_colorspace(expected, "yuv", "rgb"),
                               rtol=1e-5, atol=1e-3)


def test_color_match_moves_moments_to_target_with_reduced_spread():
    source = 120 + 10 * RNG.standard_normal((64, 64, 3))
    target = 150 + 20 * RNG.standard_normal((64, 64, 3))
    mask = np.zeros((64, 64), np.float32)
    mask[8:56, 8:56] = 1
    matched = match_color_yuv(source, target, mask)
    valid = mask > 0.5
    got, want = rgb_to_yuv(matched)[valid].astype(np.float64), rgb_to_yuv(target)[valid].astype(np.float64)
    np.testing.assert_allclose(got.mean(axis=0), want.mean(axis=0), atol=0.05)
    np.testing.assert_allclose(got.std(axis=0), want.std(axis=0) / SPREAD_DIVISOR, rtol=1e-3)
    assert matched.min() >= 0 and matched.max() <= 255


def test_color_match_with_empty_mask_returns_source():
    source = RNG.uniform(0, 255, size=(8, 8, 3))
    out = match_color_yuv(source, np.zeros_like(source), np.zeros((8, 8)))
    np.testing.assert_allclose(out, source, atol=1e-4)


# ---------------------------------------------------------------- masks

def test_erosion_recipe_is_a_7_and_15_texel_erosion_of_a_binary_mask():
    mask = ellipse(200, (500, 500), (350, 300))
    mouth = np.zeros_like(mask)
    mouth[:, :100] = 1
    eroded = erode_view_mask(mask, mouth)
    light = cv2.erode(mask, np.ones((7, 7), np.uint8), borderType=cv2.BORDER_REFLECT_101)
    strong = cv2.erode(mask, np.ones((15, 15), np.uint8), borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_array_equal(eroded[:, :100], light[:, :100])
    np.testing.assert_array_equal(eroded[:, 100:], strong[:, 100:])


def test_major_minor_weight_is_one_in_major_and_0_8_in_minor_only():
    size = 400
    mask = np.ones((size, size), np.float32)
    major = np.zeros_like(mask)
    major[:, :150] = 1
    minor = np.zeros_like(mask)
    minor[:, :300] = 1
    weight = major_minor_weight(mask, major, minor)
    np.testing.assert_allclose(weight[:, :100], 1.0, atol=1e-5)
    np.testing.assert_allclose(weight[:, 200:240], 0.8, atol=1e-5)  # 51 + 31 boxes away from both edges
    np.testing.assert_allclose(weight[:, 380:], 0.0, atol=1e-6)
    assert np.all(np.diff(weight[200, 150:380]) <= 1e-6)  # fades monotonically from major to nothing


def test_view_weight_vanishes_outside_the_view_mask():
    regions, _ = synthetic_regions(256)
    mask = regions["minor_valid_front"]
    eroded = erode_view_mask(mask, regions["mouth_contrast"])
    weight = view_blend_weight(mask, eroded, regions["major_valid_front"], regions["minor_valid_front"])
    assert np.all(weight[mask == 0] == 0)
    assert weight.max() <= 1.0 + 1e-6 and weight.max() > 0.9


def test_hair_weight_is_one_inside_and_zero_far_outside():
    hair = np.zeros((120, 120), np.float32)
    hair[:60] = 1
    weight = hair_weight(hair)
    np.testing.assert_allclose(weight[:40], 1.0, atol=1e-6)
    np.testing.assert_allclose(weight[70:], 0.0, atol=1e-6)


# ---------------------------------------------------------------- Poisson

def test_laplacian_matrix_matches_brute_force():
    height, width = 4, 5
    dense = np.zeros((height * width, height * width))
    for r in range(height):
        for c in range(width):
            i = r * width + c
            dense[i, i] = 4
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                if 0 <= r + dr < height and 0 <= c + dc < width:
                    dense[i, (r + dr) * width + c + dc] = -1
    np.testing.assert_array_equal(laplacian_matrix(height, width).toarray(), dense)


def test_poisson_fill_keeps_outside_and_follows_source_gradients_inside():
    height, width = 48, 64
    truth = smooth_image(height, width, seed=1)
    target = truth.copy()
    mask = ellipse(64, (400, 512), (250, 380))[:height, :width]
    target[mask > 0.5] = RNG.uniform(0, 255, size=(int(mask.sum()), 3))  # garbage to be replaced
    source = truth + 37.0  # same gradients, other brightness: the template's shading without its colour
    out = poisson_fill(target, source, mask)
    outside = mask <= 0.5
    np.testing.assert_array_equal(out[outside], target[outside])
    np.testing.assert_allclose(out[~outside], truth[~outside], atol=1e-8)


def test_poisson_fill_solves_ffhq_uv_full_system():
    height, width = 20, 24
    target = RNG.uniform(0, 1, size=(height, width, 3))
    source = smooth_image(height, width, seed=3) / 255.0
    mask = np.zeros((height, width), np.float32)
    mask[4:15, 5:20] = 1
    mask[8:10, 2:5] = 1
    out = poisson_fill(target, source, mask)
    # FFHQ-UV's formulation: A = diag(m) L + diag(1 - m) I, b = m * lap(source) + (1 - m) * target.
    lap = laplacian_matrix(height, width)
    m = mask.ravel()
    system = (sparse.diags(m) @ lap + sparse.diags(1 - m)).tocsc()
    for channel in range(3):
        rhs = m * patch_laplacian(source)[:, :, channel].ravel() + (1 - m) * target[:, :, channel].ravel()
        np.testing.assert_allclose(out[:, :, channel].ravel(), spsolve(system, rhs), atol=1e-10)


def test_poisson_fill_with_empty_mask_is_identity():
    target = RNG.uniform(0, 255, size=(10, 12, 3))
    np.testing.assert_array_equal(poisson_fill(target, target * 0, np.zeros((10, 12))), target)


# ---------------------------------------------------------------- pyramid

@pytest.mark.parametrize("shape", [(128, 128), (100, 75)])
def test_pyramid_reconstructs_exactly(shape):
    image = RNG.uniform(0, 255, size=(*shape, 3)).astype(np.float32)
    levels = laplacian_pyramid(image, 5)
    assert len(levels) == 5 and levels[-1].shape[:2] == ((shape[0] + 15) // 16, (shape[1] + 15) // 16)
    assert [m.shape[:2] for m in mask_pyramid(np.ones(shape), 5)] == [band.shape[:2] for band in levels]
    np.testing.assert_allclose(reconstruct(levels), image, atol=1e-3)


def test_pyramid_blend_reproduces_inputs_where_mask_is_0_or_1():
    base = smooth_image(256, 256, seed=4).astype(np.float32)
    top = RNG.uniform(0, 255, size=(256, 256, 3)).astype(np.float32)
    np.testing.assert_allclose(pyramid_blend(base, top, np.ones((256, 256))), top, atol=1e-3)
    np.testing.assert_allclose(pyramid_blend(base, top, np.zeros((256, 256))), base, atol=1e-3)
    mask = np.zeros((256, 256), np.float32)
    mask[:, 128:] = 1
    out = pyramid_blend(base, top, mask)
    # The coarsest level (1/16) blurs the seam over a few dozen texels; far from it the inputs come back.
    np.testing.assert_allclose(out[:, :64], base[:, :64], atol=0.5)
    np.testing.assert_allclose(out[:, 192:], top[:, 192:], atol=0.5)
    assert np.abs(out[:, 120:136] - base[:, 120:136]).mean() > 1  # the seam really blends


# ---------------------------------------------------------------- quality

def test_valid_ratio():
    region = np.zeros((10, 10))
    region[:, :5] = 1
    mask = np.zeros((10, 10))
    mask[:5, :] = 1
    assert valid_ratio(mask, region) == pytest.approx(0.5)
    assert valid_ratio(mask, np.zeros((10, 10))) == 0.0


def test_brightness_symmetry_error_of_symmetric_and_lopsided_maps():
    # A face whose axis is at column 120 of 256 and whose centre-face region is not symmetric about it.
    region = ellipse(256, (512, 520), (300, 300))
    axis = symmetry_axis(ellipse(256, (365, 640), (22, 60)), ellipse(256, (365, 320), (22, 60)))
    assert axis == pytest.approx(119.5, abs=0.3)
    cols = np.arange(256, dtype=np.float32)
    symmetric = np.broadcast_to((100 + 0.3 * np.abs(cols - axis))[None, :, None], (256, 256, 3))
    assert brightness_symmetry_error(symmetric, region, axis) < 0.2
    assert brightness_symmetry_error(symmetric, region, axis + 8) > 1.0  # the wrong axis breaks the symmetry
    lopsided = symmetric.copy()
    lopsided[:, 120:] += 20.0  # one half of the face 20 grey levels brighter
    error = brightness_symmetry_error(lopsided, region, axis)
    assert 15.0 < error < 20.5  # mostly 20; the low-pass softens the step at the axis


def test_filter_reason_reports_the_first_failed_threshold():
    thresholds = QualityThresholds(min_valid_ratio=0.6, max_bs_error=10.0, max_landmark_error=0.02)
    assert filter_reason({"valid_ratio": 0.9, "bs_error": 5.0, "landmark_error": 0.01}, thresholds) is None
    assert filter_reason({"valid_ratio": 0.41, "bs_error": 50.0}, thresholds) == "valid_ratio 0.410 < 0.600"
    assert filter_reason({"valid_ratio": 0.9, "bs_error": 12.5}, thresholds) == "bs_error 12.500 > 10.000"
    assert filter_reason({"valid_ratio": 0.9, "landmark_error": 0.05}, thresholds).startswith("landmark_error")
    assert filter_reason({"valid_ratio": 0.1}, QualityThresholds()) is None
    assert filter_reason({"valid_ratio": None}, thresholds) is None


def test_pyramid_overshoot_is_clipped_before_the_hair_override():
    # FFHQ-UV clips the Laplacian blend to [0, 255] before the feathered hair blend: a bright edge's band-pass
    # overshoot must not survive under the hair's border (output <= template * h + 255 * (1 - h)).
    size = 64
    regions = {"hair": np.zeros((size, size), np.float32), "major_valid_whole": np.ones((size, size), np.float32),
               "minor_valid_whole": np.ones((size, size), np.float32)}
    regions["hair"][:, 10:] = 1.0
    template = np.full((size, size, 3), 40.0, np.float32)
    texture = np.zeros((size, size, 3), np.float32)
    texture[:, :20] = 255.0
    reliable = np.zeros((size, size), np.float32)
    reliable[:, :24] = 1.0
    out = blend_with_template(texture, reliable, template, regions).astype(np.float64)
    hair = hair_weight(regions["hair"])[..., None]
    assert (out <= np.rint(40.0 * hair + 255.0 * (1.0 - hair)) + 1e-9).all()


# ---------------------------------------------------------------- template

def test_built_template_is_deterministic_and_paints_regions():
    regions, _ = synthetic_regions(256)
    template = build_template(regions)
    np.testing.assert_array_equal(template, build_template(regions))
    assert template.shape == (256, 256, 3) and template.dtype == np.float32
    assert template.min() >= 0 and template.max() <= 255

    def mean_in(name):
        return template[regions[name] > 0.5].mean(axis=0)

    skin = template[(regions["center_face"] > 0.5) & (regions["mouth_contrast"] < 0.5)
                    & (regions["eye_l"] + regions["eye_r"] + regions["nostril"] < 0.5)].mean(axis=0)
    assert mean_in("hair").sum() < 0.5 * skin.sum()  # dark hair
    # Features are tints of the skin, not a drawing: shaded nostrils, lips and lids, nothing near black.
    assert 0.75 * skin.sum() < mean_in("nostril").sum() < 0.95 * skin.sum()
    lips = mean_in("mouth")
    assert lips[0] - lips[1] > skin[0] - skin[1]  # redder than skin
    assert mean_in("eye_l").sum() < skin.sum()  # closed, shaded eyelids with a faint seam
    face = (regions["center_face"] > 0.5) & (regions["hair"] < 0.5)
    assert template[face].sum(axis=1).min() > 0.6 * skin.sum()  # no lash line or lip seam near black


def test_built_template_nostrils_are_graded_shadows_and_the_mouth_a_closed_seam():
    # What the Poisson fill copies into the nose and mouth boxes must read as skin, not a drawing: a nostril is
    # darkest at its centre and plain skin at its region's edge (no flat blob with an outline), and the mouth's
    # darkest texels lie on its midline (where the closed lips meet) with a smooth, not staircase, seam.
    regions, _ = synthetic_regions(1024)
    luma = rgb_to_yuv(build_template(regions))[..., 0]
    nostril = (regions["nostril"] > 0.5).astype(np.uint8)
    near = cv2.dilate(nostril, np.ones((9, 9), np.uint8)) > 0
    skin = luma[(regions["nosal_base"] > 0.5) & ~near].mean()
    ring = (nostril > 0) & ~(cv2.erode(nostril, np.ones((5, 5), np.uint8)) > 0)
    count, labels = cv2.connectedComponents(nostril)
    for part in range(1, count):
        centre = tuple(np.round(np.argwhere(labels == part).mean(axis=0)).astype(int))
        assert luma[centre] < 0.75 * skin
    assert luma[ring].mean() > 0.93 * skin
    mouth = regions["mouth"] > 0.5
    cols = np.nonzero(mouth.any(axis=0))[0][10:-10]
    darkest = np.array([np.argmin(np.where(mouth[:, c], luma[:, c], np.inf)) for c in cols])
    middle = np.array([np.nonzero(mouth[:, c])[0].mean() for c in cols])
    assert np.abs(darkest - middle).max() <= 2.5 and np.abs(np.diff(darkest)).max() <= 1


def test_official_template_is_used_for_hifi3dpp_when_present(tmp_path):
    regions, _ = synthetic_regions(128)
    assert load_official_template(str(tmp_path), 128) is None
    official = RNG.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    (tmp_path / TEMPLATE_ASSET).parent.mkdir(parents=True)
    Image.fromarray(official).save(tmp_path / TEMPLATE_ASSET)
    loaded = template_for("hifi3dpp", regions, str(tmp_path))
    assert loaded.shape == (128, 128, 3)
    np.testing.assert_allclose(loaded[::2, ::2].mean(), official.mean(), atol=3)
    np.testing.assert_array_equal(template_for("mediapipe468", regions, str(tmp_path)), build_template(regions))


def test_continued_skin_relaxes_from_the_nearest_seen_colour_to_the_template():
    """A single view's unseen texels continue the seen skin next to it (a jaw's shadow stays at the jaw) and take
    the colour-matched template's colour far from it, instead of spreading the shadow over the neck and ears."""
    size = 512
    rows, cols = np.mgrid[:size, :size]
    radius = np.hypot(rows - size / 2, cols - size / 2)
    texture = np.zeros((size, size, 3), np.float32)
    texture[radius < 100] = (200.0, 150.0, 130.0)  # seen skin ...
    texture[(radius >= 88) & (radius < 100)] = (120.0, 80.0, 60.0)  # ... with a shadowed rim along its edge
    seen = (radius < 100).astype(np.float32)
    far = np.full((size, size, 3), (190.0, 145.0, 125.0), np.float32)  # the colour-matched template
    regions, _ = synthetic_regions(size)
    nowhere = np.zeros((size, size), bool)  # no fine texture: colours only
    reach = OWN_SKIN_COLOUR_REACH_1024 * size / 1024  # 48 texels at 512
    near_rim = (radius >= 101) & (radius < 103)
    far_away = (radius >= 100 + 3 * reach) & (radius < 102 + 3 * reach)
    out = continue_own_skin(texture, seen, regions, nowhere, far)
    unrelaxed = continue_own_skin(texture, seen, regions, nowhere)  # the nearest seen colour alone
    # Next to the seen skin its shadowed rim continues, as without the relaxation, darker than the template ...
    assert np.abs(out[near_rim].mean(0) - unrelaxed[near_rim].mean(0)).max() < 8
    assert (out[near_rim].mean(0) < np.array((190, 145, 125)) - 20).all()
    # ... and away from it the template's colour takes over, where the rim's would have spread on.
    assert np.abs(out[far_away].mean(0) - (190, 145, 125)).max() < 5
    assert np.abs(unrelaxed[far_away].mean(0) - (190, 145, 125)).max() > 30
