"""Shared fixtures: paths to ../shared/data, generated images, the CLI in a subprocess, a moto S3 server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
CLI = [sys.executable, "-m", "pipeline.cli"]


# The skip policy, in one place. Without ../shared/data a test that needs a file of it skips (``shared_data``).
# With it (CI), a skip is a failure unless its reason starts with one of these: hardware or optional packages
# this machine may lack. Chromium is a system package (the HTML report's browser test), not a pip one.
ALLOWED_SKIPS = ("needs a GPU", "needs dlib", "needs chromium")


def gpu_reason(why: str) -> str:
    """A skip reason CI accepts: the test needs a CUDA GPU (``why``: what for)."""
    return f"needs a GPU: {why}"


def dlib_reason(why: str) -> str:
    return f"needs dlib: {why}"


def _refused_skip(report) -> str | None:
    """Why a skip report breaks the policy (None if it does not)."""
    if not report.skipped or not SHARED_DATA.is_dir() or hasattr(report, "wasxfail"):
        return None
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if reason.startswith(ALLOWED_SKIPS):
        return None
    return f"skipped although ../shared/data is present: {reason!r} (allowed: {', '.join(ALLOWED_SKIPS)})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    refused = _refused_skip(report)
    if refused:
        report.outcome, report.longrepr = "failed", refused


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    refused = _refused_skip(report)
    if refused:
        report.outcome, report.longrepr = "failed", refused


def shared_data(relative: str) -> Path:
    """A file of ../shared/data, or skip the test when that folder is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} not available (../shared/data is absent)")
    return path


def face_and_noise_inputs(folder: Path, face: str) -> Path:
    """An input folder holding one real face of ../shared/data (as PNG) and a 128 px noise image (no face)."""
    folder.mkdir()
    Image.open(shared_data(face)).save(folder / f"{Path(face).stem}.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(folder / "noise.png")
    return folder


def write_images(folder: Path, count: int, size: tuple[int, int] = (96, 80), seed: int = 0,
                 prefix: str = "img_") -> list[str]:
    """Write ``count`` random RGB PNGs; returns their ids (file stems)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(count):
        sample_id = f"{prefix}{i:03d}"
        pixels = rng.integers(0, 250, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{sample_id}.png")
        ids.append(sample_id)
    return ids


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``ffhq-uv ARGS`` in a fresh process (its own local Ray), returning its output."""
    result = subprocess.run(CLI + args, env=env or cli_env(), capture_output=True, text=True, timeout=timeout,
                            cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"ffhq-uv {' '.join(args)} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}")
    return result


def kill_process_group(process: subprocess.Popen) -> None:
    """SIGKILL a process started with start_new_session=True and everything it spawned."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 with fake credentials in the environment."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket on the moto server; yields (endpoint, bucket name, s3fs filesystem)."""
    import uuid

    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    bucket = f"test-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    return s3_server, bucket, fs


@pytest.fixture(scope="session")
def random_deepface_home(tmp_path_factory) -> Path:
    """A DEEPFACE_HOME with deepface's age, gender and emotion models at random weights (about 1 GB),
    written once per test session."""
    from tests.tiny_deepface_weights import write_random_deepface_weights

    return write_random_deepface_weights(tmp_path_factory.mktemp("deepface_home"))
