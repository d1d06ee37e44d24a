"""Preview PNG of a textured mesh (and optional eyeballs) from the front and turned +-45 degrees.

Textures per material: the UV map given by the user textures the mesh's first material (every face when the
OBJ has no ``usemtl``); other materials use the ``map_Kd`` of the OBJ's MTL file, or a flat grey when it has
none (for example FLAME's eyeball material written without an eyeball texture).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stages.geometry.mesh_topology import require_uvs
from stages.geometry.obj import Mesh, read_mtl, read_obj
from stages.geometry.render import PREVIEW_YAWS_DEG, TexturedPart, render_views
from stages.imageio import decode_image, encode_png
from stages.mesh_tools.eyeballs import OUTPUT_FILES

# Colour of faces whose material has no texture: a light grey that reads as "untextured" in a preview.
UNTEXTURED_RGB = (200, 200, 200)


def load_texture(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB; raise FileNotFoundError or SampleError (not an image)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"texture {path} not found")
    return decode_image(path.read_bytes(), source=str(path), min_side=1)


def _material_textures(mesh: Mesh, obj_path: Path) -> list[np.ndarray | None]:
    """Texture of each of the mesh's materials from its MTL file (None where the MTL gives none)."""
    if not mesh.materials:
        return []
    maps: dict[str, str | None] = {}
    if mesh.mtllib and (obj_path.parent / mesh.mtllib).is_file():
        maps = read_mtl(obj_path.parent / mesh.mtllib)
    textures: list[np.ndarray | None] = []
    for name in mesh.materials:
        file = maps.get(name)
        textures.append(load_texture(obj_path.parent / file) if file and (obj_path.parent / file).is_file() else None)
    return textures


def mesh_parts(obj_path: str | os.PathLike, texture: np.ndarray | None = None) -> list[TexturedPart]:
    """Textured parts of an OBJ: ``texture`` (H,W,3) uint8 overrides its first material; the rest from its MTL."""
    obj_path = Path(obj_path)
    mesh = read_obj(obj_path)
    require_uvs(mesh, str(obj_path))
    flat = np.array(UNTEXTURED_RGB, dtype=np.uint8).reshape(1, 1, 3)
    if not mesh.materials:
        if texture is None:
            raise FileNotFoundError(f"{obj_path}: no material with a texture and no UV map given")
        return [TexturedPart(mesh, texture)]
    textures = _material_textures(mesh, obj_path)
    if texture is not None:
        textures[0] = texture
    face_material = mesh.face_material if mesh.face_material is not None else np.zeros(len(mesh.faces), np.int64)
    parts = []
    for index, tex in enumerate(textures):
        faces = np.flatnonzero(face_material == index)
        if len(faces):
            parts.append(TexturedPart(mesh, flat if tex is None else tex, faces))
    return parts


def eyeball_file(folder: Path, mesh_stem: str, name: str) -> Path:
    """``folder``'s eyeball mesh ``name`` (L_ball.obj / R_ball.obj): as ``mesh add-eyeballs`` writes it, or as the fit
    stage does, prefixed by its head mesh (``stage3_mesh_id_L_ball.obj`` beside ``stage3_mesh_id.obj``)."""
    candidates = (folder / name, folder / f"{mesh_stem}_{name}")
    for ball in candidates:
        if ball.is_file():
            return ball
    raise FileNotFoundError(f"neither {candidates[0]} nor {candidates[1].name} found; create them with "
                            "'ffhq-uv mesh add-eyeballs' or the fit stage's stages.fit.eyeballs")


def preview(
    mesh_path: str | os.PathLike,
    uv_map_path: str | os.PathLike,
    out_png: str | os.PathLike,
    eyeball_dir: str | os.PathLike | None = None,
    size: int = 512,
    yaws_deg: tuple[float, ...] = PREVIEW_YAWS_DEG,
) -> np.ndarray:
    """Render ``mesh_path`` textured with ``uv_map_path`` (plus L_ball/R_ball.obj from ``eyeball_dir``) to a PNG.

    Returns the (size, size * len(yaws_deg), 3) uint8 image that was written.
    """
    parts = mesh_parts(mesh_path, load_texture(uv_map_path))
    if eyeball_dir is not None:
        for name in OUTPUT_FILES.values():
            parts += mesh_parts(eyeball_file(Path(eyeball_dir), Path(mesh_path).stem, name))
    image = render_views(parts, size=size, yaws_deg=yaws_deg)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    Path(out_png).write_bytes(encode_png(image))
    return image
