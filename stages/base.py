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
  recorded in ``Sample.outputs`` under a name that later stages look up
  (for example ``outputs["view_front"].path``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Union

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from pipeline.storage import Storage


class SampleError(Exception):
    """An expected, per-sample failure: becomes a failed manifest row, never a failed run.

    ``code`` is a stable snake_case error code (documented in README's error table),
    ``message`` a one-line human explanation.
    """

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConfigError(Exception):
    """A problem the user must fix before the run can start (missing weights, bad option)."""


@dataclass
class StageSettings:
    """Options every stage has. A stage's own settings dataclass subclasses this.

    Defaults here are the stage's declared resources; profiles and ``key=value``
    overrides change them per run (``stages.<name>.batch_size=8``).
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    # Actors in this stage's pool: a number, or auto (fill the cluster's GPUs for a GPU stage, its CPUs
    # otherwise; pipeline/placement.py). With max_pool_size above it the pool autoscales up to that many
    # (auto = as many as the cluster has room for), so a cluster that grows is used.
    pool_size: Union[int, str] = 1
    max_pool_size: Optional[Union[int, str]] = None  # None = a fixed pool of pool_size actors
    batch_size: int = 1  # samples per process_batch call
    max_restarts: int = -1  # Ray restarts of a crashed actor (-1 = unlimited, Ray Data's default)
    sample_timeout_s: Optional[float] = None  # per-sample time limit; None = no limit


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
    status: str = "ok"  # ok | failed | filtered
    failed_stage: Optional[str] = None
    error_code: Optional[str] = None
    error_message: Optional[str] = None
    filter_reason: Optional[str] = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_nodes: dict[str, str] = field(default_factory=dict)  # stage -> Ray node id (hex) that ran it
    stage_gpus: dict[str, list[int]] = field(default_factory=dict)  # stage -> ids of the GPUs Ray gave it

    @property
    def active(self) -> bool:
        """Whether later stages should still process this sample."""
        return self.status == "ok"


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
        value = self.config.models.weights_dir
        return None if value in (None, "") else str(value)

    def sample_prefix(self, sample: Sample) -> str:
        """Folder (relative to the run root) that holds this sample's files."""
        from pipeline.layout import sample_dir

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
        from stages.imageio import encode_png

        return self.write_bytes(sample, name, filename or f"{name}.png", encode_png(image))

    def read_bytes(self, path: str) -> bytes:
        """Read a file by its run-relative path (as stored in ``OutputFile.path``)."""
        return self.storage.read_bytes(path)

    def read_image(self, path: str) -> np.ndarray:
        """Read a run-relative PNG written by an earlier stage as (H, W, 3) uint8 RGB."""
        from stages.imageio import decode_image

        return decode_image(self.read_bytes(path), source=path, min_side=1)

    def read_source_image(self, sample: Sample) -> np.ndarray:
        """Read and validate the sample's input photo: (H, W, 3) uint8 RGB, EXIF-upright.

        Raises SampleError with a specific code for unreadable or unusable files.
        """
        from stages.imageio import decode_image

        return decode_image(self.storage.read_source(sample.uri), source=sample.uri)


class Stage:
    """Base class of the six stages.

    Subclasses set ``name``, ``Settings`` and ``manifest_fields``, implement
    ``setup`` (load models once per actor) and ``process`` or ``process_batch``.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[StageSettings]] = StageSettings
    # Manifest columns this stage fills; null for samples the stage did not process.
    manifest_fields: ClassVar[tuple[pa.Field, ...]] = ()

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

