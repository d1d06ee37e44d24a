"""Give a FLAME mesh the HiFi3D++ texture coordinates, so FFHQ-UV maps texture it (pipeline.md section 7).

The UVs come from a reference FLAME mesh that carries them (csbhr/FFHQ-UV
``FLAME_Apply_HIFI3D_UV/flame2hifi3d_assets/FLAME_w_HIFI3D_UV.obj``, a required input). FLAME's eyeball
vertices (``mesh_topology.json`` ``flame.eyeball_vertex_range``) have UVs in the tile u in [2,3], v in [0,1],
which index the separate eyeball texture: unlike FFHQ-UV's script, which can only point every face at the face map,
we put the eyeball faces under their own material, so a viewer that wraps UVs shows the eyeball texture there.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from stages.geometry import mesh_topology
from stages.geometry.mesh_topology import TopologyError, require_manifold, require_uvs, require_vertex_count
from stages.geometry.obj import Mesh, read_obj, write_mtl, write_obj

FACE_MATERIAL = "face"
EYEBALL_MATERIAL = "eyeball"
# The texture name the MTL refers to when no UV map is given: the pipeline's final UV output is ``uv.png``.
DEFAULT_TEXTURE_NAME = "uv.png"
EYEBALL_TEXTURE_NAME = "eye_ball_tex.png"


def load_reference(path: str | os.PathLike) -> Mesh:
    """Read and check the reference FLAME mesh with HiFi3D++ UVs; raise FileNotFoundError / TopologyError."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"reference FLAME mesh {path} not found; get FLAME_w_HIFI3D_UV.obj from csbhr/FFHQ-UV "
            "(FLAME_Apply_HIFI3D_UV/flame2hifi3d_assets) and pass it with --reference (see README section 'Mesh tools')"
        )
    reference = read_obj(path)
    topo = mesh_topology.flame()
    require_vertex_count(reference, topo.num_vertices, "FLAME", os.fspath(path))
    require_uvs(reference, os.fspath(path))
    return reference


def _face_keys(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """(M,) int64 key of each face's vertex set, independent of corner order."""
    s = np.sort(faces, axis=1).astype(np.int64)
    return (s[:, 0] * num_vertices + s[:, 1]) * num_vertices + s[:, 2]


def apply_hifi3d_uv(flame: Mesh, reference: Mesh, source: str = "FLAME mesh") -> Mesh:
    """Return ``flame`` with the reference's UVs per face corner and face/eyeball materials.

    Faces are matched by vertex set, so a FLAME mesh whose exporter reordered faces or rotated corners still gets
    each corner's own texture coordinate; raise TopologyError if it is not a FLAME mesh.
    """
    topo = mesh_topology.flame()
    require_vertex_count(flame, topo.num_vertices, "FLAME", source)
    require_manifold(flame, source)
    n = topo.num_vertices
    ref_keys = _face_keys(reference.faces, n)
    order = np.argsort(ref_keys)
    keys = _face_keys(flame.faces, n)
    position = np.clip(np.searchsorted(ref_keys, keys, sorter=order), 0, len(order) - 1)
    ref_face = order[position]
    unmatched = ref_keys[ref_face] != keys
    if len(flame.faces) != len(reference.faces) or unmatched.any():
        raise TopologyError(
            f"{source}: has {len(flame.faces)} faces, {int(unmatched.sum())} of them not in FLAME's face list "
            f"({len(reference.faces)} faces); this tool needs the FLAME topology"
        )
    # For each corner, the corner of the matched reference face that holds the same vertex.
    same = reference.faces[ref_face][:, None, :] == flame.faces[:, :, None]  # (M, 3 corners, 3 ref corners)
    face_uvs = np.take_along_axis(reference.face_uvs[ref_face], same.argmax(axis=2), axis=1)
    eyeball_face = topo.eyeball_vertex_mask()[flame.faces].all(axis=1)
    return replace(
        flame,
        uvs=reference.uvs.copy(),
        face_uvs=face_uvs,
        materials=(FACE_MATERIAL, EYEBALL_MATERIAL),
        face_material=eyeball_face.astype(np.int64),
    )


def write_textured_flame(
    mesh: Mesh,
    out_obj: str | os.PathLike,
    texture: str | os.PathLike | None = None,
    eyeball_texture: str | os.PathLike | None = None,
) -> list[Path]:
    """Write ``mesh`` as OBJ + MTL next to each other; copy the textures beside them. Returns the written paths.

    The face material maps ``texture`` (default name ``uv.png`` when None, for the pipeline's UV map to be put
    there); the eyeball material maps ``eyeball_texture``, or is plain white when None.
    """
    out_obj = Path(out_obj)
    out_obj.parent.mkdir(parents=True, exist_ok=True)
    mtl = out_obj.with_suffix(".mtl")
    written = []
    texture_name = DEFAULT_TEXTURE_NAME
    eyeball_name = None
    if texture is not None:
        texture_name = Path(texture).name
        written.append(_copy_beside(Path(texture), out_obj.parent / texture_name))
    if eyeball_texture is not None:
        eyeball_name = EYEBALL_TEXTURE_NAME
        written.append(_copy_beside(Path(eyeball_texture), out_obj.parent / eyeball_name))
    write_obj(out_obj, replace(mesh, mtllib=mtl.name))
    write_mtl(mtl, {FACE_MATERIAL: texture_name, EYEBALL_MATERIAL: eyeball_name})
    return [out_obj, mtl, *written]


def _copy_beside(src: Path, dst: Path) -> Path:
    """Copy a texture next to the OBJ unless it already is that file."""
    if not src.is_file():
        raise FileNotFoundError(f"texture {src} not found")
    if not (dst.exists() and os.path.samefile(src, dst)):
        shutil.copyfile(src, dst)
    return dst


def flame_uv(
    flame_path: str | os.PathLike,
    out_obj: str | os.PathLike,
    reference_path: str | os.PathLike,
    texture: str | os.PathLike | None = None,
    eyeball_texture: str | os.PathLike | None = None,
) -> list[Path]:
    """Read a FLAME OBJ, give it HiFi3D++ UVs and write OBJ + MTL (+ textures); returns the written paths."""
    reference = load_reference(reference_path)
    mesh = apply_hifi3d_uv(read_obj(flame_path), reference, source=os.fspath(flame_path))
    return write_textured_flame(mesh, out_obj, texture, eyeball_texture)
