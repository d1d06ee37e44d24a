"""Seconds per sample of the unwrap stage, split by sub-step (landmarks, fit, rasterise, sample).

Cases: FFHQ-UV's three real views of sample 01223 on ``hifi3dpp`` (../shared/data), and a single photo
(skimage's astronaut) on ``mediapipe468``. Set OMP_NUM_THREADS=1 for one-core figures:

    OMP_NUM_THREADS=1 python bench/bench_unwrap.py [--repeats 3] [--backend cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"


def run_case(name, topology, images, repeats: int, backend: str) -> None:
    """Time landmarks + unwrap of one sample ``repeats`` times; print the mean per sub-step."""
    from stages.face.landmarks import FaceLandmarker
    from stages.geometry.fitting import ShapeModel
    from stages.unwrap import UnwrapSettings, unwrap_sample

    model = ShapeModel(topology)
    settings = UnwrapSettings()
    totals: dict[str, float] = {}
    with FaceLandmarker(max_faces=4) as detector:
        detector.detect(next(iter(images.values())))  # warm-up: graph initialisation is per actor, not per sample
        unwrap_sample(topology, model, images,
                      {v: detector.detect_one(im).points[:, :2] for v, im in images.items()}, settings, backend)
        for _ in range(repeats):
            start = time.perf_counter()
            landmarks = {v: detector.detect_one(im).points[:, :2] for v, im in images.items()}
            totals["landmarks"] = totals.get("landmarks", 0.0) + time.perf_counter() - start
            unwrap_sample(topology, model, images, landmarks, settings, backend, totals)
    per_sample = {k: v / repeats for k, v in totals.items()}
    steps = "  ".join(f"{k} {v:.3f}" for k, v in per_sample.items())
    print(f"{name}: {len(images)} view(s), {sum(per_sample.values()):.3f} s/sample  ({steps})")


def main() -> None:
    """Run the benchmark cases that have their data."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="cpu", choices=("cpu", "nvdiffrast"))
    args = parser.parse_args()
    from skimage import data

    from stages.geometry.topologies import load_topology
    from stages.imageio import decode_image

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        mp = load_topology("mediapipe468", cache_dir=cache)
        mp.masks()
        print(f"mediapipe468 topology build (UV raster + masks, uncached): {time.perf_counter() - start:.2f} s")
        run_case("mediapipe468 single photo", mp, {"front": data.astronaut()}, args.repeats, args.backend)

        head = DATA / "hifi3dpp" / "head_teaser1.obj"
        views = {v: DATA / "ffhq_uv_example" / "edit" / f"01223_{v}.png" for v in ("left", "right", "front")}
        if not head.exists() or not all(p.exists() for p in views.values()):
            print(f"hifi3dpp case skipped: {DATA} lacks the HiFi3D++ head or the FFHQ-UV example views")
            return
        start = time.perf_counter()
        hifi = load_topology("hifi3dpp", obj_path=str(head), cache_dir=cache)
        hifi.masks()
        print(f"hifi3dpp topology build (OBJ read, UV raster + masks, uncached): {time.perf_counter() - start:.2f} s")
        start = time.perf_counter()
        load_topology("hifi3dpp", obj_path=str(head), cache_dir=cache).masks()
        print(f"hifi3dpp topology load (cached): {time.perf_counter() - start:.2f} s")
        images = {v: decode_image(p.read_bytes(), source=str(p)) for v, p in views.items()}
        run_case("hifi3dpp FFHQ-UV 01223 at 1024", hifi, images, args.repeats, args.backend)


if __name__ == "__main__":
    main()
