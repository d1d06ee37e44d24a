"""Benchmark of the complete stage: seconds per sample at 1024 with three views, split by sub-step.

Runs FFHQ-UV's completion (merge / Poisson / pyramid blend, ``stages/texture/merge.py``)
on one CPU thread for each available topology, with three views made from the
topology's own masks (a recoloured, noisy copy of the template seen through each
view's ``minor_valid`` region minus eyes and mouth, like FFHQ-UV's parsing mask),
plus the preview render and the PNG encoding the stage also does. Prints a table;
asserts nothing (speed targets are read, not tested).

    .venv/bin/python bench/bench_complete.py [--repeats 5] [--topology mediapipe468 hifi3dpp] [--views 1|3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target states
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from stages.geometry.obj import Mesh  # noqa: E402
from stages.geometry.render import TexturedPart, render_views  # noqa: E402
from stages.geometry.topologies import load_topology  # noqa: E402
from stages.imageio import encode_png  # noqa: E402
from stages.texture.merge import UVView, complete_texture  # noqa: E402
from stages.texture.template import build_template  # noqa: E402

HIFI3DPP_OBJ = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "hifi3dpp" / "head_teaser1.obj"


def synthetic_views(regions: dict[str, np.ndarray], template: np.ndarray,
                    names: tuple[str, ...] = ("left", "right", "front")) -> dict[str, UVView]:
    """Views of a recoloured, noisy template through each view's minor region minus eyes and mouth."""
    rng = np.random.default_rng(0)
    face = np.clip(template * np.array([0.85, 0.95, 1.1]) + rng.normal(0, 5, template.shape), 0, 255)
    holes = np.clip(regions["eye_l"] + regions["eye_r"] + regions["mouth"], 0, 1)
    views = {}
    for name in names:
        mask = (regions[f"minor_valid_{name}"] * (1 - holes) > 0.5).astype(np.float32)
        views[name] = UVView((face * mask[:, :, None]).astype(np.float32), mask)
    return views


def bench(topology_name: str, repeats: int, names: tuple[str, ...]) -> dict[str, float]:
    """Median seconds per sub-step over ``repeats`` samples."""
    obj = str(HIFI3DPP_OBJ) if topology_name == "hifi3dpp" else None
    topology = load_topology(topology_name, obj_path=obj)
    regions = topology.masks()
    boxes = {r.name: (r.top, r.bottom, r.left, r.right) for r in topology.fill_regions()}
    start = time.perf_counter()
    template = build_template(regions)
    template_s = time.perf_counter() - start
    views = synthetic_views(regions, template, names)
    mesh = Mesh(vertices=topology.vertices, faces=topology.triangles, uvs=topology.uvs, face_uvs=topology.face_uvs)
    times: dict[str, list[float]] = {"merge": [], "poisson": [], "blend": [], "png": [], "preview": []}
    for _ in range(repeats):
        result = complete_texture(views, template, regions, boxes)
        for key in ("merge", "poisson", "blend"):
            times[key].append(result.seconds[key])
        start = time.perf_counter()
        encode_png(result.uv)
        times["png"].append(time.perf_counter() - start)
        start = time.perf_counter()
        render_views([TexturedPart(mesh, result.uv)], size=512)
        times["preview"].append(time.perf_counter() - start)
    medians = {key: statistics.median(values) for key, values in times.items()}
    medians["template (once per actor)"] = template_s
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--topology", nargs="+", default=["mediapipe468", "hifi3dpp"])
    parser.add_argument("--views", type=int, choices=(1, 3), default=3,
                        help="3 (FFHQ-UV's views) or 1 (a photo: the photo profile's completion)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    for name in args.topology:
        if name == "hifi3dpp" and not HIFI3DPP_OBJ.exists():
            print(f"{name}: skipped ({HIFI3DPP_OBJ} not available)")
            continue
        names = ("left", "right", "front") if args.views == 3 else ("front",)
        medians = bench(name, args.repeats, names)
        core = medians["merge"] + medians["poisson"] + medians["blend"]
        print(f"\n{name}: complete at 1024, {len(names)} view(s), 1 thread, median of {args.repeats}")
        for key, value in medians.items():
            print(f"  {key:28s} {value:7.3f} s")
        print(f"  {'merge + poisson + blend':28s} {core:7.3f} s per sample")
        print(f"  {'with png + preview':28s} {core + medians['png'] + medians['preview']:7.3f} s per sample")


if __name__ == "__main__":
    main()
