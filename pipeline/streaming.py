"""Streaming: the samples of the pending shards through the enabled stages' actor pools, on a real Ray.

One code path for a laptop and a cluster: ``ray.init()`` locally (bound to
127.0.0.1), or join an existing cluster with ``ray.address``. Each enabled stage
runs in its own actor pool (``map_batches`` + ``ActorPoolStrategy``, a
``pipeline.runner.StageRunner`` per actor); the driver only ever sees small packed
rows, regroups them by shard and hands each complete shard to a callback (the
commit). A FatalError raised on a worker comes back here as itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
from omegaconf import DictConfig, OmegaConf

from pipeline import layout
from pipeline.cluster_checks import gpu_watch, watched
from pipeline.config import enabled_stages, stage_settings
from pipeline.placement import PoolSize, pool_sizes
from pipeline.progress import ProgressLine
from pipeline.quiet import filtered_stderr
from pipeline.runner import PLAN_COLUMNS, StageRunner, initial_states
from pipeline.sample_codec import decode_sample
from pipeline.storage import Storage
from stages import StageRegistry
from stages.base import Sample
from stages.errors import FATAL_ERRORS, ConfigError, FatalError
from stages.networks.weights_cache import CACHE_ENV

log = logging.getLogger("ffhq_uv")

HEARTBEAT_S = 5.0  # how often the driver refreshes progress.json while running


def config_container(config: DictConfig) -> dict:
    return OmegaConf.to_container(config, resolve=True)


def init_ray(config: DictConfig) -> None:
    """Start a local Ray bound to 127.0.0.1, or join the configured cluster."""
    if not config.ray.address and "RAY_AUTH_MODE" not in os.environ and "ray" not in sys.modules:
        # Ray's default for a new local cluster (token authentication), chosen explicitly so that Ray prints no
        # notice about choosing it (``pipeline.quiet``). Only before Ray is imported: Ray reads it once, and set
        # later the driver would disagree with the processes it starts.
        os.environ["RAY_AUTH_MODE"] = "token"
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
    # concurrency at most the number of blocks: a cap above it makes Ray Data warn (``pipeline.quiet``).
    dataset = ray.data.from_arrow(blocks).map_batches(initial_states, batch_size=None, batch_format="pyarrow",
                                                      num_cpus=0, concurrency=min(2, len(blocks)))
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


def stream_samples(config: DictConfig, registry: StageRegistry, storage: Storage, shard_tables: dict[int, pa.Table],
                   on_shard_done: Callable[[int, list[Sample]], None], progress: bool) -> int:
    """Run the listed samples through the stages; call ``on_shard_done`` as each shard completes."""
    expected = {shard: table.num_rows for shard, table in shard_tables.items()}
    total = sum(expected.values())
    if total == 0:
        return 0
    init_ray(config)
    pools = stage_pools(config)
    log.info("actor pools: %s", ", ".join(f"{name}: {pool.describe()}" for name, pool in pools.items()))
    bar = ProgressLine(total, {name: pool.min_size for name, pool in pools.items()}, enabled=progress)
    dataset = _build_dataset(config, registry, shard_tables, pools)
    watch = gpu_watch(config, [name for name in pools if stage_settings(config, name).num_gpus > 0])
    with contextlib.nullcontext() if config.ray.log_to_driver else filtered_stderr():
        done = _collect(watched(dataset.iter_batches(batch_size=None, batch_format="numpy"), watch), expected,
                        on_shard_done, storage, bar)
    _heartbeat(storage, bar, finished=True)
    return done


def _collect(batches: Iterator[dict], expected: dict[int, int], on_shard_done: Callable[[int, list[Sample]], None],
             storage: Storage, bar: ProgressLine) -> int:
    """Regroup the batches' packed samples by shard; ``on_shard_done`` as each shard is complete."""
    buffers: dict[int, dict[int, Sample]] = {shard: {} for shard in expected}
    done = 0
    last_beat = time.time()
    for batch in _explained(batches):
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

