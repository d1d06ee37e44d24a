"""Regenerate the README's pictures in ``notebooks/figures/`` from the current code.

    PYTHONPATH=. python notebooks/make_figures.py

1. ``ffhq_uv_01223.jpg`` / ``_preview.jpg``: FFHQ 01223, FFHQ-UV's three views of it and our map from them on the
   HiFi3D++ layout (needs ``../shared/data``; skipped without it), and that map on the head at -45, 0, +45 degrees;
2. ``photo_profile.jpg`` / ``_preview.jpg``: the README's first command (``ffhq-uv run``: the photo profile, analytic
   relighting, the open ``mediapipe468`` topology) on the face photos that ship with the installed packages.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIGURES = ROOT / "notebooks" / "figures"
DATA = ROOT.parent / "shared" / "data"
ROW = 320  # pixels per picture in a figure row
JPEG_QUALITY = 88


def fit_height(image: np.ndarray, height: int = ROW) -> np.ndarray:
    return cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height), interpolation=cv2.INTER_AREA)


def save(name: str, rgb: np.ndarray) -> None:
    cv2.imwrite(str(FIGURES / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    print(f"wrote {FIGURES / name}")


def complete_views(topology, images: dict[str, np.ndarray]) -> np.ndarray:
    """Unwrap + complete the views as the stages do: the (S, S, 3) uint8 map."""
    from stages.face.landmarks import FaceLandmarker
    from stages.geometry.fitting import ShapeModel
    from stages.texture.merge import UVView, complete_texture
    from stages.texture.template import build_template
    from stages.unwrap import UnwrapSettings, unwrap_sample

    with FaceLandmarker(max_faces=1) as detector:
        landmarks = {v: detector.detect_one(im).points[:, :2] for v, im in images.items()}
    unwraps = unwrap_sample(topology, ShapeModel(topology), images, landmarks, UnwrapSettings())
    views = {v: UVView(u.texture.astype(np.float32), (u.mask > 127).astype(np.float32)) for v, u in unwraps.items()}
    boxes = {r.name: (r.top, r.bottom, r.left, r.right) for r in topology.fill_regions()}
    regions = topology.masks()
    return complete_texture(views, build_template(regions), regions, boxes).uv


def preview(topology, uv: np.ndarray) -> np.ndarray:
    from stages.geometry.obj import Mesh
    from stages.geometry.render import TexturedPart, render_views

    mesh = Mesh(vertices=topology.vertices, faces=topology.triangles, uvs=topology.uvs, face_uvs=topology.face_uvs)
    return render_views([TexturedPart(mesh, uv)], size=ROW)


def ffhq_uv_figures(cache: str) -> None:
    from stages.geometry.topologies import load_topology
    from stages.imageio import decode_image

    head, edit = DATA / "hifi3dpp" / "head_teaser1.obj", DATA / "ffhq_uv_example" / "edit"
    if not head.exists() or not edit.exists():
        print(f"01223 figures skipped: {DATA} lacks the HiFi3D++ head or FFHQ-UV's views")
        return
    topology = load_topology("hifi3dpp", obj_path=str(head), cache_dir=cache)
    images = {v: decode_image((edit / f"01223_{v}.png").read_bytes()) for v in ("left", "front", "right")}
    uv = complete_views(topology, images)
    photo = decode_image((DATA / "ffhq_uv_example" / "images" / "01223.png").read_bytes())
    save("ffhq_uv_01223.jpg", np.hstack([fit_height(im) for im in (photo, *images.values(), uv)]))
    save("ffhq_uv_01223_preview.jpg", preview(topology, uv))


def photo_profile_figures(cache: str) -> None:
    """The built-in samples through the README's first command (``ffhq-uv run``, the photo profile): photo and map."""
    import importlib
    import subprocess

    from pipeline.inputs import BUILTIN_FACES
    from stages.geometry.topologies import load_topology
    from stages.imageio import decode_image

    topology = load_topology("mediapipe468", cache_dir=cache)
    run_dir = Path(cache) / "photo-demo"
    subprocess.run([str(Path(sys.executable).with_name("ffhq-uv")), "run", "--output", str(run_dir), "--no-progress",
                    "--no-visuals"], check=True, capture_output=True, text=True)
    rows, previews = [], []
    for sample_id, (package, filename) in BUILTIN_FACES.items():
        photo = decode_image((Path(importlib.import_module(package).__file__).parent / filename).read_bytes())
        uv = decode_image(next(run_dir.glob(f"shards/*/samples/{sample_id}/uv.png")).read_bytes())
        rows.append(np.hstack([fit_height(photo), fit_height(uv)]))
        previews.append(preview(topology, uv))
    save("photo_profile.jpg", np.hstack(rows))
    save("photo_profile_preview.jpg", np.vstack(previews))


def main() -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as cache:
        ffhq_uv_figures(cache)
        photo_profile_figures(cache)


if __name__ == "__main__":
    main()
