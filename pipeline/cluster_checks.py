"""What a run checks about the cluster it runs on: paths every node can reach, and GPUs that went away.

- ``check_paths``: on a cluster of more than one node, a local-path input or output
  would mean every worker reads and writes its *own* disk (inputs "missing", a
  dataset split across machines). Such paths are refused at start-up with one line,
  before anything is written, unless ``storage.shared_filesystem=true`` says the path
  is a mount that every node shares (NFS, Lustre, EFS); that claim is then verified:
  the driver writes a marker file into the output folder and one task per node reads
  it back (and checks that the input path exists there).
- ``GpuWatch`` / ``watched``: a run whose stages need GPUs, on a cluster that has lost
  its last GPU node (preemption), waits ``ray.gpu_wait_s`` for the autoscaler to bring
  one back, then stops with one line; committed shards are kept and the same command resumes.
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Optional

from pipeline.inputs import resolve_format
from stages.errors import ConfigError

log = logging.getLogger("ffhq_uv")

MARKER_PREFIX = ".shared-filesystem-check-"
NODE_CHECK_TIMEOUT_S = 120.0  # a node that cannot run a zero-CPU task in this time fails the check
POLL_S = 1.0  # how often the driver looks at the cluster's GPUs while no batch arrives


class ClusterError(RuntimeError):
    """The cluster cannot finish the run now (no GPU node left); the run is resumable."""


def is_local_path(location: str) -> bool:
    """Whether a configured input or output is a path on one machine's disk (not a URL, not a builtin)."""
    if location.startswith("file://"):
        return True
    return "://" not in location and not location.startswith("builtin:")


def alive_nodes() -> list[dict[str, Any]]:
    """The cluster's live nodes, as ``ray.nodes()`` describes them."""
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def check_paths(config: Any) -> str:
    """Refuse (ConfigError) local input/output paths on a multi-node cluster; verify a declared shared mount.

    Returns one line saying what was checked, for the run's log.
    """
    nodes = alive_nodes()
    # A list file is read by the driver alone; the URIs in it are what the workers read (check_listed_inputs).
    source = None if resolve_format(str(config.input.source), str(config.input.format)).name == "list" \
        else str(config.input.source)
    local = [(key, value) for key, value in (("input.source", source), ("output", str(config.output)))
             if value is not None and is_local_path(value)]
    if len(nodes) <= 1 or not local:
        return f"cluster of {len(nodes)} node(s); local paths: {', '.join(k for k, _ in local) or 'none'}"
    key, value = local[0]
    if not config.storage.shared_filesystem:
        raise ConfigError(f"{key} {value} is a local path, but this Ray cluster has {len(nodes)} nodes and each "
                          "would read and write its own disk: use object storage (s3://...), or set "
                          "storage.shared_filesystem=true if the path is a mount shared by every node (NFS, Lustre)")
    paths = {key: _local(value) for key, value in local}
    return verify_shared_filesystem(nodes, paths.get("output"), paths.get("input.source"))


def check_listed_inputs(config: Any, uris: list[str]) -> None:
    """Refuse listed input URIs that are local paths on a multi-node cluster, unless on a declared shared mount."""
    if not config.ray.address or config.storage.shared_filesystem:
        return
    local = next((uri for uri in uris if is_local_path(uri)), None)
    nodes = alive_nodes() if local is not None else []
    if len(nodes) > 1:
        raise ConfigError(f"input {config.input.source} lists local paths ({local}, ...), but this Ray cluster has "
                          f"{len(nodes)} nodes and each would read its own disk: list object-storage URLs "
                          "(s3://...), or set storage.shared_filesystem=true for a mount shared by every node")


def verify_shared_filesystem(nodes: list[dict[str, Any]], output: Optional[str], input_path: Optional[str]) -> str:
    """One task per node must read back a marker the driver wrote into ``output`` and see ``input_path``."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    marker = None
    if output is not None:
        os.makedirs(output, exist_ok=True)
        marker = os.path.join(output, MARKER_PREFIX + token)
        with open(marker, "w") as handle:
            handle.write(token)
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(_look_at_paths)
        refs = {node["NodeID"]: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node["NodeID"], soft=False)).remote(marker, input_path) for node in nodes}
        seen = _answers(refs)
    finally:
        if marker is not None:
            os.unlink(marker)
    address = {node["NodeID"]: node.get("NodeManagerAddress", "?") for node in nodes}
    for node_id, (marker_text, input_seen) in sorted(seen.items()):
        if marker is not None and marker_text != token:
            raise ConfigError(f"storage.shared_filesystem=true, but node {node_id[:12]} ({address[node_id]}) does not "
                              f"see the driver's marker file in {output}: that folder is not shared by every node")
        if input_path is not None and not input_seen:
            raise ConfigError(f"storage.shared_filesystem=true, but node {node_id[:12]} ({address[node_id]}) does not "
                              f"see the input {input_path}: mount it on every node or use object storage")
    return f"shared filesystem checked on {len(seen)} nodes: {', '.join(p for p in (output, input_path) if p)}"


def _answers(refs: dict[str, Any]) -> dict[str, tuple[Optional[str], bool]]:
    """Node id -> what its probe saw; a node that died meanwhile (preemption) is left out, not an error."""
    import ray
    from ray.exceptions import RayError

    answers = {}
    for node_id, ref in refs.items():
        try:
            answers[node_id] = ray.get(ref, timeout=NODE_CHECK_TIMEOUT_S)
        except (RayError, TimeoutError) as error:
            if node_id in {node["NodeID"] for node in alive_nodes()}:
                raise ConfigError(f"could not check the shared filesystem on node {node_id[:12]}: "
                                  f"{str(error).splitlines()[0]}") from error
            log.warning("node %s left the cluster during the shared-filesystem check", node_id[:12])
    return answers


def _look_at_paths(marker: Optional[str], input_path: Optional[str]) -> tuple[Optional[str], bool]:
    """On one node: the marker's text (None if absent) and whether the input path exists there."""
    text: Optional[str] = None
    if marker is not None:
        try:
            with open(marker) as handle:
                text = handle.read()
        except OSError:
            text = None
    return text, input_path is None or os.path.exists(input_path) or bool(glob.glob(input_path))


def _local(location: str) -> str:
    path = location[len("file://"):] if location.startswith("file://") else location
    return os.path.abspath(path)


class GpuWatch:
    """Stops a run that needs GPUs once the cluster has had none for ``wait_s`` seconds."""

    def __init__(self, gpu_stages: list[str], wait_s: float):
        self.gpu_stages = gpu_stages
        self.wait_s = wait_s
        self.gone_since: Optional[float] = None

    def check(self) -> None:
        """Raise ClusterError when the GPUs have been gone for longer than the wait."""
        gpus = sum(node.get("Resources", {}).get("GPU", 0.0) for node in alive_nodes())
        if gpus > 0:
            self.gone_since = None
            return
        now = time.time()
        if self.gone_since is None:
            self.gone_since = now
            log.warning("no GPU node in the cluster (stages %s need GPUs); waiting up to %.0f s for one",
                        ", ".join(self.gpu_stages), self.wait_s)
        elif now - self.gone_since > self.wait_s:
            raise ClusterError(f"no GPU node in the cluster for {self.wait_s:g} s (ray.gpu_wait_s) and stages "
                               f"{', '.join(self.gpu_stages)} need GPUs; committed shards are kept: run the same "
                               "command again to resume when GPU nodes are back")


def gpu_watch(config: Any, gpu_stages: list[str]) -> Optional[GpuWatch]:
    """The watch for a run joined to a cluster (``ray.address``) whose stages need GPUs; None otherwise."""
    if not config.ray.address or not gpu_stages:
        return None
    return GpuWatch(gpu_stages, float(config.ray.gpu_wait_s))


def watched(batches: Iterator[Any], watch: Optional[GpuWatch]) -> Iterator[Any]:
    """The batches of ``batches``, with ``watch`` checked while none arrives.

    Ray Data's iterator blocks while actors wait for GPUs that are gone, so it is
    drained by a helper thread and the driver's thread polls. The helper is a daemon:
    when the watch stops the run it is left blocked and ends with the process.
    """
    if watch is None:
        yield from batches
        return
    handoff: queue.Queue = queue.Queue(maxsize=1)

    def pump() -> None:
        try:
            for batch in batches:
                handoff.put(("batch", batch))
            handoff.put(("end", None))
        except BaseException as error:  # noqa: BLE001 - re-raised in the driver's thread
            handoff.put(("error", error))

    threading.Thread(target=pump, daemon=True, name="batches").start()
    while True:
        try:
            kind, value = handoff.get(timeout=POLL_S)
        except queue.Empty:
            watch.check()
            continue
        if kind == "end":
            return
        if kind == "error":
            raise value
        yield value
