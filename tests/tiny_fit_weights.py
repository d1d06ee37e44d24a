"""Tiny random-weight checkpoints of the faithful fit, each written in its official format, in a ``weights_dir``
laid out like FFHQ-UV's ``checkpoints/`` (pipeline.md sections 3 and 7):

- ``texgan_model/texgan_ffhq_uv.pth``: a stylegan2-ada ``Generator`` state dict (tiny channels, 64 px), and
  ``texgan_model/texgan_cropface630resize1024_ffhq_uv_interpolate.pth`` (the same format, another seed);
- ``deep3d_model/epoch_latest.pth``: ``{"net_recon": ...}`` of a one-unit-per-stage ResNet regressor whose head
  biases give a frontal, centred face (its weights are small random values);
- ``arcface_model/ms1mv3_arcface_r50_fp16_backbone.pth``: an insightface IResNet state dict (tiny);
- ``vgg_model/vgg16.pt``: a TorchScript program of VGG16 blocks + LPIPS heads at small widths (read as tensors);
- ``topo_assets/hifi3dpp_model_info.mat``: the real HiFi3D++ head (``shared/data/hifi3dpp/head_teaser1.obj``:
  mesh, UVs, Deep3D's ``point_buf``) with a small synthetic id / exp / tex basis, FFHQ-UV's keys and 1-based
  indices;
- ``topo_assets/similarity_Lm3D_all.mat``: ``lm`` (68, 3), the model's keypoints on its mean shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from stages.networks.lpips_vgg import BLOCKS, LPIPS_SCALE, LPIPS_SHIFT

TINY_WIDTHS = (4, 6, 8, 10, 10)  # LPIPS VGG16 widths per block (the real file: 64, 128, 256, 512, 512)
TINY_RESNET = ((1, 1, 1, 1), 4)  # units per stage, stem width (Deep3D ResNet-50 / ArcFace IR-50 at tiny size)
TINY_DIMS = (4, 3, 5)  # id, exp, tex basis sizes of the synthetic 3DMM (HiFi3D++: 532, 45, 439)
TEXGAN_RESOLUTION = 64
SKIN_RGB = (200.0, 150.0, 130.0)  # the synthetic 3DMM's mean albedo, 0-255


class TinyLpipsProgram(nn.Module):
    """VGG16 blocks + per-channel LPIPS weights; ``forward`` is the tests' reference distance."""

    def __init__(self):
        super().__init__()
        convs, channels = [], 3
        for width, count in zip(TINY_WIDTHS, BLOCKS):
            for _ in range(count):
                convs.append(nn.Conv2d(channels, width, 3, padding=1))
                channels = width
        self.features = nn.ModuleList(convs)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).reshape(1, 3, 1, 1))
        for index, width in enumerate(TINY_WIDTHS):
            self.register_buffer(f"lin{index}", torch.rand(1, width, 1, 1))

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x / 127.5 - 1 - self.shift) / self.scale
        out = []
        for index, conv in enumerate(self.features):
            if index in (2, 4, 7, 10):
                x = nn.functional.max_pool2d(x, 2)
            x = torch.relu(conv(x))
            if index in (1, 3, 6, 9, 12):
                out.append(x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        heads = [self.lin0, self.lin1, self.lin2, self.lin3, self.lin4]
        total = torch.zeros(a.shape[0])
        for fa, fb, w in zip(self.taps(a), self.taps(b), heads):
            total = total + ((fa - fb).square() * w).sum(1).mean((1, 2))
        return total


def write_tiny_vgg16(path: str | Path, seed: int = 0) -> TinyLpipsProgram:
    """A ``vgg16.pt``-format file (a TorchScript zip) with random weights; returns the module it holds."""
    torch.manual_seed(seed)
    program = TinyLpipsProgram().eval()
    torch.jit.save(torch.jit.script(program), str(path))
    return program


def tiny_model_info(head_obj: str | Path, seed: int = 0) -> dict[str, np.ndarray]:
    """FFHQ-UV's ``hifi3dpp_model_info.mat`` keys on the real HiFi3D++ mesh with a small random basis."""
    from stages.geometry.hifi3dpp import load_landmark_embedding
    from stages.geometry.landmark_schemes import MEDIAPIPE_TO_IBUG68
    from stages.geometry.obj import read_obj

    mesh = read_obj(head_obj)
    rng = np.random.default_rng(seed)
    n = len(mesh.vertices)
    first_corner = np.zeros(n, dtype=np.int64)
    first_corner[mesh.faces.reshape(-1)] = mesh.face_uvs.reshape(-1)
    uv = mesh.uvs[first_corner]
    embedding = load_landmark_embedding(len(mesh.faces))
    picks = [int(mesh.faces[embedding.triangles[m], np.argmax(embedding.barycentrics[m])])
             for m in MEDIAPIPE_TO_IBUG68]
    keypoints = np.asarray(picks)
    centred = mesh.vertices - mesh.vertices.mean(axis=0)
    corners = centred[mesh.faces]
    normal_z = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])[:, 2]
    lo, hi = centred[keypoints].min(axis=0) - 0.1, centred[keypoints].max(axis=0) + 0.1
    inside = np.all((corners[:, :, :2] > lo[:2]) & (corners[:, :, :2] < hi[:2]), axis=(1, 2))
    face = mesh.faces[inside & (normal_z > 0)]  # the front of the face: FFHQ-UV's ``tri`` counterpart
    id_dims, exp_dims, tex_dims = TINY_DIMS
    return {
        "meanshape": mesh.vertices.reshape(1, -1), "meantex": np.tile(SKIN_RGB, n).reshape(1, -1),
        "idBase": 0.02 * rng.normal(size=(3 * n, id_dims)), "exBase": 0.02 * rng.normal(size=(3 * n, exp_dims)),
        "texBase": 5.0 * rng.normal(size=(3 * n, tex_dims)),
        "tri": face + 1, "head_tri": mesh.faces + 1, "tri_vt": mesh.face_uvs[inside & (normal_z > 0)] + 1,
        "head_tri_vt": mesh.face_uvs + 1, "vt_list": mesh.uvs,
        "vtx_vt": np.stack([(1 - uv[:, 1]) * 512, uv[:, 0] * 512], 1),  # (row, col) in 0..512
        "keypoints": (keypoints + 1).reshape(1, -1), "point_buf": _point_buf(mesh.faces, n),
    }


def _point_buf(faces: np.ndarray, count: int, width: int = 8) -> np.ndarray:
    """Deep3D's ``point_buf``: per vertex the 1-based ids of up to ``width`` triangles around it, 0-padded."""
    flat = faces.reshape(-1)
    order = np.argsort(flat, kind="stable")
    vertices, triangles = flat[order], order // 3
    starts = np.cumsum(np.bincount(flat, minlength=count)) - np.bincount(flat, minlength=count)
    rank = np.arange(len(flat)) - starts[vertices]
    table = np.zeros((count, width), dtype=np.int64)
    keep = rank < width
    table[vertices[keep], rank[keep]] = triangles[keep] + 1
    return table


def _tiny_deep3d(dims: tuple[int, int, int], seed: int) -> dict:
    """Deep3D's ``epoch_latest.pth`` dict: small random weights; head biases zero bar a neutral pose."""
    from stages.networks.deep3d import Deep3DRegressor
    from tests.tiny_gan_weights import randomize_

    net = randomize_(Deep3DRegressor(dims, *TINY_RESNET), seed=seed, scale=0.01)
    with torch.no_grad():
        for index, head in enumerate(net.final_layers):
            conv = head[0] if isinstance(head, nn.Sequential) else head
            conv.weight.mul_(1e-3 / max(float(conv.weight.abs().max()), 1e-12))
            conv.bias.zero_()
            if index == 1:  # expression (ReLU'd): slightly open, so the fit has something to move
                conv.bias.fill_(0.1)
    return {"net_recon": net.state_dict(), "epoch": 20}


def write_faithful_weights_dir(root: str | Path, head_obj: str | Path, seed: int = 0) -> Path:
    """Write every faithful checkpoint (module docstring) under ``root``; returns ``root``."""
    from scipy.io import savemat

    from stages.networks.arcface import IResNet
    from tests.tiny_gan_weights import tiny_generator

    root = Path(root)
    for folder in ("texgan_model", "deep3d_model", "arcface_model", "vgg_model", "topo_assets"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    torch.save(tiny_generator(seed, resolution=TEXGAN_RESOLUTION).state_dict(),
               root / "texgan_model" / "texgan_ffhq_uv.pth")
    torch.save(tiny_generator(seed + 1, resolution=TEXGAN_RESOLUTION).state_dict(),
               root / "texgan_model" / "texgan_cropface630resize1024_ffhq_uv_interpolate.pth")
    torch.save(_tiny_deep3d(TINY_DIMS, seed), root / "deep3d_model" / "epoch_latest.pth")
    torch.manual_seed(seed)
    torch.save(IResNet(*TINY_RESNET).eval().state_dict(),
               root / "arcface_model" / "ms1mv3_arcface_r50_fp16_backbone.pth")
    write_tiny_vgg16(root / "vgg_model" / "vgg16.pt", seed)
    info = tiny_model_info(head_obj, seed)
    savemat(str(root / "topo_assets" / "hifi3dpp_model_info.mat"), info)
    mean = info["meanshape"].reshape(-1, 3)
    lm = (mean - mean.mean(axis=0))[info["keypoints"].reshape(-1) - 1]
    savemat(str(root / "topo_assets" / "similarity_Lm3D_all.mat"), {"lm": lm})
    return root
