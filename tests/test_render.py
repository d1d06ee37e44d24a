"""Textured preview rendering: UV orientation, yaw convention, occlusion, shading, wrap-around, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.geometry.obj import Mesh, read_obj
from stages.geometry.render import Camera, TexturedPart, render, render_views, sample_texture

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


def _quad(z: float = 0.0, size: float = 1.0, tilt_deg: float = 0.0) -> Mesh:
    """A square facing +z (towards the camera at yaw 0), UVs covering [0,1]^2, optionally tilted about y."""
    h = size / 2
    v = np.array([[-h, -h, 0], [h, -h, 0], [h, h, 0], [-h, h, 0]], dtype=np.float64)
    a = np.deg2rad(tilt_deg)
    v = v @ np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]).T + [0, 0, z]
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    return Mesh(vertices=v, faces=faces, uvs=uv, face_uvs=faces.copy())


def _solid(rgb) -> np.ndarray:
    return np.tile(np.asarray(rgb, np.uint8), (2, 2, 1))


def _camera(yaw: float = 0.0, size: int = 64, ppu: float = 40.0) -> Camera:
    return Camera(center=np.zeros(3), pixels_per_unit=ppu, size=size, yaw_deg=yaw)


def test_uv_orientation_v_up():
    # Texture image: row 0 (top) red|green, row 1 (bottom) blue|yellow. OBJ v = 1 is the image's top row.
    texture = np.array([[RED, GREEN], [BLUE, YELLOW]], dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    image = render([TexturedPart(_quad(), texture)], _camera(), background=(0, 0, 0))
    # The quad spans pixels 12..52; its upper-left quarter (screen y-down) is the texture's top-left.
    corners = {(20, 20): RED, (20, 44): GREEN, (44, 20): BLUE, (44, 44): YELLOW}
    for (row, col), rgb in corners.items():
        np.testing.assert_allclose(image[row, col], np.asarray(rgb) * 1.0, atol=2)
    assert (image[2, 2] == 0).all()


def _cube() -> list[TexturedPart]:
    """Unit cube, one solid colour per face direction: +z red, +x green, -x blue, -z yellow."""
    parts = []
    for yaw, rgb in ((0, RED), (90, GREEN), (-90, BLUE), (180, YELLOW)):
        q = _quad(size=1.0)
        a = np.deg2rad(yaw)
        # Rotate the +z-facing quad about y so that it faces direction (sin a, 0, cos a), then push it out.
        rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        normal = rot @ [0, 0, 1]
        parts.append(TexturedPart(Mesh(q.vertices @ rot.T + 0.5 * normal, q.faces, q.uvs, q.face_uvs), _solid(rgb)))
    return parts


def _dominant(pixel: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(c > 40) * 255 for c in pixel)


def test_yaw_turns_the_camera_towards_the_subjects_left():
    cube = _cube()
    assert _dominant(render(cube, _camera(0), background=(0, 0, 0))[32, 32]) == RED
    assert _dominant(render(cube, _camera(90), background=(0, 0, 0))[32, 32]) == GREEN  # +x: subject's left
    assert _dominant(render(cube, _camera(-90), background=(0, 0, 0))[32, 32]) == BLUE
    turned = render(cube, _camera(45), background=(0, 0, 0))
    # At +45 degrees the front face is on the image's left, the subject's left side on its right.
    assert _dominant(turned[32, 26]) == RED and _dominant(turned[32, 38]) == GREEN


def test_nearer_surface_occludes_and_shading_follows_the_normal():
    near, far = _quad(z=0.5, size=0.5), _quad(z=0.0, size=1.0)
    image = render([TexturedPart(far, _solid(BLUE)), TexturedPart(near, _solid(RED))], _camera(), (0, 0, 0))
    assert _dominant(image[32, 32]) == RED and _dominant(image[16, 16]) == BLUE
    facing = render([TexturedPart(_quad(), _solid((200, 200, 200)))], _camera(), (0, 0, 0))[32, 32]
    tilted = render([TexturedPart(_quad(tilt_deg=60), _solid((200, 200, 200)))], _camera(), (0, 0, 0))[32, 32]
    assert facing[0] == 200 and 120 < tilted[0] < 180  # ambient 0.35 + 0.65 * cos 60 = 0.675


def test_project_matches_rendered_pixels():
    camera = _camera(30)
    mesh = _quad(size=1.0)
    image = render([TexturedPart(mesh, _solid(RED))], camera, (0, 0, 0))
    centre = camera.project(mesh.vertices).mean(axis=0)
    assert _dominant(image[int(round(centre[1])), int(round(centre[0]))]) == RED
    # Depth is smaller for points nearer the camera.
    assert camera.project(np.array([[0, 0, 1.0]]))[0, 2] < camera.project(np.array([[0, 0, -1.0]]))[0, 2]


def test_texture_lookup_wraps_uv_tiles():
    texture = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    uv = np.array([[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_allclose(sample_texture(texture, uv + [2.0, 0.0]), sample_texture(texture, uv), atol=1e-3)
    # Texel centres are exact.
    np.testing.assert_allclose(sample_texture(texture, np.array([[0.5 / 16, 1 - 0.5 / 16]])), texture[:1, 0], atol=1e-3)


def test_bad_parts_are_rejected():
    mesh = _quad()
    no_uv = Mesh(vertices=mesh.vertices, faces=mesh.faces)
    with pytest.raises(ValueError, match="no texture coordinates"):
        render([TexturedPart(no_uv, _solid(RED))], _camera())
    with pytest.raises(ValueError, match="uint8"):
        render([TexturedPart(mesh, np.zeros((2, 2, 3), np.float32))], _camera())


def test_views_of_the_real_head():
    path, texture_path = DATA / "hifi3dpp" / "head_teaser1.obj", DATA / "hifi3dpp" / "tex_teaser1.png"
    if not path.exists() or not texture_path.exists():
        pytest.skip(f"real data not found under {DATA}")
    from stages.mesh_tools.preview import load_texture

    head = read_obj(path)
    strip = render_views([TexturedPart(head, load_texture(texture_path))], size=96)
    assert strip.shape == (96, 288, 3)
    covered = [(strip[:, 96 * k : 96 * (k + 1)] != 255).any(axis=2) for k in range(3)]
    # The head is nearly symmetric: the -45 and +45 silhouettes are close to mirror images.
    overlap = (covered[0] & covered[2][:, ::-1]).sum() / (covered[0] | covered[2][:, ::-1]).sum()
    assert overlap > 0.9 and all(c.mean() > 0.2 for c in covered)
    # The framing holds the whole head in every view (background on the borders).
    assert not any(c[0].any() or c[:, 0].any() or c[:, -1].any() for c in covered)
