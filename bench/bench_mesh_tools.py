"""Benchmark of the mesh tools on the real shared data: seconds per call, median of repeats.

Times OBJ reading (HiFi3D++ head), eyeball placement, FLAME UV transfer and the three-view preview render
(HiFi3D++ head with eyeballs) on one CPU thread. Prints a table; asserts nothing.

    .venv/bin/python bench/bench_mesh_tools.py [--repeats 3] [--size 512]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.geometry.obj import read_obj  # noqa: E402
from stages.geometry.render import TexturedPart, render_views  # noqa: E402
from stages.mesh_tools.eyeballs import load_templates, place_eyeballs  # noqa: E402
from stages.mesh_tools.flame_uv import apply_hifi3d_uv, load_reference  # noqa: E402
from stages.mesh_tools.preview import load_texture  # noqa: E402

DATA = ROOT / ".." / "shared" / "data"


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=512, help="pixels per preview view")
    args = parser.parse_args()
    head_path = DATA / "hifi3dpp" / "head_teaser1.obj"
    if not head_path.exists():
        sys.exit(f"shared data not found under {DATA}")
    head = read_obj(head_path)
    templates = load_templates(DATA / "eyeball")
    reference = load_reference(DATA / "flame" / "FLAME_w_HIFI3D_UV.obj")
    flame = read_obj(DATA / "flame" / "flame_head.obj")
    texture = load_texture(DATA / "hifi3dpp" / "tex_teaser1.png")
    eye_texture = load_texture(DATA / "eyeball" / "eye_ball_tex.png")
    fits = place_eyeballs(head, templates)
    parts = [TexturedPart(head, texture)] + [TexturedPart(f.mesh, eye_texture) for f in fits.values()]

    rows = [
        ("read HiFi3D++ OBJ (20,481 v)", _median_seconds(lambda: read_obj(head_path), args.repeats)),
        ("place both eyeballs", _median_seconds(lambda: place_eyeballs(head, templates), args.repeats)),
        ("FLAME UV transfer", _median_seconds(lambda: apply_hifi3d_uv(flame, reference), args.repeats)),
        (f"preview 3 views at {args.size}", _median_seconds(lambda: render_views(parts, size=args.size), args.repeats)),
    ]
    for name, seconds in rows:
        print(f"{name:<34} {seconds:8.3f} s")


if __name__ == "__main__":
    main()
