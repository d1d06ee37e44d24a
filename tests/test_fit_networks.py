"""The faithful fit's networks on tiny random-weight checkpoints written in the official formats: Deep3D's
regressor (``epoch_latest.pth`` with ``net_recon``) and insightface's ArcFace IR-50 backbone state dict."""

from __future__ import annotations

import pytest
import torch

from stages.errors import CheckpointError, ConfigError
from stages.networks.arcface import IResNet, identity_loss, load_arcface
from stages.networks.deep3d import Deep3DRegressor, load_deep3d
from tests.tiny_gan_weights import randomize_

TINY_LAYERS, TINY_WIDTH = (1, 1, 1, 1), 4
DIMS = (6, 5, 7)  # id, exp, tex of a small synthetic 3DMM


def test_deep3d_regressor_loads_net_recon_and_keeps_expression_non_negative(tmp_path):
    net = randomize_(Deep3DRegressor(DIMS, TINY_LAYERS, TINY_WIDTH), seed=1).eval()
    keys = set(net.state_dict())
    assert {"backbone.layer1.0.downsample.0.weight", "final_layers.1.0.weight", "final_layers.6.bias"} <= keys
    path = tmp_path / "epoch_latest.pth"
    torch.save({"net_recon": net.state_dict(), "epoch": 20}, path)
    loaded = load_deep3d(path, DIMS, TINY_LAYERS, TINY_WIDTH)
    image = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    coeffs = loaded(image)
    assert coeffs.shape == (2, sum(DIMS) + 33)
    torch.testing.assert_close(coeffs, net(image))
    exp = coeffs[:, DIMS[0]:DIMS[0] + DIMS[1]]
    assert (exp >= 0).all()


def test_deep3d_refuses_wrong_files(tmp_path):
    net = Deep3DRegressor(DIMS, TINY_LAYERS, TINY_WIDTH)
    torch.save(net.state_dict(), tmp_path / "flat.pth")
    with pytest.raises(ConfigError, match="net_recon"):
        load_deep3d(tmp_path / "flat.pth", DIMS, TINY_LAYERS, TINY_WIDTH)
    state = net.state_dict()
    state.pop("final_layers.1.0.weight")
    torch.save({"net_recon": state}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="final_layers.1.0.weight"):
        load_deep3d(tmp_path / "partial.pth", DIMS, TINY_LAYERS, TINY_WIDTH)
    with pytest.raises(ConfigError, match="not found"):
        load_deep3d(tmp_path / "missing.pth", DIMS)


def test_arcface_loads_insightface_backbone_and_gives_an_identity_loss(tmp_path):
    torch.manual_seed(2)  # default init: randomize_'s small BN gains would wash the input out of 4 tiny stages
    net = IResNet(TINY_LAYERS, TINY_WIDTH).eval()
    assert {"layer1.0.bn1.weight", "layer1.0.prelu.weight", "layer1.0.downsample.1.running_var", "fc.weight",
            "features.running_mean"} <= set(net.state_dict())
    path = tmp_path / "backbone.pth"
    torch.save(net.state_dict(), path)
    loaded = load_arcface(path, TINY_LAYERS, TINY_WIDTH)
    faces = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 2 - 1
    embeddings = loaded(faces)
    assert embeddings.shape == (2, 512)
    torch.testing.assert_close(embeddings, net(faces))
    assert float(identity_loss(embeddings, embeddings)) == pytest.approx(0.0, abs=1e-6)
    assert float(identity_loss(embeddings[:1], embeddings[1:])) > 0
