"""Benchmark of the attribute and relight stages on CPU with 1024x1024 inputs: samples/s and CPU time per model.

Three set-ups, each run in-process through the real stage code (``setup`` once, then
``process`` per sample), then the same models timed one by one on the same images to
give each model's share:
- ``ffhq-uv attribute``: the 1024 inversion -> landmarks, pose, DPR light, deepface
  age + gender + emotion (random weights in deepface's format: same cost as the real ones);
- ``ffhq-uv relight``: three 1024 views -> landmarks, skin fit (symmetry), DPR estimate,
  DPR relight + re-estimate (threshold 0, so every view is relit: the worst case);
- ``photo``: the source photo -> landmarks, FFHQ alignment to 1024, landmarks again,
  pose, analytic SH light; then the analytic relight of the aligned view.
Needs ../shared/data (FFHQ-UV example, DPR weights). Prints a table; asserts nothing.

    .venv/bin/python bench/bench_attribute_relight.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / ".." / "shared" / "data"
EXAMPLE = DATA / "ffhq_uv_example"

import cv2  # noqa: E402 - after the path set-up above
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from stages.attribute import AttributeStage  # noqa: E402
from stages.base import Sample  # noqa: E402
from stages.face.align import align_face  # noqa: E402
from stages.face.deepface_models import deepface_home, face_input  # noqa: E402
from stages.face.detectors import ffhq_points  # noqa: E402
from stages.face.pose import head_pose  # noqa: E402
from stages.lighting.analytic import divide_shading, fit_shading  # noqa: E402
from stages.lighting.sh import EVEN_LIGHT  # noqa: E402
from stages.networks import DPR_FILE  # noqa: E402
from stages.relight import RelightStage  # noqa: E402
from stages.views import VIEW, VIEW_NAMES, view_key  # noqa: E402
from tests.tiny_deepface_weights import write_random_deepface_weights  # noqa: E402


def _timed(fn, repeats: int) -> float:
    """Mean CPU seconds of ``fn()`` over ``repeats`` runs after one warm-up.

    CPU time of this process (all its threads), not wall time: the figures stay
    meaningful on a machine shared with other jobs; samples/s are per busy core.
    """
    fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def _stage(cls, profile: str, out: Path, *overrides: str):
    from pipeline.config import load_config, stage_settings
    from pipeline.storage import open_storage
    from stages.base import StageContext

    config = load_config(profile, overrides=(f"output={out}", *overrides))
    settings = stage_settings(config, cls.name)
    cls.preflight(settings, config)
    stage = cls(settings, StageContext(storage=open_storage(str(out)), config=config, stage_name=cls.name))
    stage.setup()
    return stage


def _report(title: str, per_sample: float, parts: dict[str, float]) -> None:
    total = sum(parts.values())
    print(f"\n{title}: {per_sample:.3f} CPU s/sample = {1 / per_sample:.2f} samples/s per core")
    for name, seconds in parts.items():
        print(f"  {name:<28} {seconds:7.3f} s  {100 * seconds / total:5.1f} %")
    print(f"  {'(stage overhead: I/O, PNG)':<28} {max(0.0, per_sample - total):7.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenCV threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_attr_"))
    try:
        weights = work / "weights"
        (weights / DPR_FILE).parent.mkdir(parents=True)
        shutil.copy(DATA / "dpr" / "trained_model_03.t7", weights / DPR_FILE)
        write_random_deepface_weights(deepface_home(weights))
        common = ("models.device=cpu", f"models.weights_dir={weights}")
        _bench_ffhq_uv_attribute(work, common, args.repeats)
        _bench_ffhq_uv_relight(work, common, args.repeats)
        _bench_photo(work, args.repeats)
        print(f"\n(torch/OpenCV threads: {args.threads}; {os.cpu_count()} CPUs on this machine)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _bench_ffhq_uv_attribute(work: Path, common: tuple[str, ...], repeats: int) -> None:
    """ffhq-uv attribute on the 1024 inversion."""
    attribute = _stage(AttributeStage, "ffhq-uv", work / "o1", *common)
    sample = Sample(id="01223", uri=str(EXAMPLE / "images" / "01223.png"), shard=0, index=0)
    inversion = _rgb(EXAMPLE / "inversions" / "01223.png")
    attribute.context.write_image(sample, "inversion", inversion)
    per_sample = _timed(lambda: attribute.process(sample), repeats)
    face = attribute.landmarker.detect_one(inversion)
    bgr = np.ascontiguousarray(inversion[:, :, ::-1])
    crop = face_input(inversion, face.box)
    parts = {
        "landmarks (mediapipe)": _timed(lambda: attribute.landmarker.detect_one(inversion), repeats),
        "pose": _timed(lambda: head_pose(face.points), repeats),
        "DPR estimate (512)": _timed(lambda: attribute.relighter.estimate([bgr]), repeats),
    }
    for name in attribute.deepface.nets:
        parts[f"deepface {name}"] = _timed(lambda n=name: _one_model(attribute.deepface, n, crop), repeats)
    _report("ffhq-uv attribute (1024 inversion)", per_sample, parts)


def _bench_ffhq_uv_relight(work: Path, common: tuple[str, ...], repeats: int) -> None:
    """ffhq-uv relight of three 1024 views, every view relit."""
    relight = _stage(RelightStage, "ffhq-uv", work / "o2", *common, "stages.relight.threshold=0")
    sample = Sample(id="01223", uri=str(EXAMPLE / "images" / "01223.png"), shard=0, index=0)
    views = {v: _rgb(EXAMPLE / "edit" / f"01223_{v}.png") for v in VIEW_NAMES}
    for view, image in views.items():
        relight.context.write_image(sample, view_key(VIEW, view), image)
    per_sample = _timed(lambda: relight.process(sample), repeats)
    front = views["front"]
    points = relight.landmarker.detect_one(front).points
    front_bgr = np.ascontiguousarray(front[:, :, ::-1])
    parts = {
        "landmarks (mediapipe)": 3 * _timed(lambda: relight.landmarker.detect_one(front), repeats),
        "skin fit (symmetry) x2": 6 * _timed(lambda: fit_shading(front, points), repeats),
        "DPR estimate x2": 6 * _timed(lambda: relight.relighter.estimate([front_bgr]), repeats),
        "DPR relight": 3 * _timed(lambda: relight.relighter.relight(front_bgr, np.array(EVEN_LIGHT)), repeats),
    }
    _report("ffhq-uv relight (3 views of 1024, all relit)", per_sample, parts)


def _bench_photo(work: Path, repeats: int) -> None:
    """photo profile: attribute (align + analytic light) and relight (analytic) on a 1024 photo."""
    photo_attr = _stage(AttributeStage, "photo", work / "o3")
    photo_relight = _stage(RelightStage, "photo", work / "o3", "stages.relight.threshold=0")
    photo = Sample(id="e4e", uri=str(DATA / "faces" / "e4e_input.jpg"), shard=0, index=0)
    per_attr = _timed(lambda: photo_attr.process(photo), repeats)
    per_relight = _timed(lambda: photo_relight.process(photo), repeats)
    source = _rgb(DATA / "faces" / "e4e_input.jpg")
    five = ffhq_points(photo_attr.landmarker.detect_one(source).points)
    aligned = align_face(source, five, 1024).image
    points = photo_attr.landmarker.detect_one(aligned).points
    fit = fit_shading(aligned, points)
    parts = {
        "landmarks (mediapipe) x2": 2 * _timed(lambda: photo_attr.landmarker.detect_one(source), repeats),
        "FFHQ alignment to 1024": _timed(lambda: align_face(source, five, 1024), repeats),
        "pose": _timed(lambda: head_pose(points), repeats),
        "analytic SH fit": _timed(lambda: fit_shading(aligned, points), repeats),
    }
    _report("photo attribute (1024 photo, no weights)", per_attr, parts)
    parts = {
        "landmarks (mediapipe)": _timed(lambda: photo_relight.landmarker.detect_one(aligned), repeats),
        "analytic SH fit x2": 2 * _timed(lambda: fit_shading(aligned, points), repeats),
        "shading division": _timed(lambda: divide_shading(aligned, fit, EVEN_LIGHT), repeats),
    }
    _report("photo relight (aligned 1024 view, relit)", per_relight, parts)


def _one_model(models, name: str, crop) -> None:
    """Run one deepface network alone on one face."""
    with torch.no_grad():
        if name == "emotion":
            models.nets[name](models.emotion_input(crop[None]))
        else:
            models.nets[name](torch.from_numpy(crop[None]).permute(0, 3, 1, 2))


if __name__ == "__main__":
    main()
