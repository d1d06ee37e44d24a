"""``ffhq-uv template build RUN --output template.png``: a template UV map from a finished run's maps.

The robust mean of the run's per-sample maps (``stages/texture/template_build.py``) in the run's topology; use
it with ``stages.complete.template=template.png`` (a path or any fsspec URL). ``--max-samples`` bounds the
memory: the first N finished samples in id order are used.
"""

from __future__ import annotations

import argparse
import io

import numpy as np

DEFAULT_MAX_SAMPLES = 64  # 64 maps at 1024 hold ~200 MB


def add_template_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``template build`` to the main CLI's subparsers."""
    template = subparsers.add_parser("template", help="build a template UV map from a finished run")
    tools = template.add_subparsers(dest="template_command", required=True)
    build = tools.add_parser("build", help="robust mean of the run's maps: hair and unseen texels excluded")
    build.add_argument("run", metavar="RUN", help="a finished run's output folder or URL")
    build.add_argument("--output", required=True, metavar="template.png", help="where to write the PNG")
    build.add_argument("--max-samples", type=int, default=DEFAULT_MAX_SAMPLES,
                       help=f"use at most this many finished samples, in id order (default {DEFAULT_MAX_SAMPLES})")
    build.add_argument("--endpoint-url", help="S3-compatible endpoint for s3:// runs")


def run_template_command(args: argparse.Namespace) -> int:
    """Build and write the template; prints where and from how many samples."""
    from pipeline.planning import load_run_config
    from pipeline.runner import storage_for
    from stages.errors import ConfigError

    config = load_run_config(args.run, (), args.endpoint_url)
    maps, valid, regions, topology = read_run_maps(config, storage_for(config), args.max_samples)
    if not maps:
        raise ConfigError(f"{args.run} has no finished UV maps (uv + uvmask_<view> outputs) to build a template from")
    from stages.texture.template import build_template
    from stages.texture.template_build import build_data_template

    template = build_data_template(maps, valid, build_template(regions))
    write_png(args.output, template)
    print(f"template: {args.output} ({topology} topology, robust mean of {len(maps)} samples)")
    return 0


def read_run_maps(config, storage, max_samples: int):
    """The run's finished maps in id order with their validity: (maps, valid, regions, topology name)."""
    import pyarrow.compute as pc

    from pipeline.manifest import manifest_dataset
    from stages.geometry.topologies import topology_from_config
    from stages.imageio import decode_image
    from stages.texture.template_build import sample_validity

    topology = topology_from_config(config)
    regions = topology.masks()
    boxes = [(r.top, r.bottom, r.left, r.right) for r in topology.fill_regions()]
    rows = manifest_dataset(storage).to_table(columns=["id", "outputs"],
                                              filter=pc.field("status") != "failed").to_pylist()
    maps, valid = [], []
    for row in sorted(rows, key=lambda r: r["id"]):
        outputs = dict(row["outputs"] or [])
        masks = [name for name in outputs if name.startswith("uvmask_")]
        if "uv" not in outputs or not masks:
            continue
        uv = decode_image(storage.read_bytes(outputs["uv"]["path"]))
        if uv.shape[:2] != (topology.uv_size, topology.uv_size):
            continue  # a map of another topology or size
        view_masks = [decode_image(storage.read_bytes(outputs[n]["path"]))[..., 0] > 127 for n in sorted(masks)]
        maps.append(uv)
        valid.append(sample_validity(view_masks, regions, boxes))
        if len(maps) == max_samples:
            break
    return maps, valid, regions, topology.name


def write_png(url: str, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB PNG to a path or fsspec URL."""
    import fsspec
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    with fsspec.open(url, "wb") as handle:
        handle.write(buffer.getvalue())
