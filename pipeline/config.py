"""The run configuration: a typed omegaconf schema, profiles and overrides.

Resolution order (later wins): the schema defaults below and each stage's own
``Settings`` dataclass -> the profile ``configs/<profile>.yaml`` -> user config
files -> ``key=value`` overrides from the command line. An unknown key anywhere is
an error (typos never pass silently), and so is a wrong choice (every choice-valued
setting is a ``Literal``, which omegaconf checks) or a value outside a ``bounded``
setting's range: each is one ``ConfigError`` line naming the key, the value and what
is allowed, before anything is written. The resolved config is saved with the run,
with anything that looks like a secret redacted.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from pipeline.inputs import BUILTIN_SAMPLES, InputFormat
from pipeline.placement import check_pool_settings
from stages import STAGES, StageRegistry
from stages.base import StageSettings, bounded, check_ranges
from stages.errors import ConfigError
from stages.run_settings import TopologySettings

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PROFILES = ("photo", "ffhq-uv", "from-latents", "tiny", "fit")
DEFAULT_PROFILE = "photo"



@dataclass
class InputConfig:
    # A folder, glob or fsspec URL of images; a .csv/.parquet list file with id,uri;
    # FFHQ's own folder layout; or builtin:samples (faces shipped with packages).
    source: str = BUILTIN_SAMPLES
    format: InputFormat = "auto"  # auto | folder | list | ffhq | views | latents (pipeline/inputs.py)
    extensions: list[str] = field(default_factory=lambda: [".png", ".jpg", ".jpeg", ".webp", ".bmp",
                                                           ".tif", ".tiff", ".gif"])
    limit: Optional[int] = None  # take only the first N sorted samples


@dataclass
class RayConfig:
    address: Optional[str] = None  # None = start a local Ray; "auto" or ray://host:10001 to join
    num_cpus: Optional[int] = None  # local Ray only
    include_dashboard: bool = False  # local Ray only; always bound to 127.0.0.1
    object_store_memory_mb: Optional[int] = None
    # Stream worker logs to the terminal (--debug sets it). Per-sample errors are in the
    # manifest either way, and worker logs stay in Ray's session folder.
    log_to_driver: bool = False
    # On a cluster whose last GPU node went away (preemption): seconds to wait for the autoscaler
    # to bring one back before the run stops (resumable). Only when GPU stages are enabled.
    gpu_wait_s: float = 600.0


@dataclass
class ModelsConfig:
    weights_dir: Optional[str] = None  # folder (or fsspec URL) with FFHQ-UV's checkpoint file names
    device: Literal["cpu", "cuda"] = "cpu"
    fp16: bool = False  # half precision on CUDA
    # Node-local folder for remote weights (weights_dir on s3://): one copy per node, shared by its actors.
    # None = $TMPDIR/ffhq-uv-weights on each node (stages/networks/weights_cache.py).
    weights_cache_dir: Optional[str] = None


@dataclass
class StorageConfig:
    endpoint_url: Optional[str] = None  # S3-compatible endpoint (MinIO, moto); None = AWS
    retry_attempts: int = 6
    retry_base_delay_s: float = 0.2
    # Local input/output paths on a multi-node cluster are refused unless they are on a mount that every
    # node shares (NFS, Lustre, EFS): set true to say so; the run then checks it on every node.
    shared_filesystem: bool = False


def _stages_schema(registry: StageRegistry) -> type:
    """The ``stages`` section: the enabled list plus each registered stage's own settings."""
    fields_: list[tuple[str, Any, Any]] = [
        ("enabled", list[str], field(default_factory=lambda: list(registry.names))),
    ]
    for name in registry.names:
        settings_cls = registry.stage_class(name).Settings
        fields_.append((name, settings_cls, field(default_factory=settings_cls)))
    return dataclasses.make_dataclass("StagesConfig", fields_)


def run_schema(registry: StageRegistry = STAGES) -> type:
    """The full typed run schema for the stages of ``registry``."""
    stages_schema = _stages_schema(registry)
    return dataclasses.make_dataclass("RunConfig", [
        ("name", str, field(default="photo-demo")),
        ("profile", str, field(default=DEFAULT_PROFILE)),
        # Stage implementations swapped in for this run: name -> "module:Class" (``stages.StageRegistry``).
        ("stage_classes", dict[str, str], field(default_factory=dict)),
        ("output", str, field(default="runs/${name}")),  # local folder or fsspec URL
        ("shard_size", int, bounded(100, low=1)),
        ("topology", TopologySettings, field(default_factory=TopologySettings)),
        ("input", InputConfig, field(default_factory=InputConfig)),
        ("models", ModelsConfig, field(default_factory=ModelsConfig)),
        ("ray", RayConfig, field(default_factory=RayConfig)),
        ("storage", StorageConfig, field(default_factory=StorageConfig)),
        ("stages", stages_schema, field(default_factory=stages_schema)),
    ])


def load_config(profile: str = DEFAULT_PROFILE, files: tuple[str, ...] = (),
                overrides: tuple[str, ...] = ()) -> DictConfig:
    """Resolve the run config: schema <- profile <- files <- ``key=value`` overrides."""
    profile_file = CONFIG_DIR / f"{profile}.yaml"
    if not profile_file.exists():
        raise ConfigError(f"unknown profile {profile!r}; profiles are {', '.join(PROFILES)} (configs/)")
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not key=value")
    layers = [OmegaConf.load(profile_file), *(OmegaConf.load(_existing(f)) for f in files),
              OmegaConf.from_dotlist(list(overrides))]
    try:
        # The schema depends on which classes implement the stages (their Settings), which the layers may change.
        schema = OmegaConf.structured(run_schema(_registry_of_layers(layers)))
        config = OmegaConf.merge(schema, *layers)
        config.profile = profile
        OmegaConf.resolve(config)
    except ConfigKeyError as error:
        raise ConfigError(f"unknown config key: {_key_of(error)} (see configs/ and README 'Configuration')") from None
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        raise ConfigError(f"{key}: {_first_line(error)}" if key else f"invalid config value: {_first_line(error)}") \
            from None
    validate(config)
    OmegaConf.set_readonly(config, True)
    return config


def _registry_of_layers(layers: list[DictConfig]) -> StageRegistry:
    """``STAGES`` with the ``stage_classes`` the config layers name swapped in."""
    classes: dict[str, str] = {}
    for layer in layers:
        classes.update(OmegaConf.to_container(layer, resolve=False).get("stage_classes") or {})
    try:
        return STAGES.replaced(classes)
    except ValueError as error:
        raise ConfigError(f"stage_classes: {error}") from None


def registry_for(config: DictConfig) -> StageRegistry:
    """The stage registry of a resolved run config: ``STAGES`` with its ``stage_classes`` swapped in."""
    return STAGES.replaced(dict(config.stage_classes))


def validate(config: DictConfig) -> None:
    """Checks the schema types cannot express."""
    names = registry_for(config).names
    unknown = [s for s in config.stages.enabled if s not in names]
    if unknown:
        raise ConfigError(f"stages.enabled: unknown stage(s) {unknown}; stages are {', '.join(names)}")
    for name in enabled_stages(config):
        check_pool_settings(name, stage_settings(config, name))
    _check_all_ranges(OmegaConf.to_object(config), "")


def _check_all_ranges(settings: Any, prefix: str) -> None:
    """``check_ranges`` on every settings dataclass of the config (the stages' and the run's own)."""
    check_ranges(settings, prefix.rstrip("."))
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        if dataclasses.is_dataclass(value):
            _check_all_ranges(value, f"{prefix}{item.name}.")


def enabled_stages(config: DictConfig) -> list[str]:
    """The enabled stages in the pipeline order."""
    return registry_for(config).ordered(list(config.stages.enabled))


def stage_settings(config: DictConfig, name: str) -> StageSettings:
    """The typed settings object of one stage."""
    settings_cls = registry_for(config).stage_class(name).Settings
    values = OmegaConf.to_container(config.stages[name], resolve=True)
    return settings_cls(**values)


def as_overrides(container: Any, prefix: str = "") -> list[str]:
    """A (nested) plain config container as ``key=value`` dotlist overrides, one per leaf.

    Values are written as JSON, which is YAML flow syntax, so omegaconf reads back the
    same types (``${...}`` interpolations stay interpolations).
    """
    if isinstance(container, dict) and container:
        return [item for key, value in container.items()
                for item in as_overrides(value, f"{prefix}.{key}" if prefix else str(key))]
    return [f"{prefix}={json.dumps(container)}"]


_SECRET_KEY = re.compile(r"(secret|password|token|credential|access_key|private)", re.IGNORECASE)


def redacted_yaml(config: DictConfig) -> str:
    """The config as YAML with secret-looking values replaced."""
    container = OmegaConf.to_container(config, resolve=True)
    return OmegaConf.to_yaml(OmegaConf.create(_redact(container)))


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<redacted>" if _SECRET_KEY.search(str(k)) and v not in (None, "") else _redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


_URL_CREDENTIALS = re.compile(r"(\w+://)([^/@:\s]+):([^/@\s]+)@")


def redact_text(text: str) -> str:
    """Remove user:password@ from URLs."""
    return _URL_CREDENTIALS.sub(r"\1<redacted>@", text)


def _existing(path: str) -> str:
    if not Path(path).exists():
        raise ConfigError(f"config file {path} does not exist")
    return path


def _key_of(error: ConfigKeyError) -> str:
    key = getattr(error, "full_key", None) or ""
    return key or _first_line(error)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
