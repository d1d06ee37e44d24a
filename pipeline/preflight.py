"""Start-up checks: everything that can be known wrong before a run writes anything.

``check_run`` refuses, with one ``ConfigError`` line, a run that could only fail every
sample: a chain of enabled stages whose first stage needs something the input format
cannot provide (``unwrap`` + ``complete`` on plain photos), or a stage whose weights
or options are missing (each stage's own ``preflight``). It runs on the driver before
the output storage is opened, so a refused run leaves no run folder behind.
"""

from __future__ import annotations

from omegaconf import DictConfig

from pipeline.config import enabled_stages, stage_settings
from pipeline.inputs import resolve_format
from stages import StageRegistry
from stages.errors import ConfigError


def check_run(config: DictConfig, registry: StageRegistry) -> None:
    """The chain check, then every enabled stage's ``preflight``. Raises ConfigError."""
    check_chain(config, registry)
    for name in enabled_stages(config):
        registry.stage_class(name).preflight(stage_settings(config, name), config)


def check_chain(config: DictConfig, registry: StageRegistry) -> None:
    """Every enabled stage must find what it reads in the input format's keys or an earlier stage's outputs."""
    spec = resolve_format(str(config.input.source), str(config.input.format))
    available = set(spec.provides)
    before: list[str] = []
    for name in enabled_stages(config):
        stage = registry.stage_class(name)
        settings = stage_settings(config, name)
        for requirement in stage.reads(settings):
            options = (requirement,) if isinstance(requirement, str) else tuple(requirement)
            if available.isdisjoint(options):
                raise ConfigError(_missing_message(name, options, spec.name, spec.provides, before))
        available.update(stage.writes(settings))
        before.append(name)


def _missing_message(stage: str, options: tuple[str, ...], input_format: str, provides: tuple[str, ...],
                     before: list[str]) -> str:
    needs = options[0] if len(options) == 1 else f"one of {', '.join(options)}"
    earlier = f"the stages before it ({', '.join(before)}) do not write it" if before else "no stage runs before it"
    return (f"stages.enabled: stage {stage} needs {needs}; input.format={input_format} provides only "
            f"{', '.join(provides)} and {earlier}. Enable the stage that writes it, or use an input format "
            "that has it (input.format=views for ready-made multi-view images)")
