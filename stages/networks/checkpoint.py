"""Reading untrusted checkpoint files and loading them strictly into our modules.

Every network loader goes through these two steps so that a wrong or hostile file
gets the same treatment everywhere: tensors only (``torch.load(weights_only=True)``,
never arbitrary unpickling), and a load that names the first key that differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from stages.errors import CheckpointError, ConfigError

# Buffers that files from older PyTorch versions lack (BatchNorm gained it in 0.4.1).
OPTIONAL_KEY_SUFFIXES = ("num_batches_tracked",)


def read_state_dict(path: Union[str, Path], what: str) -> dict:
    """A tensor-only ``torch.save`` file as a dict; ConfigError naming the file if missing or unreadable."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{what} weights {path} not found; see README section 'Weights'") from None
    except Exception as error:  # torch raises UnpicklingError/RuntimeError subclasses for bad files
        raise ConfigError(f"{what} weights {path} could not be read as a tensor-only state dict: {error}") from error
    if not isinstance(state, dict):
        raise ConfigError(f"{what} weights {path} hold a {type(state).__name__}, expected a state dict")
    return state


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    """Load ``state`` into ``module``: same keys (bar optional buffers) and shapes, or CheckpointError."""
    expected = module.state_dict()
    for key, value in state.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{what} shape mismatch at {key}: expected {tuple(expected[key].shape)}, "
                                  f"got {tuple(value.shape)}")
    result = module.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if not key.endswith(OPTIONAL_KEY_SUFFIXES)]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{what} state dict mismatch: missing {missing[:6]}, "
                              f"unexpected {result.unexpected_keys[:6]}")
    return module.eval().requires_grad_(False)


def resnet_layout(state: dict[str, torch.Tensor], prefix: str = "") -> tuple[tuple[int, ...], int]:
    """(units per stage, stem width) of a torchvision/insightface-style ResNet state dict (``{prefix}conv1``,
    ``{prefix}layer{i}.{j}.*``): the architecture of a checkpoint, so a small test network loads like the real one."""
    stem = state.get(f"{prefix}conv1.weight")
    if stem is None:
        raise CheckpointError(f"no {prefix}conv1.weight: not a ResNet state dict")
    layers = []
    for stage in range(1, 5):
        head = f"{prefix}layer{stage}."
        units = {key[len(head):].split(".", 1)[0] for key in state if key.startswith(head)}
        if not units:
            break
        layers.append(len(units))
    return tuple(layers), int(stem.shape[0])
