"""Seconds per step of RGB fitting's faithful profile (FFHQ-UV's networks), by stage and by part.

With ``--weights-dir`` the authors' checkpoints (FFHQ-UV's ``checkpoints/`` layout, README 'RGB fitting') are
used; without it, tiny random-weight checkpoints in the same formats (``tests/tiny_fit_weights.py``), which
measure the loop's own cost (rasteriser, 3DMM, losses, backward) with near-free networks. Parts: render (texture
GAN + rasterise + shading), losses (ArcFace, LPIPS-VGG, the rest), backward (+ optimiser step). Also prints each
stage's first and final total loss. ``--pictures DIR`` saves the three stages' visualisations per photo.
``--texture-gan cropface630`` measures FFHQ-UV's face-crop GAN with its template paste and blends
(``stages.fit.texture_gan``). Set OMP_NUM_THREADS=1 for one-thread figures (a Ray worker with one CPU runs so).

    python bench/bench_fit_faithful.py [--weights-dir CHECKPOINTS] [--steps 10 10] [--pictures /work/pictures/15]
        [--texture-gan cropface630]
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


def print_stage(name: str, result, stage: int, steps: int) -> None:
    report = result.reports[stage]
    parts = ", ".join(f"{part} {seconds / max(steps, 1):.3f}" for part, seconds in sorted(report.seconds.items()))
    first = (report.initial_losses or {}).get("total", float("nan"))
    print(f"{name} stage {stage}: {result.seconds[f'stage{stage}']:.2f} s; per step: {parts}; total loss "
          f"{first:.4f} -> {report.losses.get('total', float('nan')):.4f}; L1 {report.photometric_l1:.4f}, "
          f"landmarks {report.landmark_error_px:.2f} px")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", help="FFHQ-UV's checkpoints (default: tiny random-weight files)")
    parser.add_argument("--steps", type=int, nargs=2, default=(10, 10), metavar=("STAGE2", "STAGE3"))
    parser.add_argument("--photos", nargs="*", default=["000055"])
    parser.add_argument("--pictures", help="folder for the stage visualisations")
    parser.add_argument("--texture-gan", choices=("ffhq_uv", "cropface630"), default="ffhq_uv")
    args = parser.parse_args()

    from stages.face.landmarks import FaceLandmarker
    from stages.fitting import outputs
    from stages.fitting.cropface_texture import cropface_assets
    from stages.fitting.faithful_models import load_faithful_models
    from stages.fitting.faithful_photo import FaithfulFitter
    from stages.geometry.hifi3dpp import load_hifi3dpp
    from stages.imageio import decode_image, encode_png
    from stages.texture.template import template_for
    from tests.tiny_fit_weights import write_faithful_weights_dir

    with tempfile.TemporaryDirectory() as scratch, FaceLandmarker(max_faces=2) as detector:
        weights = args.weights_dir or str(write_faithful_weights_dir(Path(scratch) / "weights",
                                                                     DATA / "hifi3dpp" / "head_teaser1.obj"))
        start = time.perf_counter()
        topology = load_hifi3dpp(None, weights, Path(scratch) / "cache")
        cropface = None
        if args.texture_gan == "cropface630":
            regions = topology.masks()
            cropface = cropface_assets(template_for(topology.name, regions, weights), regions)
        fitter = FaithfulFitter(load_faithful_models(weights, cropface=cropface), tuple(args.steps))
        print(f"load: {time.perf_counter() - start:.2f} s ({'given' if args.weights_dir else 'tiny'} weights, "
              f"texture GAN {args.texture_gan})")
        for name in args.photos:
            path = DATA / "faces" / f"{name}.jpg"
            photo = decode_image(path.read_bytes(), source=str(path))
            result = fitter.fit(photo, detector.detect_one(photo).points)
            for stage, steps in ((1, 0), (2, args.steps[0]), (3, args.steps[1])):
                print_stage(name, result, stage, steps)
            if args.pictures:
                folder = Path(args.pictures)
                folder.mkdir(parents=True, exist_ok=True)
                rows = []
                for stage in (1, 2, 3):
                    out = result.stage_output(stage, topology)
                    rows.append(outputs.visualisation(result.data.image, out.render, out.coverage,
                                                      result.data.landmarks_down(), out.fitted_lm))
                (folder / f"faithful_{args.texture_gan}_{name}_stages.png").write_bytes(
                    encode_png(np.concatenate(rows, axis=0)))


if __name__ == "__main__":
    main()
