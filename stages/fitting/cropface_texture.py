"""FFHQ-UV's "cropface630" texture GAN: a face-only decoder put back into the template UV (pipeline.md section 7).

The GAN (``texgan_model/texgan_cropface630resize1024_ffhq_uv_interpolate.pth``, the same stylegan2-ada state dict
format as ``texgan_ffhq_uv.pth``) was trained on the 630 x 630 face window of FFHQ-UV-Interpolate maps resized to
1024, so its 1024 output is that window magnified by 1024/630. Two blends turn it into a full UV map:

1. ``CropfaceTextureGAN.synthesize`` (every optimisation step; differentiable in torch): the template, resized to
   ``CANVAS_SIZE`` (1664, the map at the GAN's magnification), receives the output at rows 187:1211, cols 317:1341
   (1024-UV rows ~115-745, cols ~195-825). The template, colour-matched in YUV to that canvas over
   ``minor_valid_whole``, fades in outside ``box49(minor_valid_whole)``; the raw template's hair
   (``box23(box23(hair) >= 1)``) is laid back over; the canvas is resized (bilinear) to the topology's UV size.
2. ``CropfaceTextureGAN.finish`` (what is written and rendered for the outputs; numpy, no gradient): at the UV size,
   the template colour-matched to the map over ``major_valid_whole``, a 5-level Laplacian-pyramid blend of the map
   over it under ``box31(major_valid_whole)``, then the raw template's hair (``box15(box15(hair) >= 1)``).

Gradients (choice): as in FFHQ-UV, whose blend round-trips the canvas through numpy, the colour match's statistics
are taken from the detached canvas and the masks are constants, so the matched template is a constant for autograd;
gradients reach the GAN through ``canvas * weight`` (the paste is a differentiable slice write) and the resize, which
is all the loss needs (the colour match only recolours the template around the window). The second blend is applied,
as in FFHQ-UV, to the stage outputs only: its fitting loop renders the first blend's map. The per-step match is
``color.match_color_yuv``'s formula in torch on the map's device (``TemplateMatcher``: the template's YUV and moments
computed once), so a GPU fit does not copy a 1664 canvas to numpy every step; the outputs' match is
``match_color_yuv`` itself.

Where pipeline.md is silent we follow FFHQ-UV's RGB-fitting code and the unwrap path's ``blend_with_template``: the
template is matched to the texture (never the reverse), the 1024 topology masks and template are resized to 1664 by
bilinear interpolation (FFHQ-UV reads its mask PNGs resized the same way), and the second blend's weight is
``box31`` of ``major_valid_whole`` alone (FFHQ-UV's fitting blend; the unwrap path's major/minor recipe needs a
reliable-texel mask the GAN map does not have).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from stages.networks.texgan import TextureGAN
from stages.texture.color import RGB_FROM_YUV, SPREAD_DIVISOR, YUV_FROM_RGB, match_color_yuv
from stages.texture.masks import MAJOR_MINOR_BLUR_BOX, box_blur, hair_weight
from stages.texture.pyramid import pyramid_blend

CANVAS_SIZE = 1664  # the template's size at the GAN's magnification (1024 x 1024 / 630, as FFHQ-UV rounds it)
WINDOW_ROWS = (187, 1211)  # where the GAN's 1024 output lands in the canvas, half-open
WINDOW_COLS = (317, 1341)
WINDOW_SIZE = WINDOW_ROWS[1] - WINDOW_ROWS[0]  # 1024: the GAN's own resolution
FACE_BLEND_BOX = 49  # first blend: box blur of minor_valid_whole at 1664
FACE_HAIR_BOX = 23  # first blend: hair erosion and feather boxes at 1664
MAP_BLEND_BOX = MAJOR_MINOR_BLUR_BOX  # second blend: box31 of major_valid_whole at 1024
MAP_HAIR_BOX = 15  # second blend: FFHQ-UV's fitting uses box15 for both the hair erosion and the feather


@dataclass
class CropfaceAssets:
    """The two blends' constants; images (H, W, 3) float32 RGB in [0, 255], masks and weights (H, W) in [0, 1].

    ``canvas_*`` are at ``CANVAS_SIZE`` (the first blend), ``map_*`` at the topology's UV size (the second)."""

    canvas_template: np.ndarray
    canvas_match_mask: np.ndarray  # minor_valid_whole: where the template's colours are matched to the canvas
    canvas_weight: np.ndarray  # box49(minor_valid_whole): weight of the canvas over the matched template
    canvas_hair: np.ndarray  # weight of the raw template's hair
    map_template: np.ndarray
    map_match_mask: np.ndarray  # major_valid_whole
    map_weight: np.ndarray  # box31(major_valid_whole)
    map_hair: np.ndarray

    @property
    def uv_size(self) -> int:
        return self.map_template.shape[0]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return image if image.shape[0] == size else cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def cropface_assets(template: np.ndarray, regions: Mapping[str, np.ndarray]) -> CropfaceAssets:
    """The blends' constants from the topology's template (``texture.template.template_for``, (S, S, 3) in
    [0, 255]) and region masks (``minor_valid_whole``, ``major_valid_whole``, ``hair``, (S, S) in [0, 1])."""
    size = regions["major_valid_whole"].shape[0]
    minor = _resize(regions["minor_valid_whole"], CANVAS_SIZE)
    major = np.asarray(regions["major_valid_whole"], dtype=np.float32)
    return CropfaceAssets(
        canvas_template=_resize(template, CANVAS_SIZE), canvas_match_mask=minor,
        canvas_weight=box_blur(minor, FACE_BLEND_BOX),
        canvas_hair=hair_weight(_resize(regions["hair"], CANVAS_SIZE), FACE_HAIR_BOX, FACE_HAIR_BOX),
        map_template=_resize(template, size), map_match_mask=major, map_weight=box_blur(major, MAP_BLEND_BOX),
        map_hair=hair_weight(regions["hair"], MAP_HAIR_BOX, MAP_HAIR_BOX))


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) or (H, W) numpy -> (1, C, H, W) float32 tensor."""
    array = np.asarray(image, dtype=np.float32)
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def _to_numpy255(uv: torch.Tensor) -> np.ndarray:
    """(3, H, W) tensor in [0, 1] -> (H, W, 3) float32 numpy in [0, 255]."""
    return uv.detach().permute(1, 2, 0).float().cpu().numpy() * 255.0


def finish_map(uv: np.ndarray, assets: CropfaceAssets) -> np.ndarray:
    """The second blend (module docstring) of one (S, S, 3) map in [0, 255]: (S, S, 3) float32 in [0, 255]."""
    matched = match_color_yuv(assets.map_template, uv, assets.map_match_mask)
    blended = np.clip(pyramid_blend(matched, uv, assets.map_weight), 0.0, 255.0)
    hair = assets.map_hair[:, :, None]
    return np.clip(assets.map_template * hair + blended * (1.0 - hair), 0.0, 255.0).astype(np.float32)


class TemplateMatcher:
    """``color.match_color_yuv(template, target, mask)`` for a fixed template and mask, in torch: the template's YUV
    and its moments over the mask are computed once; ``__call__`` takes only the target's moments (no gradient)."""

    def __init__(self, template: np.ndarray, mask: np.ndarray):
        self.yuv_from_rgb = torch.tensor(YUV_FROM_RGB, dtype=torch.float32)
        self.rgb_from_yuv = torch.tensor(RGB_FROM_YUV, dtype=torch.float32)
        self.valid = torch.from_numpy(np.asarray(mask) > 0.5)  # (H, W) bool
        self.source = _image_tensor(template)[0].reshape(3, -1).T @ self.yuv_from_rgb.T  # (H*W, 3) YUV, 0-255
        source_valid = self.source[self.valid.reshape(-1)].double()
        self.mu, self.sigma = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
        if len(source_valid):  # else unused: nothing is matched
            self.mu, self.sigma = source_valid.mean(dim=0), source_valid.std(dim=0, unbiased=False)

    def to(self, device: str | torch.device) -> TemplateMatcher:
        for name in ("yuv_from_rgb", "rgb_from_yuv", "valid", "source", "mu", "sigma"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def __call__(self, target: torch.Tensor) -> torch.Tensor:
        """(3, H, W) target in [0, 1] -> (1, 3, H, W) matched template in [0, 1] (``match_color_yuv``'s formula)."""
        with torch.no_grad():
            matched = self.source  # no valid texel: the template unchanged, as match_color_yuv
            values = target.detach().reshape(3, -1).T[self.valid.reshape(-1)].double() * 255.0
            if len(values):
                yuv = values @ self.yuv_from_rgb.double().T
                mu_t, sigma_t = yuv.mean(dim=0), yuv.std(dim=0, unbiased=False)
                varies = self.sigma > 0  # a flat template channel has nothing to rescale: only its mean moves
                gain = torch.where(varies, sigma_t / torch.where(varies, self.sigma, 1.0) / SPREAD_DIVISOR, 0.0)
                matched = (self.source - self.mu.float()) * gain.float() + mu_t.float()
            rgb = (matched @ self.rgb_from_yuv.T).clamp(0.0, 255.0) / 255.0
        return rgb.T.reshape(1, 3, *self.valid.shape)


class CropfaceTextureGAN(TextureGAN):
    """The cropface630 GAN with its paste and blends; the latent interface is ``TextureGAN``'s.

    ``synthesize(w)`` -> (B, 3, S, S) in [0, 1], the first blend (differentiable); ``output_map(w)`` adds the second.
    """

    def __init__(self, gan: TextureGAN, assets: CropfaceAssets):
        super().__init__(gan.generator, gan.w_avg, gan.w_std)
        self.assets = assets
        self.template = _image_tensor(assets.canvas_template / 255.0)  # (1, 3, 1664, 1664)
        self.weight = _image_tensor(assets.canvas_weight)  # (1, 1, 1664, 1664)
        self.hair = _image_tensor(assets.canvas_hair)
        self.matcher = TemplateMatcher(assets.canvas_template, assets.canvas_match_mask)
        self.to(self.w_avg.device)

    def to(self, device: str | torch.device) -> CropfaceTextureGAN:
        super().to(device)
        self.template, self.weight, self.hair = (t.to(device) for t in (self.template, self.weight, self.hair))
        self.matcher.to(device)
        return self

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        """(B, 1 or num_ws, w_dim) W+ -> (B, 3, S, S) full UV maps in [0, 1] (paste + first blend + resize)."""
        return self.paste(super().synthesize(w))

    def paste(self, face: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) GAN output in [0, 1] -> (B, 3, S, S): pasted into the 1664 template, blended, resized.

        An output of another resolution than the window's (a tiny test checkpoint) is resized to it first."""
        if face.shape[-1] != WINDOW_SIZE:
            face = F.interpolate(face, size=(WINDOW_SIZE, WINDOW_SIZE), mode="bilinear", align_corners=False)
        canvas = self.template.expand(face.shape[0], -1, -1, -1).clone()
        canvas[:, :, WINDOW_ROWS[0]:WINDOW_ROWS[1], WINDOW_COLS[0]:WINDOW_COLS[1]] = face
        matched = torch.cat([self.matcher(c) for c in canvas.detach()])
        blended = canvas * self.weight + matched * (1.0 - self.weight)
        out = self.template * self.hair + blended * (1.0 - self.hair)
        size = self.assets.uv_size
        return F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)

    def finish(self, uv: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) first-blend maps in [0, 1] -> the same after the second blend (no gradient)."""
        maps = [finish_map(_to_numpy255(m), self.assets) / 255.0 for m in uv]
        return torch.cat([_image_tensor(m) for m in maps]).to(uv.device)

    def output_map(self, w: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1]: the map FFHQ-UV writes and renders for a stage's outputs (both blends)."""
        with torch.no_grad():
            return self.finish(self.synthesize(w))
