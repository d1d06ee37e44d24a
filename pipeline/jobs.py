"""Run the pipeline on a Ray cluster through the Ray Jobs API (``ffhq-uv submit | logs | stop | jobs``).

    ffhq-uv submit --address http://HEAD:8265 [--profile P] [--config FILE] [--wait|--follow] [key=value ...]
    ffhq-uv logs JOB [--follow]          the job's driver output (progress line, summary, errors)
    ffhq-uv stop JOB [--wait]            stop a job; committed shards are kept, submit again to resume
    ffhq-uv jobs [JOB]                   the cluster's ffhq-uv jobs (or one job) with status and output

The job runs ``python -m pipeline.cli run`` on the head node. By default this
checkout travels with it as the job's ``working_dir`` (code and configs, without
the virtualenv, runs and caches); ``--installed`` skips the upload for clusters
whose image already has the project installed (cluster/). The config is resolved
here first, so a typo fails before anything is uploaded, and is then passed on as
the profile plus ``key=value`` overrides: config files never need to exist on the
cluster. ``--address`` defaults to ``$RAY_ADDRESS``, as for ``ray job submit``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from stages.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Never uploaded with the job: environments, outputs, caches, VCS data (Ray also honours .gitignore).
WORKING_DIR_EXCLUDES = [".venv/", "venv/", ".git/", "runs/", "build/", "bench/out/", "*.egg-info/", "__pycache__/",
                        ".pytest_cache/", ".ruff_cache/", ".ipynb_checkpoints/", "*.pyc"]
# Environment forwarded to the job when set here: stage plugins and the CPU thread count.
FORWARDED_ENV = ("OMP_NUM_THREADS", "AWS_DEFAULT_REGION")
JOB_ID_PREFIX = "ffhq-uv"
METADATA_KEY = "ffhq_uv"  # metadata marking the cluster's jobs that ffhq-uv submitted
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
POLL_S = 1.0
FAILURE_TAIL_LINES = 30  # lines of a failed job's output that submit --wait prints
AGENT_WAIT_S = 60.0  # how long submit retries while a fresh head node's job agent starts


@dataclass
class SubmittedJob:
    """What ``submit`` sent: the job's id, command and output location."""

    job_id: str
    entrypoint: str
    output: str
    address: str


def client(address: Optional[str] = None):
    """A ``JobSubmissionClient`` for the dashboard at ``address`` (default ``$RAY_ADDRESS`` or localhost)."""
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(resolve_address(address))


def resolve_address(address: Optional[str]) -> str:
    """The dashboard URL: the flag, else ``$RAY_ADDRESS`` when it is an http(s) URL, else localhost:8265."""
    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    if "://" not in address:
        address = f"http://{address}"
    if not address.startswith(("http://", "https://")):
        raise ConfigError(f"--address {address!r} must be the dashboard URL (http://HEAD:8265), "
                          "not a ray:// or GCS address")
    return address


def job_entrypoint(profile: str, config_files: tuple[str, ...] = (), overrides: tuple[str, ...] = (),
                   progress: bool = True) -> tuple[str, str]:
    """The shell command that runs the configured pipeline inside a job, and the run's output URL.

    Raises ConfigError (before anything is submitted) when the config does not resolve,
    or when the output is a relative path that would land in the job's scratch folder.
    """
    from pipeline.config import load_config

    file_overrides = [item for path in config_files for item in _file_as_overrides(path)]
    # Inside a job the driver joins the cluster the job runs on, never a fresh local Ray.
    job_overrides = (*file_overrides, *overrides, "ray.address=auto")
    config = load_config(profile, (), job_overrides)
    output = str(config.output)
    if "://" not in output and not os.path.isabs(output):
        raise ConfigError(f"output {output!r} is relative: a job needs an s3:// URL or an absolute path on storage "
                          "that every node mounts (output=s3://bucket/runs/name)")
    # --no-visuals: the contact sheet and gallery would land in the job's scratch folder;
    # `ffhq-uv report OUT` makes them where the user wants them.
    command = ["python", "-m", "pipeline.cli", "run", "--profile", profile, "--no-visuals", *job_overrides]
    if not progress:
        command.append("--no-progress")
    return shlex.join(command), output


def _file_as_overrides(path: str) -> list[str]:
    """A YAML config file as ``key=value`` overrides (leaves only; interpolations kept for the job to resolve)."""
    from pipeline.config import as_overrides

    if not Path(path).exists():
        raise ConfigError(f"config file {path} does not exist")
    return as_overrides(OmegaConf.to_container(OmegaConf.load(path), resolve=False))


def runtime_env(upload: bool = True, pip: Optional[list[str]] = None) -> dict[str, Any]:
    """The job's runtime environment: this checkout as working_dir (unless installed), forwarded env vars."""
    env_vars = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    # The driver's ray.init() adds env vars of its own (PYTHONPATH, plugins) for its workers;
    # let Ray merge them into the job's environment instead of refusing the overlap.
    env_vars["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
    env: dict[str, Any] = {"env_vars": env_vars}
    if upload:
        env["working_dir"] = str(PROJECT_ROOT)
        env["excludes"] = list(WORKING_DIR_EXCLUDES)
    if pip:
        env["pip"] = list(pip)
    return env


def submit(address: Optional[str], profile: str, config_files: tuple[str, ...] = (), overrides: tuple[str, ...] = (),
           upload: bool = True, pip: Optional[list[str]] = None, job_id: Optional[str] = None,
           entrypoint_num_gpus: Optional[float] = None) -> SubmittedJob:
    """Resolve the config here, then submit ``ffhq-uv run`` as a Ray job; returns its id and output."""
    entrypoint, output = job_entrypoint(profile, config_files, overrides)
    address = resolve_address(address)
    job_id = job_id or f"{JOB_ID_PREFIX}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    jobs = client(address)
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            jobs.submit_job(entrypoint=entrypoint, submission_id=job_id, runtime_env=runtime_env(upload, pip),
                            metadata={METADATA_KEY: "1", "output": output, "profile": profile},
                            entrypoint_num_gpus=entrypoint_num_gpus)
            break
        except RuntimeError as error:
            # A head node that has just started accepts HTTP before its job agent is up.
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(POLL_S)
    return SubmittedJob(job_id=job_id, entrypoint=entrypoint, output=output, address=address)


def status(address: Optional[str], job_id: str) -> str:
    """PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED."""
    return str(client(address).get_job_status(job_id).value)


def wait(address: Optional[str], job_id: str, timeout_s: Optional[float] = None, poll_s: float = POLL_S) -> str:
    """Block until the job reaches a terminal state; returns it. Raises TimeoutError after ``timeout_s``."""
    jobs = client(address)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        state = str(jobs.get_job_status(job_id).value)
        if state in TERMINAL:
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {state} after {timeout_s:g}s")
        time.sleep(poll_s)


def logs(address: Optional[str], job_id: str) -> str:
    """Everything the job's driver printed so far."""
    return client(address).get_job_logs(job_id)


def follow(address: Optional[str], job_id: str, out=None) -> str:
    """Stream the job's output to ``out`` until it ends; returns the final status."""
    out = out or sys.stdout
    jobs = client(address)

    async def tail() -> None:
        async for chunk in jobs.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())
    return wait(address, job_id)


def stop(address: Optional[str], job_id: str) -> bool:
    """Ask Ray to stop the job; False if it had already ended."""
    return bool(client(address).stop_job(job_id))


def list_jobs(address: Optional[str]) -> list[dict[str, Any]]:
    """The ffhq-uv jobs known to the cluster, oldest first: id, status, output, start/end (epoch ms), message."""
    rows = []
    for job in client(address).list_jobs():
        metadata = job.metadata or {}
        if METADATA_KEY not in metadata:
            continue
        rows.append({"job": job.submission_id, "status": str(job.status.value), "output": metadata.get("output"),
                     "start_time": job.start_time, "end_time": job.end_time, "message": job.message or ""})
    return sorted(rows, key=lambda row: row["start_time"] or 0)


# -- command line -----------------------------------------------------------------------------

def add_job_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``submit``, ``logs``, ``stop`` and ``jobs`` to the main CLI's subparsers."""
    address_help = f"Ray dashboard URL (default $RAY_ADDRESS or {DEFAULT_ADDRESS})"

    sub = subparsers.add_parser("submit", help="run the pipeline as a job on a Ray cluster (Ray Jobs API)")
    sub.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. output=s3://b/run")
    sub.add_argument("--address", help=address_help)
    sub.add_argument("--profile", default="photo", help="photo (default), ffhq-uv or tiny")
    sub.add_argument("--config", action="append", default=[], metavar="FILE", help="extra YAML config file(s)")
    sub.add_argument("--input", help="input URL the cluster can read (input.source)")
    sub.add_argument("--output", help="output URL every node can write, e.g. s3://bucket/runs/name")
    sub.add_argument("--job-id", help="submission id (default ffhq-uv-<time>-<random>)")
    sub.add_argument("--installed", action="store_true",
                     help="the cluster image has the project installed: do not upload this checkout")
    sub.add_argument("--pip", action="append", metavar="REQ", help="extra pip requirement for the job (repeatable)")
    sub.add_argument("--driver-gpus", type=float, help="GPUs reserved for the job's driver (default none)")
    mode = sub.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="wait for the job; exit 0 only if it succeeded")
    mode.add_argument("--follow", action="store_true", help="print the job's output until it ends")
    sub.set_defaults(job_run=_submit_command)

    sub = subparsers.add_parser("logs", help="print a job's output")
    sub.add_argument("job")
    sub.add_argument("--address", help=address_help)
    sub.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    sub.set_defaults(job_run=_logs_command)

    sub = subparsers.add_parser("stop", help="stop a job (committed shards are kept)")
    sub.add_argument("job")
    sub.add_argument("--address", help=address_help)
    sub.add_argument("--wait", action="store_true", help="wait until the job has stopped")
    sub.set_defaults(job_run=_stop_command)

    sub = subparsers.add_parser("jobs", help="list the cluster's ffhq-uv jobs, or show one job's status")
    sub.add_argument("job", nargs="?")
    sub.add_argument("--address", help=address_help)
    sub.set_defaults(job_run=_jobs_command)


JOB_COMMANDS = ("submit", "logs", "stop", "jobs")


def run_job_command(args: argparse.Namespace) -> int:
    """Run the job command chosen on the command line; returns the exit status."""
    return args.job_run(args)


def _submit_command(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    for flag, key in ((args.input, "input.source"), (args.output, "output")):
        if flag:
            overrides.append(f"{key}={flag}")
    job = submit(args.address, args.profile, tuple(args.config), tuple(overrides), upload=not args.installed,
                 pip=args.pip, job_id=args.job_id, entrypoint_num_gpus=args.driver_gpus)
    print(f"submitted {job.job_id} to {job.address}\noutput: {job.output}", flush=True)
    if args.follow:
        final = follow(job.address, job.job_id)
    elif args.wait:
        final = wait(job.address, job.job_id)
    else:
        print(f"follow it with: ffhq-uv logs {job.job_id} --follow --address {job.address}")
        return 0
    print(f"job {job.job_id} {final}")
    if final != "SUCCEEDED" and args.wait:
        _print_failure(job.address, job.job_id)
    return 0 if final == "SUCCEEDED" else 1


def _print_failure(address: str, job_id: str) -> None:
    """Ray's reason and the end of the job's output, on stderr."""
    message = (client(address).get_job_info(job_id).message or "").strip().split("\n", 1)[0]
    tail = logs(address, job_id).rstrip().splitlines()[-FAILURE_TAIL_LINES:]
    print("\n".join([message, *tail]).strip(), file=sys.stderr)


def _logs_command(args: argparse.Namespace) -> int:
    if args.follow:
        return 0 if follow(args.address, args.job) == "SUCCEEDED" else 1
    sys.stdout.write(logs(args.address, args.job))
    return 0


def _stop_command(args: argparse.Namespace) -> int:
    stopped = stop(args.address, args.job)
    final = wait(args.address, args.job) if args.wait else status(args.address, args.job)
    print(f"job {args.job} {'stop requested' if stopped else 'had already ended'}: {final}")
    return 0


def _jobs_command(args: argparse.Namespace) -> int:
    from datetime import datetime

    rows = list_jobs(args.address)
    if args.job:
        rows = [row for row in rows if row["job"] == args.job] or [
            {"job": args.job, "status": status(args.address, args.job), "output": None, "start_time": None,
             "end_time": None, "message": ""}]
    if not rows:
        print("no ffhq-uv jobs on this cluster")
        return 0
    for row in rows:
        started = datetime.fromtimestamp(row["start_time"] / 1000).strftime("%Y-%m-%d %H:%M") if row[
            "start_time"] else "-"
        print(f"{row['job']}  {row['status']:<9}  {started}  {row['output'] or '-'}  {row['message']}".rstrip())
    return 0
