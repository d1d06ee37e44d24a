"""Mesh tools on real data: eyeballs in a HiFi3D++ head, HiFi3D++ UVs on FLAME, previews, and bad-mesh errors."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from stages.geometry import mesh_topology
from stages.geometry.mesh_topology import TopologyError
from stages.geometry.obj import read_mtl, read_obj, write_obj
from stages.geometry.render import TexturedPart, frame_camera, render
from stages.mesh_tools.eyeballs import load_templates, place_eyeballs, similarity_transform
from stages.mesh_tools.flame_uv import apply_hifi3d_uv, load_reference
from stages.mesh_tools.preview import load_texture, mesh_parts, preview

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
HEAD = DATA / "hifi3dpp" / "head_teaser1.obj"
TEXTURE = DATA / "hifi3dpp" / "tex_teaser1.png"
EYEBALLS = DATA / "eyeball"
FLAME = DATA / "flame" / "flame_head.obj"
FLAME_REF = DATA / "flame" / "FLAME_w_HIFI3D_UV.obj"

# Tolerances as fractions of the placed ball's radius (about 12 mm on a real eye, so 0.15 r is under 2 mm).
CONTOUR_TO_SURFACE = 0.15  # every eyelid-contour vertex this close to its ball's surface
FRONT_MARGIN = 0.10  # the cornea may bulge this far past the eyelids' plane
MIRROR_TOLERANCE = 0.15  # left ball mirrored vs right ball (the head itself is not perfectly symmetric)


def _need(*paths: Path) -> None:
    for path in paths:
        if not path.exists():
            pytest.skip(f"real data {path.name} not found under {DATA}")


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.mesh_cli", "mesh", *args], cwd=ROOT, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def head():
    _need(HEAD)
    return read_obj(HEAD)


@pytest.fixture(scope="module")
def fits(head):
    _need(EYEBALLS)
    return place_eyeballs(head, load_templates(EYEBALLS))


def _point_to_mesh_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(P,) exact Euclidean distance from each point to the closest triangle (brute force)."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    rel = points[:, None, :] - a[None]
    height = np.einsum("pfj,fj->pf", rel, n)
    foot = points[:, None, :] - height[..., None] * n[None]

    def side(p, q):
        return np.einsum("pfj,fj->pf", np.cross((q - p)[None], foot - p[None]), n) >= 0

    inside = side(a, b) & side(b, c) & side(c, a)

    def segment(p, q):
        d = q - p
        t = np.clip(np.einsum("pfj,fj->pf", points[:, None, :] - p[None], d) / np.einsum("fj,fj->f", d, d), 0, 1)
        return np.linalg.norm(points[:, None, :] - (p[None] + t[..., None] * d[None]), axis=-1)

    edge = np.minimum(np.minimum(segment(a, b), segment(b, c)), segment(c, a))
    return np.where(inside, np.abs(height), edge).min(axis=1)


def _radius(vertices: np.ndarray) -> float:
    return float(np.linalg.norm(vertices - vertices.mean(axis=0), axis=1).max())


def _socket_metrics(head, ball_vertices, ball_faces, side):
    """(max contour-to-surface distance, max ball protrusion past the eyelids' plane), both / ball radius."""
    contour = head.vertices[mesh_topology.hifi3dpp_head().eye_contour[side]]
    radius = _radius(ball_vertices)
    gap = _point_to_mesh_distance(contour, ball_vertices, ball_faces).max() / radius
    # Eyelids' plane: least-squares plane of the contour, normal facing forward, moved to its most forward vertex.
    centre = contour.mean(axis=0)
    normal = np.linalg.svd(contour - centre)[2][2]
    normal = normal if normal[2] > 0 else -normal
    protrusion = (((ball_vertices - centre) @ normal).max() - ((contour - centre) @ normal).max()) / radius
    return gap, protrusion


@pytest.mark.parametrize("side", ["left", "right"])
def test_eyeballs_sit_in_their_sockets(head, fits, side):
    ball = fits[side].mesh
    gap, protrusion = _socket_metrics(head, ball.vertices, ball.faces, side)
    assert gap < CONTOUR_TO_SURFACE, f"an eyelid vertex is {gap:.3f} ball radii from the {side} ball"
    assert protrusion < FRONT_MARGIN, f"the {side} ball pokes {protrusion:.3f} radii past the eyelids"
    # The criteria are discriminating: the bare similarity placement (before the eyelid fit) misses one, and so
    # do balls pushed forward out of the socket or back into the head.
    template = load_templates(EYEBALLS)[side]
    scale, rotation, translation = similarity_transform(
        template.vertices[mesh_topology.eyeball_template().anchor[side]],
        head.vertices[mesh_topology.hifi3dpp_head().eye_bag[side]],
    )
    radius = _radius(ball.vertices)
    for wrong in (
        scale * template.vertices @ rotation.T + translation,
        ball.vertices + [0.0, 0.0, 0.2 * radius],
        ball.vertices - [0.0, 0.0, 0.3 * radius],
    ):
        g, p = _socket_metrics(head, wrong, ball.faces, side)
        assert g >= CONTOUR_TO_SURFACE or p >= FRONT_MARGIN


def test_left_and_right_are_mirror_images(head, fits):
    contour = mesh_topology.hifi3dpp_head().eye_contour
    # The head's mirror plane x = m, estimated from the two eye contours.
    m = (head.vertices[contour["left"]][:, 0].mean() + head.vertices[contour["right"]][:, 0].mean()) / 2
    left = fits["left"].mesh.vertices * [-1.0, 1.0, 1.0] + [2 * m, 0.0, 0.0]
    right = fits["right"].mesh.vertices
    radius = _radius(right)
    assert left[:, 0].mean() < m < fits["left"].mesh.vertices[:, 0].mean()
    assert abs(_radius(left) / radius - 1) < 0.05
    assert np.linalg.norm(left.mean(axis=0) - right.mean(axis=0)) < MIRROR_TOLERANCE * radius
    chamfer = max(cKDTree(right).query(left)[0].max(), cKDTree(left).query(right)[0].max())
    assert chamfer < MIRROR_TOLERANCE * radius


def test_add_eyeballs_cli_writes_balls_with_material_and_outward_normals(tmp_path, head):
    _need(EYEBALLS)
    out = tmp_path / "eyes"
    result = _run_cli("add-eyeballs", str(HEAD), str(out), "--eyeball-dir", str(EYEBALLS))
    assert result.returncode == 0, result.stderr
    materials = read_mtl(out / "eye_ball_tex.mtl")
    assert materials == {"eyeball": "eye_ball_tex.png"}
    assert (out / "eye_ball_tex.png").read_bytes() == (EYEBALLS / "eye_ball_tex.png").read_bytes()
    for name in ("L_ball.obj", "R_ball.obj"):
        text = (out / name).read_text()
        assert text.startswith("mtllib eye_ball_tex.mtl\n") and "\nusemtl eyeball\n" in text
        ball = read_obj(out / name)
        assert ball.vertices.shape == (770, 3) and ball.uvs.shape == (802, 2)
        normals = ball.normals[ball.face_normals]  # (M, 3, 3) per corner
        outward = np.einsum("mkj,mkj->mk", normals, ball.vertices[ball.faces] - ball.vertices.mean(axis=0))
        assert (outward > 0).mean() > 0.99
        np.testing.assert_allclose(np.linalg.norm(ball.normals, axis=1), 1.0, atol=1e-5)


def test_add_eyeballs_needs_the_template_folder(tmp_path):
    _need(HEAD)
    result = _run_cli("add-eyeballs", str(HEAD), str(tmp_path / "o"), "--eyeball-dir", str(tmp_path))
    assert result.returncode == 2
    assert "eyeLeft_mesh_move.obj" in result.stderr and "Mesh_Add_EyeBall" in result.stderr


def test_preview_shows_the_eyeballs_in_the_eye_openings(head, fits):
    _need(TEXTURE)
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    parts = [TexturedPart(head, load_texture(TEXTURE))] + [TexturedPart(f.mesh, red) for f in fits.values()]
    contour = mesh_topology.hifi3dpp_head().eye_contour
    camera = frame_camera(head.vertices, 512, 0.0)
    image = render(parts, camera).astype(int)
    for side in ("left", "right"):
        x, y, _ = camera.project(head.vertices[contour[side][:2]].mean(axis=0, keepdims=True))[0]
        pixel = image[int(round(y)), int(round(x))]
        assert pixel[0] > 120 and pixel[1] < 30 and pixel[2] < 30, f"{side} eye shows {pixel}, not the ball"
    # Without the balls the same pixels show the head's own (skin / painted eye) texture.
    plain = render(parts[:1], camera).astype(int)
    x, y, _ = camera.project(head.vertices[contour["left"][:2]].mean(axis=0, keepdims=True))[0]
    assert not (plain[int(round(y)), int(round(x)), 1] < 30)


def test_preview_finds_the_eyeballs_the_fit_stage_writes(tmp_path):
    # The fit stage names the balls after their head (stage3_mesh_id_L_ball.obj beside stage3_mesh_id.obj);
    # add-eyeballs writes L_ball.obj: preview --eyeballs takes either folder.
    _need(HEAD, TEXTURE, EYEBALLS)
    result = _run_cli("add-eyeballs", str(HEAD), str(tmp_path / "eyes"), "--eyeball-dir", str(EYEBALLS))
    assert result.returncode == 0, result.stderr
    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "stage3_mesh_id.obj").write_bytes(HEAD.read_bytes())
    for name in ("L_ball.obj", "R_ball.obj", "eye_ball_tex.mtl", "eye_ball_tex.png"):
        target = f"stage3_mesh_id_{name}" if name.endswith(".obj") else name
        (sample / target).write_bytes((tmp_path / "eyes" / name).read_bytes())
    with_balls = preview(sample / "stage3_mesh_id.obj", TEXTURE, tmp_path / "p.png", eyeball_dir=sample, size=128)
    plain = preview(sample / "stage3_mesh_id.obj", TEXTURE, tmp_path / "q.png", size=128)
    assert with_balls.shape == (128, 384, 3) and (with_balls != plain).any()
    with pytest.raises(FileNotFoundError, match="stage3_mesh_id_L_ball.obj"):
        preview(sample / "stage3_mesh_id.obj", TEXTURE, tmp_path / "r.png", eyeball_dir=tmp_path, size=64)


@pytest.fixture(scope="module")
def flame_output(tmp_path_factory):
    _need(FLAME, FLAME_REF, TEXTURE)
    out = tmp_path_factory.mktemp("flame") / "flame_uv.obj"
    result = _run_cli("flame-uv", str(FLAME), str(out), "--reference", str(FLAME_REF), "--texture", str(TEXTURE))
    assert result.returncode == 0, result.stderr
    return out


def test_flame_uv_has_flame_vertices_and_reference_uvs(flame_output):
    mesh = read_obj(flame_output)
    reference = read_obj(FLAME_REF)
    source = read_obj(FLAME)
    assert mesh.vertices.shape == (5023, 3)
    np.testing.assert_allclose(mesh.vertices, source.vertices, atol=1e-6)
    np.testing.assert_allclose(mesh.uvs, reference.uvs, atol=1e-6)
    np.testing.assert_array_equal(mesh.face_uvs, reference.face_uvs)
    # Eyeball faces (vertices 3931-5022) are the eyeball material, with UVs in the tile u in [2,3].
    eyeball = mesh.face_material == mesh.materials.index("eyeball")
    assert eyeball.sum() == 2176 and (mesh.faces[eyeball] >= 3931).all()
    assert (mesh.uvs[mesh.face_uvs[eyeball]][..., 0] >= 2).all()
    assert (mesh.uvs[mesh.face_uvs[~eyeball]][..., 0] <= 1).all()
    assert read_mtl(flame_output.with_suffix(".mtl")) == {"face": "tex_teaser1.png", "eyeball": None}
    assert (flame_output.parent / "tex_teaser1.png").is_file()


def test_flame_uv_matches_faces_in_any_order():
    _need(FLAME, FLAME_REF)
    reference = load_reference(FLAME_REF)
    flame = read_obj(FLAME)
    order = np.random.default_rng(0).permutation(len(flame.faces))
    shuffled = replace(flame, faces=np.roll(flame.faces[order], 1, axis=1), normals=None, face_normals=None)
    mesh = apply_hifi3d_uv(shuffled, reference)
    expected = reference.uvs[reference.face_uvs][order][:, [2, 0, 1]]
    np.testing.assert_array_equal(mesh.uvs[mesh.face_uvs], expected)


def _skin_like(rgb: np.ndarray) -> bool:
    r, g, b = (int(c) for c in rgb)
    return r > 110 and r > g > b and r - b > 25


def test_flame_render_shows_skin_at_nose_and_cheeks(flame_output):
    parts = mesh_parts(flame_output)
    mesh = parts[0].mesh
    camera = frame_camera(mesh.vertices, 384, 0.0)
    image = render(parts, camera)
    v = mesh.vertices
    face = v[:3931]  # not the eyeballs
    nose = face[np.argmax(face[:, 2])]
    scale = v[:, 0].max() - v[:, 0].min()
    points = [nose]
    for sign in (-1.0, 1.0):
        # Cheek: the most forward vertex at 22% of the head's width beside the nose, a little below its tip.
        near = (np.abs(face[:, 0] - (nose[0] + sign * 0.22 * scale)) < 0.02 * scale) & (
            np.abs(face[:, 1] - (nose[1] - 0.05 * scale)) < 0.03 * scale
        )
        points.append(face[near][np.argmax(face[near][:, 2])])
    for name, point in zip(("nose tip", "right cheek", "left cheek"), points):
        x, y, _ = camera.project(point[None])[0]
        rgb = image[int(round(y)), int(round(x))]
        assert _skin_like(rgb), f"{name} renders as {rgb}"
    # Background and hair are not skin: the same test rejects them.
    assert not _skin_like(image[2, 2])
    top = camera.project(v[np.argmax(v[:, 1])][None])[0]
    assert not _skin_like(image[int(round(top[1])) + 3, int(round(top[0]))])


def test_preview_cli_writes_three_views(tmp_path, flame_output):
    out = tmp_path / "preview.png"
    result = _run_cli("preview", str(flame_output), str(TEXTURE), str(out), "--size", "96")
    assert result.returncode == 0, result.stderr
    image = load_texture(out)
    assert image.shape == (96, 288, 3)
    # Each view has the head in the middle and background in the corners.
    for k in range(3):
        view = image[:, 96 * k : 96 * (k + 1)]
        assert (view[0, 0] == 255).all() and not (view[48, 48] == 255).all()


# ---- bad meshes -------------------------------------------------------------------------------------------


def test_no_uvs_is_a_clear_error(tmp_path):
    _need(FLAME, TEXTURE)
    result = _run_cli("preview", str(FLAME), str(TEXTURE), str(tmp_path / "x.png"))
    assert result.returncode == 2 and "no texture coordinates" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_wrong_vertex_count_is_a_clear_error(tmp_path):
    _need(FLAME, HEAD, EYEBALLS, FLAME_REF)
    result = _run_cli("add-eyeballs", str(FLAME), str(tmp_path / "o"), "--eyeball-dir", str(EYEBALLS))
    assert result.returncode == 2
    assert "has 5023 vertices, but a HiFi3D++ mesh has 20481" in result.stderr
    result = _run_cli("flame-uv", str(HEAD), str(tmp_path / "f.obj"), "--reference", str(FLAME_REF))
    assert result.returncode == 2 and "has 20481 vertices, but a FLAME mesh has 5023" in result.stderr


def test_non_manifold_meshes_are_clear_errors(tmp_path, head):
    _need(FLAME, FLAME_REF, EYEBALLS)
    # A fan of extra faces on one head edge: three faces share it.
    a, b = head.faces[0][:2]
    extra = np.array([[a, b, head.faces[100][0]]])
    bad_head = replace(head, faces=np.vstack([head.faces, extra]), face_uvs=np.vstack([head.face_uvs, [[0, 1, 2]]]))
    with pytest.raises(TopologyError, match="edges are shared by more than two faces"):
        place_eyeballs(bad_head, load_templates(EYEBALLS))
    flame = read_obj(FLAME)
    doubled = replace(flame, faces=np.vstack([flame.faces, flame.faces[:1]]), normals=None, face_normals=None)
    path = tmp_path / "doubled.obj"
    write_obj(path, doubled)
    result = _run_cli("flame-uv", str(path), str(tmp_path / "f.obj"), "--reference", str(FLAME_REF))
    assert result.returncode == 2 and "not a manifold mesh" in result.stderr
    degenerate = replace(flame, faces=np.vstack([flame.faces[:-1], [[5, 5, 6]]]), normals=None, face_normals=None)
    with pytest.raises(TopologyError, match="repeat a vertex"):
        apply_hifi3d_uv(degenerate, load_reference(FLAME_REF))


def test_other_topology_with_flame_vertex_count_is_rejected():
    _need(FLAME, FLAME_REF)
    flame = read_obj(FLAME)
    other = replace(flame, faces=flame.faces[:, [0, 2, 1]][::-1].copy(), normals=None, face_normals=None)
    other.faces[:10] = (other.faces[:10] + 1) % 3931  # different triangles, same vertex count
    with pytest.raises(TopologyError, match="not in FLAME's face list"):
        apply_hifi3d_uv(other, load_reference(FLAME_REF))


def test_topology_data_matches_ffhq_uv_lists():
    _need(DATA / "hifi3dpp" / "eyeball_indices.json")
    import json

    ffhq = json.loads((DATA / "hifi3dpp" / "eyeball_indices.json").read_text())
    head, ball = mesh_topology.hifi3dpp_head(), mesh_topology.eyeball_template()
    for side in ("left", "right"):
        assert head.eye_contour[side].tolist() == ffhq[f"head_eye_contour_{side}"]
        assert head.eye_bag[side].tolist() == ffhq[f"head_eye_bag_{side}"]
        assert ball.anchor[side].tolist() == ffhq[f"ball_anchor_{side}"]
    assert ball.front_half.tolist() == ffhq["ball_front_half"]
    assert head.num_vertices == 20481 and mesh_topology.flame().eyeball_vertex_mask().sum() == 5023 - 3931
