"""Generate ``hifi3dpp_hair.json``: FFHQ-UV's hair region of the HiFi3D++ UV layout, as an outline in texels.

Run ``python -m stages.geometry.make_hifi3dpp_hair [head.obj] [texture.png]`` (defaults: the teaser head and
texture in ``../shared/data/hifi3dpp``). Like the landmark embedding, the result depends only on the layout, so it
is generated once and committed; nothing but the OBJ is needed at run time.

Why from a texture: every FFHQ-UV map carries its template's hair, pasted over FFHQ-UV's own ``hair_mask``
(pipeline.md 2.4 (g)5: ``h = box15(box11(hair_mask) >= 1)``), so a finished map shows that mask. A rule drawn
from the head's geometry (above the brows, behind the ears) put the hairline 9 rows too low at the centre
column, leaving template hair on the real forehead, and missed the hair that FFHQ-UV draws down the back of the
head behind the ears.

Method: the map's luma, blurred (sigma 4 texels); hair is darker than halfway between the map's hair and skin
medians, which is the 50 % level of FFHQ-UV's feathered paste, i.e. the box11-eroded mask's edge; keep the
largest dark component of the main UV island that touches the island's top rows, fill its holes, and dilate it
back by box11's 5 texels. The outline is simplified to within one texel.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

OUTPUT = Path(__file__).resolve().parent / "hifi3dpp_hair.json"
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hifi3dpp"
SIZE = 1024
LUMA_SIGMA = 4.0
HAIR_ERODE_RADIUS = 5  # FFHQ-UV's box11 erosion of the hair mask before its paste
# Reference texels for the two medians: the top centre of the scalp and the forehead (1024 layout, row, col).
HAIR_PROBE = (slice(20, 80), slice(400, 624))
SKIN_PROBE = (slice(200, 260), slice(440, 584))
OUTLINE_TOLERANCE = 1.0  # texels


def hair_region(texture: np.ndarray, island: np.ndarray) -> np.ndarray:
    """(S, S) bool FFHQ-UV hair mask read from a finished (S, S, 3) uint8 RGB map; ``island``: main UV island."""
    import cv2
    from scipy.ndimage import binary_fill_holes

    luma = cv2.GaussianBlur(cv2.cvtColor(texture, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), LUMA_SIGMA)
    level = (np.median(luma[HAIR_PROBE]) + np.median(luma[SKIN_PROBE])) / 2
    dark = ((luma < level) & island).astype(np.uint8)
    count, labels = cv2.connectedComponents(dark, connectivity=8)
    top_rows = np.nonzero(island.any(axis=1))[0][:40]
    touching = np.unique(labels[top_rows][labels[top_rows] > 0])
    if touching.size == 0:
        raise ValueError("no dark region at the top of the map: is this an FFHQ-UV map with template hair?")
    sizes = [(labels == k).sum() for k in touching]
    hair = binary_fill_holes(labels == touching[int(np.argmax(sizes))])
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * HAIR_ERODE_RADIUS + 1,) * 2)
    return (cv2.dilate(hair.astype(np.uint8), kernel) > 0) & island


def outline_of(mask: np.ndarray) -> list[list[float]]:
    """The outer contour of a bool mask as [[x, y], ...] texel coordinates, simplified to ``OUTLINE_TOLERANCE``."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    largest = max(contours, key=cv2.contourArea)
    simple = cv2.approxPolyDP(largest, OUTLINE_TOLERANCE, closed=True)[:, 0, :]
    return simple.astype(float).tolist()


def main(argv: list[str]) -> None:
    """Write the committed hair outline."""
    from stages.geometry.make_hifi3dpp_landmarks import main_uv_island
    from stages.geometry.obj import read_obj
    from stages.geometry.rasterize import rasterize_uv
    from stages.imageio import decode_image

    obj_path = Path(argv[0]) if argv else DEFAULT_DATA / "head_teaser1.obj"
    texture_path = Path(argv[1]) if len(argv) > 1 else DEFAULT_DATA / "tex_teaser1.png"
    mesh = read_obj(obj_path)
    raster = rasterize_uv(mesh.uvs, mesh.face_uvs, SIZE)
    island = (raster.triangle_id >= 0) & main_uv_island(mesh.face_uvs)[np.maximum(raster.triangle_id, 0)]
    texture = decode_image(texture_path.read_bytes(), source=str(texture_path))
    record = {"method": "stages/geometry/make_hifi3dpp_hair.py (see its docstring)", "uv_size": SIZE,
              "outline": outline_of(hair_region(texture, island))}
    OUTPUT.write_text(json.dumps(record, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(record['outline'])} points)")


if __name__ == "__main__":
    main(sys.argv[1:])
