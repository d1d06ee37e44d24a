"""The ``ffhq-uv`` command line.

    ffhq-uv run [--profile photo] [--config FILE] [--input SRC] [--output OUT] [--address ADDR] [key=value ...]
    ffhq-uv fit --input PHOTOS --output OUT [--profile open|faithful] [--topology-obj OBJ] [--eyeballs DIR] [k=v ...]
                                RGB fitting (configs/fit.yaml): a textured HiFi3D++ head per photo
    ffhq-uv status OUT          shards done / partial / pending, samples by status and error code, ETA
    ffhq-uv failed OUT          failed samples with their stage, code and message
    ffhq-uv query OUT "SQL"     DuckDB SQL over the run's manifest (table name: manifest)
    ffhq-uv retry-failed OUT    re-run only the failed samples and rewrite their shards
    ffhq-uv schema              the manifest columns
    ffhq-uv mesh ...            mesh tools: add-eyeballs, flame-uv, preview (pipeline/mesh_cli.py)
    ffhq-uv submit|logs|stop|jobs   the pipeline as a Ray job on a cluster (pipeline/jobs.py)
    ffhq-uv report OUT          a static HTML report: UV gallery, failures, histograms (pipeline/report.py)
    ffhq-uv export|interpolate  a run in training layouts; FFHQ-UV-Interpolate (pipeline/dataset_cli.py)
    ffhq-uv template build OUT --output template.png
                                a template UV map: robust mean of a run's maps (pipeline/template_cli.py)

Errors a user can fix print one line and exit with status 2; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Optional

import pyarrow.csv as pacsv

from pipeline import driver, layout, ops
from pipeline.config import load_config, redact_text, registry_for
from pipeline.dataset_cli import DATASET_COMMANDS, add_dataset_subcommands, run_dataset_command
from pipeline.jobs import JOB_COMMANDS, add_job_subcommands, run_job_command
from pipeline.manifest import manifest_schema
from pipeline.mesh_cli import add_mesh_subcommands, run_mesh_command, user_errors
from pipeline.planning import load_run_config
from pipeline.report import add_report_subcommands, run_report_command
from pipeline.runner import storage_for
from pipeline.storage import endpoint_options, open_storage
from pipeline.template_cli import add_template_subcommands, run_template_command
from stages.base import Status
from stages.errors import FatalError

EXIT_USAGE = 2


def _add_storage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint for s3:// outputs (MinIO, moto)")


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    """The options that ``run`` and ``fit`` share: both are one pipeline job through the same driver."""
    parser.add_argument("--config", action="append", default=[], metavar="FILE", help="extra YAML config file(s)")
    parser.add_argument("--input", help="input folder, glob, fsspec URL or id,uri list file (input.source)")
    parser.add_argument("--output", help="output folder or fsspec URL (default runs/<name>)")
    parser.add_argument("--address", help="join this Ray cluster instead of starting a local one (ray.address)")
    parser.add_argument("--restart", action="store_true", help="delete an existing run at the output and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-visuals", action="store_true", help="skip the contact sheet and HTML report at the end")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ffhq-uv", description="Rebuild FFHQ-UV-style UV texture datasets on Ray.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run or resume the pipeline")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. shard_size=500")
    run.add_argument("--profile", default="photo", help="photo (default), ffhq-uv or tiny")
    _add_job_options(run)

    fit = commands.add_parser("fit", help="RGB fitting: a textured 3D head per photo (FFHQ-UV section 4.2)")
    fit.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (stages.fit.stage3_steps=50)")
    fit.add_argument("--profile", default="open", choices=("open", "faithful"),
                     help="open (default: pip packages only) or faithful (FFHQ-UV's checkpoints in models.weights_dir)")
    fit.add_argument("--topology-obj", help="a HiFi3D++ OBJ with UVs (topology.obj)")
    fit.add_argument("--eyeballs", metavar="DIR", help="add FFHQ-UV's template eyeballs (eyeLeft_mesh_move.obj, "
                     "eyeRight_mesh_move.obj, eye_ball_tex.png in DIR) to the final meshes (stages.fit.eyeballs)")
    _add_job_options(fit)

    for name, help_text in (("status", "show the state of a run"), ("failed", "list failed samples")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("output")
        _add_storage_args(sub)
        if name == "failed":
            sub.add_argument("--include-filtered", action="store_true")

    query = commands.add_parser("query", help="SQL over the manifest (table: manifest)")
    query.add_argument("output")
    query.add_argument("sql")
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    _add_storage_args(query)

    retry = commands.add_parser("retry-failed", help="re-run the failed samples of a run")
    retry.add_argument("output")
    retry.add_argument("overrides", nargs="*", metavar="key=value")
    retry.add_argument("--code", action="append", help="only samples failed with this error code (repeatable)")
    retry.add_argument("--no-progress", action="store_true")
    _add_storage_args(retry)

    commands.add_parser("schema", help="print the manifest columns")
    add_mesh_subcommands(commands)
    add_job_subcommands(commands)
    add_report_subcommands(commands)
    add_dataset_subcommands(commands)
    add_template_subcommands(commands)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("interrupted: committed shards are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one line for users, traceback with --debug
        if args.debug:
            raise
        print(f"ffhq-uv: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE if _is_user_error(error) else 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "mesh":
        return run_mesh_command(args)
    if args.command in JOB_COMMANDS:
        return run_job_command(args)
    if args.command == "report":
        return run_report_command(args)
    if args.command in DATASET_COMMANDS:
        return run_dataset_command(args)
    if args.command == "template":
        return run_template_command(args)
    if args.command in ("run", "fit"):
        return _run_command(args)
    if args.command == "retry-failed":
        config = load_run_config(args.output, tuple(args.overrides), args.endpoint_url)
        summary = driver.retry_failed(config, registry_for(config), error_codes=args.code,
                                      progress=not args.no_progress)
        print(_render_summary(summary))
        return 0
    if args.command == "schema":
        for column in manifest_schema():
            print(f"{column.name}\t{column.type}")
        return 0
    return _run_view_command(args)


def _run_command(args: argparse.Namespace) -> int:
    """``run`` and ``fit``: the config from the profile, files and flags, then the driver."""
    overrides = list(args.overrides)
    flags = [(args.input, "input.source"), (args.output, "output"), (args.address, "ray.address")]
    if args.command == "fit":
        flags += [(args.profile, "stages.fit.profile"), (args.topology_obj, "topology.obj"),
                  (args.eyeballs, "stages.fit.eyeballs")]
    overrides += [f"{key}={flag}" for flag, key in flags if flag]
    if args.debug:
        overrides.append("ray.log_to_driver=true")
    profile = "fit" if args.command == "fit" else args.profile
    config = load_config(profile, tuple(args.config), tuple(overrides))
    summary = driver.run(config, registry_for(config), restart=args.restart, progress=not args.no_progress)
    print(_render_summary(summary))
    if not args.no_visuals:
        _print_visuals(storage_for(config))
    return 0


def _run_view_command(args: argparse.Namespace) -> int:
    """``status``, ``failed`` and ``query``: read-only views of a run."""
    storage = open_storage(args.output, endpoint_options(args.endpoint_url))
    if args.command == "status":
        print(ops.run_status(storage).render())
    elif args.command == "failed":
        table = ops.failed_samples(storage, include_filtered=args.include_filtered)
        print(ops.format_table(table.drop_columns(["source_uri"])) if table.num_rows else "no failed samples")
    elif args.command == "query":
        table = ops.query(storage, args.sql)
        if args.format == "csv":
            pacsv.write_csv(table, sys.stdout.buffer)
        elif args.format == "json":
            print(json.dumps(table.to_pylist(), default=str, indent=1))
        else:
            print(ops.format_table(table))
    return 0


def _render_summary(summary) -> str:
    counts = summary.status_counts
    lines = [
        f"done in {summary.seconds:.1f}s: {summary.samples_processed} samples processed, "
        f"{summary.shards_committed} shards committed ({summary.shards_skipped} already done)",
        "run total: " + ", ".join(f"{counts.get(status, 0)} {status}" for status in Status),
    ]
    for code, count in sorted(summary.error_counts.items(), key=lambda item: -item[1]):
        lines.append(f"  {count:>6}  {code}")
    lines.append(f"output: {summary.output}  (ffhq-uv status|failed|query {summary.output})")
    return "\n".join(lines)


def _print_visuals(storage) -> None:
    """The end-of-run pictures, written into the run: a contact sheet of UV maps and the HTML gallery."""
    from pipeline.contact_sheet import build_contact_sheet
    from pipeline.report import build_report

    sheet = build_contact_sheet(storage)
    if sheet:
        print(f"UV maps: {storage.url('shards')}/*/samples/*/uv.png")
        print(f"contact sheet: {storage.url(sheet)}")
    with tempfile.TemporaryDirectory() as tmp:  # the report is self-contained: build locally, then store
        report = build_report(storage, Path(tmp) / layout.REPORT_HTML)
        storage.write_bytes(layout.REPORT_HTML, report.read_bytes())
    print(f"gallery: {storage.url(layout.REPORT_HTML)}")


def _is_user_error(error: Exception) -> bool:
    return isinstance(error, (FatalError, FileNotFoundError, PermissionError, *user_errors()))


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return redact_text(text)


if __name__ == "__main__":
    sys.exit(main())
