"""Output storage on any fsspec URL (local folder, ``s3://``, ``memory://``).

Every path the pipeline writes is relative to the run root and checked so that it
cannot escape it. Writes are retried with exponential backoff on transient
errors (S3 throttling, 5xx), and on local disks they are atomic (temporary file
then rename), so a reader never sees half a file. Credentials come from the
standard environment / config files of each backend and are never stored here.
"""

from __future__ import annotations

import logging
import os
import posixpath
import random
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

import fsspec
from fsspec.core import url_to_fs

from stages.errors import StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")


def endpoint_options(endpoint_url: Optional[str]) -> dict:
    """fsspec storage options for an S3-compatible endpoint (MinIO, moto); {} for the default (AWS, local)."""
    return {"client_kwargs": {"endpoint_url": str(endpoint_url)}} if endpoint_url else {}


# Errors worth retrying: throttling, 5xx, connection resets. Permission and
# missing-file errors are not transient and are raised at once.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError")  # botocore: retrying cannot help


def _replace_atomically(path: str, write: Callable[[str], Any]) -> None:
    """Make the local file ``path`` appear whole or not at all: ``write`` fills a temporary file beside it (same
    directory, so same filesystem), which then replaces ``path``; a failed write leaves no temporary behind."""
    tmp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and getattr(error, "errno", None) == 28


@dataclass
class RetryPolicy:
    attempts: int = 6
    base_delay_s: float = 0.2
    max_delay_s: float = 10.0

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` with exponential backoff and jitter on transient errors."""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except _PERMANENT:
                raise
            except Exception as error:  # noqa: BLE001 - backends raise many types
                if _is_disk_full(error) or type(error).__name__ in _NO_CREDENTIALS or attempt == self.attempts:
                    raise
                delay = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)) * (0.5 + random.random())
                log.warning("storage %s failed (%s: %s); retry %d/%d in %.1fs",
                            what, type(error).__name__, error, attempt, self.attempts - 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


@dataclass
class Storage:
    """A run root on an fsspec filesystem, addressed by relative paths."""

    root_url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    fs: Any = None

    def __post_init__(self) -> None:
        if self.fs is None:
            self.fs, root = url_to_fs(self.root_url, **self.storage_options)
        else:
            root = self.root_url
        self.root = root.rstrip("/") or "/"
        self.is_local = "file" in _protocols(self.fs)

    # -- paths ---------------------------------------------------------------
    def full_path(self, relpath: str) -> str:
        """The backend path of a run-relative path; refuses anything escaping the root."""
        clean = posixpath.normpath(relpath.replace("\\", "/"))
        if clean.startswith("/") or clean == ".." or clean.startswith("../"):
            raise ValueError(f"path {relpath!r} escapes the output root")
        return f"{self.root}/{clean}" if clean != "." else self.root

    def url(self, relpath: str) -> str:
        """A URL that other tools (DuckDB, browsers, pyarrow) can open."""
        path = self.full_path(relpath)
        protocol = _protocols(self.fs)[0]
        return path if protocol == "file" else f"{protocol}://{path}"

    # -- reads -------------------------------------------------------------
    def read_bytes(self, relpath: str) -> bytes:
        path = self.full_path(relpath)
        return self.retry.call(f"read {relpath}", lambda: self.fs.cat_file(path))

    def read_source(self, uri: str) -> bytes:
        """Read an input file by its own URI (which may live on another filesystem)."""
        def read() -> bytes:
            fs, path = url_to_fs(uri, **self.storage_options) if "://" in uri else (fsspec.filesystem("file"), uri)
            return fs.cat_file(path)
        return self.retry.call(f"read {uri}", read)

    def exists(self, relpath: str) -> bool:
        path = self.full_path(relpath)
        return self.retry.call(f"stat {relpath}", lambda: self.fs.exists(path))

    def glob(self, relpattern: str) -> list[str]:
        """Run-relative paths matching a glob, sorted."""
        pattern = self.full_path(relpattern)
        found = self.retry.call(f"glob {relpattern}", lambda: self.fs.glob(pattern))
        prefix = self.root.rstrip("/") + "/"
        return sorted(p[len(prefix):] if p.startswith(prefix) else p for p in (_strip_protocol(x) for x in found))

    def file_sizes(self, relprefix: str) -> dict[str, int]:
        """Run-relative path -> size in bytes of every file under a folder (one listing; {} if absent)."""
        path = self.full_path(relprefix)

        def find() -> dict:
            return self.fs.find(path, detail=True) if self.fs.exists(path) else {}
        found = self.retry.call(f"list {relprefix}", find)
        prefix = self.root.rstrip("/") + "/"
        sizes = {}
        for name, info in found.items():
            name = _strip_protocol(name)
            sizes[name[len(prefix):] if name.startswith(prefix) else name] = int(info.get("size") or 0)
        return sizes

    # -- writes ------------------------------------------------------------
    def write_bytes(self, relpath: str, data: bytes) -> None:
        """Write a whole file; atomic on local disks, a single PUT on object stores."""
        path = self.full_path(relpath)
        try:
            self.retry.call(f"write {relpath}", lambda: self._put(path, data))
        except PermissionError as error:
            raise StorageError(f"permission denied writing {self.url(relpath)}: check the output location") from error
        except OSError as error:
            if _is_disk_full(error):
                raise StorageError(f"no space left on device writing {self.url(relpath)}") from error
            raise

    def _put(self, path: str, data: bytes) -> None:
        if self.is_local:
            directory = os.path.dirname(path)
            os.makedirs(directory, exist_ok=True)
            _replace_atomically(path, lambda tmp: Path(tmp).write_bytes(data))
        else:
            self.fs.pipe_file(path, data)

    def put_file(self, relpath: str, local_path: str) -> None:
        """Upload a local file (too big to hold in memory); atomic on local disks, one upload on object stores."""
        path = self.full_path(relpath)

        def put() -> None:
            if self.is_local:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                _replace_atomically(path, lambda tmp: shutil.copyfile(local_path, tmp))
            else:
                self.fs.put_file(local_path, path)
        self.retry.call(f"upload {relpath}", put)

    def delete(self, relpath: str, recursive: bool = False) -> None:
        path = self.full_path(relpath)

        def remove() -> None:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=recursive)
        self.retry.call(f"delete {relpath}", remove)

    def check_writable(self) -> None:
        """Fail early, with a clear message, if the root cannot be written."""
        probe = f".write-probe-{uuid.uuid4().hex}"
        try:
            self.write_bytes(probe, b"ok")
            self.delete(probe)
        except StorageError:
            raise
        except Exception as error:  # noqa: BLE001 - turn backend errors into one line
            raise StorageError(f"cannot write to {self.root_url}: {describe_storage_error(error)}") from error


def describe_storage_error(error: BaseException) -> str:
    """One line for a storage error, with what to do for the common cases."""
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    lowered = text.lower()
    if "credentials" in lowered or "accessdenied" in lowered.replace(" ", "") or "invalidaccesskeyid" in lowered:
        return (f"{text} (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance profile; "
                "storage.endpoint_url for S3-compatible stores)")
    return text


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _strip_protocol(path: str) -> str:
    return path.split("://", 1)[1] if "://" in path else path


def open_storage(root_url: str, storage_options: Optional[dict[str, Any]] = None) -> Storage:
    """Storage for a run root; local paths are made absolute."""
    if "://" not in root_url:
        root_url = os.path.abspath(root_url)
    return Storage(root_url=root_url, storage_options=dict(storage_options or {}))
