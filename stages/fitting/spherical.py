"""FFHQ-UV's spherical optimiser (stage 2 of the faithful fit): an inner optimiser whose every step is followed
by rescaling each latent row back to its initial length, so the search stays on the sphere the Gaussianised
W+ lives on (the first two dimensions are batch and row; the norm is over the rest)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def _row_norms(param: torch.Tensor) -> torch.Tensor:
    return (param.square().sum(dim=tuple(range(2, param.ndim)), keepdim=True) + 1e-9).sqrt()


class SphericalOptimizer:
    """Wraps ``optimizer(params, **kwargs)``; ``step`` keeps every (batch, row) vector at its initial radius."""

    def __init__(self, params: list[torch.Tensor], optimizer: Callable = torch.optim.Adam, **kwargs):
        self.params = list(params)
        self.inner = optimizer(self.params, **kwargs)
        with torch.no_grad():
            self.radii = [_row_norms(p) for p in self.params]

    @property
    def param_groups(self) -> list[dict]:
        return self.inner.param_groups

    def zero_grad(self) -> None:
        self.inner.zero_grad()

    @torch.no_grad()
    def step(self) -> None:
        self.inner.step()
        for param, radius in zip(self.params, self.radii):
            param.mul_(radius / _row_norms(param))
