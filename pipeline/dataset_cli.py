"""The dataset commands of the ``ffhq-uv`` CLI: ``export`` (pipeline/export/) and ``interpolate``
(pipeline/interpolate.py)."""

from __future__ import annotations

import argparse

from pipeline.storage import endpoint_options

DATASET_COMMANDS = ("export", "interpolate")


def add_dataset_subcommands(commands) -> None:
    export = commands.add_parser("export", help="a finished run in FFHQ-UV's, stylegan2-ada's or WebDataset's layout")
    export.add_argument("run", help="the run folder or URL")
    export.add_argument("dest", help="destination folder or URL (stylegan2-ada: a .zip name for one zip)")
    export.add_argument("--format", required=True, choices=("ffhq-uv", "stylegan2-ada", "webdataset"))
    export.add_argument("--include-filtered", action="store_true", help="also export samples a quality check filtered")
    export.add_argument("--labels", default="attributes", choices=("attributes", "classes", "none"),
                        help="stylegan2-ada dataset.json labels (default: the 17-dim attribute vector)")
    export.add_argument("--crop", default="none", choices=("none", "cropface630"),
                        help="stylegan2-ada: FFHQ-UV's 630 px face crop resized to 1024")
    export.add_argument("--shard-size", type=int, default=1000, help="webdataset: samples per tar shard")
    export.add_argument("--endpoint-url", help="S3-compatible endpoint for s3:// runs and destinations")

    interpolate = commands.add_parser("interpolate", help="FFHQ-UV-Interpolate: new latents within "
                                                           "gender/age/beard classes, then the from-latents chain")
    interpolate.add_argument("source", help="a finished run, or a folder of FFHQ-UV released face-latents")
    interpolate.add_argument("overrides", nargs="*", metavar="key=value",
                             help="interpolation settings (seed=1 max_bs_error=8 ...) and, with --run, run config "
                                  "overrides prefixed run. (run.models.weights_dir=/w)")
    interpolate.add_argument("--output", required=True, help="the new run's folder or URL")
    interpolate.add_argument("--count", type=int, required=True, help="new samples to make")
    interpolate.add_argument("--meta-info", help="released latents: FFHQ-UV's meta-info.json (gender, age, beard)")
    interpolate.add_argument("--run", action="store_true", help="render the new latents with the from-latents "
                                                                 "profile into --output right away")
    interpolate.add_argument("--endpoint-url", help="S3-compatible endpoint for s3:// sources and outputs")


def run_dataset_command(args: argparse.Namespace) -> int:
    options = endpoint_options(args.endpoint_url)
    if args.command == "export":
        from pipeline.export import ExportOptions, export_run

        summary = export_run(args.run, args.dest, ExportOptions(
            format=args.format, include_filtered=args.include_filtered, labels=args.labels, crop=args.crop,
            shard_size=args.shard_size), options)
        print(summary.render())
        return 0
    from pipeline.interpolate import run_interpolate_command

    return run_interpolate_command(args, options)
