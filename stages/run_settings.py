"""Run-level settings that several stages read: one value per run, at the top of the config.

The topology is one: unwrap samples the views into its UV layout, complete merges
and fills in the same layout, and any later stage (rendering, fitting) draws with it.
``topology:`` is a section of the run config, not an option of one stage that others
reach into.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, get_args

TopologyName = Literal["hifi3dpp", "mediapipe468"]
TOPOLOGY_NAMES: tuple[str, ...] = get_args(TopologyName)


@dataclass
class TopologySettings:
    name: TopologyName = "mediapipe468"  # hifi3dpp (FFHQ-UV's HiFi3D++ layout) | mediapipe468 (open, no assets)
    obj: Optional[str] = None  # hifi3dpp: a HiFi3D++ OBJ with UVs (else models.weights_dir/topo_assets)
    cache_dir: Optional[str] = None  # topology cache (UV raster, masks); None = ~/.cache/ffhq-uv-rebuild
