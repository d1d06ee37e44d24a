"""The stage contract: what every pipeline stage declares and implements.

A stage is a small class (NeMo Curator style): it declares its resources and
manifest columns next to its code, loads its models once per actor in
``setup()``, and turns a batch of samples into one result per sample. The
pipeline (``pipeline/runner.py``) runs it inside a Ray Data actor pool; tests can
also call it in-process.

Data passed between stages:
- small values (attributes, latents, metrics) travel in ``Sample.fields`` and end
  up as manifest columns declared in ``Stage.manifest_fields``;
- heavy bytes (images, UV maps) go straight to storage through
  ``StageContext.write_image`` / ``write_bytes``; the returned ``OutputFile`` is
  recorded in ``Sample.outputs`` under a file key that later stages look up
  (for example ``outputs[view_key("front")].path``).

Each stage declares the file keys and manifest fields it reads (``Stage.inputs``) and
writes (``Stage.outputs``), as constants next to its code; the driver checks the chain
of enabled stages against what the input format provides before anything runs.
Errors are in ``stages.errors``: a ``SampleError`` fails one sample, anything else
that is a ``FatalError`` stops the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Union

import numpy as np
import pyarrow as pa

from pipeline.layout import sample_dir
from stages.errors import ConfigError, SampleError
from stages.imageio import decode_image, encode_png

if TYPE_CHECKING:  # the type only: stages reach storage through StageContext, never build one
    from pipeline.storage import Storage


# The input key every photo input format provides: the sample's source image (``Sample.uri``).
PHOTO = "photo"

# A stage's declared inputs: each entry is a file key / manifest field it needs, or a tuple of keys of
# which any one will do. Per-view keys are templates with ``{view}`` (``stages.views.view_key``).
Requirement = str | tuple[str, ...]


class Status(StrEnum):
    """A sample's state. A StrEnum: equal to its value, so manifests and queries keep plain strings."""

    OK = "ok"  # later stages still process it
    FAILED = "failed"  # a stage (or the input listing, or the commit check) failed it: see error_code
    FILTERED = "filtered"  # a quality threshold dropped it: see filter_reason; its files are kept


def is_input_uri(path: str) -> bool:
    """Whether ``path`` is an input's own URI (absolute or with a protocol), not a run-relative output path."""
    return "://" in path or path.startswith("/")


def configured_weights_dir(config: Any) -> Optional[str]:
    """``models.weights_dir`` as a string, or None when it is unset (null or empty)."""
    value = config.models.weights_dir
    return None if value in (None, "") else str(value)


def bounded(default: Any, low: Optional[float] = None, high: Optional[float] = None) -> Any:
    """A numeric setting's default and its allowed range (inclusive; None = open), checked at config load.

    ``preview_size: int = bounded(512, low=16)``. ``check_ranges`` is the one place that checks them.
    """
    return field(default=default, metadata={"range": (low, high)})


def check_ranges(settings: Any, section: str) -> None:
    """Raise ConfigError naming the first ``bounded`` setting of ``settings`` outside its range."""
    for setting in dataclasses.fields(settings):
        low, high = setting.metadata.get("range", (None, None))
        value = getattr(settings, setting.name)
        if not isinstance(value, (int, float)) or (low is None and high is None):
            continue  # None (unset) or a word such as pool_size=auto: not a number to range-check
        if (low is not None and value < low) or (high is not None and value > high):
            allowed = f"{low:g}..{high:g}" if low is not None and high is not None else (
                f">= {low:g}" if low is not None else f"<= {high:g}")
            key = f"{section}.{setting.name}" if section else setting.name
            raise ConfigError(f"{key}: {value!r} is out of range; allowed: {allowed}")


@dataclass
class StageSettings:
    """Options every stage has. A stage's own settings dataclass subclasses this.

    Defaults here are the stage's declared resources; profiles and ``key=value``
    overrides change them per run (``stages.<name>.batch_size=8``).
    """

    num_cpus: float = bounded(1.0, low=0)
    num_gpus: float = bounded(0.0, low=0)
    # Actors in this stage's pool: a number, or auto (fill the cluster's GPUs for a GPU stage, its CPUs
    # otherwise; pipeline/placement.py). With max_pool_size above it the pool autoscales up to that many
    # (auto = as many as the cluster has room for), so a cluster that grows is used.
    pool_size: Union[int, str] = 1  # checked with max_pool_size by pipeline.placement.check_pool_settings
    max_pool_size: Optional[Union[int, str]] = None  # None = a fixed pool of pool_size actors
    batch_size: int = bounded(1, low=1)  # samples per process_batch call
    max_restarts: int = bounded(-1, low=-1)  # Ray restarts of a crashed actor (-1 = unlimited, Ray Data's default)
    sample_timeout_s: Optional[float] = bounded(None, low=0)  # per-sample time limit; None = no limit


@dataclass(frozen=True)
class OutputFile:
    """A file written for a sample. ``path`` is relative to the run root."""

    path: str
    sha256: str
    bytes: int

    @staticmethod
    def for_data(path: str, data: bytes) -> OutputFile:
        return OutputFile(path=path, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


@dataclass
class Sample:
    """One input sample as it moves through the stages."""

    id: str
    uri: str  # the source image URI as listed in the input
    shard: int
    index: int  # position of the sample in the sorted input listing
    fields: dict[str, Any] = field(default_factory=dict)  # manifest values so far
    outputs: dict[str, OutputFile] = field(default_factory=dict)  # files written so far
    status: Status = Status.OK
    failed_stage: Optional[str] = None
    error_code: Optional[str] = None
    error_message: Optional[str] = None
    filter_reason: Optional[str] = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_nodes: dict[str, str] = field(default_factory=dict)  # stage -> Ray node id (hex) that ran it
    stage_gpus: dict[str, list[int]] = field(default_factory=dict)  # stage -> ids of the GPUs Ray gave it
    # Files the input format provides besides ``uri`` (file key -> URI), e.g. the ``views`` format's
    # ``view_front``; stages read them like outputs of an earlier stage (``StageContext.read_image`` takes either).
    inputs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = Status(self.status)  # decoded samples and manifest rows carry the plain string

    @property
    def active(self) -> bool:
        """Whether later stages should still process this sample."""
        return self.status == Status.OK

    def fail(self, stage: str, code: str, message: str) -> None:
        """Mark the sample failed by ``stage`` (a stage name, ``input`` or ``commit``) with an error code."""
        self.status = Status.FAILED
        self.failed_stage = stage
        self.error_code = code
        self.error_message = message
        self.filter_reason = None

    def filter(self, reason: str) -> None:
        """Mark the sample filtered (a quality decision): later stages skip it, its files are kept."""
        self.status = Status.FILTERED
        self.filter_reason = reason


@dataclass
class StageResult:
    """What a stage returns for one sample that it processed without error.

    ``fields`` are merged into the sample's manifest values. Set ``filter_reason``
    to mark the sample ``filtered`` (a quality decision, not an error): later
    stages skip it, its outputs and fields are kept.
    """

    fields: dict[str, Any] = field(default_factory=dict)
    filter_reason: Optional[str] = None


@dataclass
class StageContext:
    """What a stage instance can reach: run-level config and the output storage."""

    storage: Storage
    config: Any  # the resolved run config (omegaconf DictConfig, read-only)
    stage_name: str
    assigned_device: Optional[str] = None  # the GPU Ray reserved for this actor ("cuda:1"); None = as configured

    @property
    def device(self) -> str:
        return self.assigned_device or str(self.config.models.device)

    @property
    def weights_dir(self) -> Optional[str]:
        return configured_weights_dir(self.config)

    def sample_prefix(self, sample: Sample) -> str:
        """Folder (relative to the run root) that holds this sample's files."""
        return sample_dir(sample.shard, sample.id)

    def write_bytes(self, sample: Sample, name: str, filename: str, data: bytes) -> OutputFile:
        """Write ``data`` as ``<sample folder>/<filename>`` and record it as output ``name``."""
        path = f"{self.sample_prefix(sample)}/{filename}"
        self.storage.write_bytes(path, data)
        record = OutputFile.for_data(path, data)
        sample.outputs[name] = record
        return record

    def write_image(self, sample: Sample, name: str, image: np.ndarray, filename: Optional[str] = None) -> OutputFile:
        """Write an (H, W, 3) or (H, W) uint8 image as PNG and record it as output ``name``."""
        return self.write_bytes(sample, name, filename or f"{name}.png", encode_png(image))

    def read_bytes(self, path: str) -> bytes:
        """Read a file by its run-relative path (as stored in ``OutputFile.path``), or an input's URI."""
        if is_input_uri(path):
            return self.storage.read_source(path)
        return self.storage.read_bytes(path)

    def read_image(self, path: str) -> np.ndarray:
        """Read a PNG written by an earlier stage (or an input image) as (H, W, 3) uint8 RGB."""
        if is_input_uri(path):  # an input is checked like a source photo (size, corruption)
            return decode_image(self.storage.read_source(path), source=path)
        return decode_image(self.read_bytes(path), source=path, min_side=1)

    def read_source_image(self, sample: Sample) -> np.ndarray:
        """Read and validate the sample's input photo: (H, W, 3) uint8 RGB, EXIF-upright.

        Raises SampleError with a specific code for unreadable or unusable files.
        """
        return decode_image(self.storage.read_source(sample.uri), source=sample.uri)


class Stage:
    """Base class of the six stages.

    Subclasses set ``name``, ``Settings``, ``manifest_fields``, ``inputs`` and ``outputs``,
    implement ``setup`` (load models once per actor) and ``process`` or ``process_batch``.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[StageSettings]] = StageSettings
    # Manifest columns this stage fills; null for samples the stage did not process.
    manifest_fields: ClassVar[tuple[pa.Field, ...]] = ()
    # File keys and manifest fields read from the input or earlier stages (see ``Requirement``), and the
    # ones this stage writes that later stages read. The driver checks the enabled chain with them.
    inputs: ClassVar[tuple[Requirement, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def reads(cls, settings: StageSettings) -> tuple[Requirement, ...]:
        """``inputs`` under these settings (a stage whose inputs depend on a setting overrides this)."""
        return cls.inputs

    @classmethod
    def writes(cls, settings: StageSettings) -> tuple[str, ...]:
        """``outputs`` under these settings."""
        return cls.outputs

    def __init__(self, settings: StageSettings, context: StageContext):
        self.settings = settings
        self.context = context

    @classmethod
    def preflight(cls, settings: StageSettings, config: Any) -> None:
        """Check on the driver, before any Ray work, that the stage can run.

        Raise ConfigError naming the missing weights file and where the README
        documents it. Must be cheap: no model loading.
        """

    def setup(self) -> None:
        """Load models. Called once per actor before the first batch."""

    def process(self, sample: Sample) -> StageResult:
        """Process one sample. Raise SampleError for an expected failure."""
        raise NotImplementedError

    def process_batch(self, samples: list[Sample]) -> list[StageResult | SampleError]:
        """Process a batch (all samples active). Default: ``process`` per sample.

        Batched stages override this. Return one entry per input sample, in order;
        an entry may be a SampleError for a sample that failed. If this method
        raises, the runner retries each sample alone so that only the culprit fails.
        """
        results: list[StageResult | SampleError] = []
        for sample in samples:
            try:
                results.append(self.process(sample))
            except SampleError as error:
                results.append(error)
        return results

