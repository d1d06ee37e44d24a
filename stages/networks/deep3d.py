"""Deep3D's coefficient regressor as FFHQ-UV retrained it on HiFi3D++ (stage 1 of RGB fitting, pipeline.md 7).

Checkpoint ``deep3d_model/epoch_latest.pth``: a ``torch.save`` dict whose ``net_recon`` entry is the state dict of
Deep3DFaceRecon's ``ReconNetWrapper``: ``backbone.*`` a torchvision-layout ResNet-50 without its fc (``conv1``,
``bn1``, ``layer{1..4}.{i}.{conv,bn}{1,2,3}``, ``downsample.{0,1}``), and ``final_layers.{0..6}``, 1x1 conv heads
for id, exp, tex, angle (3), gamma (27), (tx, ty) and tz. The expression head is ``Sequential(conv, ReLU)``
(FFHQ-UV issue #7), hence its keys ``final_layers.1.0.*``. Input: (B, 3, 224, 224) RGB in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from stages.errors import ConfigError
from stages.networks.checkpoint import load_strict, read_state_dict, resnet_layout

DEEP3D_FILE = "deep3d_model/epoch_latest.pth"
RESNET50_LAYERS = (3, 4, 6, 3)
HEAD_SIZES_AFTER_TEX = (3, 27, 2, 1)  # angle, gamma, (tx, ty), tz
EXPANSION = 4


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3x3 conv)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.downsample = None
        if stride != 1 or inplanes != planes * EXPANSION:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * EXPANSION, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes * EXPANSION))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetBackbone(nn.Module):
    """ResNet without its classifier: (B, 3, H, W) -> pooled features (B, 32 * width, 1, 1) (2048 for ResNet-50)."""

    def __init__(self, layers: tuple[int, ...] = RESNET50_LAYERS, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        inplanes = width
        for index, blocks in enumerate(layers):
            planes = width * 2 ** index
            units = []
            for unit in range(blocks):
                units.append(Bottleneck(inplanes, planes, stride=2 if unit == 0 and index > 0 else 1))
                inplanes = planes * EXPANSION
            setattr(self, f"layer{index + 1}", nn.Sequential(*units))
        self.num_layers = len(layers)
        self.out_channels = inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        for index in range(self.num_layers):
            x = getattr(self, f"layer{index + 1}")(x)
        return nn.functional.adaptive_avg_pool2d(x, 1)


class Deep3DRegressor(nn.Module):
    """Image (B, 3, 224, 224) in [0, 1] -> (B, id + exp + tex + 33) coefficients in FFHQ-UV's order."""

    def __init__(self, dims: tuple[int, int, int], layers: tuple[int, ...] = RESNET50_LAYERS, width: int = 64):
        super().__init__()
        self.backbone = ResNetBackbone(layers, width)
        c = self.backbone.out_channels
        sizes = (*dims, *HEAD_SIZES_AFTER_TEX)
        heads: list[nn.Module] = [nn.Conv2d(c, n, 1) for n in sizes]
        heads[1] = nn.Sequential(nn.Conv2d(c, dims[1], 1), nn.ReLU())  # expression head with ReLU
        self.final_layers = nn.ModuleList(heads)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.backbone(image)
        return torch.cat([head(features) for head in self.final_layers], dim=1).flatten(1)


def load_deep3d(path: str | Path, dims: tuple[int, int, int], layers: tuple[int, ...] | None = None,
                width: int | None = None) -> Deep3DRegressor:
    """The regressor from ``epoch_latest.pth`` (its ``net_recon`` entry), strictly; ConfigError naming the file.

    ``layers`` / ``width`` default to the checkpoint's own (ResNet-50, 64 for the authors' file)."""
    checkpoint = read_state_dict(path, "Deep3D regressor")
    if "net_recon" not in checkpoint:
        raise ConfigError(f"{path} has no 'net_recon' entry (Deep3DFaceRecon checkpoint); see README 'RGB fitting'")
    state = checkpoint["net_recon"]
    if layers is None or width is None:
        layers, width = resnet_layout(state, "backbone.")
    return load_strict(Deep3DRegressor(dims, layers, width), state, "Deep3D regressor")
