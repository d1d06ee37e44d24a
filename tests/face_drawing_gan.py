"""Make a tiny random StyleGAN2 draw a fixed reference face, for end-to-end tests.

Why: the geometry stages (unwrap, complete) and FFHQ-UV's own checks (the inversion's
face test, landmarks on every view) need a face in the generated images, and a tiny
random-weight generator draws none, so every sample would fail with ``no_face``. No
trained weights can be downloaded, so the face is put into the tiny checkpoint itself,
through parameters the official formats already carry; the loaders and the synthesis
code run unchanged.

What is set (everything else keeps its random value):
- last block (full resolution), ``conv1``: weight 0, so the demodulated conv contributes
  nothing; bias 0; noise strength 1 and the constant noise buffer = the reference face's
  gray level in [0, 1] (non-negative, so the leaky ReLU passes it as ``sqrt(2) * gray``);
- every lower block's ``torgb``: weight 0 and bias 0, so the RGB skip carries nothing, except
  the first (4x4) block's: its random weight is kept, scaled so that its RGB stays within
  ``view_tint`` over random latents of standard deviation 2 (wider than the pipeline's),
  bias 0. Up-sampled through every skip, it adds a smooth colour cast that depends on W+
  rows 0-1, which StyleFlow's yaw edit changes: the edit stage's three views are the same
  face under different casts;
- last block's ``torgb``: its style affine keeps its random weight scaled by
  ``style_influence`` (bias 1), so the image still depends slightly on w; its 1x1 weights
  and bias map gray to colour with the per-channel least-squares line
  ``rgb_c ~ a_c * gray + b_c`` of the reference image, giving a skin-toned face in [-1, 1].
The drawn face therefore comes from the checkpoint's noise buffers: run the edit stage
with ``stages.edit.noise_seed=null`` so that FFHQ-UV's RandomState(0) noise does not
replace them (the e4e decoder always uses its stored noise).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stages.networks.stylegan2 import Generator


def reference_face(path: str | Path, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gray (R, R) float32 in [0, 1] of an RGB face image resized to ``resolution``, and the per-channel
    line (slope (3,), intercept (3,)) mapping gray to the image's colour in [-1, 1]."""
    rgb = np.asarray(Image.open(path).convert("RGB").resize((resolution, resolution), Image.LANCZOS),
                     dtype=np.float64) / 255.0
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    design = np.stack([gray.reshape(-1), np.ones(gray.size)], axis=1)
    target = rgb.reshape(-1, 3) * 2.0 - 1.0  # the generator's [-1, 1] range
    (slope, intercept), *_ = np.linalg.lstsq(design, target, rcond=None)
    return gray.astype(np.float32), slope.astype(np.float32), intercept.astype(np.float32)


def draw_fixed_face_(generator: Generator, face_path: str | Path, style_influence: float = 0.02,
                     view_tint: float = 0.15, seed: int = 0) -> Generator:
    """Set ``generator``'s parameters (in place, see the module docstring) so that it draws the face in
    ``face_path`` for any W+; ``style_influence`` scales the last RGB layer's w-dependence and ``view_tint``
    bounds the 4x4 colour cast, in [-1, 1] image units (0 = none)."""
    blocks = generator.synthesis.blocks()
    first, last = blocks[0], blocks[-1]
    gray, slope, intercept = reference_face(face_path, last.resolution)
    with torch.no_grad():
        for block in blocks[1:-1]:
            block.torgb.weight.zero_()
            block.torgb.bias.zero_()
        first.torgb.bias.zero_()
        # Pipeline latents stay within a few units (yaw edits move rows 0-3 by up to ~5); calibrate on wider ones.
        ws = torch.randn(64, first.num_ws, generator.config.w_dim, generator=torch.Generator().manual_seed(seed)) * 2
        _, cast = first(None, None, ws)
        first.torgb.weight.mul_(view_tint / max(cast.abs().max().item(), 1e-12))
        last.conv1.weight.zero_()
        last.conv1.bias.zero_()
        last.conv1.noise_strength.fill_(1.0)
        last.conv1.noise_const.copy_(torch.from_numpy(gray))
        torgb = last.torgb
        torgb.affine.weight.mul_(style_influence)
        torgb.affine.bias.fill_(1.0)
        # Features are sqrt(2) * gray in every channel and styles ~ weight_gain: spread the slope over the
        # channels so that sum_i weight[c, i] * weight_gain * sqrt(2) * gray = slope[c] * gray.
        channels = torgb.weight.shape[1]
        per_channel = torch.from_numpy(slope) / (channels * torgb.weight_gain * np.sqrt(2.0))
        torgb.weight.copy_(per_channel[:, None, None, None].expand_as(torgb.weight))
        torgb.bias.copy_(torch.from_numpy(intercept))
    return generator
