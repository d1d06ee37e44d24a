"""Wavefront OBJ reading and writing for triangle meshes with texture coordinates.

Supports ``v`` (optionally with per-vertex colours), ``vt``, ``vn`` and ``f`` with the
``v``, ``v/vt``, ``v//vn`` and ``v/vt/vn`` index forms, 1-based and negative
(relative) indices, polygons (fan-triangulated), ``mtllib`` and ``usemtl``. Texture
and normal indices are kept per face corner, separately from vertex indices, because
UV seams give one vertex several texture coordinates (HiFi3D++: 20,481 v, 20,792 vt).
Other statements (``g``, ``o``, ``s``, ``l``, ``p``, ...) carry nothing this project
uses and are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


class ObjError(ValueError):
    """A malformed or unsupported OBJ file; the message names the file and line."""


@dataclass
class Mesh:
    """A triangle mesh as stored in an OBJ file.

    Corner indices are 0-based. ``face_uvs[m, k]`` indexes ``uvs`` for corner ``k`` of
    face ``m`` (UVs in [0,1], v up, as OBJ stores them); ``face_normals`` likewise
    indexes ``normals``. ``face_material[m]`` indexes ``materials``.
    """

    vertices: np.ndarray  # (N, 3) float64
    faces: np.ndarray  # (M, 3) int64
    uvs: np.ndarray | None = None  # (K, 2) float64
    face_uvs: np.ndarray | None = None  # (M, 3) int64
    normals: np.ndarray | None = None  # (L, 3) float64
    face_normals: np.ndarray | None = None  # (M, 3) int64
    colors: np.ndarray | None = None  # (N, 3) float64 per-vertex colours, as stored
    mtllib: str | None = None
    materials: tuple[str, ...] = field(default_factory=tuple)
    face_material: np.ndarray | None = None  # (M,) int64 into materials

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        self.faces = np.asarray(self.faces, dtype=np.int64).reshape(-1, 3)
        n, m = len(self.vertices), len(self.faces)
        if m and (self.faces.min() < 0 or self.faces.max() >= n):
            raise ValueError(f"face vertex indices must lie in [0, {n})")
        self.uvs, self.face_uvs = _check_attribute("uv", self.uvs, self.face_uvs, 2, m)
        self.normals, self.face_normals = _check_attribute("normal", self.normals, self.face_normals, 3, m)
        if self.colors is not None:
            self.colors = np.asarray(self.colors, dtype=np.float64).reshape(-1, 3)
            if len(self.colors) != n:
                raise ValueError(f"{len(self.colors)} vertex colours for {n} vertices")
        self.materials = tuple(self.materials)
        if self.face_material is not None:
            self.face_material = np.asarray(self.face_material, dtype=np.int64).reshape(-1)
            if len(self.face_material) != m:
                raise ValueError(f"{len(self.face_material)} face materials for {m} faces")
            if m and (self.face_material.min() < 0 or self.face_material.max() >= len(self.materials)):
                raise ValueError("face_material indices must lie in [0, len(materials))")

    @property
    def has_uvs(self) -> bool:
        """True if every face corner has a texture coordinate."""
        return self.face_uvs is not None


def _check_attribute(
    name: str, values: np.ndarray | None, indices: np.ndarray | None, width: int, num_faces: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validate a per-corner attribute table and its (M, 3) index array."""
    if values is None and indices is None:
        return None, None
    if values is None or indices is None:
        raise ValueError(f"{name}s and face_{name}s must be given together")
    values = np.asarray(values, dtype=np.float64).reshape(-1, width)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1, 3)
    if len(indices) != num_faces:
        raise ValueError(f"{len(indices)} face_{name}s rows for {num_faces} faces")
    if num_faces and (indices.min() < 0 or indices.max() >= len(values)):
        raise ValueError(f"face_{name}s indices must lie in [0, {len(values)})")
    return values, indices


def read_obj(path: str | os.PathLike) -> Mesh:
    """Read an OBJ file into a triangle Mesh; raise ObjError (file:line) if it is malformed."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8", errors="strict") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise ObjError(f"{path}: not a text OBJ file ({exc.reason} at byte {exc.start})") from None
    return parse_obj(text, source=path)


def parse_obj(text: str, source: str = "<obj>") -> Mesh:
    """Parse OBJ text into a triangle Mesh; ``source`` names it in error messages."""
    reader = _ObjReader(source)
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            reader.line_no = line_no
            reader.read(line)
    return reader.mesh()


class _ObjReader:
    """The state of one ``parse_obj`` call: elements so far, and one method per OBJ statement."""

    def __init__(self, source: str):
        self.source = source
        self.line_no = 0
        self.vertices: list[list[float]] = []
        self.colors: list[list[float]] = []
        self.uvs: list[list[float]] = []
        self.normals: list[list[float]] = []
        self.faces: list[tuple[int, int, int]] = []
        self.face_uvs: list[tuple[int, int, int]] = []
        self.face_normals: list[tuple[int, int, int]] = []
        self.face_material: list[int] = []
        self.materials: list[str] = []
        self.current_material = -1
        self.mtllib: str | None = None
        self.corner_forms: set[tuple[bool, bool]] = set()

    def fail(self, message: str) -> ObjError:
        return ObjError(f"{self.source}:{self.line_no}: {message}")

    def read(self, line: str) -> None:
        parts = line.split()
        key = parts[0]
        if key == "v":
            coords = self.numbers(parts, 3, 7, "vertex")
            if len(coords) not in (3, 4, 6):
                raise self.fail(f"vertex needs x y z [w] or x y z r g b, got {len(coords)} numbers")
            self.vertices.append(coords[:3])
            if len(coords) == 6:
                self.colors.append(coords[3:])
        elif key == "vt":
            # 'vt u [v [w]]': a missing v defaults to 0 (OBJ spec); w is unused for 2-D maps.
            uv = self.numbers(parts, 1, 3, "texture coordinate")
            self.uvs.append([uv[0], uv[1] if len(uv) > 1 else 0.0])
        elif key == "vn":
            self.normals.append(self.numbers(parts, 3, 3, "normal"))
        elif key == "f":
            self.face(parts[1:])
        elif key in ("mtllib", "usemtl"):
            if len(parts) < 2:
                raise self.fail(f"{key} needs a {'file' if key == 'mtllib' else 'material'} name")
            self.material_statement(key, line.split(None, 1)[1])

    def numbers(self, parts: list[str], low: int, high: int, what: str) -> list[float]:
        values = parts[1:]
        if not low <= len(values) <= high:
            raise self.fail(f"'{parts[0]}' needs {low}..{high} numbers, got {len(values)}")
        try:
            out = [float(p) for p in values]
        except ValueError:
            raise self.fail(f"bad number in {what}: {' '.join(values)!r}") from None
        if not np.all(np.isfinite(out)):
            raise self.fail(f"non-finite value in {what}")
        return out

    def resolve(self, token: str, count: int, what: str) -> int:
        try:
            index = int(token)
        except ValueError:
            raise self.fail(f"bad {what} index {token!r}") from None
        # OBJ indices are 1-based; negative ones count back from the latest element.
        resolved = index - 1 if index > 0 else count + index
        if index == 0 or not 0 <= resolved < count:
            raise self.fail(f"{what} index {index} out of range (have {count} so far)")
        return resolved

    def face(self, corners: list[str]) -> None:
        if len(corners) < 3:
            raise self.fail(f"face needs at least 3 corners, got {len(corners)}")
        vi, ti, ni = [], [], []
        for corner in corners:
            fields = corner.split("/")
            if len(fields) > 3 or not fields[0]:
                raise self.fail(f"bad face corner {corner!r}")
            vi.append(self.resolve(fields[0], len(self.vertices), "vertex"))
            has_t = len(fields) > 1 and fields[1] != ""
            has_n = len(fields) > 2 and fields[2] != ""
            if has_t:
                ti.append(self.resolve(fields[1], len(self.uvs), "texture"))
            if has_n:
                ni.append(self.resolve(fields[2], len(self.normals), "normal"))
            self.corner_forms.add((has_t, has_n))
        if len(self.corner_forms) > 1:
            raise self.fail("faces mix corner forms (some with texture/normal indices, some without)")
        # Fan triangulation: exact for the convex quads and polygons of our meshes.
        for k in range(1, len(vi) - 1):
            self.faces.append((vi[0], vi[k], vi[k + 1]))
            if ti:
                self.face_uvs.append((ti[0], ti[k], ti[k + 1]))
            if ni:
                self.face_normals.append((ni[0], ni[k], ni[k + 1]))
            self.face_material.append(self.current_material)

    def material_statement(self, key: str, name: str) -> None:
        if key == "mtllib":
            self.mtllib = name
            return
        if name not in self.materials:
            self.materials.append(name)
        self.current_material = self.materials.index(name)

    def mesh(self) -> Mesh:
        if not self.vertices:
            raise ObjError(f"{self.source}: no vertices")
        if not self.faces:
            raise ObjError(f"{self.source}: no faces")
        if self.colors and len(self.colors) != len(self.vertices):
            raise ObjError(f"{self.source}: only {len(self.colors)} of {len(self.vertices)} vertices carry colours")
        material_array = None
        if self.materials:
            # Faces before the first usemtl get the first material, as most viewers do.
            material_array = np.maximum(np.asarray(self.face_material, dtype=np.int64), 0)
        return Mesh(
            vertices=np.asarray(self.vertices, dtype=np.float64),
            faces=np.asarray(self.faces, dtype=np.int64),
            uvs=np.asarray(self.uvs, dtype=np.float64).reshape(-1, 2) if self.face_uvs else None,
            face_uvs=np.asarray(self.face_uvs, dtype=np.int64) if self.face_uvs else None,
            normals=np.asarray(self.normals, dtype=np.float64).reshape(-1, 3) if self.face_normals else None,
            face_normals=np.asarray(self.face_normals, dtype=np.int64) if self.face_normals else None,
            colors=np.asarray(self.colors, dtype=np.float64) if self.colors else None,
            mtllib=self.mtllib,
            materials=tuple(self.materials),
            face_material=material_array,
        )


def format_obj(mesh: Mesh, precision: int = 6) -> str:
    """Serialise a Mesh to OBJ text (1-based indices, one usemtl per material run)."""
    out: list[str] = []
    if mesh.mtllib:
        out.append(f"mtllib {mesh.mtllib}")
    number = f"{{:.{precision}f}}"
    if mesh.colors is not None:
        for xyz, rgb in zip(mesh.vertices, mesh.colors):
            out.append("v " + " ".join(number.format(c) for c in (*xyz, *rgb)))
    else:
        out.extend("v " + " ".join(number.format(c) for c in xyz) for xyz in mesh.vertices)
    if mesh.uvs is not None:
        out.extend("vt " + " ".join(number.format(c) for c in uv) for uv in mesh.uvs)
    if mesh.normals is not None:
        out.extend("vn " + " ".join(number.format(c) for c in n) for n in mesh.normals)

    f = mesh.faces + 1
    t = mesh.face_uvs + 1 if mesh.face_uvs is not None else None
    n = mesh.face_normals + 1 if mesh.face_normals is not None else None
    if t is not None and n is not None:
        corners = [[f"{f[i, k]}/{t[i, k]}/{n[i, k]}" for k in range(3)] for i in range(len(f))]
    elif t is not None:
        corners = [[f"{f[i, k]}/{t[i, k]}" for k in range(3)] for i in range(len(f))]
    elif n is not None:
        corners = [[f"{f[i, k]}//{n[i, k]}" for k in range(3)] for i in range(len(f))]
    else:
        corners = [[str(f[i, k]) for k in range(3)] for i in range(len(f))]

    current = None
    for i, corner in enumerate(corners):
        if mesh.materials:
            material = mesh.materials[mesh.face_material[i]] if mesh.face_material is not None else mesh.materials[0]
            if material != current:
                out.append(f"usemtl {material}")
                current = material
        out.append("f " + " ".join(corner))
    return "\n".join(out) + "\n"


def write_obj(path: str | os.PathLike, mesh: Mesh, precision: int = 6) -> None:
    """Write a Mesh as an OBJ file (see format_obj)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(format_obj(mesh, precision))


def write_mtl(path: str | os.PathLike, materials: Mapping[str, str | None]) -> None:
    """Write an MTL file: one material per entry, its diffuse map relative to the MTL (None = plain white)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(format_mtl(materials))


def format_mtl(materials: Mapping[str, str | None]) -> str:
    """MTL text for ``write_mtl``."""
    lines: list[str] = []
    for name, texture_file in materials.items():
        lines += [f"newmtl {name}", "Ka 1.000000 1.000000 1.000000", "Kd 1.000000 1.000000 1.000000"]
        lines += ["Ks 0.000000 0.000000 0.000000", "illum 1"]
        if texture_file is not None:
            lines.append(f"map_Kd {texture_file}")
        lines.append("")
    return "\n".join(lines)


def read_mtl(path: str | os.PathLike) -> dict[str, str | None]:
    """Read an MTL file's materials and their diffuse maps (``map_Kd`` as written, None if absent)."""
    materials: dict[str, str | None] = {}
    current = None
    with open(path, encoding="utf-8", errors="replace") as handle:
        for raw in handle:
            line = raw.split("#", 1)[0].strip()
            if line.startswith("newmtl ") or line == "newmtl":
                current = line[len("newmtl") :].strip()
                materials[current] = None
            elif line.startswith("map_Kd ") and current is not None:
                # map_Kd may carry options (-s, -o ...) before the file name; the file name comes last.
                materials[current] = line.split()[-1]
    return materials
