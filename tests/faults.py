"""Fault injection for the reliability tests: a flaky fsspec filesystem and a flaky S3 server.

``faulty://`` is a local-disk fsspec filesystem with object-store semantics (a
write is one PUT, no temporary file) whose calls fail at random, as a throttled
or unstable object store does. It is registered when this module is imported;
the test-double stages import it too, so Ray workers know the protocol. Its
behaviour is read, on every call, from the JSON file named by the environment
variable ``FFHQ_UV_FAULTS`` (workers inherit the variable from the driver that
starts the local Ray; the tests rewrite the file between runs):

    {"seed": 0,
     "transient_rate": 0.2,   # fraction of calls raising ConnectionError before doing anything
     "lost_ack_rate": 0.1,    # fraction of writes that land but then raise TimeoutError
     "write_errno": "ENOSPC"} # every write fails with this permanent error (disk full, EACCES...)

Every injected fault appends one line to ``<that file>.log`` so tests can check
that faults really happened.

``FaultyS3Server`` serves moto's S3 through a WSGI middleware that answers a
fraction of object requests with S3's own throttling and server errors
(``503 SlowDown``, ``500 InternalError``), the way AWS does under load. moto has
no switch for random errors, so the middleware wraps moto's
``DomainDispatcherApplication`` (the app its ``ThreadedMotoServer`` serves).
"""

from __future__ import annotations

import errno
import json
import os
import random
import threading
from collections.abc import Callable
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

FAULTS_ENV = "FFHQ_UV_FAULTS"


def _settings() -> dict[str, Any]:
    path = os.environ.get(FAULTS_ENV)
    if not path or not os.path.exists(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def _record(kind: str, what: str) -> None:
    path = os.environ.get(FAULTS_ENV)
    if path:
        with open(path + ".log", "a") as handle:
            handle.write(f"{os.getpid()}\t{kind}\t{what}\n")


def injected_faults(faults_file: str) -> list[tuple[str, str]]:
    """(kind, call) of every fault injected so far under this faults file."""
    log = faults_file + ".log"
    if not os.path.exists(log):
        return []
    with open(log) as handle:
        return [tuple(line.rstrip("\n").split("\t")[1:3]) for line in handle if line.strip()]


class FaultyFileSystem(LocalFileSystem):
    """Local files behind an unreliable API: calls fail at the configured rates (see module docstring)."""

    protocol = "faulty"
    _rng = random.Random()
    _rng_lock = threading.Lock()

    def __init__(self, **kwargs: Any):
        super().__init__(auto_mkdir=True, **kwargs)

    def _chance(self, rate: float) -> bool:
        with self._rng_lock:
            return rate > 0 and self._rng.random() < rate

    def _before(self, call: str, path: str) -> None:
        settings = _settings()
        if self._chance(float(settings.get("transient_rate", 0.0))):
            _record("transient", call)
            raise ConnectionError(f"injected fault: connection reset during {call} {path}")

    def _write(self, call: str, path: str, fn: Callable[[], Any]) -> Any:
        settings = _settings()
        code = settings.get("write_errno")
        if code:
            _record(code, call)
            number = getattr(errno, code)
            raise OSError(number, os.strerror(number), path)
        self._before(call, path)
        result = fn()
        if self._chance(float(settings.get("lost_ack_rate", 0.0))):
            _record("lost_ack", call)
            raise TimeoutError(f"injected fault: no response after {call} {path}")
        return result

    def cat_file(self, path, start=None, end=None, **kwargs):
        self._before("cat_file", path)
        return super().cat_file(path, start=start, end=end, **kwargs)

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        return self._write("pipe_file", path, lambda: super(FaultyFileSystem, self).pipe_file(
            path, value, mode=mode, **kwargs))

    def exists(self, path, **kwargs):
        self._before("exists", path)
        return super().exists(path, **kwargs)

    def glob(self, path, maxdepth=None, **kwargs):
        self._before("glob", path)
        return super().glob(path, maxdepth=maxdepth, **kwargs)

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        self._before("find", path)
        return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)

    def rm(self, path, recursive=False, maxdepth=None):
        return self._write("rm", path, lambda: super(FaultyFileSystem, self).rm(
            path, recursive=recursive, maxdepth=maxdepth))


fsspec.register_implementation(FaultyFileSystem.protocol, FaultyFileSystem, clobber=True)


# -- S3 ---------------------------------------------------------------------------------------

_S3_ERRORS = (
    ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
    ("500 Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
)


class FaultyS3App:
    """WSGI middleware: a fraction of object-level requests get S3's 503 SlowDown / 500 InternalError."""

    def __init__(self, app: Callable, rate: float, seed: int = 0):
        self.app = app
        self.rate = rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: list[tuple[str, str, str]] = []  # (status, method, path)
        self.requests = 0
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request, in order

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        object_request = path.strip("/").count("/") >= 1  # /bucket/key...: leave bucket admin alone
        with self.lock:
            self.requests += 1
            self.seen.append((environ.get("REQUEST_METHOD", ""), path))
            fail = object_request and self.rate > 0 and self.rng.random() < self.rate
            status, code, message = _S3_ERRORS[self.rng.randrange(len(_S3_ERRORS))]
            if fail:
                self.injected.append((status, environ.get("REQUEST_METHOD", ""), path))
        if not fail:
            return self.app(environ, start_response)
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<Resource>{path}</Resource><RequestId>injected</RequestId></Error>").encode()
        _drain(environ)
        start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
        return [body]


def _drain(environ: dict) -> None:
    """Read the request body (exactly Content-Length bytes: the socket stays open) so keep-alive works."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    elif environ.get("wsgi.input_terminated"):
        environ["wsgi.input"].read()


class FaultyS3Server:
    """A moto S3 server on 127.0.0.1 whose object requests fail at ``rate`` (shares moto's in-process state)."""

    def __init__(self, port: int, rate: float, seed: int = 0):
        self.port = port
        self.rate = rate
        self.seed = seed
        self.app: FaultyS3App | None = None
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        self.app = FaultyS3App(DomainDispatcherApplication(create_backend_app), self.rate, self.seed)
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True,
                                   request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)


# -- processes --------------------------------------------------------------------------------

STAGE_WORKER_TITLE = "StageRunner"  # Ray titles an actor process "ray::MapWorker(MapBatches(StageRunner))"


def stage_worker_processes(root_pid: int) -> list:
    """psutil processes of the stage actors that ``root_pid`` (a driver that started a local Ray) spawned."""
    import psutil

    found = []
    try:
        children = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for process in children:
        try:
            if STAGE_WORKER_TITLE in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:  # exited meanwhile
            continue
    return found
