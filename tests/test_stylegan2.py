"""StyleGAN2 generator: official shapes, strict loading of every checkpoint format, cross-format equality."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stages.networks import stylegan2 as sg
from tests import tiny_gan_weights as tiny


@pytest.fixture(scope="module")
def generator() -> sg.Generator:
    return tiny.tiny_generator(seed=3, w_dim=32, resolution=32)


@pytest.fixture(scope="module")
def written(tmp_path_factory, generator) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("gan")
    paths = {"tf": str(folder / "g.pkl"), "ada": str(folder / "ada.pkl"), "rosinality": str(folder / "g.pt")}
    tiny.write_tf_pickle(paths["tf"], generator)
    tiny.write_ada_pickle(paths["ada"], generator)
    tiny.write_rosinality(paths["rosinality"], generator)
    torch.save(generator.state_dict(), folder / "texgan.pth")
    paths["state_dict"] = str(folder / "texgan.pth")
    return paths


def test_config_f_has_the_official_parameter_shapes():
    with torch.device("meta"):
        g = sg.Generator(sg.GeneratorConfig.config_f())
    shapes = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    assert sum(p.numel() for p in g.parameters()) == 30_370_060  # stylegan2-ada-pytorch's count for FFHQ 1024
    assert g.num_ws == 18
    assert shapes["mapping.fc7.weight"] == (512, 512) and shapes["mapping.w_avg"] == (512,)
    assert shapes["synthesis.b4.const"] == (512, 4, 4)
    assert shapes["synthesis.b4.conv1.affine.weight"] == (512, 512)
    assert shapes["synthesis.b128.conv0.weight"] == (256, 512, 3, 3)
    assert shapes["synthesis.b1024.conv1.weight"] == (32, 32, 3, 3)
    assert shapes["synthesis.b1024.conv1.noise_const"] == (1024, 1024)
    assert shapes["synthesis.b1024.conv1.noise_strength"] == ()
    assert shapes["synthesis.b1024.torgb.weight"] == (3, 32, 1, 1)
    assert shapes["synthesis.b64.resample_filter"] == (4, 4)
    assert "synthesis.b4.conv0.weight" not in shapes
    assert len(g.synthesis.noise_layers()) == 17


@pytest.mark.parametrize("fmt", ["tf", "ada", "rosinality", "state_dict"])
def test_every_format_loads_to_the_same_image(generator, written, fmt):
    loaded = sg.load_generator(written[fmt])
    for key, value in generator.state_dict().items():
        if fmt == "rosinality" and key == "mapping.w_avg":
            continue  # rosinality keeps w_avg as latent_avg; load_rosinality restores it
        assert torch.equal(loaded.state_dict()[key], value), key
    ws = torch.randn(2, generator.num_ws, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = (loaded.synthesis(ws) - generator.synthesis(ws)).abs().max().item()
    assert difference < 1e-4


def test_tf_and_rosinality_latent_avg(generator, written):
    assert torch.equal(sg.load_generator(written["tf"]).mapping.w_avg, generator.mapping.w_avg)
    assert torch.equal(sg.load_rosinality(written["rosinality"])[0].mapping.w_avg, generator.mapping.w_avg)


def _flat_tf(generator: sg.Generator) -> dict[str, np.ndarray]:
    tf = tiny.tf_variables(generator)
    return {"dlatent_avg": tf["G_main"]["dlatent_avg"], **{f"mapping/{k}": v for k, v in tf["G_mapping"].items()},
            **{f"synthesis/{k}": v for k, v in tf["G_synthesis"].items()}}


def test_tf_conv0_weights_are_spatially_flipped(generator):
    tf = tiny.tf_variables(generator)["G_synthesis"]
    converted = sg.convert_tf_params(_flat_tf(generator))
    original = tf["8x8/Conv0_up/weight"]  # (kh, kw, in, out)
    assert np.array_equal(converted["synthesis.b8.conv0.weight"].numpy()[:, :, 0, 0], original[2, 2].T)
    assert np.allclose(converted["synthesis.b8.conv1.affine.bias"].numpy(), tf["8x8/Conv1/mod_bias"] + 1)


def test_strict_loading_refuses_missing_and_extra_keys(generator):
    state = dict(generator.state_dict())
    with pytest.raises(sg.CheckpointError, match="missing"):
        sg.generator_from_state_dict({k: v for k, v in state.items() if k != "synthesis.b8.conv1.bias"})
    with pytest.raises(sg.CheckpointError, match="unexpected"):
        sg.generator_from_state_dict({**state, "synthesis.extra": torch.zeros(1)})
    rosinality = tiny.rosinality_state_dict(generator)
    with pytest.raises(sg.CheckpointError, match="does not know"):
        sg.convert_rosinality({**rosinality, "convs.0.unknown": torch.zeros(1)})
    flat = _flat_tf(generator)
    sg.convert_tf_params(flat)
    with pytest.raises(sg.CheckpointError, match="does not know"):
        sg.convert_tf_params({**flat, "synthesis/8x8/Extra/weight": np.zeros(1, np.float32)})


def test_ffhq_uv_noise_is_randomstate0_in_layer_order():
    noises = sg.ffhq_uv_noise(1024)
    assert [n.shape[-1] for n in noises] == [4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024]
    rnd = np.random.RandomState(0)
    assert np.allclose(noises[0], rnd.randn(1, 1, 4, 4)) and np.allclose(noises[1], rnd.randn(1, 1, 8, 8))
    g = tiny.tiny_generator(seed=1, w_dim=32, resolution=32)
    g.set_noise(sg.ffhq_uv_noise(32))
    assert torch.allclose(g.synthesis.b8.conv0.noise_const, torch.from_numpy(noises[1][0, 0]))
    assert torch.allclose(g.synthesis.b32.conv1.noise_const, torch.from_numpy(sg.ffhq_uv_noise(32)[6][0, 0]))


def test_batched_modulated_conv_matches_per_sample_reference():
    gen = torch.Generator().manual_seed(0)
    x, weight, styles = torch.randn(3, 4, 6, 6, generator=gen), torch.randn(5, 4, 3, 3, generator=gen), \
        torch.randn(3, 4, generator=gen)
    for up in (False, True):
        out = sg.modulated_conv2d(x, weight, styles, demodulate=True, up=up, resample_filter=sg.fir_filter())
        for i in range(3):
            w = weight * styles[i][None, :, None, None]
            w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
            if up:
                ref = F.conv_transpose2d(x[i:i + 1], w.transpose(0, 1), stride=2)
                ref = sg.upfirdn2d(ref, sg.fir_filter(), pad=(1, 1), gain=4.0)
            else:
                ref = F.conv2d(x[i:i + 1], w, padding=1)
            assert torch.allclose(out[i:i + 1], ref, atol=1e-5)
        assert out.shape[-1] == (12 if up else 6)


def test_upfirdn2d_upsample_preserves_a_constant_image():
    img = torch.full((1, 3, 8, 8), 0.5)
    up = sg.upfirdn2d(img, sg.fir_filter(), up=2, pad=(2, 1), gain=4.0)
    assert up.shape == (1, 3, 16, 16)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 0.5), atol=1e-6)


def test_uint8_conversions():
    x = torch.tensor([-1.0, 0.0, 0.999, 1.5]).reshape(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert sg.to_uint8(x, "tf")[0, 0, :, 0].tolist() == [0, 128, 255, 255]
    assert sg.to_uint8(x, "e4e")[0, 0, :, 0].tolist() == [0, 127, 254, 255]


def test_generator_from_z_runs_the_mapping(generator):
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        img = generator(z)
        w = generator.mapping(z)
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    assert torch.allclose(img, generator.synthesis(w[:, None].expand(-1, generator.num_ws, -1)))
