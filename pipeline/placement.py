"""Where stage actors run: pool sizes from the cluster's resources, the device Ray gave an actor, and where it ran.

Three jobs, all about mapping stages onto a cluster's nodes and GPUs:
- ``pool_sizes``: the (min, max) actor count of every enabled stage. ``pool_size: auto``
  fills the cluster that is there at start-up: the GPU stages set to ``auto`` share
  the GPUs left by fixed-size pools, so one stage of ``num_gpus: 1`` gets one actor
  per GPU; the CPU stages set to ``auto`` share the CPUs left after that. With
  ``max_pool_size`` above the minimum, Ray Data's ``ActorPoolStrategy(min_size,
  max_size)`` adds actors while a growing cluster (the autoscaler) has room.
- ``assigned_device``: the torch device of the GPU Ray reserved for this actor
  (``ray.get_gpu_ids()`` within ``CUDA_VISIBLE_DEVICES``), never ``cuda:0`` by habit.
- ``current_placement``: the node id and GPU ids of this actor, recorded per stage in
  every manifest row (``stage_node_id``, ``stage_gpu_ids``) so a bad node or GPU can be traced.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Optional

from stages.base import StageSettings
from stages.errors import ConfigError

AUTO = "auto"


@dataclass(frozen=True)
class PoolSize:
    """Actor count of one stage's pool: fixed when ``min_size == max_size``, else autoscaled by Ray Data."""

    min_size: int
    max_size: Optional[int]  # None: no upper bound (as many as the cluster has room for)

    def describe(self) -> str:
        if self.max_size == self.min_size:
            return f"{self.min_size} actor{'s' if self.min_size != 1 else ''}"
        return f"{self.min_size} to {self.max_size if self.max_size is not None else 'any number of'} actors"

    def strategy(self):
        from ray.data import ActorPoolStrategy

        if self.max_size == self.min_size:
            return ActorPoolStrategy(size=self.min_size)
        return ActorPoolStrategy(min_size=self.min_size, max_size=self.max_size)


def check_pool_settings(name: str, settings: StageSettings) -> None:
    """ConfigError for a pool size that is neither a positive integer nor ``auto``."""
    for key in ("pool_size", "max_pool_size"):
        value = getattr(settings, key)
        if key == "max_pool_size" and value is None:
            continue
        if value != AUTO and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ConfigError(f"stages.{name}.{key} must be a positive integer or 'auto', not {value!r}")
    low, high = settings.pool_size, settings.max_pool_size
    if isinstance(low, int) and isinstance(high, int) and high < low:
        raise ConfigError(f"stages.{name}.max_pool_size ({high}) is below stages.{name}.pool_size ({low})")


def pool_sizes(settings: dict[str, StageSettings], resources: dict[str, float]) -> dict[str, PoolSize]:
    """Stage name -> its pool size, given every enabled stage's settings and the cluster's total resources."""
    fixed = {name: s for name, s in settings.items() if s.pool_size != AUTO}
    gpus_left = resources.get("GPU", 0.0) - sum(s.num_gpus * s.pool_size for s in fixed.values())
    cpus_left = resources.get("CPU", 0.0) - sum(s.num_cpus * s.pool_size for s in fixed.values())
    auto_gpu = {name: s for name, s in settings.items() if s.pool_size == AUTO and s.num_gpus > 0}
    auto_cpu = {name: s for name, s in settings.items() if s.pool_size == AUTO and s.num_gpus <= 0}
    minimum = {name: int(s.pool_size) for name, s in fixed.items()}
    # Each auto GPU stage gets the same number of actors k: k sets of these stages fit the GPUs left.
    per_set = sum(s.num_gpus for s in auto_gpu.values())
    gpu_sets = max(1, math.floor(gpus_left / per_set + 1e-9)) if auto_gpu else 0
    minimum.update({name: gpu_sets for name in auto_gpu})
    cpus_left -= sum(s.num_cpus * gpu_sets for s in auto_gpu.values())
    per_set = sum(s.num_cpus for s in auto_cpu.values())
    cpu_sets = max(1, math.floor(cpus_left / per_set + 1e-9)) if auto_cpu and per_set > 0 else 1
    minimum.update({name: cpu_sets for name in auto_cpu})
    return {name: PoolSize(minimum[name], _maximum(s.max_pool_size, minimum[name])) for name, s in settings.items()}


def _maximum(setting: Any, minimum: int) -> Optional[int]:
    if setting is None:
        return minimum
    return None if setting == AUTO else max(int(setting), minimum)


def assigned_device(configured: str) -> str:
    """The torch device string for this process: the first GPU Ray assigned it, as torch numbers it.

    Ray sets ``CUDA_VISIBLE_DEVICES`` to the actor's GPU ids, so torch sees them
    renumbered from 0; the index is looked up rather than assumed. Outside a Ray
    actor holding a GPU (CPU runs, tests in-process) the configured device is kept.
    """
    if not configured.startswith("cuda"):
        return configured
    gpu_ids = _ray_gpu_ids()
    if not gpu_ids:
        return configured
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    first = str(gpu_ids[0])
    return f"cuda:{visible.index(first) if first in visible else 0}"


@dataclass(frozen=True)
class Placement:
    """Where an actor runs: Ray's node id (hex) and the ids of the GPUs Ray reserved for it."""

    node_id: Optional[str]
    gpu_ids: tuple[int, ...]


def current_placement() -> Placement:
    """This process's node and GPUs; (None, ()) outside Ray (stages run in-process by tests)."""
    import ray

    if not ray.is_initialized():
        return Placement(None, ())
    return Placement(ray.get_runtime_context().get_node_id(), tuple(_ray_gpu_ids()))


def _ray_gpu_ids() -> list[int]:
    import ray

    if not ray.is_initialized():
        return []
    ids = []
    for gpu in ray.get_gpu_ids():
        try:
            ids.append(int(gpu))
        except (TypeError, ValueError):  # a GPU given by UUID: keep what torch can be told
            continue
    return ids
