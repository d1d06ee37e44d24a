"""e4e (Encoder4Editing) with the IR-SE-50 backbone, and its checkpoint loader (networks.md section 2).

Parameter names follow omertov/encoder4editing so that ``e4e_ffhq_encode.pt`` loads strictly
after stripping the ``encoder.`` prefix. The architecture is read from tensor shapes, so a
tiny checkpoint with the same structure loads with the same code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stages.errors import CheckpointError
from stages.networks.checkpoint import load_strict
from stages.networks.stylegan2 import Generator, convert_rosinality, generator_from_state_dict

STYLE_LRELU_SLOPE = 0.01  # GradualStyleBlock uses nn.LeakyReLU() default slope
SE_REDUCTION = 16
COARSE_END = 3  # styles [0, 3) read c3, [3, 7) read p2, [7, n) read p1 (e4e's coarse_ind / middle_ind)
MIDDLE_END = 7
IR_SE_50_UNITS = (3, 4, 14, 3)
IR_SE_50_DEPTHS = (64, 128, 256, 512)


@dataclass(frozen=True)
class EncoderConfig:
    """Backbone stages ((units, depth), ...), number of styles, w_dim and head depths (convs per style)."""

    stages: tuple[tuple[int, int], ...]
    n_styles: int
    w_dim: int
    head_convs: tuple[int, ...]  # log2(feature size) per style head

    @property
    def input_size(self) -> int:
        """Face size the heads expect: style 0 reads the 1/16-scale map down to 1x1."""
        return 16 * 2 ** self.head_convs[0]

    @staticmethod
    def ir_se50(n_styles: int = 18, input_size: int = 256) -> EncoderConfig:
        """The FFHQ e4e encoder: IR-SE-50, 18 styles of 512, 256x256 input."""
        sizes = (input_size // 16, input_size // 8, input_size // 4)
        heads = tuple(int(math.log2(sizes[0 if i < COARSE_END else 1 if i < MIDDLE_END else 2]))
                      for i in range(n_styles))
        return EncoderConfig(tuple(zip(IR_SE_50_UNITS, IR_SE_50_DEPTHS)), n_styles, IR_SE_50_DEPTHS[-1], heads)


class SEModule(nn.Module):
    """Squeeze-and-excitation: x * sigmoid(fc2(relu(fc1(avgpool(x)))))."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class BottleneckIRSE(nn.Module):
    """IR-SE unit: BN, conv3x3, PReLU, conv3x3 (stride), BN, SE; plus shortcut (max-pool or conv1x1+BN)."""

    def __init__(self, in_channels: int, depth: int, stride: int):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channels, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth), SEModule(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class EqualLinear(nn.Module):
    """rosinality EqualLinear with lr_mul 1 and no activation: ``x @ (W / sqrt(in)).T + b``."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1.0 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class GradualStyleBlock(nn.Module):
    """``num_convs`` x (conv3x3 stride 2 + LeakyReLU 0.01) down to 1x1, then EqualLinear: (B, C, S, S) -> (B, w_dim)."""

    def __init__(self, in_channels: int, out_channels: int, num_convs: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, 2, 1),
                       nn.LeakyReLU(STYLE_LRELU_SLOPE)]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(-1, self.out_channels))


class Encoder4Editing(nn.Module):
    """Aligned face (B, 3, S, S) in [-1, 1] -> W+ offsets (B, n_styles, w_dim), before ``latent_avg``."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        first = config.stages[0][1]
        self.input_layer = nn.Sequential(nn.Conv2d(3, first, 3, 1, 1, bias=False), nn.BatchNorm2d(first),
                                         nn.PReLU(first))
        units: list[nn.Module] = []
        in_c = first
        self.stage_ends: list[int] = []
        for count, depth in config.stages:
            for i in range(count):
                units.append(BottleneckIRSE(in_c, depth, 2 if i == 0 else 1))
                in_c = depth
            self.stage_ends.append(len(units) - 1)
        self.body = nn.Sequential(*units)
        c1_depth, c2_depth, c3_depth = (d for _, d in config.stages[-3:])
        if c3_depth != config.w_dim:
            raise CheckpointError(f"last backbone depth {c3_depth} must equal w_dim {config.w_dim}")
        self.styles = nn.ModuleList(GradualStyleBlock(config.w_dim, config.w_dim, n) for n in config.head_convs)
        self.latlayer1 = nn.Conv2d(c2_depth, config.w_dim, 1)
        self.latlayer2 = nn.Conv2d(c1_depth, config.w_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(x)
        taps: list[torch.Tensor] = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.stage_ends[-3:]:
                taps.append(x)
        c1, c2, c3 = taps
        w0 = self.styles[0](c3)
        w = w0[:, None].repeat(1, self.config.n_styles, 1)
        features = c3
        p2 = None
        for i in range(1, self.config.n_styles):
            if i == COARSE_END:
                p2 = _upsample_add(c3, self.latlayer1(c2))
                features = p2
            elif i == MIDDLE_END:
                features = _upsample_add(p2, self.latlayer2(c1))
            w[:, i] = w[:, i] + self.styles[i](features)
        return w


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


def infer_encoder_config(state: dict[str, torch.Tensor]) -> EncoderConfig:
    """Backbone stages and head depths from a prefix-stripped encoder state dict's shapes."""
    unit_ids = sorted({int(m.group(1)) for k in state if (m := re.fullmatch(r"body\.(\d+)\.res_layer\.1\.weight", k))})
    if not unit_ids:
        raise CheckpointError("encoder state dict has no body units")
    stages: list[list[int]] = []
    for i in unit_ids:
        depth = state[f"body.{i}.res_layer.1.weight"].shape[0]
        # A stage starts at unit 0 and at every unit with a projection shortcut (depth change).
        if i == 0 or f"body.{i}.shortcut_layer.0.weight" in state:
            stages.append([0, depth])
        stages[-1][0] += 1
    style_ids = sorted({int(m.group(1)) for k in state if (m := re.fullmatch(r"styles\.(\d+)\.linear\.weight", k))})
    heads = tuple(len({k for k in state if re.fullmatch(rf"styles\.{i}\.convs\.\d+\.weight", k)}) for i in style_ids)
    w_dim = state["styles.0.linear.weight"].shape[0]
    return EncoderConfig(tuple((n, d) for n, d in stages), len(style_ids), w_dim, heads)


def encoder_from_state_dict(state: dict[str, torch.Tensor]) -> Encoder4Editing:
    """Build an encoder with the shapes of ``state`` and load it strictly (eval mode)."""
    if len(infer_encoder_config(state).stages) < 3:
        raise CheckpointError("encoder backbone needs at least 3 stages for its feature taps")
    encoder = Encoder4Editing(infer_encoder_config(state))
    return load_strict(encoder, state, "encoder")


@dataclass
class E4EModel:
    """The pieces of an e4e checkpoint: encoder, decoder (stored noise), ``latent_avg`` (n_styles, w_dim)."""

    encoder: Encoder4Editing
    decoder: Generator
    latent_avg: torch.Tensor
    opts: dict[str, Any]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> W+ codes (B, n_styles, w_dim), ``start_from_latent_avg``."""
        codes = self.encoder(images)
        return codes + self.latent_avg.to(codes.dtype)[None]

    def to(self, device: str, dtype: torch.dtype = torch.float32) -> E4EModel:
        self.encoder.to(device=device, dtype=dtype)
        self.decoder.to(device=device, dtype=dtype)
        self.latent_avg = self.latent_avg.to(device=device, dtype=dtype)
        return self


def _strip(state: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_e4e(path: str) -> E4EModel:
    """Load ``e4e_ffhq_encode.pt``: ``state_dict`` with ``encoder.``/``decoder.`` prefixes, ``opts``, ``latent_avg``."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "state_dict" not in data:
        raise CheckpointError(f"{path}: expected an e4e checkpoint dict with 'state_dict'")
    opts = dict(data.get("opts") or {})
    if opts.get("encoder_type", "Encoder4Editing") != "Encoder4Editing":
        raise CheckpointError(f"{path}: encoder_type {opts.get('encoder_type')!r} is not Encoder4Editing")
    state = data["state_dict"]
    others = sorted({k.split(".")[0] for k in state} - {"encoder", "decoder"})
    if others:
        raise CheckpointError(f"{path}: unexpected state_dict prefixes {others}")
    encoder = encoder_from_state_dict({k: v.float() for k, v in _strip(state, "encoder.").items()})
    decoder = generator_from_state_dict(convert_rosinality(_strip(state, "decoder.")))
    if "latent_avg" not in data:
        raise CheckpointError(f"{path}: no latent_avg (needed with start_from_latent_avg)")
    latent_avg = data["latent_avg"].float().cpu()
    n_styles, w_dim = encoder.config.n_styles, encoder.config.w_dim
    if latent_avg.numel() == w_dim:  # rosinality's [512] mean w: repeat per style as e4e does
        latent_avg = latent_avg.reshape(1, w_dim).repeat(n_styles, 1)
    if tuple(latent_avg.shape) != (n_styles, w_dim):
        raise CheckpointError(f"{path}: latent_avg shape {tuple(latent_avg.shape)} is not ({n_styles}, {w_dim})")
    if decoder.num_ws != n_styles:
        raise CheckpointError(f"{path}: decoder takes {decoder.num_ws} styles but the encoder makes {n_styles}")
    return E4EModel(encoder, decoder, latent_avg, opts)
