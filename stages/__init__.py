"""The FFHQ-UV stages, their networks and geometry.

Stage modules are imported lazily by name: importing them must stay cheap
(numpy / pyarrow at module level; torch, OpenCV, mediapipe and deepface only
inside ``setup`` or in the network modules that ``setup`` imports).
"""

from __future__ import annotations

import importlib
import os

# The fixed order of FFHQ-UV's pipeline (pipeline.md section 1). A run enables any
# subset of these; they always execute in this order. ``render`` stands in for
# ``inversion`` (and, with FFHQ-UV's released view latents, for ``edit``): it draws the
# images that latent files stand for (profile ``from-latents``). ``fit`` is FFHQ-UV's other
# route to a UV map (RGB fitting, pipeline.md section 7): it reads the input photo itself
# and is enabled on its own (``ffhq-uv fit``, configs/fit.yaml).
STAGE_ORDER: tuple[str, ...] = ("inversion", "render", "attribute", "edit", "relight", "unwrap", "complete", "fit")

# stage name -> "module:Class". Stages register here as they land.
STAGE_CLASSES: dict[str, str] = {
    "inversion": "stages.inversion:InversionStage",
    "render": "stages.render:RenderStage",
    "attribute": "stages.attribute:AttributeStage",
    "edit": "stages.edit:EditStage",
    "relight": "stages.relight:RelightStage",
    "unwrap": "stages.unwrap:UnwrapStage",
    "complete": "stages.complete:CompleteStage",
    "fit": "stages.fit:FitStage",
}

# Plugin hook: FFHQ_UV_STAGE_PLUGINS="attribute=mypkg.stages:MyAttributeStage;unwrap=..."
# replaces or adds stage implementations (the driver forwards it to Ray workers).
# The test suite uses it for its test-double stages.
PLUGINS_ENV = "FFHQ_UV_STAGE_PLUGINS"


def _apply_plugins() -> None:
    for item in filter(None, os.environ.get(PLUGINS_ENV, "").split(";")):
        name, _, target = item.partition("=")
        if name.strip() not in STAGE_ORDER or ":" not in target:
            raise ValueError(f"{PLUGINS_ENV}: {item!r} is not <stage>=<module>:<Class>")
        STAGE_CLASSES[name.strip()] = target.strip()


def stage_class(name: str):
    """Import and return the Stage subclass registered under ``name``."""
    if name not in STAGE_ORDER:
        raise KeyError(f"unknown stage {name!r}; stages are {', '.join(STAGE_ORDER)}")
    if name not in STAGE_CLASSES:
        raise KeyError(f"stage {name!r} is not implemented in this version")
    module_name, class_name = STAGE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def available_stages() -> list[str]:
    """Stages that have an implementation, in pipeline order."""
    return [name for name in STAGE_ORDER if name in STAGE_CLASSES]


_apply_plugins()
