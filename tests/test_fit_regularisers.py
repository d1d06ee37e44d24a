"""The faithful fit's latent regulariser and optimiser: FFHQ-UV's geocross loss and spherical Adam."""

from __future__ import annotations

import math

import pytest
import torch

from stages.fitting.losses import cosine_lr, latent_geocross
from stages.fitting.spherical import SphericalOptimizer


def test_geocross_is_zero_for_equal_rows_and_matches_the_geodesic_angle():
    w = torch.randn(1, 1, 8).expand(1, 18, 8).clone()
    assert float(latent_geocross(w)) == pytest.approx(0.0, abs=1e-3)
    assert float(latent_geocross(w[:, :1])) == 0.0
    pair = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # two orthogonal rows: angle pi/2
    expected = (2 * (math.pi / 2) ** 2 * 2) / 4 / 8  # mean over the 2x2 pairs of angle^2 * C, / 8
    assert float(latent_geocross(pair)) == pytest.approx(expected, rel=1e-4)


def test_spherical_adam_keeps_row_norms_and_descends():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, 18, 16, generator=gen).requires_grad_(True)
    target = torch.randn(1, 18, 16, generator=gen)
    radii = z.detach().norm(dim=2)
    opt = SphericalOptimizer([z], lr=0.1)
    first = None
    for step in range(30):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(0.1, step, 30, 0.25)
        loss = (z - target).square().mean()
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(z.detach().norm(dim=2), radii, rtol=1e-5, atol=1e-5)
    assert float((z - target).square().mean()) < first
