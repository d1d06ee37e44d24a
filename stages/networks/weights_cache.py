"""Remote weights copied once per node into a node-local cache, then read by every actor on that node.

``models.weights_dir=s3://...`` would otherwise be downloaded by every actor (fsspec's
``simplecache`` keeps one private copy per process): 3 GB times dozens of actors. Here
the first actor of a node that needs a file takes an exclusive lock on it, downloads
it to a temporary name and renames it into place with a sidecar recording the
remote object's size and ETag; the others wait on the lock, then find the file and
only check the sidecar against the object's metadata (a HEAD, no download). A
changed object (new ETag or size) is downloaded again.

Layout: ``<models.weights_cache_dir or $TMPDIR/ffhq-uv-weights>/<Ray node id>/<sha256 of URL>-<name>``.
The folder is per Ray node, so each node keeps its own copy even when a cache folder
happens to be on a shared mount or several raylets share one host (test clusters).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import posixpath
import tempfile
import uuid
from typing import Any, Optional

CACHE_ENV = "FFHQ_UV_WEIGHTS_CACHE"  # overrides the default cache root (set by the driver from the config)
_CHUNK = 8 * 1024 * 1024


def cache_root(configured: Optional[str] = None) -> str:
    """The node-local cache folder of this process's Ray node."""
    root = configured or os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "ffhq-uv-weights")
    return os.path.join(root, _node_id())


def cached_copy(url: str, storage_options: Optional[dict[str, Any]] = None, root: Optional[str] = None) -> str:
    """A local path holding the remote file ``url``, downloaded at most once per node (and per change)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    folder = cache_root(root)
    os.makedirs(folder, exist_ok=True)
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    local = os.path.join(folder, f"{key}-{posixpath.basename(path) or 'file'}")
    with open(local + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one downloader per node; the others wait here, then reuse
        try:
            version = _version(fs.info(path))
            if os.path.exists(local) and _read_sidecar(local) == version:
                return local
            _download(fs, path, local)
            with open(local + ".json", "w") as sidecar:
                json.dump(version, sidecar)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return local


def _download(fs: Any, path: str, local: str) -> None:
    tmp = f"{local}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open(path, "rb") as source, open(tmp, "wb") as target:
            while chunk := source.read(_CHUNK):
                target.write(chunk)
        os.replace(tmp, local)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _version(info: dict[str, Any]) -> dict[str, Any]:
    """What identifies one version of a remote object: its size and ETag (or mtime where no ETag)."""
    tag = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime")
    return {"size": int(info.get("size") or 0), "tag": str(tag) if tag is not None else None}


def _read_sidecar(local: str) -> Optional[dict[str, Any]]:
    try:
        with open(local + ".json") as sidecar:
            return json.load(sidecar)
    except (OSError, ValueError):
        return None


def _node_id() -> str:
    """Ray's id of this node, or ``local`` outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return "local"
