"""FFHQ-UV's StyleGAN2 view synthesis, shared by the edit and render stages.

FFHQ-UV step 3 (``run_styleflow_editing.py``) and ``gen_face_from_latent.py`` draw
every view with the TF config-f generator, the noise buffers overwritten once with
``RandomState(0).randn`` in variable order (networks.md 1.1), ``noise_mode`` const
(the buffers, never fresh noise), no truncation, and the TF uint8 conversion
``trunc(clip(x * 127.5 + 128))``. Released latents reproduce their views only so.
"""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import numpy as np

from stages.errors import ConfigError

GENERATOR_FILE = "stylegan_model/stylegan2-ffhq-config-f.pkl"  # FFHQ-UV's checkpoint name under weights_dir


class ViewSynthesizer:
    """W+ (B, num_ws, w_dim) -> (B, R, R, 3) uint8 views, batched, on one device."""

    def __init__(self, location: str, device: str, fp16: bool = False, noise_seed: Optional[int] = 0,
                 num_ws: Optional[int] = None):
        """``location``: the generator file (TF/ADA ``.pkl``, rosinality ``.pt``), local or fsspec URL;
        ``noise_seed``: FFHQ-UV's RandomState seed of the constant noise (None keeps the checkpoint's);
        ``num_ws``: W+ rows the caller needs (ConfigError naming the file if the generator differs)."""
        import torch

        from stages.networks import local_weight_file
        from stages.networks.stylegan2 import ffhq_uv_noise, load_generator

        generator = load_generator(local_weight_file(location))
        if num_ws is not None and generator.num_ws != num_ws:
            raise ConfigError(f"{location}: needs {num_ws} W+ rows ({2 ** (num_ws // 2 + 1)} px), "
                              f"the generator has {generator.num_ws}")
        if noise_seed is not None:
            generator.set_noise(ffhq_uv_noise(generator.config.resolution, noise_seed))
        self.device = torch.device(device)
        self.fp16 = fp16 and self.device.type == "cuda"
        self.generator = generator.to(self.device)

    @property
    def num_ws(self) -> int:
        return self.generator.num_ws

    @property
    def w_dim(self) -> int:
        return self.generator.config.w_dim

    @property
    def resolution(self) -> int:
        return self.generator.config.resolution

    def render(self, w: Any) -> np.ndarray:
        """W+ tensor or array (B, num_ws, w_dim) -> (B, R, R, 3) uint8 RGB."""
        import torch

        from stages.networks.stylegan2 import to_uint8

        w = torch.as_tensor(w, dtype=torch.float32).to(self.device)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            images = self.generator.synthesis(w)
        return to_uint8(images, rounding="tf")
