"""Seconds per photo of RGB fitting's open profile at FFHQ-UV's schedule (100 + 200 steps), by stage and by part.

Photos: ../shared/data/faces/{000007,000055,015309}.jpg on the HiFi3D++ head (../shared/data/hifi3dpp). Parts of
the optimised stages: render (rasterise + differentiable shading), losses, backward (+ Adam step). Also prints the
masked photometric L1 at 224 after each stage and the final landmark error. ``--pictures DIR`` saves, per photo,
the 224 crop | the fitted render over it | the UV map. Set OMP_NUM_THREADS=1 for one-core figures:

    python bench/bench_fit.py [--steps 100 200] [--backend cpu] [--pictures /work/pictures/15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
PHOTOS = ("000007", "000055", "015309")


def comparison(result, size: int = 448) -> np.ndarray:
    """(size, 3 * size, 3) uint8: the crop, the final render over it, the final UV map."""
    import cv2

    from stages.fitting import open_fit

    render, coverage = open_fit.render_state(result.problem, result.states[3])
    crop = result.data.image
    over = np.where(coverage[..., None] > 0, render, crop)
    tiles = [cv2.resize((np.clip(x, 0, 1) * 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
             for x in (crop, over)]
    tiles.append(cv2.resize(open_fit.texture_uint8(result.states[3]), (size, size), interpolation=cv2.INTER_AREA))
    return np.concatenate(tiles, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs=2, default=(100, 200), metavar=("STAGE2", "STAGE3"))
    parser.add_argument("--backend", default="cpu", choices=("cpu", "nvdiffrast"))
    parser.add_argument("--photos", nargs="*", default=list(PHOTOS))
    parser.add_argument("--pictures", help="folder for photo | render | UV comparisons")
    args = parser.parse_args()

    from stages.face.landmarks import FaceLandmarker
    from stages.fitting.photo_fit import PhotoFitter
    from stages.geometry.topologies import load_topology
    from stages.imageio import decode_image, encode_png
    from stages.texture.template import template_for

    with tempfile.TemporaryDirectory() as cache, FaceLandmarker(max_faces=2) as detector:
        start = time.perf_counter()
        topology = load_topology("hifi3dpp", obj_path=str(DATA / "hifi3dpp" / "head_teaser1.obj"), cache_dir=cache)
        fitter = PhotoFitter(topology, template_for("hifi3dpp", topology.masks(), None), tuple(args.steps),
                             args.backend)
        print(f"setup (topology uncached, template, shape model): {time.perf_counter() - start:.1f} s")
        print(f"schedule: stage 2 {args.steps[0]} steps, stage 3 {args.steps[1]} steps, backend {args.backend}")
        for name in args.photos:
            photo = decode_image((DATA / "faces" / f"{name}.jpg").read_bytes())
            tick, cpu = time.perf_counter(), time.process_time()
            points = detector.detect_one(photo).points
            landmarks_s = time.perf_counter() - tick
            result = fitter.fit(photo, points)
            total = landmarks_s + sum(result.seconds.values())
            cpu = time.process_time() - cpu  # CPU seconds of this process: robust to other jobs on the machine
            stages = "  ".join(f"{k} {v:.1f}" for k, v in result.seconds.items())
            print(f"{name} ({photo.shape[1]}x{photo.shape[0]}): {total:.1f} s/photo wall, {cpu:.1f} CPU s  "
                  f"(landmarks {landmarks_s:.2f}  {stages})", flush=True)
            for k in (2, 3):
                parts = result.reports[k].seconds
                steps = args.steps[k - 2]
                per_step = "  ".join(f"{p} {v / max(steps, 1):.3f}" for p, v in parts.items())
                print(f"  stage {k} per step: {per_step}")
            l1 = "  ".join(f"stage{k} {result.reports[k].photometric_l1:.4f}" for k in (1, 2, 3))
            print(f"  photometric L1 at 224: {l1}; landmark error {result.reports[3].landmark_error_px:.2f} px",
                  flush=True)
            if args.pictures:
                out = Path(args.pictures)
                out.mkdir(parents=True, exist_ok=True)
                (out / f"fit_{name}.png").write_bytes(encode_png(comparison(result)))


if __name__ == "__main__":
    main()
