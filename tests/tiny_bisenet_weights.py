"""Write tiny random BiSeNet checkpoints in the official ``parsing_model/79999_iter.pth`` layout, for tests."""

from __future__ import annotations

from pathlib import Path

BISENET_FILE = "parsing_model/79999_iter.pth"  # FFHQ-UV's name under models.weights_dir

# A small network in the released layout: every module and key present, narrow widths, one block per stage
# except the last (so both the single- and multi-block paths of the key inference are exercised).
TINY = dict(stem=8, widths=(8, 8, 16, 16), blocks=(1, 1, 1, 2), context=8, fuse=16, fuse_hidden=4,
            head_mid=8, aux_mid=4)


def write_tiny_bisenet(weights_dir: Path, seed: int = 0, **overrides):
    """Save a random small BiSeNet's plain state dict as ``<weights_dir>/parsing_model/79999_iter.pth``.

    Returns the network (eval mode). Batch-norm scales and running variances are randomised, like a trained
    checkpoint's; shifts and running means stay zero, because random shifts swamp the image content and the
    random network then labels every pixel alike.
    """
    import torch

    from stages.networks.bisenet import BiSeNet, BiSeNetConfig

    torch.manual_seed(seed)
    net = BiSeNet(BiSeNetConfig(**{**TINY, **overrides})).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.running_var.uniform_(0.5, 1.5)
    path = Path(weights_dir) / BISENET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net
