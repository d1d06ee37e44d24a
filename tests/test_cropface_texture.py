"""FFHQ-UV's cropface630 texture GAN output put back into the template (``stages/fitting/cropface_texture.py``): the
paste window in the final 1024 map, the template outside it, the template's hair, gradients through the paste."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.fitting.cropface_texture import CropfaceTextureGAN, cropface_assets
from stages.networks.texgan import TextureGAN
from stages.texture.masks import FULL_COVERAGE, box_blur
from stages.texture.template import build_template
from tests.tiny_gan_weights import tiny_generator
from tests.uv_regions import synthetic_regions

# The window in the 1024 UV map, half-open: 1664-canvas rows 187:1211, cols 317:1341 times 1024/1664 (the resize
# takes 1024-row r from canvas row 1.625 r + 0.3125, so rows 115-744 are all GAN, row 745 mixes in the template).
ROWS, COLS = (115, 745), (195, 825)


@pytest.fixture(scope="module")
def layout():
    """Synthetic regions and a template with shading of its own, as FFHQ-UV's official one has (the built one is
    flat outside the face), so a test can follow the template's pattern through the blends."""
    regions, _ = synthetic_regions(1024)
    rows, cols = np.mgrid[0:1024, 0:1024] / 1023.0
    shading = 0.8 + 0.1 * rows + 0.1 * np.cos(3.0 * cols)
    return regions, (build_template(regions) * shading[..., None]).astype(np.float32)


def decoder(template: np.ndarray, regions: dict) -> CropfaceTextureGAN:
    """The cropface blends around a tiny generator (``paste`` / ``finish`` are tested on given GAN outputs)."""
    generator = tiny_generator(0, resolution=64)
    w_dim = generator.config.w_dim
    return CropfaceTextureGAN(TextureGAN(generator, torch.zeros(1, 1, w_dim), torch.ones(1, 1, w_dim)),
                              cropface_assets(template, regions))


def final_map(gan: CropfaceTextureGAN, face: torch.Tensor) -> np.ndarray:
    """Both blends of a (1, 3, 1024, 1024) GAN output: the (1024, 1024, 3) map in [0, 255]."""
    return gan.finish(gan.paste(face))[0].permute(1, 2, 0).numpy() * 255.0


def test_the_gan_output_lands_in_its_window_and_the_template_survives_outside(layout):
    regions, template = layout
    # Blend weights of 1 everywhere and no hair: the final map is the pasted canvas resized, nothing else.
    regions = {**regions, "minor_valid_whole": np.ones((1024, 1024), np.float32),
               "major_valid_whole": np.ones((1024, 1024), np.float32), "hair": np.zeros((1024, 1024), np.float32)}
    gan = decoder(template, regions)
    final = final_map(gan, torch.ones(1, 3, 1024, 1024))  # a white face
    white = (final > 254.5).all(axis=2)
    window = np.zeros_like(white)
    window[ROWS[0]:ROWS[1], COLS[0]:COLS[1]] = True
    assert np.array_equal(white, window)
    outside = np.ones((1024, 1024), bool)
    outside[ROWS[0]:ROWS[1] + 1, COLS[0]:COLS[1] + 1] = False
    # The template, up to its 1024 -> 1664 -> 1024 resampling.
    difference = np.abs(final - template)[outside]
    assert difference.mean() < 0.5 and np.percentile(difference, 99.9) < 4.0


def test_the_blends_keep_the_template_hair_and_the_gan_face(layout):
    regions, template = layout
    gan = decoder(template, regions)
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.uniform(0.2, 0.8, (1, 3, 16, 16)).astype(np.float32))
    face = torch.nn.functional.interpolate(coarse, size=(1024, 1024), mode="bilinear", align_corners=False)
    final = final_map(gan, face)
    hair = gan.assets.map_hair >= FULL_COVERAGE
    assert hair.sum() > 10_000
    np.testing.assert_allclose(final[hair], template[hair], atol=1e-3)  # the raw template's hair, not matched
    # Deep inside both blend weights and the window, away from the hair: the GAN's face, resized to 630 px.
    canvas_full = box_blur(gan.assets.canvas_weight, 31) >= FULL_COVERAGE
    map_full = box_blur(gan.assets.map_weight, 63) >= FULL_COVERAGE
    core = np.zeros((1024, 1024), bool)
    core[ROWS[0] + 20:ROWS[1] - 20, COLS[0] + 20:COLS[1] - 20] = True
    core &= map_full & (box_blur(gan.assets.map_hair, 31) == 0)
    core &= torch.nn.functional.interpolate(torch.from_numpy(canvas_full[None, None].astype(np.float32)),
                                            size=(1024, 1024), mode="area")[0, 0].numpy() >= FULL_COVERAGE
    assert core.sum() > 50_000
    window = torch.nn.functional.interpolate(face, size=(630, 630), mode="bilinear", align_corners=False)
    expected = np.zeros_like(final)
    expected[ROWS[0]:ROWS[0] + 630, COLS[0]:COLS[0] + 630] = window[0].permute(1, 2, 0).numpy() * 255.0
    error = np.abs(final[core] - expected[core])  # up to the resizes' sub-texel offsets (1664 vs 1024/630 steps)
    assert error.mean() < 0.5 and error.max() < 3.0
    # Far from the face and the hair: the template colour-matched to the map, its pattern intact.
    far = (box_blur(regions["unwrap_mask"], 3) < 0.5) | ((box_blur(gan.assets.map_weight, 63) == 0) & ~hair)
    far &= box_blur(gan.assets.map_hair, 31) == 0
    luma = np.array([0.299, 0.587, 0.114])
    assert np.corrcoef(final[far] @ luma, template[far] @ luma)[0, 1] > 0.99


def test_the_paste_passes_gradients_to_the_gan_output(layout):
    regions, template = layout
    gan = decoder(template, regions)
    face = torch.full((1, 3, 64, 64), 0.5, requires_grad=True)  # a tiny GAN's output, resized to the window
    uv = gan.paste(face)
    assert uv.shape == (1, 3, 1024, 1024)
    uv.sum().backward()
    reached = face.grad.abs().sum(dim=1)[0] > 0
    assert reached.float().mean() > 0.8  # all but the texels under the template's hair (top of the window)
    assert reached[32:].all()


def test_the_per_step_template_match_is_match_color_yuv(layout):
    from stages.fitting.cropface_texture import TemplateMatcher
    from stages.texture.color import match_color_yuv

    regions, template = layout
    rng = np.random.default_rng(1)
    target = rng.uniform(0, 255, (1024, 1024, 3)).astype(np.float32)
    target[:, :, 1] *= 0.5
    expected = match_color_yuv(template, target, regions["minor_valid_whole"])
    matched = TemplateMatcher(template, regions["minor_valid_whole"])(torch.from_numpy(target / 255.0).permute(2, 0, 1))
    np.testing.assert_allclose(matched[0].permute(1, 2, 0).numpy() * 255.0, expected, atol=0.02)
    unmatched = TemplateMatcher(template, np.zeros((1024, 1024), np.float32))(torch.zeros(3, 1024, 1024))
    np.testing.assert_allclose(unmatched[0].permute(1, 2, 0).numpy() * 255.0, template, atol=0.02)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_paste_is_the_same_on_the_gpu(layout):
    regions, template = layout
    gan = decoder(template, regions)
    face = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    cpu = gan.paste(face)
    gpu = gan.to("cuda").paste(face.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=0)
