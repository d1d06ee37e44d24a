"""FFHQ-UV's texture GAN: stylegan2-ada's conv_clamp in the project's StyleGAN2 code, and the state-dict loader
with its W statistics, on tiny random-weight checkpoints written in the official format."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stages.networks.stylegan2 import generator_from_state_dict, modulated_conv2d
from stages.networks.texgan import load_texture_gan, stats_path
from tests.tiny_gan_weights import tiny_generator

RESOLUTION = 64  # small synthesis: 4..64


def _reference_layer(layer, x: torch.Tensor, w: torch.Tensor, clamp: float | None) -> torch.Tensor:
    """stylegan2-ada's SynthesisLayer semantics: bias_act(lrelu, gain sqrt(2), clamp=conv_clamp * gain) after the
    modulated conv and the constant noise, the clamp applied to the activated output."""
    y = modulated_conv2d(x, layer.weight, layer.affine(w), demodulate=True, up=layer.up,
                         resample_filter=layer.resample_filter)
    y = y + layer.noise_const * layer.noise_strength
    y = F.leaky_relu(y + layer.bias[None, :, None, None], 0.2) * math.sqrt(2)
    return y if clamp is None else y.clamp(-clamp, clamp)


def test_conv_clamp_follows_stylegan2_ada_and_changes_the_output():
    state = tiny_generator(seed=3, resolution=RESOLUTION).state_dict()
    plain = generator_from_state_dict(state)
    clamp = 0.5  # small enough that the tiny network's activations reach it
    clamped = generator_from_state_dict(state, conv_clamp=clamp)
    layer = clamped.synthesis.b8.conv1
    x = torch.randn(2, layer.weight.shape[1], 8, 8, generator=torch.Generator().manual_seed(0))
    w = torch.randn(2, clamped.config.w_dim, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(layer(x, w), _reference_layer(layer, x, w, clamp))
    unclamped = _reference_layer(layer, x, w, None)
    assert unclamped.abs().max() > clamp  # the clamp is active in this test
    torch.testing.assert_close(plain.synthesis.b8.conv1(x, w), unclamped)
    z = torch.randn(1, clamped.config.z_dim, generator=torch.Generator().manual_seed(2))
    a, b = plain(z), clamped(z)
    assert not torch.allclose(a, b, atol=1e-3)
    outputs = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out))
             for m in clamped.synthesis.modules() if type(m).__name__ in ("SynthesisLayer", "ToRGBLayer")]
    clamped(z)
    for hook in hooks:
        hook.remove()
    assert outputs and all(float(out.abs().max()) <= clamp + 1e-6 for out in outputs)


def test_texture_gan_loads_an_ada_state_dict_and_caches_w_statistics(tmp_path):
    generator = tiny_generator(seed=5, resolution=RESOLUTION)
    path = tmp_path / "texgan_model" / "texgan_ffhq_uv.pth"
    path.parent.mkdir()
    torch.save(generator.state_dict(), path)
    gan = load_texture_gan(path, samples=2000)
    assert gan.generator.config.conv_clamp == 256 and gan.generator.config.num_fp16_res == 4
    assert stats_path(path).is_file() and gan.w_avg.shape == (1, 1, generator.config.w_dim)
    stats = torch.load(stats_path(path), weights_only=True)
    again = load_texture_gan(path)  # from the cache, not recomputed
    torch.testing.assert_close(again.w_std, stats["w_std"].reshape(1, 1, -1))
    z = gan.initial_z()
    assert z.shape == (1, gan.num_ws, generator.config.z_dim)
    torch.testing.assert_close(gan.w_to_z(gan.z_to_w(z)), z)
    uv = gan.synthesize(gan.z_to_w(z))
    assert uv.shape == (1, 3, RESOLUTION, RESOLUTION)
    expected = (generator.synthesis(gan.z_to_w(z)) + 1) / 2  # 256 is far above the tiny network's activations
    torch.testing.assert_close(uv, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_fp16_resolutions_run_on_cuda():
    state = tiny_generator(seed=5, resolution=RESOLUTION).state_dict()
    half = generator_from_state_dict(state, conv_clamp=256, num_fp16_res=4).cuda()
    full = generator_from_state_dict(state, conv_clamp=256).cuda()
    z = torch.randn(1, half.config.z_dim, device="cuda")
    assert (half(z) - full(z)).abs().mean() < 0.05
