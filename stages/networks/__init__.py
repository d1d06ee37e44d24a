"""Networks of the GAN stages and their checkpoint loaders (StyleGAN2, e4e, StyleFlow).

The network modules import torch: stage modules import them inside ``setup()``. This
package module itself stays cheap: it only locates weight files.
"""

from __future__ import annotations

import os
from typing import Optional

from stages.errors import ConfigError

# FFHQ-UV's checkpoints/ layout for the DPR network (attribute and relight stages).
DPR_FILE = "dpr_model/trained_model_03.t7"


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def weight_exists(location: str) -> bool:
    """Whether a weights file exists, on local disk or behind an fsspec URL."""
    location = location[len("file://"):] if location.startswith("file://") else location
    if not _is_url(location):
        return os.path.isfile(location)
    import fsspec

    fs, path = fsspec.core.url_to_fs(location)
    return fs.exists(path)


def under_weights_dir(weights_dir: str, relative: str) -> str:
    """``relative`` under ``weights_dir`` (a local folder or an fsspec URL), as a path or URL string."""
    return f"{str(weights_dir).rstrip('/')}/{relative}"


def weight_location(weights_dir: Optional[str], relative: str, option: str) -> str:
    """Path or URL of a weights file under ``models.weights_dir``; ConfigError naming it if absent.

    ``relative`` may also be an absolute path or URL (then ``weights_dir`` is not needed).
    ``option`` is the config key that names the file, quoted in the error.
    """
    if os.path.isabs(relative) or _is_url(relative):
        location = relative
    elif not weights_dir:
        raise ConfigError(f"{option}: needs models.weights_dir holding {relative}; see README section 'Weights'")
    else:
        location = under_weights_dir(weights_dir, relative)
    location = location[len("file://"):] if location.startswith("file://") else location
    if not weight_exists(location):
        raise ConfigError(f"missing weights file {location} ({option}); see README section 'Weights'")
    return location


def dpr_weights(weights_dir: Optional[str], option: str) -> str:
    """Location of DPR's weights for a stage whose ``option`` chose DPR; ConfigError naming the way out."""
    try:
        return weight_location(weights_dir, DPR_FILE, option)
    except ConfigError as error:
        raise ConfigError(f"{error}, or use the analytic method instead of {option}") from None


def local_weight_file(location: str) -> str:
    """A local file for a weights path or URL: remote files are copied once per node (``weights_cache``)."""
    if not _is_url(location):
        return location
    from stages.networks.weights_cache import cached_copy

    return cached_copy(location)
