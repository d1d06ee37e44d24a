"""FFHQ-UV's released face latents: file names, reading and writing.

Released layout (README_dataset, ``face-latents`` download), clips of 1,000 samples::

    face-latents/<clip>/<id>/<id>_<view>_latent.pt      clip = 000, 001, ...; view = front | left | right

each file a ``torch.save`` dict ``{"latent": [1, 18, 512] W+ (TF generator space, noise seed 0),
"attribute": [1, 17, 1, 1]}`` (the StyleFlow condition of that view, pipeline.md 2.3). FFHQ-UV's
project folder has the same per-id files without the clip level (``edit/<id>/``); its
``dataset_project/latents.zip`` holds the e4e inversions flat, ``latents/<id>.pt`` = a [1, 18, 512] tensor.

Latent files are untrusted input: read with ``torch.load(weights_only=True)`` (tensors only), and a
bad file is the sample's failure (``SampleError``), never the run's.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.condition import VECTOR_SIZE
from stages.errors import SampleError

CLIP_SIZE = 1000  # samples per released clip
LATENT_SUFFIX = "_latent.pt"
# The input key of the ``latents`` input format: the sample's latent files, at ``Sample.uri`` (a folder of
# per-view files, or one flat ``<id>.pt``). The render stage reads it.
LATENTS = "latents"

LATENT_UNREADABLE = "latent_unreadable"  # not a tensor-only torch file, or not the expected dict / tensor
LATENT_BAD_SHAPE = "latent_bad_shape"  # latent or attribute of the wrong shape for the generator, or not finite


def clip_name(index: int) -> str:
    """The released clip folder of the ``index``-th sample: 0..999 -> ``000``."""
    return f"{index // CLIP_SIZE:03d}"


def view_file_name(sample_id: str, view: str) -> str:
    return f"{sample_id}_{view}{LATENT_SUFFIX}"


@dataclass(frozen=True)
class ViewLatent:
    """One view's W+ (num_ws, w_dim) float32 and StyleFlow condition (17,) float32 (None in a bare tensor)."""

    latent: np.ndarray
    attribute: np.ndarray | None


def _load(data: bytes, source: str) -> Any:
    import torch

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable or non-tensor pickle is this sample's failure
        raise SampleError(LATENT_UNREADABLE, f"{source}: not a tensor-only torch file "
                                             f"({type(error).__name__})") from None


def read_view_latent(data: bytes, source: str) -> ViewLatent:
    """An FFHQ-UV latent file: a ``{latent, attribute}`` dict, or a bare W+ tensor (``dataset_project``)."""
    import torch

    value = _load(data, source)
    if isinstance(value, torch.Tensor):
        latent, attribute = value, None
    elif isinstance(value, dict) and isinstance(value.get("latent"), torch.Tensor):
        latent, attribute = value["latent"], value.get("attribute")
        if attribute is not None and not isinstance(attribute, torch.Tensor):
            raise SampleError(LATENT_UNREADABLE, f"{source}: 'attribute' is not a tensor")
    else:
        raise SampleError(LATENT_UNREADABLE, f"{source}: expected a {{latent, attribute}} dict or a W+ tensor")
    w = latent.detach().float().cpu().numpy()
    if w.ndim == 3 and w.shape[0] == 1:
        w = w[0]
    if w.ndim != 2:
        raise SampleError(LATENT_BAD_SHAPE, f"{source}: latent of shape {tuple(latent.shape)}, expected [1, 18, 512]")
    a = None
    if attribute is not None:
        a = attribute.detach().float().cpu().numpy().reshape(-1)
        if a.size != VECTOR_SIZE:
            raise SampleError(LATENT_BAD_SHAPE, f"{source}: attribute of {a.size} values, expected {VECTOR_SIZE}")
    if not np.isfinite(w).all() or (a is not None and not np.isfinite(a).all()):
        raise SampleError(LATENT_BAD_SHAPE, f"{source}: latent or attribute is not finite")
    return ViewLatent(np.ascontiguousarray(w, dtype=np.float32), a)


def check_shape(view: ViewLatent, num_ws: int, w_dim: int, source: str) -> None:
    """SampleError unless the W+ fits a generator of ``num_ws`` rows of ``w_dim``."""
    if view.latent.shape != (num_ws, w_dim):
        raise SampleError(LATENT_BAD_SHAPE, f"{source}: latent of shape {view.latent.shape}, "
                                            f"the generator needs ({num_ws}, {w_dim})")


def write_view_latent(latent: np.ndarray, attribute: np.ndarray | None) -> bytes:
    """FFHQ-UV's file for one view: ``{"latent": [1, num_ws, w_dim], "attribute": [1, 17, 1, 1]}`` bytes."""
    import torch

    value: dict[str, Any] = {"latent": torch.from_numpy(np.asarray(latent, np.float32).copy())[None]}
    if attribute is not None:
        value["attribute"] = torch.from_numpy(np.asarray(attribute, np.float32).reshape(1, VECTOR_SIZE, 1, 1).copy())
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()
