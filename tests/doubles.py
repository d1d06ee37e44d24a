"""Test-double stages for the pipeline-core tests (swapped in with ``stage_classes.<stage>=`` overrides).

They do real, cheap work on real files (decode the photo, write a thumbnail, compute
a statistic) and can be told to fail, crash, sleep or hang on chosen samples.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

import tests.faults  # noqa: F401 - registers the faulty:// filesystem in every process that loads the doubles
from pipeline.placement import current_placement
from stages.base import Sample, Stage, StageResult, StageSettings
from stages.errors import ConfigError, SampleError


@dataclass
class DoubleSettings(StageSettings):
    fail_ids: list[str] = field(default_factory=list)  # raise SampleError("test_failure")
    crash_ids: list[str] = field(default_factory=list)  # raise RuntimeError (a bug)
    config_error_ids: list[str] = field(default_factory=list)  # raise ConfigError (must stop the run)
    hang_ids: list[str] = field(default_factory=list)  # sleep for an hour
    exit_ids: list[str] = field(default_factory=list)  # kill the actor process (once per marker file)
    # Hang the first time only: the marker file names the Ray node that hangs, so a test can kill that node and
    # see the sample redone elsewhere.
    hang_once_ids: list[str] = field(default_factory=list)
    marker_dir: str = ""  # where exit_ids / hang_once_ids record that they already happened
    sleep_s: float = 0.0  # per sample
    weights_file: str = ""  # under models.weights_dir: read in setup through the node-local weights cache


class _DoubleStage(Stage):
    Settings = DoubleSettings

    def setup(self) -> None:
        """Read the configured weights file the way the real stages do (local_weight_file), once per actor."""
        if self.settings.weights_file:
            from stages.networks import local_weight_file, weight_location

            location = weight_location(self.context.weights_dir, self.settings.weights_file, "weights_file")
            with open(local_weight_file(location), "rb") as handle:
                self.weights = handle.read()

    def _misbehave(self, sample: Sample) -> None:
        settings: DoubleSettings = self.settings
        if settings.sleep_s:
            time.sleep(settings.sleep_s)
        if sample.id in settings.fail_ids:
            raise SampleError("test_failure", f"{self.name} was told to fail {sample.id}")
        if sample.id in settings.crash_ids:
            raise RuntimeError(f"{self.name} crashed on {sample.id}")
        if sample.id in settings.config_error_ids:
            raise ConfigError(f"{self.name} found a configuration mistake at {sample.id}")
        if sample.id in settings.hang_ids:
            time.sleep(3600)
        if sample.id in settings.exit_ids:
            marker = os.path.join(settings.marker_dir, f"{self.name}-{sample.id}.killed")
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
        if sample.id in settings.hang_once_ids:
            marker = os.path.join(settings.marker_dir, f"{self.name}-{sample.id}.hanging")
            if not os.path.exists(marker):
                with open(marker, "w") as handle:
                    handle.write(current_placement().node_id or "")
                time.sleep(3600)


class ThumbnailStage(_DoubleStage):
    """First stage double: decode the source photo, write a 32x32 thumbnail, record its mean."""

    name = "attribute"
    manifest_fields = (pa.field("attribute_mean", pa.float64()), pa.field("attribute_size", pa.list_(pa.int32())))

    def process(self, sample: Sample) -> StageResult:
        self._misbehave(sample)
        image = self.context.read_source_image(sample)
        step_y, step_x = max(1, image.shape[0] // 32), max(1, image.shape[1] // 32)
        thumb = np.ascontiguousarray(image[::step_y, ::step_x][:32, :32])
        self.context.write_image(sample, "aligned", thumb)
        return StageResult(fields={"attribute_mean": float(image.mean()),
                                   "attribute_size": np.array(image.shape[:2], dtype=np.int32)})


class InvertStage(_DoubleStage):
    """Second stage double: read the previous stage's output, write its negative."""

    name = "relight"
    manifest_fields = (pa.field("relight_mean", pa.float64()),)

    def process(self, sample: Sample) -> StageResult:
        self._misbehave(sample)
        image = self.context.read_image(sample.outputs["aligned"].path)
        self.context.write_image(sample, "relit_front", 255 - image)
        return StageResult(fields={"relight_mean": float((255 - image).mean())})


class MeanFilterStage(_DoubleStage):
    """Third stage double: filters samples whose thumbnail is very dark."""

    name = "complete"
    manifest_fields = (pa.field("complete_score", pa.float64()),)

    def process(self, sample: Sample) -> StageResult:
        self._misbehave(sample)
        image = self.context.read_image(sample.outputs["relit_front"].path)
        score = float(image.mean())
        return StageResult(fields={"complete_score": score}, filter_reason="too_bright" if score > 250 else None)


def stage_class_overrides(**classes: str) -> tuple[str, ...]:
    """``stage_classes.<stage>=<module:Class>`` overrides: how a user (and a test) swaps stage implementations."""
    return tuple(f"stage_classes.{name}={target}" for name, target in classes.items())


PLUGINS = stage_class_overrides(attribute="tests.doubles:ThumbnailStage", relight="tests.doubles:InvertStage",
                                complete="tests.doubles:MeanFilterStage")


class NoopStage(Stage):
    """A zero-cost stage for orchestration benchmarks: touches nothing, returns an empty result."""

    name = "noop"

    def process_batch(self, samples: list[Sample]) -> list[StageResult]:
        return [StageResult() for _ in samples]


NOOP_PLUGINS = stage_class_overrides(**dict.fromkeys(("attribute", "relight", "complete"), "tests.doubles:NoopStage"))
