"""A real multi-node Ray cluster on this machine, for the multi-node tests and the soak's ``--kill-nodes``.

``ray.cluster_utils.Cluster``: a head and worker nodes as separate raylets on
127.0.0.1, each with its own CPUs and a *declared* number of GPUs (placement is what
is exercised; the stages run with ``models.device=cpu``). The raylets inherit this
process's environment, so variables the workers need (S3 endpoint and credentials)
are set before the nodes start and restored when the cluster stops.
"""

from __future__ import annotations

import os
from typing import Optional

# Ray binds to loopback only with this off (see ../shared/spec/environment.md, "Ray").
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def node_args(**resources) -> dict:
    """Arguments of one raylet: loopback, no dashboard, a small object store, plus ``resources``."""
    return {"node_ip_address": "127.0.0.1", "include_dashboard": False, "object_store_memory": 80 * 1024 * 1024,
            **resources}


class LocalCluster:
    """Head (``head_cpus``, no GPU) plus ``workers`` nodes of ``worker_cpus`` CPUs and ``worker_gpus`` GPUs."""

    def __init__(self, workers: int = 2, worker_gpus: float = 2, worker_cpus: float = 1, head_cpus: float = 1,
                 env: Optional[dict[str, str]] = None):
        self.worker_gpus, self.worker_cpus = worker_gpus, worker_cpus
        self.env = {**LOOPBACK_ENV, **(env or {})}
        self._saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        from ray._private import ray_constants
        from ray.cluster_utils import Cluster

        self._saved_flag, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
        self._address_file = _address_file()
        self._saved_address = _read(self._address_file)
        self.cluster = Cluster(initialize_head=True, head_node_args=node_args(num_cpus=head_cpus))
        # Cluster records its head in /tmp/ray/ray_current_cluster, where every plain ray.init() on this
        # machine (other test runs, `ffhq-uv run` without --address) would then join it: put back what was there.
        _restore(self._address_file, self._saved_address)
        for _ in range(workers):
            self.add_worker()
        self.cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_worker(self):
        return self.cluster.add_node(**node_args(num_cpus=self.worker_cpus, num_gpus=self.worker_gpus))

    def workers(self) -> list:
        """The live worker nodes (``ray._private.node.Node``), in node-id order."""
        return sorted(self.cluster.worker_nodes, key=lambda node: node.node_id)

    def kill(self, node) -> None:
        """Preemption: SIGKILL every process of a worker node."""
        self.cluster.remove_node(node, allow_graceful=False)

    def shutdown(self) -> None:
        from ray._private import ray_constants

        self.cluster.shutdown()
        _restore(self._address_file, self._saved_address)  # shutdown deletes the file, whoever wrote it
        ray_constants.ENABLE_RAY_CLUSTER = self._saved_flag
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _address_file() -> str:
    from ray._common.utils import get_ray_address_file

    return get_ray_address_file(None)


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _restore(path: str, content: Optional[str]) -> None:
    """Put the Ray address file back as it was (absent, or with ``content``)."""
    if content is None:
        if os.path.exists(path):
            os.unlink(path)
        return
    with open(path, "w") as handle:
        handle.write(content)
