"""DPR (Deep Single-Image Portrait Relighting, Zhou et al. 2019): the 512 gray HourglassNet.

networks.md section 4. The network reads the Lab L channel of a 512x512 portrait,
estimates its 2nd-order SH lighting (9 values, DPR's order, see
``stages.lighting.sh``) at the innermost 32x32 level, and re-renders L under a
target SH. FFHQ-UV keeps only the estimate (its step 2a); the relight stage uses both.

Checkpoint: ``dpr_model/trained_model_03.t7``, a legacy ``torch.save`` of a plain
state dict whose shared submodules appear under several aliased names
(``light.*`` == ``HG0.middle.*`` == ``HG3.middle.middle.middle.middle.*``, ...).
This module loads the canonical nested ``HG3`` path plus the head and tail layers,
checks that every alias holds the same values, and infers the widths from tensor
shapes so that small test checkpoints in the same format load with the same code.
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

# DPR's 512 model: HG3 > HG2 > HG1 > HG0 > lighting net, each level halving the resolution.
HOURGLASS_DEPTH = 4
SH_COEFFS = 9
INPUT_SIZE = 512  # the resolution DPR's 512 model was trained at
DEMO_SH_SCALE = 0.7  # DPR's demo scales the target SH by 0.7 before relighting (testNetwork_demo_512.py)


@dataclass(frozen=True)
class DPRConfig:
    """Widths of the network; DPR's released model is (16, 27, 128)."""

    base_filter: int = 16
    nc_light: int = 27  # feature channels that carry lighting at the innermost level
    nc_light_hidden: int = 128  # width of the 1x1 conv MLPs of the lighting net

    @property
    def channels(self) -> list[int]:
        """Channel widths of the hourglass levels from outer (HG3) to inner, plus the innermost width."""
        b = self.base_filter
        return [b, b, 2 * b, 4 * b, 8 * b + self.nc_light]


class BasicBlock(nn.Module):
    """Residual block: conv3x3 -> norm -> ReLU -> conv3x3 -> norm, + 1x1 shortcut (or identity), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        # DPR's skip blocks use parameter-free instance norm; only the down path has batch norm.
        norm = nn.BatchNorm2d if batch_norm else nn.InstanceNorm2d
        self.bn1 = norm(out_channels)
        self.bn2 = norm(out_channels)
        # The checkpoint always stores a shortcut conv; DPR only uses it when the width changes.
        self.shortcuts = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.project = in_channels != out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (self.shortcuts(x) if self.project else x)
        return F.relu(out)


class LightingNet(nn.Module):
    """Innermost level: estimate SH from the first ``nc_light`` channels, replace them by the target SH's code."""

    def __init__(self, nc_light: int, hidden: int):
        super().__init__()
        self.nc_light = nc_light
        self.predict_FC1 = nn.Conv2d(nc_light, hidden, 1, bias=False)
        self.predict_relu1 = nn.PReLU()
        self.predict_FC2 = nn.Conv2d(hidden, SH_COEFFS, 1, bias=False)
        self.post_FC1 = nn.Conv2d(SH_COEFFS, hidden, 1, bias=False)
        self.post_relu1 = nn.PReLU()
        self.post_FC2 = nn.Conv2d(hidden, nc_light, 1, bias=False)

    def forward(self, feat: torch.Tensor, target_sh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) features, (B, 9, 1, 1) target -> (features with lighting replaced, (B, 9, 1, 1) estimate)."""
        light_feat = feat[:, :self.nc_light]
        pooled = light_feat.mean(dim=(2, 3), keepdim=True)
        estimate = self.predict_FC2(self.predict_relu1(self.predict_FC1(pooled)))
        code = F.relu(self.post_FC2(self.post_relu1(self.post_FC1(target_sh))))
        code = code.expand(-1, -1, feat.shape[2], feat.shape[3])
        return torch.cat([code, feat[:, self.nc_light:]], dim=1), estimate


class HourglassBlock(nn.Module):
    """One hourglass level: upper(x) + up2(low2(middle(low1(maxpool2(x)))))."""

    def __init__(self, channels: int, mid_channels: int, middle: nn.Module):
        super().__init__()
        self.upper = BasicBlock(channels, channels, batch_norm=False)
        self.low1 = BasicBlock(channels, mid_channels, batch_norm=True)
        self.middle = middle
        self.low2 = BasicBlock(mid_channels, channels, batch_norm=False)

    def forward(self, x: torch.Tensor, target_sh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lower = self.low1(F.max_pool2d(x, 2))
        lower, estimate = self.middle(lower, target_sh)
        lower = F.interpolate(self.low2(lower), scale_factor=2, mode="nearest")
        return self.upper(x) + lower, estimate


class HourglassNet(nn.Module):
    """DPR's 512 gray "skip" model: L channel in, relit L channel and the input's SH out."""

    def __init__(self, config: DPRConfig = DPRConfig()):
        super().__init__()
        self.config = config
        b = config.base_filter
        chans = config.channels
        self.pre_conv = nn.Conv2d(1, b, 5, padding=2)
        self.pre_bn = nn.BatchNorm2d(b)
        module: nn.Module = LightingNet(config.nc_light, config.nc_light_hidden)
        for level in range(HOURGLASS_DEPTH):  # built inside out: HG0 first, HG3 last
            module = HourglassBlock(chans[HOURGLASS_DEPTH - 1 - level], chans[HOURGLASS_DEPTH - level], module)
        self.HG3 = module
        self.conv_1 = nn.Conv2d(b, b, 3, padding=1)
        self.bn_1 = nn.BatchNorm2d(b)
        self.conv_2 = nn.Conv2d(b, b, 1)
        self.bn_2 = nn.BatchNorm2d(b)
        self.conv_3 = nn.Conv2d(b, b, 1)
        self.bn_3 = nn.BatchNorm2d(b)
        self.output = nn.Conv2d(b, 1, 1)

    def forward(self, lum: torch.Tensor, target_sh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) L/255 in [0,1] (H, W multiples of 16), (B, 9, 1, 1) target SH.

        Returns the relit (B, 1, H, W) L in [0,1] and the input's estimated (B, 9, 1, 1) SH.
        """
        if lum.ndim != 4 or lum.shape[1] != 1 or lum.shape[2] % 16 or lum.shape[3] % 16:
            raise ValueError(f"expected (B, 1, H, W) with H, W multiples of 16, got {tuple(lum.shape)}")
        feat = F.relu(self.pre_bn(self.pre_conv(lum)))
        feat, estimate = self.HG3(feat, target_sh.reshape(-1, SH_COEFFS, 1, 1).to(feat.dtype))
        feat = F.relu(self.bn_1(self.conv_1(feat)))
        feat = F.relu(self.bn_2(self.conv_2(feat)))
        feat = F.relu(self.bn_3(self.conv_3(feat)))
        return torch.sigmoid(self.output(feat)), estimate


def canonical_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the nested ``HG3...`` path and the head/tail layers; verify every alias equals its canonical copy.

    DPR registered the inner blocks both nested and at top level (``HG0``..``HG2``,
    ``light``); the aliases map to ``HG3`` + ``middle.`` repeated.
    """
    canonical: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for key in state:
        prefix, _, rest = key.partition(".")
        if prefix == "light":
            aliases[key] = "HG3." + "middle." * HOURGLASS_DEPTH + rest
        elif prefix in ("HG0", "HG1", "HG2"):
            aliases[key] = "HG3." + "middle." * (3 - int(prefix[2])) + rest
        else:
            canonical[key] = state[key]
    for key, target in aliases.items():
        if target not in canonical:
            raise ConfigError(f"DPR checkpoint: alias {key} has no canonical entry {target}")
        if not torch.equal(state[key], canonical[target]):
            raise ConfigError(f"DPR checkpoint: alias {key} differs from {target}; refusing an inconsistent file")
    return canonical


def infer_config(state: dict[str, torch.Tensor]) -> DPRConfig:
    """Widths from tensor shapes of a canonical state dict."""
    light = "HG3." + "middle." * HOURGLASS_DEPTH
    try:
        base = state["pre_conv.weight"].shape[0]
        hidden, nc_light = state[light + "predict_FC1.weight"].shape[:2]
    except KeyError as error:
        raise ConfigError(f"DPR checkpoint lacks {error.args[0]}; not a DPR HourglassNet state dict") from None
    return DPRConfig(base_filter=int(base), nc_light=int(nc_light), nc_light_hidden=int(hidden))


def load_dpr(path: Union[str, Path], device: str = "cpu") -> HourglassNet:
    """Build the HourglassNet from a DPR ``.t7`` state dict (weights_only load; untrusted file), in eval mode."""
    state = canonical_state_dict(read_state_dict(path, "DPR"))
    return load_strict(HourglassNet(infer_config(state)), state, f"DPR weights {path}").to(device)


def lab_luminance(bgr: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """FFHQ-UV / DPR preprocessing of an (H, W, 3) uint8 BGR image.

    Resized to size x size (cv2 bilinear) then converted to 8-bit Lab. Returns the
    resized (size, size, 3) uint8 Lab image and the (1, 1, size, size) float32 L/255 in [0,1].
    """
    import cv2

    lab = cv2.cvtColor(cv2.resize(bgr, (size, size)), cv2.COLOR_BGR2LAB)
    return lab, (lab[:, :, 0].astype(np.float32) / 255.0)[None, None]


class DPRRelighter:
    """The loaded network plus DPR's pre/post-processing, for BGR uint8 images of any size."""

    def __init__(self, net: HourglassNet, device: str = "cpu", fp16: bool = False, size: int = INPUT_SIZE):
        self.net = net.to(device)
        self.device = device
        self.dtype = torch.float16 if fp16 and device.startswith("cuda") else torch.float32
        self.net = self.net.to(self.dtype)
        self.size = size

    @torch.no_grad()
    def estimate(self, bgr_images: list[np.ndarray]) -> np.ndarray:
        """(N, 9) float32 SH lighting (DPR order) of (H, W, 3) uint8 BGR images."""
        lum = np.concatenate([lab_luminance(img, self.size)[1] for img in bgr_images])
        zeros = torch.zeros(len(bgr_images), SH_COEFFS, 1, 1, device=self.device, dtype=self.dtype)
        _, estimate = self.net(torch.from_numpy(lum).to(self.device, self.dtype), zeros)
        return estimate.float().reshape(-1, SH_COEFFS).cpu().numpy()

    @torch.no_grad()
    def relight(self, bgr: np.ndarray, target_sh: np.ndarray,
                keep_detail: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Relight an (H, W, 3) uint8 BGR image to a (9,) SH; returns (relit BGR at the input size, input SH (9,)).

        ``keep_detail=False`` is DPR's demo: the network's L replaces the Lab L channel at
        512, then the image goes back to BGR and to the input size (cv2 bilinear), which
        softens a 1024 input. ``keep_detail=True`` applies only the change of L, upsampled,
        to the input's own full-resolution L, so texture detail survives the relighting.
        """
        import cv2

        lab, lum = lab_luminance(bgr, self.size)
        target = torch.as_tensor(np.asarray(target_sh, np.float32).reshape(1, SH_COEFFS, 1, 1),
                                 device=self.device, dtype=self.dtype)
        out, estimate = self.net(torch.from_numpy(lum).to(self.device, self.dtype), target)
        new_l = out[0, 0].float().cpu().numpy() * 255.0  # (size, size) in [0, 255]
        if keep_detail:
            change = cv2.resize(new_l - lum[0, 0] * 255.0, (bgr.shape[1], bgr.shape[0]))
            full = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
            full[:, :, 0] = np.clip(np.round(full[:, :, 0] + change), 0, 255).astype(np.uint8)
            relit = cv2.cvtColor(full, cv2.COLOR_LAB2BGR)
        else:
            # DPR truncates (uint8 cast) rather than rounds; kept for parity with its outputs.
            lab = lab.copy()
            lab[:, :, 0] = new_l.astype(np.uint8)
            relit = cv2.resize(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), (bgr.shape[1], bgr.shape[0]))
        return relit, estimate.float().reshape(SH_COEFFS).cpu().numpy()
