"""e4e encoder: official IR-SE-50 shapes, strict checkpoint loading, forward structure."""

from __future__ import annotations

import pytest
import torch

from stages.errors import CheckpointError
from stages.networks import e4e
from tests import tiny_gan_weights as tiny


def test_ir_se50_has_the_official_keys_and_shapes():
    with torch.device("meta"):
        encoder = e4e.Encoder4Editing(e4e.EncoderConfig.ir_se50())
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert len(encoder.body) == 24
    assert shapes["input_layer.0.weight"] == (64, 3, 3, 3) and shapes["input_layer.2.weight"] == (64,)
    assert shapes["body.7.res_layer.5.fc1.weight"] == (16, 256, 1, 1)
    assert shapes["body.3.shortcut_layer.0.weight"] == (128, 64, 1, 1)
    assert "body.0.shortcut_layer.0.weight" not in shapes  # 64 -> 64: max-pool shortcut
    assert shapes["body.23.res_layer.3.weight"] == (512, 512, 3, 3)
    assert shapes["styles.0.convs.6.weight"] == (512, 512, 3, 3) and "styles.0.convs.8.weight" not in shapes
    assert "styles.17.convs.10.weight" in shapes and "styles.6.convs.8.weight" in shapes
    assert shapes["styles.17.linear.weight"] == (512, 512)
    assert shapes["latlayer1.weight"] == (512, 256, 1, 1) and shapes["latlayer2.weight"] == (512, 128, 1, 1)
    assert e4e.infer_encoder_config(encoder.state_dict()) == e4e.EncoderConfig.ir_se50()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("e4e") / "e4e_ffhq_encode.pt"
    decoder = tiny.tiny_generator(seed=5, w_dim=32, resolution=32)
    encoder = tiny.tiny_encoder(seed=6, w_dim=32, n_styles=decoder.num_ws, input_size=64)
    latent_avg = tiny.write_e4e(path, encoder, decoder)
    return path, encoder, decoder, latent_avg


def test_checkpoint_loads_strictly_and_encodes(checkpoint):
    path, encoder, decoder, latent_avg = checkpoint
    model = e4e.load_e4e(str(path))
    for key, value in encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value), key
    assert model.encoder.config.stages == ((1, 16), (1, 32), (2, 48), (1, 32))
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        codes = model.encode(images)
        assert codes.shape == (2, 8, 32)
        assert torch.allclose(codes, encoder(images) + latent_avg[None], atol=1e-5)
        # decoder keeps its stored noise: same image as the source generator
        assert (model.decoder.synthesis(codes) - decoder.synthesis(codes)).abs().max() < 1e-4
    assert model.opts["encoder_type"] == "Encoder4Editing"


def test_forward_matches_the_e4e_recipe(checkpoint):
    _, encoder, _, _ = checkpoint
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        w = encoder(x)
        h = encoder.input_layer(x)
        taps = []
        for _i, unit in enumerate(encoder.body):
            h = unit(h)
            taps.append(h)
        c1, c2, c3 = taps[1], taps[3], taps[4]  # ends of stages 2, 3, 4 of the tiny backbone
        assert torch.allclose(w[:, 1], encoder.styles[0](c3) + encoder.styles[1](c3), atol=1e-5)
        p2 = torch.nn.functional.interpolate(c3, size=c2.shape[-2:], mode="bilinear", align_corners=True) \
            + encoder.latlayer1(c2)
        assert torch.allclose(w[:, 4], encoder.styles[0](c3) + encoder.styles[4](p2), atol=1e-5)
        p1 = torch.nn.functional.interpolate(p2, size=c1.shape[-2:], mode="bilinear", align_corners=True) \
            + encoder.latlayer2(c1)
        assert torch.allclose(w[:, 7], encoder.styles[0](c3) + encoder.styles[7](p1), atol=1e-5)


def test_latent_avg_of_shape_512_is_repeated(tmp_path, checkpoint):
    _, encoder, decoder, _ = checkpoint
    path = tmp_path / "e4e.pt"
    tiny.write_e4e(path, encoder, decoder, latent_avg=decoder.mapping.w_avg.clone())
    model = e4e.load_e4e(str(path))
    assert model.latent_avg.shape == (8, 32) and torch.equal(model.latent_avg[5], decoder.mapping.w_avg)


def test_unexpected_or_missing_keys_are_refused(tmp_path, checkpoint):
    path, *_ = checkpoint
    data = torch.load(path, weights_only=True)
    data["state_dict"]["encoder.extra.weight"] = torch.zeros(1)
    torch.save(data, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected"):
        e4e.load_e4e(str(tmp_path / "extra.pt"))
    del data["state_dict"]["encoder.extra.weight"]
    del data["state_dict"]["encoder.latlayer1.bias"]
    torch.save(data, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="missing"):
        e4e.load_e4e(str(tmp_path / "missing.pt"))
