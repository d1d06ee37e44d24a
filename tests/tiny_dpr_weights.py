"""Write tiny random DPR checkpoints in the official ``trained_model_03.t7`` layout (aliased keys), for tests."""

from __future__ import annotations

from pathlib import Path

from stages.networks import DPR_FILE  # noqa: F401 - FFHQ-UV's name under models.weights_dir, for the tests


def official_format(net) -> dict:
    """A HourglassNet state dict laid out like DPR's file: inner blocks also under ``HG0..HG2`` and ``light``."""
    state = dict(net.state_dict())
    for key, value in list(state.items()):
        if key.startswith("HG3.middle."):
            rest, depth = key[len("HG3."):], 0
            while rest.startswith("middle."):
                rest, depth = rest[len("middle."):], depth + 1
                state[("light." if depth == 4 else f"HG{3 - depth}.") + rest] = value.clone()
    return state


def write_tiny_dpr(weights_dir: Path, base_filter: int = 4, nc_light: int = 5, hidden: int = 8, seed: int = 0):
    """Save a random small HourglassNet as ``<weights_dir>/dpr_model/trained_model_03.t7``; returns the network."""
    import torch

    from stages.networks.dpr import DPRConfig, HourglassNet

    torch.manual_seed(seed)
    net = HourglassNet(DPRConfig(base_filter=base_filter, nc_light=nc_light, nc_light_hidden=hidden)).eval()
    path = Path(weights_dir) / DPR_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(official_format(net), path)
    return net
