"""FFHQ-UV's texture GAN (RGB fitting, pipeline.md section 7): a stylegan2-ada generator of 1024 UV maps.

Checkpoint: ``texgan_model/texgan_ffhq_uv.pth``, a plain state dict of stylegan2-ada-pytorch's ``Generator``
(networks.md 1.3 key names) built with ``conv_clamp=256`` and ``num_fp16_res=4`` (construction settings the state
dict does not record). The fitting searches a Gaussianised W+: ``w = z * w_std + w_avg`` with per-channel
statistics of 100,000 mapped z drawn by ``RandomState(123)``, cached beside the checkpoint as ``<name>.pt``
(``{w_avg, w_std}`` [1,1,512], FFHQ-UV's file); the initial z is ``RandomState(123).randn(1, 18, 512)``. Output
``(x + 1) / 2`` in [0, 1] with the constant noise buffers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from stages.networks.checkpoint import read_state_dict
from stages.networks.stylegan2 import Generator, generator_from_state_dict

TEXGAN_FILE = "texgan_model/texgan_ffhq_uv.pth"
# FFHQ-UV's second GAN, same format, trained on 630 px face crops resized to 1024 (its paste and blends:
# stages/fitting/cropface_texture.py).
CROPFACE_TEXGAN_FILE = "texgan_model/texgan_cropface630resize1024_ffhq_uv_interpolate.pth"
CONV_CLAMP = 256.0
NUM_FP16_RES = 4
LATENT_SEED = 123
STATS_SAMPLES = 100_000
STATS_BATCH = 10_000  # mapped z per forward pass while computing the statistics


class TextureGAN:
    """The generator plus its W statistics; ``synthesize(w)`` gives (B, 3, R, R) UV maps in [0, 1]."""

    def __init__(self, generator: Generator, w_avg: torch.Tensor, w_std: torch.Tensor):
        self.generator = generator
        self.w_avg = w_avg.reshape(1, 1, -1).float()
        self.w_std = w_std.reshape(1, 1, -1).float()

    def to(self, device: str | torch.device) -> TextureGAN:
        """Move the generator and the statistics to ``device``; returns self."""
        self.generator.to(device)
        self.w_avg, self.w_std = self.w_avg.to(device), self.w_std.to(device)
        return self

    @property
    def num_ws(self) -> int:
        return self.generator.num_ws

    def initial_z(self) -> torch.Tensor:
        """FFHQ-UV's starting latent: (1, num_ws, z_dim) from ``RandomState(123)``."""
        z = np.random.RandomState(LATENT_SEED).randn(1, self.num_ws, self.generator.config.z_dim)
        return torch.tensor(z, dtype=torch.float32, device=self.w_avg.device)

    def z_to_w(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.w_std + self.w_avg

    def w_to_z(self, w: torch.Tensor) -> torch.Tensor:
        return (w - self.w_avg) / self.w_std

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        """(B, 1 or num_ws, w_dim) W+ -> (B, 3, R, R) UV maps in [0, 1]."""
        if w.shape[1] == 1:
            w = w.expand(-1, self.num_ws, -1)
        return (self.generator.synthesis(w) + 1) * 0.5

    def output_map(self, w: torch.Tensor) -> torch.Tensor:
        """The UV map a stage writes and renders for its outputs, (B, 3, R, R) in [0, 1]: here ``synthesize``'s
        (the cropface GAN adds its second blend)."""
        with torch.no_grad():
            return self.synthesize(w)


def latent_stats(generator: Generator, samples: int = STATS_SAMPLES, seed: int = LATENT_SEED
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std, (1, 1, w_dim) each, of ``samples`` mapped z drawn by ``RandomState(seed)``."""
    z = np.random.RandomState(seed).randn(samples, generator.config.z_dim)
    with torch.no_grad():
        w = torch.cat([generator.mapping(torch.from_numpy(z[i:i + STATS_BATCH]).float())
                       for i in range(0, samples, STATS_BATCH)]).double()
    return w.mean(dim=0).float().reshape(1, 1, -1), w.std(dim=0, unbiased=False).float().reshape(1, 1, -1)


def stats_path(checkpoint: Path) -> Path:
    """FFHQ-UV's cache of the statistics: the checkpoint's name with ``.pt`` instead of ``.pth``."""
    return checkpoint.with_suffix(".pt")


def load_texture_gan(path: str | Path, samples: int = STATS_SAMPLES, cache: Optional[bool] = True) -> TextureGAN:
    """The texture GAN from its state dict, with W statistics from the cache file or computed (and cached)."""
    path = Path(path)
    generator = generator_from_state_dict(read_state_dict(path, "texture GAN"), conv_clamp=CONV_CLAMP,
                                          num_fp16_res=NUM_FP16_RES)
    cached = stats_path(path)
    if cached.is_file():
        stats = read_state_dict(cached, "texture GAN W statistics")
        return TextureGAN(generator, stats["w_avg"], stats["w_std"])
    w_avg, w_std = latent_stats(generator, samples)
    if cache:
        try:
            torch.save({"w_avg": w_avg, "w_std": w_std}, cached)
        except OSError as error:  # a read-only weights folder: recompute next time
            logging.getLogger(__name__).warning("could not cache the W statistics at %s: %s", cached, error)
    return TextureGAN(generator, w_avg, w_std)
