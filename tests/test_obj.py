"""OBJ reading/writing on the real HiFi3D++ / FLAME / eyeball files and on hand-written edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.geometry.obj import Mesh, ObjError, parse_obj, read_obj, write_obj

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _data(rel: str) -> Path:
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"real data {rel} not found under {DATA}")
    return path


def test_hifi3dpp_head_counts_and_roundtrip(tmp_path):
    mesh = read_obj(_data("hifi3dpp/head_teaser1.obj"))
    assert mesh.vertices.shape == (20481, 3) and mesh.vertices.dtype == np.float64
    assert mesh.faces.shape == (40832, 3)
    assert mesh.uvs.shape == (20792, 2)
    assert mesh.face_uvs.shape == (40832, 3)
    assert mesh.normals is None and mesh.mtllib == "tex_uv.mlt"
    # First face of the file is "f 5134/1 27/2 5135/3".
    assert mesh.faces[0].tolist() == [5133, 26, 5134]
    assert mesh.face_uvs[0].tolist() == [0, 1, 2]
    assert mesh.uvs.min() >= 0.0 and mesh.uvs.max() <= 1.0

    out = tmp_path / "head.obj"
    write_obj(out, mesh)
    again = read_obj(out)
    np.testing.assert_array_equal(again.faces, mesh.faces)
    np.testing.assert_array_equal(again.face_uvs, mesh.face_uvs)
    np.testing.assert_allclose(again.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_allclose(again.uvs, mesh.uvs, atol=1e-6)


def test_flame_files():
    ref = read_obj(_data("flame/FLAME_w_HIFI3D_UV.obj"))
    assert ref.vertices.shape == (5023, 3) and ref.faces.shape == (9976, 3)
    assert ref.uvs.shape == (5150, 2) and ref.face_uvs.shape == (9976, 3)
    head = read_obj(_data("flame/flame_head.obj"))
    assert head.vertices.shape == (5023, 3) and head.uvs is None
    assert head.normals.shape == (5023, 3)
    # flame_head.obj uses the v//vn form with normal index == vertex index.
    np.testing.assert_array_equal(head.face_normals, head.faces)
    np.testing.assert_array_equal(head.faces, ref.faces)


def test_eyeball_quads_are_fan_triangulated():
    ball = read_obj(_data("eyeball/eyeLeft_mesh_move.obj"))
    # 64 triangles + 736 quads in the file.
    assert ball.faces.shape == (64 + 2 * 736, 3)
    assert ball.vertices.shape == (770, 3) and ball.uvs.shape == (802, 2) and ball.normals.shape == (3136, 3)
    assert ball.mtllib == "eye_ball_tex.mtl" and ball.materials == ("initialShadingGroup",)


def test_polygon_negative_indices_and_materials(tmp_path):
    text = """mtllib a.mtl
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
vt 0 0
vt 1 0
vt 1 1
vt 0 1
vn 0 0 1
usemtl skin
f -4/-4/-1 -3/-3/-1 -2/-2/-1 -1/-1/-1
usemtl eye
f 1/1/1 3/3/1 4/4/1
"""
    mesh = parse_obj(text)
    assert mesh.faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 2, 3]]
    assert mesh.face_uvs.tolist() == [[0, 1, 2], [0, 2, 3], [0, 2, 3]]
    assert mesh.face_normals.tolist() == [[0, 0, 0]] * 3
    assert mesh.materials == ("skin", "eye") and mesh.face_material.tolist() == [0, 0, 1]
    out = tmp_path / "q.obj"
    write_obj(out, mesh)
    written = out.read_text()
    assert written.count("usemtl") == 2 and written.startswith("mtllib a.mtl")
    again = read_obj(out)
    assert again.materials == mesh.materials
    np.testing.assert_array_equal(again.face_material, mesh.face_material)


@pytest.mark.parametrize(
    "text, message",
    [
        ("v 0 0 0\nv 1 0 0\nf 1 2 3\n", "vertex index 3 out of range"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2\n", "at least 3 corners"),
        ("v 0 0 zero\n", "bad number"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "vertex index 0 out of range"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/1 3\n", "mix corner forms"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1/a 2 3\n", "bad texture index"),
        ("v 0 0 0\n", "no faces"),
        ("# nothing\n", "no vertices"),
        ("v 0 0 0\nv 1 0 nan\nv 0 1 0\nf 1 2 3\n", "non-finite"),
    ],
)
def test_malformed_files_give_located_errors(text, message):
    with pytest.raises(ObjError, match=message) as info:
        parse_obj(text, source="bad.obj")
    assert "bad.obj" in str(info.value)


def test_binary_file_is_rejected(tmp_path):
    path = tmp_path / "x.obj"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ObjError, match="not a text OBJ"):
        read_obj(path)


def test_mesh_validates_indices():
    with pytest.raises(ValueError, match="face vertex indices"):
        Mesh(vertices=np.zeros((3, 3)), faces=[[0, 1, 3]])
    with pytest.raises(ValueError, match="given together"):
        Mesh(vertices=np.zeros((3, 3)), faces=[[0, 1, 2]], uvs=np.zeros((3, 2)))
