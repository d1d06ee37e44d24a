"""The callable class that runs one stage inside a Ray Data actor pool.

One ``StageRunner`` per actor: it builds the stage and calls ``setup()`` once
(models load once per actor), then turns each batch of packed samples into the
same number of packed samples. Samples that already failed or were filtered pass
through untouched. Isolation rules:
- a SampleError becomes a failed row with the stage's name and the error's code;
- any other exception from a batch makes the runner retry each sample alone, so
  only the culprit fails (code ``stage_exception``, message = exception type + text);
- with ``sample_timeout_s`` set, a sample that runs longer fails with ``timeout``
  and the batch goes on. The stage then runs on copies of the samples in a watchdog
  thread; a thread that overruns is abandoned (it cannot touch the samples that are
  returned, and its late files are never listed in the manifest) and the stage is
  rebuilt, since the stuck call may hold its locks or half-updated state. An actor
  holding ``MAX_ABANDONED_THREADS`` stuck threads exits before its next batch, so
  Ray replaces it with a clean process and resubmits that batch;
- a FatalError (``stages.errors``: a ConfigError or CheckpointError from a stage, a
  StorageError such as disk full or permission denied on the output) is not a
  sample's fault: it fails the task, and so the run, with that one-line message.
  Nothing of the batch is recorded, so no shard is committed with failed rows.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from omegaconf import OmegaConf

from pipeline.config import stage_settings
from pipeline.placement import assigned_device, current_placement
from pipeline.sample_codec import decode_sample, encode_sample
from pipeline.storage import RetryPolicy, Storage, endpoint_options, open_storage
from stages import StageRegistry
from stages.base import Sample, StageContext, StageResult
from stages.errors import FatalError, SampleError

log = logging.getLogger(__name__)

STAGE_EXCEPTION = "stage_exception"
TIMEOUT = "timeout"
DUPLICATE_ID = "duplicate_id"
INPUT_STAGE = "input"  # failed_stage of a sample the input listing failed (it never reached a stage)

# Stuck (timed-out, still running) stage threads an actor tolerates before it exits so
# that Ray restarts it; each one may pin memory, a lock or a CPU core.
MAX_ABANDONED_THREADS = 3


def storage_for(config: Any) -> Storage:
    """The run's output storage as configured (endpoint, retry policy)."""
    storage = open_storage(str(config.output), endpoint_options(config.storage.endpoint_url))
    storage.retry = RetryPolicy(attempts=int(config.storage.retry_attempts),
                                base_delay_s=float(config.storage.retry_base_delay_s))
    return storage


class StageRunner:
    """Ray Data callable class: ``{"state": bytes[]}`` batch in, same shape out."""

    def __init__(self, stage_name: str, config: dict, registry: StageRegistry):
        self.config = OmegaConf.create(config)
        OmegaConf.set_readonly(self.config, True)
        self.stage_name = stage_name
        self.stage_class = registry.stage_class(stage_name)
        self.settings = stage_settings(self.config, stage_name)
        self.abandoned: list[threading.Thread] = []
        self.placement = current_placement()  # recorded in every sample this actor processes
        self.stage = self._build_stage()

    def _build_stage(self):
        context = StageContext(storage=storage_for(self.config), config=self.config, stage_name=self.stage_name,
                               assigned_device=assigned_device(str(self.config.models.device)))
        stage = self.stage_class(self.settings, context)
        stage.setup()
        return stage

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._recycle_if_wedged()
        samples = [decode_sample(bytes(state)) for state in batch["state"]]
        self.process(samples)
        out = dict(batch)
        out["state"] = np.array([encode_sample(s) for s in samples], dtype=object)
        return out

    def process(self, samples: list[Sample]) -> None:
        """Run the stage on the active samples, recording results in place."""
        active = [s for s in samples if s.active]
        if not active:
            return
        for sample in active:
            if self.placement.node_id is not None:
                sample.stage_nodes[self.stage_name] = self.placement.node_id
            sample.stage_gpus[self.stage_name] = list(self.placement.gpu_ids)
        timeout = self.settings.sample_timeout_s
        started = time.perf_counter()
        try:
            if timeout is None:
                results = self.stage.process_batch(active)
            else:
                results = self._guarded(active, timeout * len(active))
            if len(results) != len(active):
                raise RuntimeError(f"{self.stage_name}.process_batch returned {len(results)} results "
                                   f"for {len(active)} samples")
            seconds = (time.perf_counter() - started) / len(active)
            for sample, result in zip(active, results):
                self._record(sample, result, seconds)
        except FatalError:
            raise
        except Exception as error:  # noqa: BLE001 - isolate the culprit below
            if len(active) > 1 or not isinstance(error, _Timeout):
                log.warning("stage %s: batch of %d raised %s; retrying samples one by one",
                            self.stage_name, len(active), type(error).__name__)
            if len(active) == 1 and isinstance(error, _Timeout):
                self._fail(active[0], SampleError(TIMEOUT, f"exceeded {timeout:g} s"), timeout)
                return
            for sample in active:
                self._process_alone(sample)

    def _process_alone(self, sample: Sample) -> None:
        timeout = self.settings.sample_timeout_s
        started = time.perf_counter()
        try:
            results = self.stage.process_batch([sample]) if timeout is None else self._guarded([sample], timeout)
            self._record(sample, results[0], time.perf_counter() - started)
        except _Timeout:
            self._fail(sample, SampleError(TIMEOUT, f"exceeded {timeout:g} s"), time.perf_counter() - started)
        except FatalError:
            raise
        except SampleError as error:
            self._fail(sample, error, time.perf_counter() - started)
        except Exception as error:  # noqa: BLE001 - becomes the sample's failure record
            log.error("stage %s failed on sample %s:\n%s", self.stage_name, sample.id, traceback.format_exc())
            message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
            self._fail(sample, SampleError(STAGE_EXCEPTION, message), time.perf_counter() - started)

    def _guarded(self, samples: list[Sample], seconds: float) -> list[StageResult | SampleError]:
        """``process_batch`` on copies of ``samples`` under a time limit; adopt the files only if in time."""
        copies = [copy.deepcopy(sample) for sample in samples]
        try:
            results = _call_with_timeout(lambda: self.stage.process_batch(copies), seconds)
        except _Timeout as timeout:
            self.abandoned.append(timeout.thread)
            log.warning("stage %s: abandoned a call running over %.1f s; rebuilding the stage", self.stage_name,
                        seconds)
            self.stage = self._build_stage()
            raise
        for sample, done in zip(samples, copies):
            sample.outputs = done.outputs
        return results

    def _recycle_if_wedged(self) -> None:
        """Exit the actor (Ray restarts it and resubmits the batch) once too many threads are stuck."""
        self.abandoned = [thread for thread in self.abandoned if thread.is_alive()]
        if len(self.abandoned) >= MAX_ABANDONED_THREADS and self.settings.max_restarts != 0:
            log.error("stage %s: %d timed-out calls are still running; restarting this worker",
                      self.stage_name, len(self.abandoned))
            sys.stderr.flush()
            os._exit(1)

    def _record(self, sample: Sample, result: StageResult | SampleError, seconds: float) -> None:
        if isinstance(result, SampleError):
            self._fail(sample, result, seconds)
            return
        sample.fields.update(result.fields)
        sample.stage_seconds[self.stage_name] = seconds
        if result.filter_reason:
            sample.filter(result.filter_reason)

    def _fail(self, sample: Sample, error: SampleError, seconds: float) -> None:
        sample.fail(self.stage_name, error.code, error.message)
        sample.stage_seconds[self.stage_name] = seconds


class _Timeout(Exception):
    def __init__(self, thread: threading.Thread):
        super().__init__("time limit exceeded")
        self.thread = thread  # still running


def _call_with_timeout(fn: Callable[[], Any], seconds: float) -> Any:
    """Run ``fn`` in a daemon thread; raise _Timeout if it has not returned in time."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True, name="stage-sample")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise _Timeout(thread)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


PLAN_COLUMNS = ["id", "uri", "index", "shard", "duplicate", "inputs"]


def initial_states(plan: pa.Table) -> pa.Table:
    """Plan rows -> packed fresh samples (the first task of every run, on the workers)."""
    states = [encode_sample(initial_sample(row)) for row in plan.to_pylist()]
    return pa.table({"shard": plan["shard"], "state": pa.array(states, pa.binary())})


def initial_sample(row: dict) -> Sample:
    """A fresh sample from a plan row (``pipeline.inputs.PLAN_SCHEMA``)."""
    sample = Sample(id=row["id"], uri=row["uri"], shard=row["shard"], index=row["index"],
                    inputs=dict(row.get("inputs") or ()))
    if row["duplicate"]:
        sample.fail(INPUT_STAGE, DUPLICATE_ID, f"id {sample.id!r} is listed more than once; "
                                               "only its first occurrence is processed")
    return sample
