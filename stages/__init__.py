"""The FFHQ-UV stages, their networks and geometry, and the registry that names them.

Stage modules are imported lazily by name: importing them must stay cheap
(numpy / pyarrow at module level; torch, OpenCV, mediapipe and deepface only
inside ``setup`` or in the network modules that ``setup`` imports).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


class StageRegistry:
    """Which class implements each stage, in pipeline order: stage name -> ``"module:Class"``.

    A run enables any subset of the registered stages; they always execute in the
    registry's order. The registry is a plain value handed to whatever needs it (the
    config schema, the driver, each Ray worker, the manifest schema), never a global
    that is rewritten: ``STAGES.replaced({...})`` is a new registry with some stages
    swapped for other implementations (the run config's ``stage_classes`` does that
    for users and for the tests' test-double stages). New stages register by adding a
    line to ``STAGES`` below, at their place in the order.
    """

    def __init__(self, classes: Mapping[str, str]):
        for name, target in classes.items():
            if ":" not in target:
                raise ValueError(f"stage {name!r}: {target!r} is not module:Class")
        self.classes: dict[str, str] = dict(classes)

    @property
    def names(self) -> tuple[str, ...]:
        """Every registered stage, in pipeline order."""
        return tuple(self.classes)

    def stage_class(self, name: str) -> Any:
        """Import and return the Stage subclass registered under ``name``."""
        if name not in self.classes:
            raise KeyError(f"unknown stage {name!r}; stages are {', '.join(self.names)}")
        module_name, class_name = self.classes[name].split(":")
        return getattr(importlib.import_module(module_name), class_name)

    def ordered(self, names: list[str] | tuple[str, ...]) -> list[str]:
        """``names`` in pipeline order (names that are not registered are dropped)."""
        wanted = set(names)
        return [name for name in self.classes if name in wanted]

    def replaced(self, overrides: Mapping[str, str]) -> StageRegistry:
        """A registry with ``overrides`` (name -> "module:Class") swapped in; new names go last in the order."""
        return StageRegistry({**self.classes, **overrides}) if overrides else self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StageRegistry) and other.classes == self.classes

    def __hash__(self) -> int:
        return hash(tuple(self.classes.items()))

    def __repr__(self) -> str:
        return f"StageRegistry({self.classes!r})"


# FFHQ-UV's pipeline (pipeline.md section 1), in its fixed order. ``render`` stands in for ``inversion`` (and,
# with FFHQ-UV's released view latents, for ``edit``): it draws the images that latent files stand for (profile
# ``from-latents``). ``fit`` is FFHQ-UV's other route to a UV map (RGB fitting, pipeline.md section 7): it reads
# the input photo itself and is enabled on its own (``ffhq-uv fit``, configs/fit.yaml).
STAGES = StageRegistry({
    "inversion": "stages.inversion:InversionStage",
    "render": "stages.render:RenderStage",
    "attribute": "stages.attribute:AttributeStage",
    "edit": "stages.edit:EditStage",
    "relight": "stages.relight:RelightStage",
    "unwrap": "stages.unwrap:UnwrapStage",
    "complete": "stages.complete:CompleteStage",
    "fit": "stages.fit:FitStage",
})
