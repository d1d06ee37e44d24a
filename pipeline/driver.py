"""The driver: plan the run, stream samples through the stage actor pools, commit shards.

One code path for a laptop and a cluster: ``ray.init()`` locally, or join an
existing cluster with ``ray.address``. The driver only ever sees small packed
rows; workers write images and UV maps straight to the output storage.

Commit protocol per shard (img2dataset / datatrove style, made atomic on object
stores): the manifest is written as ``manifest-<revision>.parquet``, then
``stats.json``, which names that manifest, is written **last**. A shard is done
iff its stats.json exists; readers take the manifest that stats.json names, so a
crash at any point leaves either the old committed shard or an uncommitted one,
never a mix. ``retry-failed`` writes revision n+1 and then swaps stats.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

import pipeline
from pipeline import layout
from pipeline.cluster_checks import check_listed_inputs, check_paths, gpu_watch, watched
from pipeline.config import as_overrides, enabled_stages, load_config, redact_text, redacted_yaml, stage_settings
from pipeline.inputs import Plan, list_inputs, make_plan
from pipeline.manifest import MANIFEST_VERSION, committed_shards, manifest_dataset, samples_to_table, table_to_bytes
from pipeline.placement import PoolSize, pool_sizes
from pipeline.preflight import check_run
from pipeline.progress import ProgressLine
from pipeline.runner import DUPLICATE_ID, PLAN_COLUMNS, StageRunner, initial_states, storage_for
from pipeline.sample_codec import decode_sample
from pipeline.storage import Storage, endpoint_options
from stages import STAGES, StageRegistry
from stages.base import Sample, Status
from stages.errors import FATAL_ERRORS, ConfigError, FatalError
from stages.networks.weights_cache import CACHE_ENV

log = logging.getLogger("ffhq_uv")

HEARTBEAT_S = 5.0  # how often the driver refreshes progress.json while running
OUTPUT_MISSING = "output_missing"  # error code: a stage recorded a file that is not in storage at commit


@dataclass
class RunSummary:
    output: str
    shards_total: int = 0
    shards_skipped: int = 0  # already committed before this invocation
    shards_committed: int = 0  # committed by this invocation
    samples_processed: int = 0  # samples run through the stages by this invocation
    status_counts: dict[str, int] = field(default_factory=dict)  # whole run, after this invocation
    error_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{pipeline.__version__}+{commit}" if commit else pipeline.__version__


def config_container(config: DictConfig) -> dict:
    return OmegaConf.to_container(config, resolve=True)


# -- planning ------------------------------------------------------------------------------

def plan_run(config: DictConfig, storage: Storage, restart: bool) -> Plan:
    """List the inputs, check them against an existing run, and save run metadata."""
    options = endpoint_options(config.storage.endpoint_url)
    pairs = list_inputs(str(config.input.source), str(config.input.format), list(config.input.extensions),
                        storage, options)
    plan = make_plan(pairs, int(config.shard_size), config.input.limit)
    check_listed_inputs(config, plan.table["uri"].to_pylist())  # before anything is written
    if storage.exists(layout.RUN_JSON):
        previous = json.loads(storage.read_bytes(layout.RUN_JSON))
        changed = []
        if previous["shard_size"] != plan.shard_size:
            changed.append(f"shard_size {previous['shard_size']} -> {plan.shard_size}")
        if previous["input_fingerprint"] != plan.fingerprint:
            changed.append(f"input set ({previous['num_samples']} -> {plan.num_samples} samples or different ids)")
        if changed and not restart:
            raise ConfigError(f"{storage.root_url} holds a run with a different {'; '.join(changed)}; resuming "
                              "would re-shard it. Use the same input and shard_size, another output, "
                              "or --restart to delete it and start over")
    if restart:
        for relpath in (layout.SHARDS, layout.PLAN, layout.RUN_JSON, layout.PROGRESS_JSON):
            storage.delete(relpath, recursive=True)
    storage.write_bytes(layout.PLAN, table_to_bytes(plan.table))
    storage.write_bytes(layout.CONFIG_YAML, redacted_yaml(config).encode())
    run_meta = {
        "manifest_version": MANIFEST_VERSION, "code_version": code_version(),
        "input_fingerprint": plan.fingerprint, "shard_size": plan.shard_size,
        "num_samples": plan.num_samples, "num_shards": plan.num_shards,
        "profile": str(config.profile), "stages": enabled_stages(config),
        "config_sha256": hashlib.sha256(redacted_yaml(config).encode()).hexdigest(),
        "updated_at": _now(),
    }
    storage.write_bytes(layout.RUN_JSON, json.dumps(run_meta, indent=2).encode())
    return plan


# -- Ray execution -----------------------------------------------------------------------

def init_ray(config: DictConfig) -> None:
    """Start a local Ray bound to 127.0.0.1, or join the configured cluster."""
    import ray

    if ray.is_initialized():
        return
    env_vars = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    if not config.ray.log_to_driver:  # mediapipe / TF Lite chatter stays in the worker log files
        env_vars.update(GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="3")
    if config.models.weights_cache_dir:
        env_vars[CACHE_ENV] = str(config.models.weights_cache_dir)
    runtime_env = {"env_vars": env_vars}
    if config.ray.address:
        ray.init(address=str(config.ray.address), runtime_env=runtime_env,
                 log_to_driver=bool(config.ray.log_to_driver))
        return
    # Loopback only: with this flag off Ray binds every server (GCS, raylet, agents) to
    # 127.0.0.1 instead of the machine's external address. Ray reads it when it is
    # imported, so set the module constant too; the processes Ray spawns read the variable.
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    kwargs: dict[str, Any] = {}
    if config.ray.object_store_memory_mb:
        kwargs["object_store_memory"] = int(config.ray.object_store_memory_mb) * 1024 * 1024
    # address="local": always a new local instance, never a cluster someone started with `ray start` here.
    ray.init(address="local", num_cpus=config.ray.num_cpus, include_dashboard=bool(config.ray.include_dashboard),
             dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1", runtime_env=runtime_env,
             configure_logging=False, log_to_driver=bool(config.ray.log_to_driver), **kwargs)


def stage_pools(config: DictConfig) -> dict[str, PoolSize]:
    """Each enabled stage's actor pool size on the cluster Ray is connected to (``auto`` resolved)."""
    import ray

    settings = {name: stage_settings(config, name) for name in enabled_stages(config)}
    return pool_sizes(settings, ray.cluster_resources())


def _join_cluster(config: DictConfig) -> Optional[str]:
    """On a cluster (``ray.address``), join it now and check its paths before anything is written."""
    if not config.ray.address:
        return None
    init_ray(config)
    return check_paths(config)


def _build_dataset(config: DictConfig, registry: StageRegistry, shard_tables: dict[int, pa.Table],
                   pools: dict[str, PoolSize]):
    """A Ray dataset with one block per shard, mapped through each enabled stage's actor pool.

    ``shard_tables`` are slices of the plan (id, uri, index, shard, duplicate); the
    packed samples are built by a first task on the workers, so the driver holds no
    per-sample objects whatever the input size.
    """
    import ray
    from ray.data import DataContext

    if not config.ray.log_to_driver:  # Ray Data's own progress chatter; the driver prints its own line
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    blocks = [table.select(PLAN_COLUMNS) for _, table in sorted(shard_tables.items())]
    # num_cpus=0: a trivial task that must never wait behind the stage pools, which hold every CPU;
    # concurrency caps how many run at once (zero-CPU tasks would otherwise each start a worker process).
    dataset = ray.data.from_arrow(blocks).map_batches(initial_states, batch_size=None, batch_format="pyarrow",
                                                      num_cpus=0, concurrency=2)
    container = config_container(config)
    cpu_scale = _fit_to_cluster(config, pools)
    for name in enabled_stages(config):
        settings = stage_settings(config, name)
        with warnings.catch_warnings():  # Ray 2.60 has no named parameter for the restart options yet
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
            dataset = dataset.map_batches(
                StageRunner,
                fn_constructor_kwargs={"stage_name": name, "config": container, "registry": registry},
                batch_size=settings.batch_size,
                batch_format="numpy",
                compute=pools[name].strategy(),
                num_cpus=settings.num_cpus * cpu_scale,
                num_gpus=settings.num_gpus,
                **_restart_args(settings.max_restarts),
            )
    return dataset


def _fit_to_cluster(config: DictConfig, pools: dict[str, PoolSize]) -> float:
    """Factor applied to every stage's num_cpus so that all actor pools fit at once.

    Every stage keeps at least one actor alive for the whole run (streaming), so
    pools that ask for more CPUs than the cluster has would wait for each other
    forever. On a local Ray the reservations are scaled down (they are scheduling
    hints, not limits); on a cluster the autoscaler may add nodes, so only warn.
    GPUs cannot be shared that way: a missing GPU is a configuration error.
    """
    import ray

    resources = ray.cluster_resources()
    wanted_cpus = wanted_gpus = 0.0
    for name in enabled_stages(config):
        settings = stage_settings(config, name)
        wanted_cpus += settings.num_cpus * pools[name].min_size
        wanted_gpus += settings.num_gpus * pools[name].min_size
    have_cpus, have_gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if wanted_gpus > have_gpus and not config.ray.address:
        raise ConfigError(f"the enabled stages ask for {wanted_gpus:g} GPUs but this machine has {have_gpus:g}; "
                          "use models.device=cpu and stages.<name>.num_gpus=0, or run on a GPU node")
    if wanted_cpus <= have_cpus or wanted_cpus == 0:
        return 1.0
    if config.ray.address:
        log.warning("stages ask for %.1f CPUs, the cluster has %.1f now; waiting on the autoscaler",
                    wanted_cpus, have_cpus)
        return 1.0
    scale = have_cpus / wanted_cpus
    log.info("stages ask for %.1f CPUs on a %.0f-CPU machine: scaling reservations by %.2f", wanted_cpus,
             have_cpus, scale)
    return scale


def _restart_args(max_restarts: int) -> dict:
    """Actor restart options; Ray Data's own default (-1) already restarts crashed actors forever."""
    return {} if max_restarts == -1 else {"max_restarts": max_restarts, "max_task_retries": max_restarts}


def _stream(config: DictConfig, registry: StageRegistry, storage: Storage, shard_tables: dict[int, pa.Table],
            on_shard_done: Callable[[int, list[Sample]], None], progress: bool) -> int:
    """Run the listed samples through the stages; call ``on_shard_done`` as each shard completes."""
    expected = {shard: table.num_rows for shard, table in shard_tables.items()}
    total = sum(expected.values())
    if total == 0:
        return 0
    init_ray(config)
    buffers: dict[int, dict[int, Sample]] = {shard: {} for shard in expected}
    done = 0
    last_beat = time.time()
    pools = stage_pools(config)
    log.info("actor pools: %s", ", ".join(f"{name}: {pool.describe()}" for name, pool in pools.items()))
    bar = ProgressLine(total, {name: pool.min_size for name, pool in pools.items()}, enabled=progress)
    dataset = _build_dataset(config, registry, shard_tables, pools)
    watch = gpu_watch(config, [name for name in pools if stage_settings(config, name).num_gpus > 0])
    for batch in _explained(watched(dataset.iter_batches(batch_size=None, batch_format="numpy"), watch)):
        for state in batch["state"]:
            sample = decode_sample(bytes(state))
            buffer = buffers.get(sample.shard)
            if buffer is None or sample.index in buffer:
                log.warning("ignoring a duplicate result for sample %s (shard %d)", sample.id, sample.shard)
                continue
            buffer[sample.index] = sample
            done += 1
            bar.sample_done(sample)
            if len(buffer) == expected[sample.shard]:
                on_shard_done(sample.shard, list(buffer.values()))
                del buffers[sample.shard]
        bar.batch_done()
        if time.time() - last_beat > HEARTBEAT_S:
            _heartbeat(storage, bar)
            last_beat = time.time()
    bar.close()
    missing = {shard: expected[shard] - len(buffer) for shard, buffer in buffers.items()}
    if missing:
        raise RuntimeError(f"the pipeline returned no result for some samples of shards {sorted(missing)}; "
                           "run again to resume")
    _heartbeat(storage, bar, finished=True)
    return done


def _explained(batches: Iterator[dict]) -> Iterator[dict]:
    """The batches; a failure on a Ray worker is re-raised as the error it stands for."""
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001 - translated below, original chained
            translated = _worker_failure(error)
            if translated is error:
                raise
            raise translated from error
        yield batch


def _worker_failure(error: BaseException) -> BaseException:
    """A FatalError from a worker -> the same plain error (its one line); a dead, unrestartable actor -> a clear
    RuntimeError; anything else unchanged."""
    from ray.exceptions import RayActorError, RayError

    chain, seen = [error], set()
    while chain:
        current = chain.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, FatalError) and not isinstance(current, RayError):  # not Ray's wrapper
            fatal = next(kind for kind in FATAL_ERRORS if isinstance(current, kind))
            return fatal(str(current).splitlines()[0])
        if isinstance(current, RayError) and (found := _fatal_in_traceback(str(current))) is not None:
            return found
        if isinstance(current, RayActorError):
            return RuntimeError("a stage worker died and was not restarted (stages.<name>.max_restarts); "
                                "committed shards are kept: run the same command again to resume")
        chain += [getattr(current, "cause", None), current.__cause__, current.__context__]
    return error


def _fatal_in_traceback(text: str) -> Optional[FatalError]:
    """The last FatalError named in a Ray error's traceback text, rebuilt; None if there is none.

    Ray Data re-raises a UDF's exception without its cause (and an actor's failed
    constructor as a RayActorError); the traceback text keeps ``module.Class: message``.
    """
    found: Optional[FatalError] = None
    for line in text.splitlines():
        for kind in FATAL_ERRORS:
            marker = f"{kind.__module__}.{kind.__qualname__}: "
            if line.startswith(marker):
                found = kind(line[len(marker):])
                break
    return found


def _heartbeat(storage: Storage, progress: ProgressLine, finished: bool = False) -> None:
    """Write ``progress.json``: what ``ffhq-uv status`` shows of a running driver, from any machine."""
    rate = progress.samples_per_s()
    beat = {"pid": os.getpid(), "updated_at": time.time(), "samples_done": progress.done,
            "samples_total": progress.total, "samples_per_s": rate, "finished": finished,
            "eta_s": (progress.total - progress.done) / rate if rate > 0 else None,
            "stages": progress.stage_summary()}
    storage.write_bytes(layout.PROGRESS_JSON, json.dumps(beat).encode())


# -- committing ----------------------------------------------------------------------------

def commit_shard(storage: Storage, shard: int, samples: list[Sample], revision: int, fingerprint: str,
                 previous_manifest: Optional[str] = None, registry: StageRegistry = STAGES) -> dict:
    """Check the samples' files, write the shard's manifest, then its stats.json (the completion marker) last."""
    verify_outputs(storage, shard, samples)
    table = samples_to_table(samples, registry)
    data = table_to_bytes(table)
    manifest = layout.manifest_path(shard, revision)
    storage.write_bytes(manifest, data)
    statuses = Counter(table["status"].to_pylist())
    errors = Counter(code for code in table["error_code"].to_pylist() if code)
    stage_seconds: dict[str, float] = {}
    for sample in samples:
        for name, seconds in sample.stage_seconds.items():
            stage_seconds[name] = stage_seconds.get(name, 0.0) + seconds
    stats = {
        "shard": shard, "revision": revision, "manifest": manifest,
        "manifest_sha256": hashlib.sha256(data).hexdigest(), "manifest_version": MANIFEST_VERSION,
        "num_samples": table.num_rows, "status_counts": dict(statuses), "error_counts": dict(errors),
        "stage_seconds": stage_seconds, "committed_at": time.time(), "input_fingerprint": fingerprint,
        "code_version": code_version(),
    }
    storage.write_bytes(layout.stats_path(shard), json.dumps(stats, indent=2, sort_keys=True).encode())
    if previous_manifest and previous_manifest != manifest:
        storage.delete(previous_manifest)
    return stats


def verify_outputs(storage: Storage, shard: int, samples: list[Sample]) -> int:
    """Drop output records whose file is not in storage with its recorded size; returns how many.

    One listing of the shard's folder. A sample that lost a file fails with
    ``output_missing`` (unless it had already failed), so a committed manifest
    never points at a file that is not there and ``retry-failed`` can redo it.
    """
    prefix = layout.shard_dir(shard) + "/"
    sizes = storage.file_sizes(layout.shard_dir(shard)) if any(s.outputs for s in samples) else {}
    lost = 0
    for sample in samples:
        missing = sorted(name for name, record in sample.outputs.items()
                         if (sizes.get(record.path) != record.bytes if record.path.startswith(prefix)
                             else not storage.exists(record.path)))
        if not missing:
            continue
        lost += len(missing)
        paths = ", ".join(sample.outputs.pop(name).path for name in missing)
        log.error("sample %s: output file(s) missing or incomplete in storage: %s", sample.id, paths)
        if sample.status != Status.FAILED:
            sample.fail("commit", OUTPUT_MISSING, f"written output file(s) not found in storage: {paths}"[:500])
    return lost


def _summarise(storage: Storage, summary: RunSummary) -> RunSummary:
    statuses: Counter = Counter()
    errors: Counter = Counter()
    for stats in committed_shards(storage).values():
        statuses.update(stats["status_counts"])
        errors.update(stats["error_counts"])
    summary.status_counts = dict(statuses)
    summary.error_counts = dict(errors)
    return summary


# -- entry points ----------------------------------------------------------------------------

def run(config: DictConfig, registry: StageRegistry, restart: bool = False, progress: bool = True) -> RunSummary:
    """Run (or resume) the pipeline described by ``config`` with the stages of ``registry``; returns a summary."""
    started = time.time()
    check_run(config, registry)  # before anything is written: a refused run leaves no run folder
    storage = storage_for(config)
    cluster_note = _join_cluster(config)
    storage.check_writable()
    with _run_log(storage):
        if cluster_note:
            log.info(cluster_note)
        plan = plan_run(config, storage, restart)
        done = committed_shards(storage)
        pending = [shard for shard in range(plan.num_shards) if shard not in done]
        log.info("run %s: %d samples in %d shards; %d committed, %d to do; stages: %s", storage.root_url,
                 plan.num_samples, plan.num_shards, len(done), len(pending), ", ".join(enabled_stages(config)))
        for shard in pending:  # stale files of an unfinished shard are never reused
            storage.delete(layout.shard_dir(shard), recursive=True)
        shard_tables = {shard: plan.shard_table(shard) for shard in pending}
        summary = RunSummary(output=storage.root_url, shards_total=plan.num_shards, shards_skipped=len(done))

        def on_shard_done(shard: int, samples: list[Sample]) -> None:
            commit_shard(storage, shard, samples, revision=0, fingerprint=plan.fingerprint, registry=registry)
            summary.shards_committed += 1
            log.info("committed shard %s (%d samples)", layout.shard_name(shard), len(samples))

        summary.samples_processed = _stream(config, registry, storage, shard_tables, on_shard_done, progress)
        summary.seconds = time.time() - started
        return _summarise(storage, summary)


def retry_failed(config: DictConfig, registry: StageRegistry, error_codes: Optional[list[str]] = None,
                 progress: bool = True) -> RunSummary:
    """Re-run only the failed samples of a run and rewrite their shards (marker last)."""
    started = time.time()
    check_run(config, registry)
    storage = storage_for(config)
    _join_cluster(config)
    with _run_log(storage):
        run_meta = json.loads(storage.read_bytes(layout.RUN_JSON))
        shards = committed_shards(storage)
        dataset = manifest_dataset(storage, shards)
        condition = (pc.field("status") == "failed") & (pc.field("error_code") != DUPLICATE_ID)
        if error_codes:
            condition = condition & pc.field("error_code").isin(error_codes)
        failed = dataset.to_table(columns=["input_index"], filter=condition)
        # The plan holds what the input format listed (uri and inputs) for each input index.
        plan = pq.read_table(_open(storage, layout.PLAN))
        retried = pc.is_in(plan["index"], value_set=failed["input_index"].combine_chunks())
        failed = plan.filter(retried).select(PLAN_COLUMNS)
        failed = failed.set_column(failed.schema.get_field_index("duplicate"), "duplicate",
                                   pa.array([False] * failed.num_rows))
        shard_tables = {shard: failed.filter(pc.equal(failed["shard"], shard))
                        for shard in sorted(set(failed["shard"].to_pylist()))}
        log.info("retrying %d failed samples in %d shards", failed.num_rows, len(shard_tables))
        summary = RunSummary(output=storage.root_url, shards_total=run_meta["num_shards"])

        def on_shard_done(shard: int, retried: list[Sample]) -> None:
            old_stats = shards[shard]
            old_rows = {row["input_index"]: row for row in
                        pq.read_table(_open(storage, old_stats["manifest"])).to_pylist()}
            by_index = {s.index: s for s in retried}
            merged = [by_index.get(index) or _sample_from_row(row) for index, row in sorted(old_rows.items())]
            commit_shard(storage, shard, merged, revision=int(old_stats["revision"]) + 1,
                         fingerprint=run_meta["input_fingerprint"], previous_manifest=old_stats["manifest"],
                         registry=registry)
            summary.shards_committed += 1
            log.info("rewrote shard %s (%d retried)", layout.shard_name(shard), len(retried))

        summary.samples_processed = _stream(config, registry, storage, shard_tables, on_shard_done, progress)
        summary.seconds = time.time() - started
        return _summarise(storage, summary)


def load_run_config(output: str, overrides: tuple[str, ...] = (), endpoint_url: Optional[str] = None) -> DictConfig:
    """The config saved with a run (plus overrides), to resume or retry it."""
    from pipeline.storage import open_storage

    storage = open_storage(output, endpoint_options(endpoint_url))
    if not storage.exists(layout.CONFIG_YAML):
        raise ConfigError(f"{output} is not a run folder (no {layout.CONFIG_YAML})")
    with tempfile.NamedTemporaryFile("wb", suffix=".yaml", delete=False) as handle:
        handle.write(storage.read_bytes(layout.CONFIG_YAML))
    try:
        saved = OmegaConf.load(handle.name)
    finally:
        os.unlink(handle.name)
    # The run may have been moved or copied since: the folder given is the output.
    pinned = {"output": output, **({"storage": {"endpoint_url": endpoint_url}} if endpoint_url else {})}
    saved_values = OmegaConf.to_container(saved, resolve=True)
    saved_values.pop("profile", None)
    return load_config(str(saved.profile), files=(),
                       overrides=tuple(as_overrides(saved_values) + as_overrides(pinned)) + overrides)


def _sample_from_row(row: dict) -> Sample:
    """Rebuild a committed manifest row as a Sample so that it can be written again unchanged."""
    from pipeline.manifest import core_fields
    from stages.base import OutputFile

    core = {f.name for f in core_fields()}
    return Sample(
        id=row["id"], uri=row["source_uri"], shard=row["shard"], index=row["input_index"],
        fields={k: v for k, v in row.items() if k not in core},
        outputs={name: OutputFile(**record) for name, record in (row["outputs"] or [])},
        status=row["status"], failed_stage=row["failed_stage"], error_code=row["error_code"],
        error_message=row["error_message"], filter_reason=row["filter_reason"],
        stage_seconds={k: v for k, v in (row["stage_seconds"] or {}).items() if v is not None},
        stage_nodes={k: v for k, v in (row.get("stage_node_id") or {}).items() if v is not None},
        stage_gpus={k: v for k, v in (row.get("stage_gpu_ids") or {}).items() if v is not None},
    )


def _open(storage: Storage, relpath: str):
    return pa.BufferReader(storage.read_bytes(relpath))


class _run_log:
    """Log to ``logs/driver-<time>.log`` in the run folder for the duration of a command.

    On a local disk the file is written as the run goes (it survives a killed
    driver); on object storage it is uploaded when the command ends.
    """

    def __init__(self, storage: Storage):
        self.storage = storage
        self.name = f"{layout.LOGS}/driver-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}.log"

    def __enter__(self) -> _run_log:
        if self.storage.is_local:
            self.path = self.storage.full_path(self.name)
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        else:
            handle, self.path = tempfile.mkstemp(suffix=".log")
            os.close(handle)
        self.handler = logging.FileHandler(self.path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.handler.addFilter(_RedactFilter())
        self.handler.setLevel(logging.INFO)
        root = logging.getLogger()
        root.addHandler(self.handler)
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)
            for handler in root.handlers:  # keep the terminal as quiet as it was
                if handler is not self.handler and handler.level == logging.NOTSET:
                    handler.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
        if not self.storage.is_local:
            try:
                self.storage.write_bytes(self.name, Path(self.path).read_bytes())
            except Exception as error:  # noqa: BLE001 - never hide the error that ended the command
                if exc[1] is None:
                    raise
                log.warning("could not upload the driver log %s: %s", self.name, error)
            finally:
                os.unlink(self.path)


class _RedactFilter(logging.Filter):
    """Strip user:password@ from URLs in log records before they reach the run log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
