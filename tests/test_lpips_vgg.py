"""LPIPS-VGG from a TorchScript ``vgg16.pt`` read as tensors only (NVIDIA's file is a program: never run it).

The tests script a tiny VGG16+LPIPS program of their own (``tests/tiny_fit_weights.py``: the real file's layout
at small widths), save it with ``torch.jit.save``, and check that the loader rebuilds the same network from the
archive's tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stages.errors import CheckpointError, ConfigError
from stages.networks.lpips_vgg import load_lpips_vgg, vgg_loss
from tests.tiny_fit_weights import write_tiny_vgg16


def test_lpips_from_torchscript_tensors_matches_the_program_and_is_a_distance(tmp_path):
    path = tmp_path / "vgg16.pt"
    program = write_tiny_vgg16(path)
    network = load_lpips_vgg(path)
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 48, 48, generator=gen) * 255, torch.rand(2, 3, 48, 48, generator=gen) * 255
    torch.testing.assert_close(network.distance(a, b), program(a, b))
    assert network.distance(a, a).abs().max() < 1e-6
    assert (network.distance(a, b) > 0).all()
    loss = vgg_loss(a[:1] / 255, b[:1] / 255, network)
    assert float(loss) == pytest.approx(float(program(a[:1], b[:1])), rel=1e-5)
    image = (a[:1] / 255).requires_grad_(True)
    vgg_loss(image, b[:1] / 255, network).backward()
    assert image.grad.abs().sum() > 0  # differentiable (the fit optimises through it)


def test_bad_or_missing_vgg16_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="vgg16.pt"):
        load_lpips_vgg(tmp_path / "vgg16.pt")
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3))), str(tmp_path / "short.pt"))
    with pytest.raises(CheckpointError, match="13 VGG16"):
        load_lpips_vgg(tmp_path / "short.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_lpips_vgg(tmp_path / "junk.pt")
