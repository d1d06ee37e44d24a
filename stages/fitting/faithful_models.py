"""The faithful profile's networks and assets, loaded once per actor from ``models.weights_dir``.

Files, under FFHQ-UV's ``checkpoints/`` names (pipeline.md sections 3 and 7; README section 'RGB fitting'):
- ``texgan_model/texgan_ffhq_uv.pth``: the texture GAN (stylegan2-ada state dict, ``stages/networks/texgan.py``);
  its W statistics are cached beside it as ``texgan_ffhq_uv.pt``; or, with ``stages.fit.texture_gan=cropface630``,
  ``texgan_model/texgan_cropface630resize1024_ffhq_uv_interpolate.pth`` (same format and cache), pasted into the
  template and blended (``stages/fitting/cropface_texture.py``);
- ``deep3d_model/epoch_latest.pth``: the Deep3D regressor of stage 1 (``stages/networks/deep3d.py``);
- ``arcface_model/ms1mv3_arcface_r50_fp16_backbone.pth``: the identity loss (``stages/networks/arcface.py``);
- ``vgg_model/vgg16.pt``: LPIPS-VGG, read as tensors only (``stages/networks/lpips_vgg.py``);
- ``topo_assets/hifi3dpp_model_info.mat``: the HiFi3D++ 3DMM (``stages/fitting/face_model.py``);
- ``topo_assets/similarity_Lm3D_all.mat``: ``lm`` (68, 3), whose 5 points are the POS alignment template.
The architectures (ResNet depths and widths, GAN channels) are read from the checkpoints themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stages.errors import ConfigError
from stages.fitting.face_model import HiFi3DModel
from stages.geometry.hifi3dpp import MODEL_INFO as MODEL_INFO_FILE
from stages.networks import local_weight_file, under_weights_dir, weight_exists
from stages.networks.arcface import ARCFACE_FILE
from stages.networks.deep3d import DEEP3D_FILE
from stages.networks.lpips_vgg import VGG_FILE
from stages.networks.texgan import CROPFACE_TEXGAN_FILE, TEXGAN_FILE

LM3D_FILE = "topo_assets/similarity_Lm3D_all.mat"
# The texture GAN's checkpoint per ``stages.fit.texture_gan``.
TEXGAN_FILES = {"ffhq_uv": TEXGAN_FILE, "cropface630": CROPFACE_TEXGAN_FILE}
OTHER_FILES = (DEEP3D_FILE, ARCFACE_FILE, VGG_FILE, MODEL_INFO_FILE, LM3D_FILE)


@dataclass
class FaithfulModels:
    """Everything the faithful fit reads: the 3DMM, the 5-point template (5, 3), and the four networks (eval,
    no gradients on their weights), all on ``device``."""

    face_model: HiFi3DModel
    template5: np.ndarray
    deep3d: torch.nn.Module
    texgan: object  # stages.networks.texgan.TextureGAN (or the cropface630 one, stages/fitting/cropface_texture.py)
    arcface: torch.nn.Module
    lpips: torch.nn.Module
    device: str = "cpu"


def faithful_files(texture_gan: str = "ffhq_uv") -> tuple[str, ...]:
    """The files the faithful profile reads with the texture GAN ``texture_gan`` (a ``TEXGAN_FILES`` key)."""
    return (TEXGAN_FILES[texture_gan], *OTHER_FILES)


def check_files(weights_dir: str | None, texture_gan: str = "ffhq_uv") -> None:
    """Every faithful file present under ``weights_dir`` (a folder or an fsspec URL), or a one-line ConfigError
    naming the first one missing."""
    for name in faithful_files(texture_gan):
        if weights_dir is None or not weight_exists(under_weights_dir(weights_dir, name)):
            raise ConfigError(f"missing weights file {name} under models.weights_dir (the faithful fit profile); "
                              "see README section 'RGB fitting'")


def load_template5(path: str | Path) -> np.ndarray:
    """Deep3D's 5-point 3-D template (5, 3) from ``similarity_Lm3D_all.mat`` (key ``lm``, 68 x 3)."""
    from scipy.io import loadmat

    from stages.fitting.preprocess import deep3d_five_points

    lm = np.asarray(loadmat(str(path)).get("lm", np.zeros((0, 3))), dtype=np.float64)
    if lm.shape != (68, 3):
        raise ConfigError(f"{path}: expected 'lm' of shape (68, 3), got {lm.shape}; see README section "
                          "'RGB fitting'")
    return deep3d_five_points(lm)


def load_faithful_models(weights_dir: str | Path, device: str = "cpu", cropface=None) -> FaithfulModels:
    """Load the faithful profile's networks and assets from ``weights_dir`` onto ``device`` (float32).

    ``cropface``: None = the texture GAN ``texgan_ffhq_uv.pth``; a ``cropface_texture.CropfaceAssets`` (the
    topology's template and masks) = the cropface630 GAN with its paste and blends."""
    from stages.networks.arcface import load_arcface
    from stages.networks.deep3d import load_deep3d
    from stages.networks.lpips_vgg import load_lpips_vgg
    from stages.networks.texgan import load_texture_gan

    texture_gan = "ffhq_uv" if cropface is None else "cropface630"
    check_files(str(weights_dir), texture_gan)

    def local(name: str) -> Path:
        """A local copy of ``name`` (remote weights are copied once per node)."""
        return Path(local_weight_file(under_weights_dir(weights_dir, name)))

    face_model = HiFi3DModel.from_mat(local(MODEL_INFO_FILE))
    texgan = load_texture_gan(local(TEXGAN_FILES[texture_gan]))
    texgan.generator.requires_grad_(False)
    if cropface is not None:
        from stages.fitting.cropface_texture import CropfaceTextureGAN

        texgan = CropfaceTextureGAN(texgan, cropface)
    return FaithfulModels(face_model=face_model.to(device), template5=load_template5(local(LM3D_FILE)),
                          deep3d=load_deep3d(local(DEEP3D_FILE), face_model.dims).to(device),
                          texgan=texgan.to(device), arcface=load_arcface(local(ARCFACE_FILE)).to(device),
                          lpips=load_lpips_vgg(local(VGG_FILE)).to(device), device=str(device))
