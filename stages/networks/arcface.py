"""ArcFace IR-50 (insightface ``iresnet50``), FFHQ-UV's identity loss network (pipeline.md section 7).

Checkpoint ``arcface_model/ms1mv3_arcface_r50_fp16_backbone.pth``: insightface's backbone state dict: ``conv1``,
``bn1``, ``prelu``, ``layer{1..4}.{i}.{bn1,conv1,bn2,prelu,conv2,bn3}`` (+ ``downsample.{0,1}``), ``bn2``, ``fc``
(512 x 7 x 7 -> 512) and ``features`` (BatchNorm1d). Input: (B, 3, 112, 112) RGB in [-1, 1] (the face warped by
``M`` to the ArcFace template); output (B, 512) embeddings.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from stages.networks.checkpoint import load_strict, read_state_dict, resnet_layout

ARCFACE_FILE = "arcface_model/ms1mv3_arcface_r50_fp16_backbone.pth"
IR50_LAYERS = (3, 4, 14, 3)
BN_EPS = 1e-5
INPUT_SIZE = 112
EMBEDDING = 512


class IBasicBlock(nn.Module):
    """insightface's pre-activation residual unit: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN, + shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=BN_EPS)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes, eps=BN_EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """(B, 3, 112, 112) in [-1, 1] -> (B, embedding). Widths ``width * (1, 2, 4, 8)``; IR-50 is width 64."""

    def __init__(self, layers: tuple[int, ...] = IR50_LAYERS, width: int = 64, embedding: int = EMBEDDING):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=BN_EPS)
        self.prelu = nn.PReLU(width)
        inplanes = width
        for index, blocks in enumerate(layers):
            planes = width * 2 ** index
            units = [IBasicBlock(inplanes, planes, stride=2)] + [IBasicBlock(planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*units))
            inplanes = planes
        self.num_layers = len(layers)
        self.bn2 = nn.BatchNorm2d(inplanes, eps=BN_EPS)
        side = INPUT_SIZE // 2 ** len(layers)
        self.fc = nn.Linear(inplanes * side * side, embedding)
        self.features = nn.BatchNorm1d(embedding, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        for index in range(self.num_layers):
            x = getattr(self, f"layer{index + 1}")(x)
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))


def load_arcface(path: str | Path, layers: tuple[int, ...] | None = None, width: int | None = None) -> IResNet:
    """The IR-50 backbone from insightface's state dict, strictly; ConfigError naming the file.

    ``layers`` / ``width`` default to the checkpoint's own (IR-50: (3, 4, 14, 3), 64)."""
    state = read_state_dict(path, "ArcFace IR-50")
    if layers is None or width is None:
        layers, width = resnet_layout(state)
    return load_strict(IResNet(layers, width), state, "ArcFace IR-50")


def warp_affine(image: torch.Tensor, matrix: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size): the image under the (B, 2, 3) pixel affine ``matrix`` (source pixel ->
    output pixel), bilinear, zeros outside (kornia's ``warp_affine`` with align_corners=True, as FFHQ-UV uses)."""
    b, _, h, w = image.shape
    last_row = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=matrix.dtype, device=matrix.device).expand(b, 1, 3)
    inverse = torch.linalg.inv(torch.cat([matrix, last_row], dim=1).double()).to(image.dtype)  # output -> source
    steps = torch.arange(size, dtype=image.dtype, device=image.device)
    ys, xs = torch.meshgrid(steps, steps, indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3) @ inverse.transpose(1, 2)
    grid = torch.stack([points[..., 0] / (w - 1) * 2 - 1, points[..., 1] / (h - 1) * 2 - 1], dim=-1)
    return nn.functional.grid_sample(image, grid.reshape(b, size, size, 2), mode="bilinear", padding_mode="zeros",
                                     align_corners=True)


def identity_embedding(network: IResNet, image: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """FFHQ-UV's recognition wrapper: (B, 3, H, W) in [0, 1] warped by ``matrix`` to 112, to [-1, 1], through the
    backbone, L2-normalised -> (B, 512)."""
    face = warp_affine(image, matrix) * 2 - 1
    return nn.functional.normalize(network(face), dim=-1)


def identity_loss(embedding_a: torch.Tensor, embedding_b: torch.Tensor) -> torch.Tensor:
    """FFHQ-UV's feature loss: mean of 1 - cosine similarity of the (B, 512) embeddings."""
    return (1 - nn.functional.cosine_similarity(embedding_a, embedding_b, dim=1)).mean()
