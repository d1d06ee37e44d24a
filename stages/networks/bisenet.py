"""BiSeNet face parser (zllrunning/face-parsing.PyTorch, CelebAMask-HQ 19 classes), as FFHQ-UV uses it.

pipeline.md section 2.4(a) "Parsing": each 1024 view is resized to 512, ImageNet-normalised, parsed,
the logits are resized back to the view's size and arg-maxed; the face mask keeps skin, brows, eyes,
nose and lips, then removes the mouth opening and the eyes dilated by an 11x11 box.

Checkpoint: ``parsing_model/79999_iter.pth``, a plain ``torch.save`` of the network's state dict:
``cp.resnet.*`` (a ResNet-18 without its classifier), ``cp.arm16/arm32.*`` (attention refinement),
``cp.conv_head32/conv_head16/conv_avg.*``, ``ffm.*`` (feature fusion), ``conv_out.*`` and the training-time
auxiliary heads ``conv_out16/conv_out32.*``. Every conv is bias-free; ConvBNReLU blocks have ``conv`` and
``bn`` children. Widths and depths are read from tensor shapes, so small test checkpoints in the same
layout load with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stages.errors import ConfigError
from stages.networks.checkpoint import load_strict, read_state_dict

# CelebAMask-HQ label order used by the released checkpoint (face-parsing.PyTorch / FFHQ-UV's FaceParsing_API).
LABELS = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
          "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
EYE_LABELS = (4, 5)
MOUTH_LABEL = 11  # the mouth opening (teeth, tongue), between the lips
# FFHQ-UV's "face" part: skin, brows, eyes, nose, mouth, lips (glasses, ears, neck, hair, hat excluded).
FACE_LABELS = (1, 2, 3, 4, 5, 10, 11, 12, 13)
# FFHQ-UV blurs (1 - eyes) with an 11x11 box and keeps ">= 1": the eye holes grow by 5 px at 1024.
EYE_BOX_1024 = 11

INPUT_SIZE = 512  # the resolution the checkpoint was trained at and FFHQ-UV parses at
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BiSeNetConfig:
    """Widths and depths; the released model is the default (ResNet-18 backbone, 19 classes)."""

    n_classes: int = 19
    stem: int = 64  # ResNet stem width
    widths: tuple[int, ...] = (64, 128, 256, 512)  # ResNet stage widths (strides 4, 8, 16, 32)
    blocks: tuple[int, ...] = (2, 2, 2, 2)  # basic blocks per stage
    context: int = 128  # context-path width (attention refinement and heads)
    fuse: int = 256  # feature-fusion width
    fuse_hidden: int = 64  # feature-fusion attention bottleneck (fuse // 4 in the release)
    head_mid: int = 256  # main output head's hidden width
    aux_mid: int = 64  # auxiliary heads' hidden width


class ConvBNReLU(nn.Module):
    """Bias-free conv, batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 conv + BN shortcut (``downsample``) when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if in_channels != out_channels or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


class ResNet18(nn.Module):
    """The backbone without pooling head or classifier; returns the stride 8, 16 and 32 features."""

    def __init__(self, config: BiSeNetConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(3, config.stem, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(config.stem)
        previous = config.stem
        for index, (width, count) in enumerate(zip(config.widths, config.blocks)):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(previous, width, stride)] + [BasicBlock(width, width, 1) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            previous = width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, padding=1)
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinement(nn.Module):
    """ConvBNReLU, then channel attention from the global average (1x1 conv, BN, sigmoid)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels)
        self.conv_atten = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean(dim=(2, 3), keepdim=True))))


class ContextPath(nn.Module):
    """Backbone plus top-down refinement; returns (stride-8 backbone, stride-8 context, stride-16 context)."""

    def __init__(self, config: BiSeNetConfig):
        super().__init__()
        c = config.context
        self.resnet = ResNet18(config)
        self.arm16 = AttentionRefinement(config.widths[2], c)
        self.arm32 = AttentionRefinement(config.widths[3], c)
        self.conv_head32 = ConvBNReLU(c, c)
        self.conv_head16 = ConvBNReLU(c, c)
        self.conv_avg = ConvBNReLU(config.widths[3], c, kernel=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        context = self.conv_avg(feat32.mean(dim=(2, 3), keepdim=True))  # broadcast = nearest upsampling of 1x1
        up32 = F.interpolate(self.arm32(feat32) + context, feat16.shape[2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, feat8.shape[2:], mode="nearest")
        return feat8, self.conv_head16(up16), up32


class FeatureFusion(nn.Module):
    """Concatenate, ConvBNReLU 1x1, then add a squeeze-excitation reweighted copy."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_channels, out_channels, kernel=1)
        self.conv1 = nn.Conv2d(out_channels, hidden, 1, bias=False)
        self.conv2 = nn.Conv2d(hidden, out_channels, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean(dim=(2, 3), keepdim=True)))))
        return feat * atten + feat


class OutputHead(nn.Module):
    """ConvBNReLU 3x3 then a bias-free 1x1 classifier."""

    def __init__(self, in_channels: int, mid_channels: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, mid_channels)
        self.conv_out = nn.Conv2d(mid_channels, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """face-parsing.PyTorch's BiSeNet: the stride-8 backbone features stand in for the spatial path."""

    def __init__(self, config: BiSeNetConfig = BiSeNetConfig()):
        super().__init__()
        self.config = config
        self.cp = ContextPath(config)
        self.ffm = FeatureFusion(config.widths[1] + config.context, config.fuse, config.fuse_hidden)
        self.conv_out = OutputHead(config.fuse, config.head_mid, config.n_classes)
        # Deep-supervision heads of training: part of the checkpoint, not of the inference output.
        self.conv_out16 = OutputHead(config.context, config.aux_mid, config.n_classes)
        self.conv_out32 = OutputHead(config.context, config.aux_mid, config.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) ImageNet-normalised RGB -> (B, n_classes, H, W) logits (bilinear, align_corners=True)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W), got {tuple(x.shape)}")
        feat8, context8, _ = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, context8))
        return F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=True)


def infer_config(state: dict[str, torch.Tensor]) -> BiSeNetConfig:
    """Widths and depths from the tensor shapes of a face-parsing.PyTorch state dict."""
    try:
        widths, blocks = [], []
        for stage in range(1, 5):
            prefix = f"cp.resnet.layer{stage}."
            count = sum(1 for key in state if key.startswith(prefix) and key.endswith(".conv1.weight"))
            widths.append(int(state[prefix + "0.conv1.weight"].shape[0]))
            blocks.append(count)
        return BiSeNetConfig(
            n_classes=int(state["conv_out.conv_out.weight"].shape[0]),
            stem=int(state["cp.resnet.conv1.weight"].shape[0]),
            widths=tuple(widths),
            blocks=tuple(blocks),
            context=int(state["cp.arm16.conv.conv.weight"].shape[0]),
            fuse=int(state["ffm.convblk.conv.weight"].shape[0]),
            fuse_hidden=int(state["ffm.conv1.weight"].shape[0]),
            head_mid=int(state["conv_out.conv.conv.weight"].shape[0]),
            aux_mid=int(state["conv_out16.conv.conv.weight"].shape[0]),
        )
    except KeyError as error:
        raise ConfigError(f"face parser checkpoint lacks {error.args[0]}; not a face-parsing.PyTorch BiSeNet "
                          "state dict") from None


def load_bisenet(path: Union[str, Path], device: str = "cpu") -> BiSeNet:
    """Build BiSeNet from a ``79999_iter.pth``-style state dict (weights_only load; untrusted file), in eval mode."""
    state = read_state_dict(path, "face parser")
    # Checkpoints saved from nn.DataParallel prefix every key with "module.".
    state = {key.removeprefix("module."): value for key, value in state.items()}
    return load_strict(BiSeNet(infer_config(state)), state, f"face parser weights {path}").to(device)


class FaceParser:
    """The loaded BiSeNet plus FFHQ-UV's pre- and post-processing, for RGB uint8 images of any size."""

    def __init__(self, net: BiSeNet, device: str = "cpu", fp16: bool = False, size: int = INPUT_SIZE):
        self.device = device
        self.dtype = torch.float16 if fp16 and device.startswith("cuda") else torch.float32
        self.net = net.to(device=device, dtype=self.dtype).eval()
        self.size = size
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def parse(self, rgb_images: list[np.ndarray]) -> list[np.ndarray]:
        """(H, W, 3) uint8 RGB images (sizes may differ) -> (H, W) uint8 labels in [0, n_classes), one batch."""
        from PIL import Image

        # face-parsing.PyTorch's demo resizes with PIL bilinear, which low-passes when shrinking a 1024 view.
        resized = np.stack([np.asarray(Image.fromarray(img).resize((self.size, self.size), Image.BILINEAR))
                            for img in rgb_images])
        batch = torch.from_numpy(resized).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        logits = self.net(((batch - self.mean) / self.std).to(self.dtype)).float()
        labels = []
        for image, logit in zip(rgb_images, logits):  # one view at a time: 19 x 1024 x 1024 logits are 80 MB
            full = F.interpolate(logit[None], image.shape[:2], mode="bilinear", align_corners=False)
            labels.append(full[0].argmax(dim=0).to(torch.uint8).cpu().numpy())
        return labels


def face_parsing_mask(labels: np.ndarray, exclude_eyes_mouth: bool = True, eye_box: int = EYE_BOX_1024,
                      ) -> np.ndarray:
    """FFHQ-UV's seg_mask from (H, W) integer labels: (H, W) bool, True on the face it samples.

    ``face * (1 - mouth) * erode(1 - eyes)``; FFHQ-UV's erosion is an ``eye_box`` x ``eye_box`` box blur
    then ``>= 1``, which keeps a pixel exactly when its whole window is eye-free: a binary erosion with
    an ``eye_box`` square (border pixels outside the image do not count, as cv2's reflected border gives).
    With ``exclude_eyes_mouth`` False the mask is the face labels alone.
    """
    import cv2

    if labels.ndim != 2:
        raise ValueError(f"expected (H, W) labels, got {labels.shape}")
    face = np.isin(labels, FACE_LABELS)
    if not exclude_eyes_mouth:
        return face
    eye_free = (~np.isin(labels, EYE_LABELS)).astype(np.uint8)
    eye_free = cv2.erode(eye_free, np.ones((eye_box, eye_box), np.uint8)).astype(bool)
    return face & (labels != MOUTH_LABEL) & eye_free
