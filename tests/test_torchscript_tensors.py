"""Reading a TorchScript file's tensors without executing it (NVIDIA's LPIPS ``vgg16.pt`` is such a program)."""

from __future__ import annotations

import pickle
import zipfile

import pytest
import torch
from torch import nn

from stages.networks.safe_pickle import UnsafePickleError, load_torchscript_tensors
from tests.test_safe_pickle import _Shell


class TinyVGG(nn.Module):
    """Two conv blocks and an LPIPS-style per-channel scale, scripted by the test."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2))
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 3).reshape(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x * self.scale)


def test_tensors_of_a_torchscript_file_are_read_as_data(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "vgg16.pt"
    torch.jit.save(torch.jit.script(TinyVGG()), str(path))
    tensors = load_torchscript_tensors(str(path))
    reference = torch.jit.load(str(path)).state_dict()
    assert set(tensors) == set(reference) == {"scale", "layers.0.weight", "layers.0.bias", "layers.2.weight",
                                              "layers.2.bias"}
    for name, value in reference.items():
        assert torch.equal(tensors[name], value)


def test_a_code_payload_in_data_pkl_is_refused(tmp_path):
    marker = tmp_path / "owned"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(_Shell(str(marker)), protocol=2))
    with pytest.raises(UnsafePickleError):
        load_torchscript_tensors(str(path))
    assert not marker.exists()
    with zipfile.ZipFile(tmp_path / "empty.pt", "w") as archive:
        archive.writestr("readme.txt", "no program here")
    with pytest.raises(UnsafePickleError, match="not a TorchScript archive"):
        load_torchscript_tensors(str(tmp_path / "empty.pt"))
