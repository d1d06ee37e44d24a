"""The fitting's loss terms (pipeline.md section 7), as pure torch functions.

Images are (H, W, 3) in [0, 1], masks (H, W) in [0, 1], landmarks (68, 2) y-down pixels, textures (3, S, S).
"""

from __future__ import annotations

import math

import torch

# Deep3D / FFHQ-UV landmark weights: 20 on the nose ridge points 28-30 and on the 8 inner-mouth points.
LANDMARK_HEAVY = (28, 29, 30, *range(60, 68))
LANDMARK_HEAVY_WEIGHT = 20.0


def photometric_l1(render: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """FFHQ-UV's masked L1: sum over pixels and RGB of mask * |render - image|, divided by max(sum(mask), 1)."""
    diff = (render - image).abs().sum(dim=2)
    return (diff * mask).sum() / mask.sum().clamp_min(1.0)


def landmark_weights(count: int = 68) -> torch.Tensor:
    """(68,) Deep3D's per-landmark weights."""
    weights = torch.ones(count)
    weights[list(LANDMARK_HEAVY)] = LANDMARK_HEAVY_WEIGHT
    return weights


def landmark_loss(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Deep3D's landmark term: weighted squared pixel error, summed and divided by the point count."""
    return (((predicted - target) ** 2).sum(dim=1) * weights).sum() / predicted.shape[0]


def landmark_error_px(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Mean Euclidean landmark distance in pixels."""
    return float((predicted - target).norm(dim=1).mean())


def total_variation(texture: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring texels of a (3, S, S) map (the smoothness prior)."""
    return ((texture[:, 1:, :] - texture[:, :-1, :]).abs().mean()
            + (texture[:, :, 1:] - texture[:, :, :-1]).abs().mean())


def symmetry(texture: torch.Tensor, mirror_columns: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean |texel - its mirror texel| over ``region`` (S, S): the left/right prior; ``mirror_columns`` (S,)."""
    mirrored = texture[:, :, mirror_columns]
    return ((texture - mirrored).abs().mean(dim=0) * region).sum() / region.sum().clamp_min(1e-8)


def sh_colour_variance(sh: torch.Tensor) -> torch.Tensor:
    """FFHQ-UV's gamma regulariser: variance of the (3, 9) SH over the RGB channels (prefers white light)."""
    return ((sh - sh.mean(dim=0, keepdim=True)) ** 2).mean()


def cosine_lr(lr0: float, step: int, steps: int, rampdown: float) -> float:
    """FFHQ-UV's schedule ``lr0 * (0.5 - 0.5 cos(pi * min(1, (1 - t) / r)))``, t = step / steps."""
    t = step / max(steps, 1)
    return lr0 * (0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / rampdown)))


def latent_geocross(latents: torch.Tensor) -> torch.Tensor:
    """FFHQ-UV's geocross regulariser of a (B, L, C) W+: mean squared geodesic distance between its L rows on the
    sphere (angle ``2 atan2(|x - y|, |x + y|)``), times C / 8, summed over the batch; 0 for a single row."""
    if latents.shape[1] == 1:
        return latents.new_zeros(())
    x, y = latents[:, None, :, :], latents[:, :, None, :]
    a = ((x - y).square().sum(-1) + 1e-9).sqrt()
    b = ((x + y).square().sum(-1) + 1e-9).sqrt()
    angle = 2 * torch.atan2(a, b)
    return ((angle.square() * latents.shape[2]).mean(dim=(1, 2)) / 8.0).sum()
