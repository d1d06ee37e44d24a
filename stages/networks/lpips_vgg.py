"""LPIPS-VGG, the perceptual loss of FFHQ-UV's RGB fitting (stage 2, weight 100), from NVIDIA's ``vgg16.pt``.

``vgg_model/vgg16.pt`` (stylegan2-ada-pytorch's metrics network, derived from Zhang et al.'s LPIPS v0.1 weights)
is a TorchScript *program*. It is never compiled or run here: ``load_torchscript_tensors`` reads its tensors as
data and the network is rebuilt in torch (pipeline.md section 7):

- VGG16 features: 13 conv3x3 (padding 1) + ReLU in blocks of (2, 2, 3, 3, 3), 2x2 max-pool between blocks; the
  taps are the last ReLU of each block (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3);
- LPIPS heads: one non-negative weight per channel of each tap (the 1x1 ``lin`` convs, no bias);
- input (B, 3, H, W) RGB in [0, 255] (FFHQ-UV multiplies its [0, 1] images by 255), mapped to [-1, 1] and
  normalised by LPIPS's fixed shift/scale;
- distance = sum over taps of the spatial mean of sum_c w_c (f1_c - f2_c)^2, f the channel-normalised features
  (the squared difference of ``vgg16(x, return_lpips=True)`` vectors, summed, as FFHQ-UV computes it).

Which tensor is which is read from the file's structure, not from attribute names (the program's names are an
implementation detail of the export): the conv kernels are its (out, in, 3, 3) tensors in file order (13, each
``in`` the previous ``out``, first ``in`` 3), each conv's bias the tensor of the same name with ``weight``
replaced by ``bias``, and the LPIPS heads the remaining tensors of 64/128/256/512/512 elements (the taps'
widths; any width for a small test network) in file order.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from stages.errors import CheckpointError, ConfigError
from stages.networks.safe_pickle import UnsafePickleError, load_torchscript_tensors

VGG_FILE = "vgg_model/vgg16.pt"
BLOCKS = (2, 2, 3, 3, 3)  # VGG16 convs per block
CONV_COUNT = sum(BLOCKS)
# LPIPS's input normalisation of [-1, 1] images (ScalingLayer): (x - shift) / scale.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
RESIZE_ABOVE = 256  # FFHQ-UV area-resizes larger images to 256 before the VGG
NORM_EPS = 1e-10


class LpipsVGG(nn.Module):
    """VGG16 taps + LPIPS heads; ``distance(a, b)`` of (B, 3, H, W) images in [0, 255] -> (B,)."""

    def __init__(self, convs: list[tuple[torch.Tensor, torch.Tensor]], heads: list[torch.Tensor]):
        super().__init__()
        self.convs = nn.ModuleList()
        for weight, bias in convs:
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1)
            conv.weight.data.copy_(weight.float())
            conv.bias.data.copy_(bias.float().reshape(-1))
            self.convs.append(conv)
        for index, head in enumerate(heads):
            self.register_buffer(f"lin{index}", head.float().reshape(-1))
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).reshape(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The five channel-normalised feature maps of (B, 3, H, W) images in [0, 255]."""
        x = (images / 127.5 - 1 - self.shift) / self.scale
        out, index = [], 0
        for block, count in enumerate(BLOCKS):
            if block > 0:
                x = nn.functional.max_pool2d(x, 2)
            for _ in range(count):
                x = torch.relu(self.convs[index](x))
                index += 1
            out.append(x / (x.square().sum(dim=1, keepdim=True).sqrt() + NORM_EPS))
        return out

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B,) LPIPS distance between two (B, 3, H, W) batches in [0, 255]."""
        total = a.new_zeros(a.shape[0])
        for index, (fa, fb) in enumerate(zip(self.taps(a), self.taps(b))):
            weights = getattr(self, f"lin{index}").reshape(1, -1, 1, 1)
            total = total + ((fa - fb).square() * weights).sum(dim=1).mean(dim=(1, 2))
        return total


def vgg_loss(render: torch.Tensor, target: torch.Tensor, network: LpipsVGG) -> torch.Tensor:
    """FFHQ-UV's ``vgg_loss`` of (B, 3, H, W) images in [0, 1]: area-resize above 256, x255, summed distance."""
    if render.shape[-1] > RESIZE_ABOVE:
        render = nn.functional.interpolate(render, size=(RESIZE_ABOVE, RESIZE_ABOVE), mode="area")
        target = nn.functional.interpolate(target, size=(RESIZE_ABOVE, RESIZE_ABOVE), mode="area")
    return network.distance(render * 255.0, target * 255.0).sum()


def _structure(tensors: dict[str, torch.Tensor], path: str) -> tuple[list, list]:
    """(conv (weight, bias) pairs, LPIPS head tensors) of a ``vgg16.pt`` by the rules of the module docstring."""
    kernels = [(n, t) for n, t in tensors.items() if t.ndim == 4 and tuple(t.shape[2:]) == (3, 3)]
    if len(kernels) != CONV_COUNT:
        raise CheckpointError(f"{path}: expected {CONV_COUNT} VGG16 conv3x3 kernels, found {len(kernels)}")
    convs, used, channels = [], set(), 3
    for name, weight in kernels:
        bias_name = name[::-1].replace("thgiew", "saib", 1)[::-1]  # the last 'weight' -> 'bias'
        bias = tensors.get(bias_name)
        if weight.shape[1] != channels or bias is None or bias.numel() != weight.shape[0]:
            raise CheckpointError(f"{path}: conv {name} {tuple(weight.shape)} does not continue a VGG16 chain "
                                  f"of {channels} channels with a bias {bias_name}")
        convs.append((weight, bias))
        used.update((name, bias_name))
        channels = weight.shape[0]
    ends = [sum(BLOCKS[:k + 1]) - 1 for k in range(len(BLOCKS))]
    widths = [convs[i][0].shape[0] for i in ends]
    rest = [t for n, t in tensors.items() if n not in used and t.is_floating_point()]
    heads = [t for t in rest if t.numel() in widths]
    if [h.numel() for h in heads] != widths:
        raise CheckpointError(f"{path}: expected LPIPS heads of {widths} channels, found {[h.numel() for h in heads]}")
    return convs, heads


def load_lpips_vgg(path: str | Path) -> LpipsVGG:
    """LPIPS-VGG from NVIDIA's TorchScript ``vgg16.pt``, read as tensors only; ConfigError naming a missing file."""
    path = str(path)
    if not Path(path).is_file():
        raise ConfigError(f"LPIPS-VGG weights {path} not found ({VGG_FILE}, NVIDIA's stylegan2-ada metrics "
                          "vgg16.pt); see README section 'RGB fitting'")
    try:
        tensors = load_torchscript_tensors(path)
    except (UnsafePickleError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path}: not a readable TorchScript vgg16.pt: {error}") from error
    convs, heads = _structure(tensors, path)
    return LpipsVGG(convs, heads)
