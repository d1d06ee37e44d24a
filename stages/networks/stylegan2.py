"""StyleGAN2 config-f generator (skip architecture) in pure torch, and loaders for its checkpoint formats.

The module layout and parameter names are stylegan2-ada-pytorch's (networks.md 1.3), which
makes the ADA state dict the canonical form; the TF pickle (1.2), rosinality ``.pt`` (1.4)
and the e4e-embedded decoder are converted to it. FIR up-sampling is plain
``conv2d``/``conv_transpose2d`` so the same code runs on CPU and GPU without custom ops.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stages.errors import CheckpointError
from stages.networks import safe_pickle

SQRT2 = math.sqrt(2.0)
LRELU_SLOPE = 0.2
MAPPING_LR_MUL = 0.01  # StyleGAN2's mapping network learning-rate multiplier
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)  # StyleGAN2's resample filter
DEMOD_EPS = 1e-8
FFHQ_UV_NOISE_SEED = 0  # FFHQ-UV step 3 overwrites the noise buffers with RandomState(0).randn (networks.md 1.1)


def fir_filter(taps: tuple[float, ...] = FIR_TAPS) -> torch.Tensor:
    """Separable FIR filter normalised to sum 1: (K, K) float32."""
    t = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(t, t)
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad: tuple[int, int] = (0, 0),
              gain: float = 1.0) -> torch.Tensor:
    """Zero-insert up-sample, pad (before, after) on both axes, FIR filter: (B, C, H, W) -> (B, C, H', W')."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    # upfirdn2d is a true convolution: flip the kernel for conv2d's correlation.
    weight = (kernel.flip([0, 1]) * gain).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=c)


def channels_config_f(resolution: int, channel_base: int = 32768, channel_max: int = 512) -> dict[int, int]:
    """Feature maps per resolution, ADA's ``min(channel_base // res, channel_max)``: {4: 512, ..., 1024: 32}."""
    return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)}


class FullyConnected(nn.Module):
    """Equalised-lr linear layer: ``y = x @ (W * lr_mul / sqrt(in)).T + b * lr_mul`` (stored W unscaled)."""

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0, bias_init: float = 0.0,
                 activation: str = "linear"):
        super().__init__()
        assert activation in ("linear", "lrelu")
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, LRELU_SLOPE) * SQRT2
        return x


class MappingNetwork(nn.Module):
    """z (B, z_dim) -> w (B, w_dim): pixel norm, then ``num_layers`` FC with lr_mul 0.01."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int = 8, lr_mul: float = MAPPING_LR_MUL):
        super().__init__()
        self.num_layers = num_layers
        dims = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnected(dims[i], dims[i + 1], lr_mul=lr_mul, activation="lrelu"))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                     up: bool = False, resample_filter: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample modulated conv as one grouped conv. x (B, I, H, W), weight (O, I, k, k), styles (B, I).

    With ``up`` the output is (B, O, 2H, 2W): stride-2 transposed conv then the 4-tap blur (rosinality's form).
    """
    b, in_c, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    wgt = weight[None] * styles[:, None, :, None, None]  # (B, O, I, k, k)
    if demodulate:
        wgt = wgt * torch.rsqrt(wgt.square().sum(dim=[2, 3, 4], keepdim=True) + DEMOD_EPS)
    x = x.reshape(1, b * in_c, h, w)
    if up:
        wgt = wgt.transpose(1, 2).reshape(b * in_c, out_c, kh, kw)
        x = F.conv_transpose2d(x, wgt, stride=2, padding=0, groups=b)
        x = x.reshape(b, out_c, x.shape[2], x.shape[3])
        # (2H+1) -> 2H; the filter gain 4 restores the energy lost to zero insertion.
        return upfirdn2d(x, resample_filter, pad=(1, 1), gain=4.0)
    x = F.conv2d(x, wgt.reshape(b * out_c, in_c, kh, kw), padding=kh // 2, groups=b)
    return x.reshape(b, out_c, x.shape[2], x.shape[3])


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally up-sampling x2) + const noise + bias + lrelu * sqrt(2) [+ clamp].

    ``conv_clamp``: stylegan2-ada clamps the activated output to [-conv_clamp, conv_clamp] (FFHQ-UV's texture GAN
    uses 256; config-f has none).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False,
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.up = up
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.register_buffer("resample_filter", fir_filter())

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, demodulate=True, up=self.up,
                             resample_filter=self.resample_filter)
        x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        x = F.leaky_relu(x + self.bias.to(x.dtype)[None, :, None, None], LRELU_SLOPE) * SQRT2
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to RGB, no demodulation, + bias, no activation [, clamped like ``SynthesisLayer``]."""

    def __init__(self, in_channels: int, w_dim: int, out_channels: int = 3, conv_clamp: Optional[float] = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        x = x + self.bias.to(x.dtype)[None, :, None, None]
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (conv0 up,) conv1, torgb; the RGB skip is up-sampled and summed."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 conv_clamp: Optional[float] = None, use_fp16: bool = False):
        super().__init__()
        self.resolution = resolution
        self.is_first = resolution == 4
        # stylegan2-ada's fp16 resolutions: features in half precision on CUDA only (the image skip stays fp32).
        self.use_fp16 = use_fp16
        if self.is_first:
            self.const = nn.Parameter(torch.randn([out_channels, 4, 4]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", fir_filter())
        self.num_ws = 2 if self.is_first else 3  # conv0 shares its w with the previous block's torgb

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor],
                ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ws (B, num_ws, w_dim) -> (features (B, C, R, R), image (B, 3, R, R))."""
        half = self.use_fp16 and ws.device.type == "cuda"
        if self.is_first:
            x = self.const.to(ws.dtype)[None].expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0])
        else:
            with torch.autocast("cuda", dtype=torch.float16, enabled=half):
                x = self.conv0(x, ws[:, 0])
                x = self.conv1(x, ws[:, 1])
        y = self.torgb(x, ws[:, -1]).float()
        if img is not None:
            y = y + upfirdn2d(img, self.resample_filter, up=2, pad=(2, 1), gain=4.0)
        return x, y


class SynthesisNetwork(nn.Module):
    """W+ (B, num_ws, w_dim) -> image (B, 3, R, R) float, about [-1, 1]."""

    def __init__(self, w_dim: int, resolution: int, channels: dict[int, int], conv_clamp: Optional[float] = None,
                 num_fp16_res: int = 0):
        super().__init__()
        self.resolution = resolution
        self.resolutions = [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]
        fp16_from = 2 ** max(int(math.log2(resolution)) + 1 - num_fp16_res, 3)  # stylegan2-ada's rule
        for res in self.resolutions:
            in_c = channels[res // 2] if res > 4 else 0
            setattr(self, f"b{res}", SynthesisBlock(in_c, channels[res], w_dim, res, conv_clamp,
                                                     use_fp16=num_fp16_res > 0 and res >= fp16_from))
        self.num_ws = 2 * len(self.resolutions)

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.resolutions]

    def noise_layers(self) -> list[SynthesisLayer]:
        """Conv layers in TF/rosinality noise order: b4.conv1, b8.conv0, b8.conv1, ... (noise0..noise{n-1})."""
        layers: list[SynthesisLayer] = []
        for block in self.blocks():
            if not block.is_first:
                layers.append(block.conv0)
            layers.append(block.conv1)
        return layers

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        assert ws.ndim == 3 and ws.shape[1] == self.num_ws, f"expected (B, {self.num_ws}, w_dim), got {tuple(ws.shape)}"
        x = img = None
        index = 0
        for block in self.blocks():
            x, img = block(x, img, ws[:, index:index + block.num_ws])
            index += block.num_ws - 1
        return img


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of a generator; ``config_f()`` is FFHQ 1024 config-f."""

    z_dim: int
    w_dim: int
    resolution: int
    channels: tuple[tuple[int, int], ...]  # (resolution, feature maps) pairs
    mapping_layers: int = 8
    conv_clamp: Optional[float] = None  # stylegan2-ada's activation clamp (FFHQ-UV's texture GAN: 256)
    num_fp16_res: int = 0  # highest resolutions computed in fp16 on CUDA (FFHQ-UV's texture GAN: 4)

    @staticmethod
    def config_f(resolution: int = 1024, w_dim: int = 512, channel_base: int = 32768,
                 channel_max: int = 512) -> GeneratorConfig:
        channels = channels_config_f(resolution, channel_base, channel_max)
        return GeneratorConfig(w_dim, w_dim, resolution, tuple(sorted(channels.items())))


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` z -> w, ``synthesis`` W+ -> image."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config.z_dim, config.w_dim, config.mapping_layers)
        self.synthesis = SynthesisNetwork(config.w_dim, config.resolution, dict(config.channels), config.conv_clamp,
                                          config.num_fp16_res)
        self.num_ws = self.synthesis.num_ws

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim) -> image (B, 3, R, R); no truncation."""
        w = self.mapping(z)
        return self.synthesis(w[:, None].expand(-1, self.num_ws, -1))

    def set_noise(self, noises: list[np.ndarray]) -> None:
        """Load the constant noise buffers, noise0..noise{n-1}, each (1, 1, r, r) or (r, r)."""
        layers = self.synthesis.noise_layers()
        if len(noises) != len(layers):
            raise ValueError(f"expected {len(layers)} noise buffers, got {len(noises)}")
        with torch.no_grad():
            for layer, noise in zip(layers, noises):
                layer.noise_const.copy_(torch.as_tensor(np.asarray(noise)).reshape(layer.noise_const.shape))


def ffhq_uv_noise(resolution: int = 1024, seed: int = FFHQ_UV_NOISE_SEED) -> list[np.ndarray]:
    """FFHQ-UV step 3's fixed noise: ``RandomState(seed).randn(1, 1, r, r)`` for noise0..noise16 in order."""
    rnd = np.random.RandomState(seed)
    count = 2 * int(math.log2(resolution)) - 3
    return [rnd.randn(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)).astype(np.float32) for i in range(count)]


def to_uint8(images: torch.Tensor, rounding: str = "tf") -> np.ndarray:
    """(B, 3, H, W) float in [-1, 1] -> (B, H, W, 3) uint8.

    ``tf``: FFHQ-UV step 3, ``trunc(clip(x * 127.5 + 128))``; ``e4e``: step 1, ``floor(clip((x + 1) / 2) * 255)``.
    """
    x = images.detach().float().permute(0, 2, 3, 1)
    if rounding == "tf":
        x = (x * 127.5 + 128.0).clamp(0, 255).floor()
    elif rounding == "e4e":
        x = (((x + 1) / 2).clamp(0, 1) * 255).floor()
    else:
        raise ValueError(f"unknown rounding {rounding!r}")
    return x.to(torch.uint8).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Loading: every format is converted to the canonical (ADA) state dict, then loaded strictly.

def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu()
    return torch.from_numpy(np.array(value, dtype=np.float32))  # a contiguous copy; keeps 0-d shapes


def infer_config(state: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Architecture from the shapes of a canonical state dict."""
    try:
        w_dim = state["mapping.fc0.weight"].shape[0]
        z_dim = state["mapping.fc0.weight"].shape[1]
    except KeyError:
        raise CheckpointError("no mapping.fc0.weight: not a StyleGAN2 generator state dict") from None
    mapping_layers = len({k for k in state if re.fullmatch(r"mapping\.fc\d+\.weight", k)})
    channels = {int(m.group(1)): state[k].shape[0] for k in state
                if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k))}
    if not channels:
        raise CheckpointError("no synthesis blocks found in the generator state dict")
    return GeneratorConfig(z_dim, w_dim, max(channels), tuple(sorted(channels.items())), mapping_layers)


def generator_from_state_dict(state: dict[str, Any], conv_clamp: Optional[float] = None,
                              num_fp16_res: int = 0) -> Generator:
    """Build a generator with the shapes of ``state`` (ADA key names) and load it strictly.

    ``conv_clamp`` / ``num_fp16_res`` are construction settings a state dict does not record (stylegan2-ada's
    ``Generator(..., conv_clamp=256, num_fp16_res=4)`` for FFHQ-UV's texture GAN).
    """
    import dataclasses

    state = {k: _as_tensor(v) for k, v in state.items()}
    config = dataclasses.replace(infer_config(state), conv_clamp=conv_clamp, num_fp16_res=num_fp16_res)
    with torch.device("meta"):
        generator = Generator(config)
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"generator state dict mismatch: missing {missing[:6]}{'...' if len(missing) > 6 else ''}"
                              f", unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}")
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if bad:
        raise CheckpointError(f"generator shape mismatch at {bad[0]}: expected {tuple(expected[bad[0]].shape)}, "
                              f"got {tuple(state[bad[0]].shape)}")
    generator = generator.to_empty(device="cpu")
    generator.load_state_dict(state, strict=True)
    return generator.eval().requires_grad_(False)


def _collect_tf_params(network: safe_pickle.TFNetworkStub, prefix: str = "") -> dict[str, np.ndarray]:
    params: dict[str, np.ndarray] = {}
    for name, value in network.variables:
        params[prefix + name] = np.asarray(value)
    for name, component in network.components.items():
        if not isinstance(component, safe_pickle.TFNetworkStub):
            raise CheckpointError(f"TF component {name!r} is not a Network")
        params.update(_collect_tf_params(component, prefix + name + "/"))
    return params


# TF variables that carry no generator weights.
_TF_IGNORED = re.compile(r"synthesis/lod|lod")


def _tf_unused_setting(name: str, value: Any) -> bool:
    """An unused top-level ``Gs`` variable that is a setting, not a weight (``truncation_psi``, ``lod``...).

    NVlabs' converter (stylegan2-ada-pytorch ``legacy.convert_tf_generator``) skips every variable it does
    not map; we skip only top-level ones (no ``mapping/`` or ``synthesis/`` scope) of at most one dimension,
    so an unknown mapping/synthesis variable or a stray weight matrix still fails the load.
    """
    return "/" not in name and np.ndim(value) <= 1
# rosinality's fixed FIR buffers (blur / upsample kernels) are rebuilt from the filter taps.
_ROSINALITY_IGNORED = re.compile(r"(convs\.\d+\.conv\.blur|to_rgbs\.\d+\.upsample)\.kernel")


class _ForeignEntries:
    """A foreign checkpoint's entries, read by name; every entry must be used or knowingly ignored."""

    def __init__(self, source: dict, what: str, convert: Callable[[Any], Any]):
        self.source, self.what, self.convert = source, what, convert
        self.used: set[str] = set()

    def take(self, name: str) -> Any:
        if name not in self.source:
            raise CheckpointError(f"{self.what} lacks {name!r}")
        self.used.add(name)
        return self.convert(self.source[name])

    def check_all_used(self, ignored: re.Pattern, tolerated: Callable[[str, Any], bool] = lambda k, v: False) -> None:
        unknown = sorted(k for k in set(self.source) - self.used
                         if not ignored.fullmatch(k) and not tolerated(k, self.source[k]))
        if unknown:
            raise CheckpointError(f"{self.what} has entries this converter does not know: {unknown[:6]}")


def convert_tf_params(tf: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """TF ``Gs`` variables (``mapping/Dense0/weight`` ...) -> canonical state dict (networks.md 1.2 table)."""
    out: dict[str, torch.Tensor] = {}
    entries = _ForeignEntries(tf, "TF pickle", lambda value: np.asarray(value, dtype=np.float32))
    take = entries.take

    def put(key: str, value: np.ndarray) -> None:
        out[key] = _as_tensor(value)

    mapping_layers = len({k for k in tf if re.fullmatch(r"mapping/Dense\d+/weight", k)})
    for i in range(mapping_layers):
        put(f"mapping.fc{i}.weight", take(f"mapping/Dense{i}/weight").T)
        put(f"mapping.fc{i}.bias", take(f"mapping/Dense{i}/bias"))
    put("mapping.w_avg", take("dlatent_avg"))
    resolutions = sorted(int(m.group(1)) for k in tf if (m := re.fullmatch(r"synthesis/(\d+)x\1/ToRGB/weight", k)))
    if not resolutions:
        raise CheckpointError("TF pickle has no synthesis/<r>x<r>/ToRGB variables")

    def modulated(key: str, scope: str, flip: bool = False) -> None:
        weight = take(f"{scope}/weight")  # (kh, kw, in, out)
        if flip:
            weight = weight[::-1, ::-1]
        put(f"{key}.weight", weight.transpose(3, 2, 0, 1))
        put(f"{key}.affine.weight", take(f"{scope}/mod_weight").T)
        put(f"{key}.affine.bias", take(f"{scope}/mod_bias") + 1.0)  # TF adds the 1 at run time
        put(f"{key}.bias", take(f"{scope}/bias"))

    noise_index = 0
    for res in resolutions:
        block = f"synthesis.b{res}"
        put(f"{block}.resample_filter", fir_filter().numpy())
        convs = [("conv1", "synthesis/4x4/Conv", False)] if res == 4 else [
            ("conv0", f"synthesis/{res}x{res}/Conv0_up", True), ("conv1", f"synthesis/{res}x{res}/Conv1", False)]
        if res == 4:
            put(f"{block}.const", take("synthesis/4x4/Const/const")[0])
        for name, scope, flip in convs:
            modulated(f"{block}.{name}", scope, flip)
            put(f"{block}.{name}.noise_strength", take(f"{scope}/noise_strength").reshape([]))
            put(f"{block}.{name}.noise_const", take(f"synthesis/noise{noise_index}")[0, 0])
            put(f"{block}.{name}.resample_filter", fir_filter().numpy())
            noise_index += 1
        modulated(f"{block}.torgb", f"synthesis/{res}x{res}/ToRGB")
    entries.check_all_used(_TF_IGNORED, _tf_unused_setting)
    return out


def load_tf_pickle(path: str) -> Generator:
    """Generator ``Gs`` from an NVlabs/stylegan2 TF pickle ``(G, D, Gs)``, without TensorFlow or dnnlib."""
    data = safe_pickle.load_tf_pickle(path)
    if isinstance(data, tuple) and len(data) == 3:
        gs = data[2]
    elif isinstance(data, safe_pickle.TFNetworkStub):
        gs = data
    else:
        raise CheckpointError(f"{path}: expected a tuple (G, D, Gs) of TF networks")
    if not isinstance(gs, safe_pickle.TFNetworkStub):
        raise CheckpointError(f"{path}: Gs is not a TF network")
    return generator_from_state_dict(convert_tf_params(_collect_tf_params(gs)))


def load_ada_pickle(path: str) -> Generator:
    """Generator ``G_ema`` from a stylegan2-ada-pytorch pickle, without its code modules."""
    data = safe_pickle.load_ada_pickle(path)
    if not isinstance(data, dict) or not isinstance(data.get("G_ema"), safe_pickle.PersistentStub):
        raise CheckpointError(f"{path}: expected a dict with a persistent 'G_ema' network")
    return generator_from_state_dict(data["G_ema"].tensors())


def convert_rosinality(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """rosinality ``g_ema`` state dict -> canonical state dict (networks.md 1.4)."""
    out: dict[str, torch.Tensor] = {}
    entries = _ForeignEntries(state, "rosinality state dict", _as_tensor)
    take = entries.take

    mapping_layers = len({k for k in state if re.fullmatch(r"style\.\d+\.weight", k)})
    for i in range(mapping_layers):
        out[f"mapping.fc{i}.weight"] = take(f"style.{i + 1}.weight")
        out[f"mapping.fc{i}.bias"] = take(f"style.{i + 1}.bias")
    num_convs = len({k for k in state if re.fullmatch(r"convs\.\d+\.conv\.weight", k)})
    resolutions = [4 * 2 ** k for k in range(num_convs // 2 + 1)]
    w_dim = out["mapping.fc0.weight"].shape[0]
    out["mapping.w_avg"] = torch.zeros([w_dim])  # rosinality keeps it outside g_ema (latent_avg)

    def modulated(key: str, scope: str) -> None:
        out[f"{key}.weight"] = take(f"{scope}.conv.weight")[0]
        out[f"{key}.affine.weight"] = take(f"{scope}.conv.modulation.weight")
        out[f"{key}.affine.bias"] = take(f"{scope}.conv.modulation.bias")

    def styled(key: str, scope: str, noise_index: int) -> None:
        modulated(key, scope)
        out[f"{key}.bias"] = take(f"{scope}.activate.bias")
        out[f"{key}.noise_strength"] = take(f"{scope}.noise.weight").reshape([])
        out[f"{key}.noise_const"] = take(f"noises.noise_{noise_index}")[0, 0]
        out[f"{key}.resample_filter"] = fir_filter()

    for k, res in enumerate(resolutions):
        block = f"synthesis.b{res}"
        out[f"{block}.resample_filter"] = fir_filter()
        if res == 4:
            out[f"{block}.const"] = take("input.input")[0]
            styled(f"{block}.conv1", "conv1", 0)
            rgb = "to_rgb1"
        else:
            styled(f"{block}.conv0", f"convs.{2 * k - 2}", 2 * k - 1)
            styled(f"{block}.conv1", f"convs.{2 * k - 1}", 2 * k)
            rgb = f"to_rgbs.{k - 1}"
        modulated(f"{block}.torgb", rgb)
        out[f"{block}.torgb.bias"] = take(f"{rgb}.bias").reshape(-1)
    entries.check_all_used(_ROSINALITY_IGNORED)
    return out


def load_rosinality(path: str) -> tuple[Generator, Optional[torch.Tensor]]:
    """(generator, latent_avg (w_dim,) or None) from a rosinality ``.pt`` with ``g_ema``."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "g_ema" not in data:
        raise CheckpointError(f"{path}: expected a dict with 'g_ema'")
    generator = generator_from_state_dict(convert_rosinality(data["g_ema"]))
    latent_avg = data.get("latent_avg")
    if latent_avg is not None:
        with torch.no_grad():
            generator.mapping.w_avg.copy_(_as_tensor(latent_avg).reshape(-1))
    return generator, latent_avg


def load_generator(path: str) -> Generator:
    """Generator from any supported file: TF or ADA ``.pkl``, rosinality ``.pt``, or an ADA state dict ``.pth``."""
    if path.endswith(".pkl"):
        return load_tf_pickle(path) if safe_pickle.sniff_pickle_format(path) == "tf" else load_ada_pickle(path)
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict) and "g_ema" in data:
        return load_rosinality(path)[0]
    if isinstance(data, dict) and "mapping.fc0.weight" in data:
        return generator_from_state_dict(data)
    raise CheckpointError(f"{path}: not a StyleGAN2 checkpoint (TF/ADA pickle, rosinality .pt or ADA state dict)")
