"""Make a tiny random StyleGAN2 draw real faces, for end-to-end tests.

Why: the geometry stages (unwrap, complete) and FFHQ-UV's own checks (the inversion's
face test, landmarks on every view) need a face in the generated images, and a tiny
random-weight generator draws none, so every sample would fail with ``no_face``. No
trained weights can be downloaded, so the faces are put into the tiny checkpoint itself,
through parameters the official formats already carry; the loaders and the synthesis
code run unchanged. Two helpers:
- ``draw_fixed_face_``: one reference face for any W+ (the yaw edits show as a colour cast);
- ``draw_turned_faces_`` with ``yaw_flow_``: three views of a head (FFHQ-UV's left / front /
  right), the one W+ row 0 encodes, and a StyleFlow whose yaw condition moves W+ along that
  code, so that the edit stage's yaw edits turn the drawn head (section "turned views" below).

What ``draw_fixed_face_`` sets (everything else keeps its random value):
- last block (full resolution), ``conv1``: weight 0, so the demodulated conv contributes
  nothing; bias 0; noise strength 1 and the constant noise buffer = the reference face's
  gray level in [0, 1] (non-negative, so the leaky ReLU passes it as ``sqrt(2) * gray``);
- every lower block's ``torgb``: weight 0 and bias 0, so the RGB skip carries nothing, except
  the first (4x4) block's: its random weight is kept, scaled so that its RGB stays within
  ``view_tint`` over random latents of standard deviation 2 (wider than the pipeline's),
  bias 0. Up-sampled through every skip, it adds a smooth colour cast that depends on W+
  rows 0-1, which StyleFlow's yaw edit changes: the edit stage's three views are the same
  face under different casts;
- last block's ``torgb``: its style affine keeps its random weight scaled by
  ``style_influence`` (bias 1), so the image still depends slightly on w; its 1x1 weights
  and bias map gray to colour with the per-channel least-squares line
  ``rgb_c ~ a_c * gray + b_c`` of the reference image, giving a skin-toned face in [-1, 1].
The drawn face therefore comes from the checkpoint's noise buffers: run the edit stage
with ``stages.edit.noise_seed=null`` so that FFHQ-UV's RandomState(0) noise does not
replace them (the e4e decoder always uses its stored noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stages.condition import ATTRIBUTE_INDEX
from stages.networks.styleflow import StyleFlow
from stages.networks.stylegan2 import SQRT2, Generator, SynthesisLayer, ToRGBLayer


def reference_face(path: str | Path, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gray (R, R) float32 in [0, 1] of an RGB face image resized to ``resolution``, and the per-channel
    line (slope (3,), intercept (3,)) mapping gray to the image's colour in [-1, 1]."""
    rgb = np.asarray(Image.open(path).convert("RGB").resize((resolution, resolution), Image.LANCZOS),
                     dtype=np.float64) / 255.0
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    design = np.stack([gray.reshape(-1), np.ones(gray.size)], axis=1)
    target = rgb.reshape(-1, 3) * 2.0 - 1.0  # the generator's [-1, 1] range
    (slope, intercept), *_ = np.linalg.lstsq(design, target, rcond=None)
    return gray.astype(np.float32), slope.astype(np.float32), intercept.astype(np.float32)


def draw_fixed_face_(generator: Generator, face_path: str | Path, style_influence: float = 0.02,
                     view_tint: float = 0.15, seed: int = 0) -> Generator:
    """Set ``generator``'s parameters (in place, see the module docstring) so that it draws the face in
    ``face_path`` for any W+; ``style_influence`` scales the last RGB layer's w-dependence and ``view_tint``
    bounds the 4x4 colour cast, in [-1, 1] image units (0 = none)."""
    blocks = generator.synthesis.blocks()
    first, last = blocks[0], blocks[-1]
    gray, slope, intercept = reference_face(face_path, last.resolution)
    with torch.no_grad():
        for block in blocks[1:-1]:
            block.torgb.weight.zero_()
            block.torgb.bias.zero_()
        first.torgb.bias.zero_()
        # Pipeline latents stay within a few units (yaw edits move rows 0-3 by up to ~5); calibrate on wider ones.
        ws = torch.randn(64, first.num_ws, generator.config.w_dim, generator=torch.Generator().manual_seed(seed)) * 2
        _, cast = first(None, None, ws)
        first.torgb.weight.mul_(view_tint / max(cast.abs().max().item(), 1e-12))
        last.conv1.weight.zero_()
        last.conv1.bias.zero_()
        last.conv1.noise_strength.fill_(1.0)
        last.conv1.noise_const.copy_(torch.from_numpy(gray))
        torgb = last.torgb
        torgb.affine.weight.mul_(style_influence)
        torgb.affine.bias.fill_(1.0)
        # Features are sqrt(2) * gray in every channel and styles ~ weight_gain: spread the slope over the
        # channels so that sum_i weight[c, i] * weight_gain * sqrt(2) * gray = slope[c] * gray.
        channels = torgb.weight.shape[1]
        per_channel = torch.from_numpy(slope) / (channels * torgb.weight_gain * np.sqrt(2.0))
        torgb.weight.copy_(per_channel[:, None, None, None].expand_as(torgb.weight))
        torgb.bias.copy_(torch.from_numpy(intercept))
    return generator


# ----------------------------------------------------------------------------- turned views
#
# ``draw_turned_faces_`` makes the generator draw one of three real views of a face (left / front / right),
# chosen by the projection p = <w_row0, direction> of W+ row 0, and ``yaw_flow_`` makes StyleFlow's yaw
# condition move W+ along that direction, so that the edit stage's yaw edits turn the drawn head.
#
# The circuit (every value exact up to float rounding; ``SQRT2`` is each synthesis layer's gain):
# - b4.conv1 reads the const input (channel 0 = 1, channel 1 = 0) with the style of channel 0 equal to
#   e = p / threshold and of channel 1 equal to 1: the demodulated conv gives y = e / sqrt(e^2 + 1), a monotonic
#   function of p in (-1, 1). Its outputs are lrelu(+-y +- t), y + B and the constant B (bias only).
# - b8.conv0 turns them into three non-negative gates with relu(u) = (lrelu(u) - 0.2 u) / 0.8, u taken from
#   the linear channels: gate_left = relu(y + t), gate_right = relu(t - y), gate_front = relu(y - t) +
#   relu(-y - t). A gate is 0 when its view is selected (left: y <= -t, right: y >= t, front: |y| <= t) and
#   large otherwise; constants come from the B channel (not from biases) so that the up-sampling's border
#   taper scales every term alike.
# - Later layers carry the gates with a single centre tap (a demodulated conv then passes its input exactly).
# - A face layer holds its view's gray face f in its noise buffer (strength FACE_STRENGTH, added to every
#   channel): P = lrelu(eps f - g), Q = g + eps f, N = eps f give relu(eps f - g) = (P - 0.2 (2N - Q)) / 0.8,
#   which is eps f for the selected view and 0 for the others; the next layer removes the noise from the
#   gates it carries by subtracting N. Right: b512.conv1 (out through b512.torgb and the RGB skip), left:
#   b1024.conv0 (its relu carried through b1024.conv1), front: b1024.conv1; b1024.torgb adds the colour line.
# - Every other toRGB layer is 0, every other noise strength 0, every other style constant 1.
# Calibration: the tiny e4e's latents have p of about 0 and the front view's measured yaw is about -1 degree,
# so the edit stage's views land at p of about -31 (left), -1 (front) and +29 (right), far from the
# thresholds +-15; the gates there are at least 10 * FACE_STRENGTH everywhere, image borders included.

FACE_VIEWS = ("left", "front", "right")  # in increasing order of p (yaw +30 moves w by -30 * step)
FACE_STRENGTH = 1e-2  # noise strength of a face layer: small next to any closed gate, large next to float error
_B = 4.0  # the positive offset of the linear channels of b4.conv1 (keeps y + B in lrelu's linear part)
_RELU = {"lrelu": 1.0, "noise": -0.4, "linear": 0.2}  # relu(u) * 0.8 = lrelu(u) - 0.2 * (2 * noise - (g + noise))


@dataclass(frozen=True)
class TurnCode:
    """How W+ encodes the turn: p = <w_row0, direction> in w units, ``step`` w units per yaw degree.

    StyleFlow's yaw edit to yaw Y from a state of yaw Y0 moves p by -step * (Y - Y0); the generator draws
    the left view for p < -threshold, the right view for p > threshold and the front view between.
    """

    direction: torch.Tensor  # (w_dim,) unit vector
    step: float = 1.0
    threshold: float = 15.0  # w units: half the 30-degree yaw edit

    @property
    def y_threshold(self) -> float:
        """t, the threshold in units of y = e / sqrt(e^2 + 1), e = p / threshold."""
        return 1.0 / math.sqrt(2.0)

    def view_of(self, p: float) -> str:
        """The view the generator draws for a projection p."""
        return "left" if p < -self.threshold else "right" if p > self.threshold else "front"


def turn_code(expression: torch.Tensor, seed: int = 0, step: float = 1.0) -> TurnCode:
    """A seeded unit direction orthogonal to the expression walk's (which moves all 18 rows)."""
    smile = expression.reshape(-1).double()
    smile = smile / smile.norm()
    d = torch.randn(smile.numel(), generator=torch.Generator().manual_seed(seed + 11)).double()
    d = d - (d @ smile) * smile
    return TurnCode((d / d.norm()).float(), step=step)


def yaw_flow_(flow: StyleFlow, code: TurnCode) -> StyleFlow:
    """Set ``flow`` (in place) so that F(w | a) = w + step * Yaw(a) * direction on every W+ row.

    Both moving batch norms become the identity, the end time 1, and the ODE velocity the last layer's
    hyper bias alone, which reads only the condition's yaw column (the context is [t, condition])."""
    with torch.no_grad():
        for norm in (flow.chain[0], flow.chain[2]):
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
            norm.weight.zero_()
            norm.bias.zero_()
        cnf = flow.chain[1]
        cnf.sqrt_end_time.fill_(1.0)
        last = cnf.odefunc.diffeq.layers[-1]
        last._layer.weight.zero_()
        last._layer.bias.zero_()
        last._hyper_bias.weight.zero_()
        last._hyper_bias.weight[:, 1 + ATTRIBUTE_INDEX["Yaw"]] = code.step * code.direction
    return flow


def _set_layer_(layer: SynthesisLayer, taps: dict[int, dict[int, float]], bias: dict[int, float] | None = None,
                noise: np.ndarray | None = None) -> None:
    """Constant styles (1), centre taps ``taps[out][in]``, ``bias[out]``, and a face in the noise buffer."""
    layer.affine.weight.zero_()
    layer.affine.bias.fill_(1.0)
    layer.weight.zero_()
    for out, inputs in taps.items():
        for i, value in inputs.items():
            layer.weight[out, i, 1, 1] = value
    layer.bias.zero_()
    for out, value in (bias or {}).items():
        layer.bias[out] = value
    layer.noise_strength.fill_(0.0 if noise is None else FACE_STRENGTH)
    layer.noise_const.copy_(torch.from_numpy(noise) if noise is not None else torch.zeros_like(layer.noise_const))


def _set_torgb_(torgb: ToRGBLayer, coefficients: dict[int, float], slope: np.ndarray,
                intercept: np.ndarray | None = None) -> None:
    """rgb_c = slope_c * sum_i coefficients[i] * x_i / FACE_STRENGTH (+ intercept_c); constant styles 1."""
    torgb.affine.weight.zero_()
    torgb.affine.bias.fill_(1.0)
    torgb.weight.zero_()
    for i, value in coefficients.items():
        torgb.weight[:, i, 0, 0] = torch.from_numpy(slope) * value / (FACE_STRENGTH * torgb.weight_gain)
    torgb.bias.copy_(torch.from_numpy(intercept) if intercept is not None else torch.zeros(3))


def _face_gate_taps(gate: int, noise_in: int | None) -> tuple[dict[int, float], dict[int, float]]:
    """Taps of Q = g + eps f and P = lrelu(eps f - g) from input ``gate``, less the previous face ``noise_in``."""
    if noise_in is None:
        return {gate: 1.0}, {gate: -1.0}
    return {gate: 1.0, noise_in: -1.0}, {gate: -1.0, noise_in: 1.0}


def _relu_coefficients(p: int, n: int, q: int, gain: float = 1.0) -> dict[int, float]:
    """Weights on channels P, N, Q (each SQRT2 * value) that give gain * relu(eps f - g)."""
    scale = gain / (0.8 * SQRT2)
    return {p: scale * _RELU["lrelu"], n: scale * _RELU["noise"], q: scale * _RELU["linear"]}


def colour_line(paths: list[str | Path], resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """One per-channel line (slope (3,), intercept (3,)) mapping gray to colour in [-1, 1] over all the images."""
    rgb = np.concatenate([np.asarray(Image.open(p).convert("RGB").resize((resolution, resolution), Image.LANCZOS),
                                     dtype=np.float64).reshape(-1, 3) / 255.0 for p in paths])
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    (slope, intercept), *_ = np.linalg.lstsq(np.stack([gray, np.ones_like(gray)], axis=1), rgb * 2.0 - 1.0,
                                             rcond=None)
    return slope.astype(np.float32), intercept.astype(np.float32)


def _set_gate_layers_(generator: Generator, code: TurnCode) -> None:
    """b4.conv1 reads y from W+ row 0; b8.conv0 makes the gates (channels 0-2: left, right, front); the
    layers up to b512.conv0 carry them."""
    blocks = generator.synthesis.blocks()
    first = blocks[0]
    t = code.y_threshold
    first.const.zero_()
    first.const[0] = 1.0
    signs = {0: (1.0, t), 1: (-1.0, t), 2: (1.0, -t), 3: (-1.0, -t), 4: (1.0, _B)}  # out: (sign of y, bias)
    _set_layer_(first.conv1, {out: {0: sign, 1: 1.0} for out, (sign, _) in signs.items()},
                {**{out: b for out, (_, b) in signs.items()}, 5: _B})
    affine = first.conv1.affine
    affine.weight[0] = code.direction / (code.threshold * affine.weight_gain)  # style 0 = e = p / threshold
    affine.bias[0] = 0.0
    k = t / _B  # the constant t in units of the B channel
    gates = {0: {0: 1.0, 4: -0.2, 5: 0.2 - 0.2 * k},  # relu(y + t): left is drawn when 0
             1: {1: 1.0, 4: 0.2, 5: -0.2 - 0.2 * k},  # relu(t - y): right
             2: {2: 1.0, 3: 1.0, 5: 0.4 * k}}  # relu(y - t) + relu(-y - t): front
    _set_layer_(blocks[1].conv0, gates)
    layers = generator.synthesis.noise_layers()  # b4.conv1, b8.conv0, b8.conv1, ..., b1024.conv1
    for layer in layers[2:layers.index(generator.synthesis.b512.conv1)]:
        _set_layer_(layer, {g: {g: 1.0} for g in range(3)})


def draw_turned_faces_(generator: Generator, faces: dict[str, str | Path], code: TurnCode) -> Generator:
    """Set ``generator`` (in place; 1024 px, at least 5 channels from 512 px) so that it draws ``faces[view]``
    for the view ``code.view_of(<w_row0, direction>)`` picks (see the section comment above)."""
    synthesis = generator.synthesis
    blocks = {block.resolution: block for block in synthesis.blocks()}
    assert synthesis.resolution == 1024 and min(dict(generator.config.channels)[r] for r in (512, 1024)) >= 5
    gray = {view: reference_face(faces[view], 512 if view == "right" else 1024)[0] for view in FACE_VIEWS}
    slope, intercept = colour_line([faces[view] for view in FACE_VIEWS], 1024)
    with torch.no_grad():
        for block in synthesis.blocks():
            _set_torgb_(block.torgb, {}, slope)
        _set_gate_layers_(generator, code)
        # Right at 512: channels 0 g_left + f, 1 Q (g_right + f), 2 g_front + f, 3 P, 4 N = f.
        q, p = _face_gate_taps(1, None)
        _set_layer_(blocks[512].conv1, {0: {0: 1.0}, 1: q, 2: {2: 1.0}, 3: p}, noise=gray["right"])
        _set_torgb_(blocks[512].torgb, _relu_coefficients(p=3, n=4, q=1), slope)
        # Left at 1024 conv0: 0 Q, 1 P, 2 g_front + f, 3 N (the right face's noise removed with channel 4).
        q, p = _face_gate_taps(0, 4)
        _set_layer_(blocks[1024].conv0, {0: q, 1: p, 2: {2: 1.0, 4: -1.0}}, noise=gray["left"])
        # Front at 1024 conv1: 0 relu_left / norm + f, 1 Q, 2 P, 3 N.
        left = _relu_coefficients(p=1, n=3, q=0)
        norm = math.sqrt(sum(v * v for v in left.values()))
        q, p = _face_gate_taps(2, 3)
        _set_layer_(blocks[1024].conv1, {0: left, 1: q, 2: p}, noise=gray["front"])
        coefficients = _relu_coefficients(p=2, n=3, q=1)
        coefficients[0] = norm / SQRT2  # relu_left = (x0 - x3) * norm / sqrt(2)
        coefficients[3] -= norm / SQRT2
        _set_torgb_(blocks[1024].torgb, coefficients, slope, intercept)
    return generator
