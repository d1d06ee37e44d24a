"""LPIPS-VGG from a TorchScript ``vgg16.pt`` read as tensors only (NVIDIA's file is a program: never run it).

The test scripts a tiny VGG16+LPIPS program of its own (the same layout as the real file at small widths), saves
it with ``torch.jit.save``, and checks that the loader rebuilds the same network from the archive's tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stages.errors import CheckpointError, ConfigError
from stages.networks.lpips_vgg import BLOCKS, LPIPS_SCALE, LPIPS_SHIFT, load_lpips_vgg, vgg_loss

TINY_WIDTHS = (4, 6, 8, 10, 10)  # per block (VGG16: 64, 128, 256, 512, 512)


class TinyLpipsProgram(nn.Module):
    """VGG16 blocks + per-channel LPIPS weights; ``forward`` is the test's reference distance."""

    def __init__(self):
        super().__init__()
        convs, channels = [], 3
        for width, count in zip(TINY_WIDTHS, BLOCKS):
            for _ in range(count):
                convs.append(nn.Conv2d(channels, width, 3, padding=1))
                channels = width
        self.features = nn.ModuleList(convs)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).reshape(1, 3, 1, 1))
        for index, width in enumerate(TINY_WIDTHS):
            self.register_buffer(f"lin{index}", torch.rand(1, width, 1, 1))

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x / 127.5 - 1 - self.shift) / self.scale
        out = []
        for index, conv in enumerate(self.features):
            if index in (2, 4, 7, 10):
                x = nn.functional.max_pool2d(x, 2)
            x = torch.relu(conv(x))
            if index in (1, 3, 6, 9, 12):
                out.append(x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        heads = [self.lin0, self.lin1, self.lin2, self.lin3, self.lin4]
        total = torch.zeros(a.shape[0])
        for fa, fb, w in zip(self.taps(a), self.taps(b), heads):
            total = total + ((fa - fb).square() * w).sum(1).mean((1, 2))
        return total


def write_tiny_vgg16(path, seed: int = 0) -> TinyLpipsProgram:
    """A ``vgg16.pt``-format file (a TorchScript zip) with random weights; returns the module it holds."""
    torch.manual_seed(seed)
    program = TinyLpipsProgram().eval()
    torch.jit.save(torch.jit.script(program), str(path))
    return program


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
