"""Topologies: UV rasterisation, landmark embedding, region masks and their disk cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stages.geometry.make_mediapipe468_uv import boundary_loops, tessellation_triangles
from stages.geometry.mediapipe468 import DATA_FILE, load_mediapipe468
from stages.geometry.topologies import load_topology
from stages.geometry.uv_topology import MASK_NAMES, view_validity

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
HEAD_OBJ = DATA / "hifi3dpp" / "head_teaser1.obj"


@pytest.fixture(scope="module")
def mp_topology(tmp_path_factory):
    return load_mediapipe468(cache_dir=tmp_path_factory.mktemp("cache"))


def check_masks(topology):
    masks = topology.masks()
    assert set(masks) == set(MASK_NAMES)
    for name, mask in masks.items():
        assert mask.shape == (topology.uv_size, topology.uv_size) and mask.dtype == np.float32, name
        assert 0.0 <= mask.min() and mask.max() <= 1.0, name
    covered = masks["unwrap_mask"] > 0.5
    lm = np.round(topology.landmark_uv()).astype(int)
    # Region masks sit where their landmarks are: eye corners inside the eye masks, lip corners in the mouth
    # region, the nose tip in neither eye; FACEMESH_LEFT_EYE (subject's left) is on the image-right side.
    assert masks["eye_l"][lm[263, 1], lm[263, 0]] == 1 and masks["eye_l"][lm[33, 1], lm[33, 0]] == 0
    assert masks["eye_r"][lm[33, 1], lm[33, 0]] == 1
    assert lm[263, 0] > lm[33, 0]
    assert masks["mouth_contrast"][lm[61, 1], lm[61, 0]] == 1
    assert masks["nosal_base"][lm[2, 1], lm[2, 0]] == 1
    for name in ("eye_l", "eye_r", "mouth", "nostril", "nosal_base"):
        assert 0 < masks[name].sum() < 0.05 * covered.sum(), name
        assert ((masks[name] > 0.5) <= (masks["center_face"] > 0.5)).mean() > 0.99, name
    # The left view's major region is the image-left half of the face, the right view's the other half.
    cols = np.arange(topology.uv_size)
    centre = lm[1, 0]
    left = masks["major_valid_left"] > 0.5
    right = masks["major_valid_right"] > 0.5
    assert (cols[np.nonzero(left)[1]] < centre).mean() > 0.95
    assert (cols[np.nonzero(right)[1]] > centre).mean() > 0.95
    whole = masks["minor_valid_whole"] > 0.5
    assert (masks["center_face"][whole] > 0).mean() > 0.5
    assert ((masks["major_valid_front"] > 0.5) <= (masks["minor_valid_front"] > 0.5)).all()
    return masks


def test_mediapipe468_layout_file_is_reproducible_from_the_tessellation():
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    record = json.loads(DATA_FILE.read_text())
    faces = {tuple(sorted(t)) for t in record["triangles"]}
    cliques = {tuple(sorted(t)) for t in tessellation_triangles(set(FACEMESH_TESSELATION))}
    assert cliques <= faces  # every tessellation face is kept; the rest close the eye and mouth openings
    assert len(record["triangles"]) == 898
    assert len(boundary_loops(np.array(record["triangles"]))) == 1  # only the face oval is open
    vertices = np.array(record["vertices"])
    # The template is left/right symmetric (mirror partners exist for every point).
    mirrored = vertices * [-1, 1, 1]
    dist = np.sqrt(((mirrored[:, None] - vertices[None]) ** 2).sum(-1)).min(axis=1)
    assert dist.max() < 1e-5


def test_mediapipe468_topology(mp_topology):
    raster = mp_topology.uv_raster()
    # UV triangles do not overlap (apart from the two degenerate lip-crease slivers): coverage = area sum.
    uv = mp_topology.uvs[mp_topology.face_uvs] * mp_topology.uv_size
    area = 0.5 * np.abs(np.cross(uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0])).sum()
    assert abs(raster.mask.sum() - area) / area < 0.01
    np.testing.assert_allclose(mp_topology.landmark_points(), mp_topology.vertices, atol=1e-12)
    check_masks(mp_topology)
    regions = {r.name: r for r in mp_topology.fill_regions()}
    assert set(regions) == {"l_eye", "r_eye", "nosal_base", "mouth"}
    assert regions["l_eye"].left > regions["r_eye"].right - 1


def test_cache_roundtrip(mp_topology, tmp_path):
    first = load_mediapipe468(cache_dir=tmp_path)
    masks = first.masks()
    files = list(tmp_path.glob("mediapipe468-*.npz"))
    assert len(files) == 1
    second = load_mediapipe468(cache_dir=tmp_path)
    again = second.masks()  # read from disk
    for name in MASK_NAMES:
        np.testing.assert_array_equal(masks[name], again[name])
    np.testing.assert_array_equal(first.uv_raster().triangle_id, second.uv_raster().triangle_id)


def test_unknown_topology():
    with pytest.raises(ValueError, match="unknown topology"):
        load_topology("bfm")


needs_head = pytest.mark.skipif(not HEAD_OBJ.exists(), reason=f"HiFi3D++ head not found at {HEAD_OBJ}")


@pytest.fixture(scope="module")
def hifi_topology(tmp_path_factory):
    if not HEAD_OBJ.exists():
        pytest.skip(f"HiFi3D++ head not found at {HEAD_OBJ}")
    return load_topology("hifi3dpp", obj_path=str(HEAD_OBJ), cache_dir=tmp_path_factory.mktemp("cache"))


@needs_head
def test_hifi3dpp_masks_and_ffhq_uv_boxes(hifi_topology):
    masks = check_masks(hifi_topology)
    boxes = {r.name: r for r in hifi_topology.fill_regions()}
    l_eye = boxes["l_eye"]
    assert (l_eye.top, l_eye.bottom, l_eye.left, l_eye.right) == (330, 400, 560, 710)
    # Our landmark-drawn regions agree with FFHQ-UV's fixed boxes: each mask's centre lies in its box.
    for box_name, mask_name in (("l_eye", "eye_l"), ("r_eye", "eye_r"), ("nosal_base", "nosal_base"),
                                ("mouth", "mouth")):
        rows, cols = np.nonzero(masks[mask_name] > 0.5)
        box = boxes[box_name]
        assert box.top <= rows.mean() < box.bottom and box.left <= cols.mean() < box.right, box_name
    assert 0.9 < masks["unwrap_mask"].mean() < 0.97  # the head covers most of FFHQ-UV's UV square
    assert masks["hair"][:100].mean() > 0.5 and masks["hair"][300:700, 300:724].sum() == 0


@needs_head
def test_hifi3dpp_landmark_embedding_matches_a_fresh_render(hifi_topology):
    """The committed embedding is what the generator gets from the real teaser head and texture."""
    from stages.geometry.make_hifi3dpp_landmarks import embed_landmarks

    texture = HEAD_OBJ.parent / "tex_teaser1.png"
    if not texture.exists():
        pytest.skip(f"teaser texture not found at {texture}")
    record = embed_landmarks(HEAD_OBJ, texture)
    fresh = np.einsum("lk,lkc->lc", np.array(record["barycentrics"]),
                      hifi_topology.vertices[hifi_topology.triangles[np.array(record["triangles"])]])
    committed = hifi_topology.landmark_points()
    lm = committed
    eye_dist = np.linalg.norm(lm[263] - lm[33])
    assert np.median(np.linalg.norm(fresh - committed, axis=1)) < 0.02 * eye_dist
    # Landmarks sit on the front of the head, the nose tip in front of the eyes.
    assert lm[1, 2] > lm[33, 2] and lm[1, 2] > lm[263, 2]
    assert lm[263, 0] > lm[33, 0]


def test_hifi3dpp_without_sources_is_a_config_error(tmp_path):
    from stages.errors import ConfigError

    with pytest.raises(ConfigError, match="Weights"):
        load_topology("hifi3dpp", obj_path=str(tmp_path / "missing.obj"), weights_dir=str(tmp_path))


@needs_head
def test_hifi3dpp_from_official_model_info_and_masks(tmp_path):
    """FFHQ-UV's topo_assets format: 1-based triangles, (1, 3N) mean shape, 3DMM bases, mask PNGs."""
    from PIL import Image
    from scipy.io import savemat

    from stages.geometry.obj import read_obj

    mesh = read_obj(HEAD_OBJ)
    assets = tmp_path / "weights" / "topo_assets"
    assets.mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = len(mesh.vertices)
    savemat(assets / "hifi3dpp_model_info.mat", {
        "meanshape": mesh.vertices.reshape(1, -1), "idBase": rng.normal(0, 1e-3, (3 * n, 4)),
        "exBase": rng.normal(0, 1e-3, (3 * n, 2)), "head_tri": mesh.faces + 1, "head_tri_vt": mesh.face_uvs + 1,
        "vt_list": mesh.uvs})
    hair = np.zeros((512, 512), np.uint8)
    hair[:40] = 255
    Image.fromarray(hair).save(assets / "hair_mask.png")
    topology = load_topology("hifi3dpp", weights_dir=str(tmp_path / "weights"), cache_dir=tmp_path / "cache")
    assert topology.id_basis.shape == (3 * n, 4) and topology.exp_basis.shape == (3 * n, 2)
    np.testing.assert_allclose(topology.vertices.mean(axis=0), 0, atol=1e-9)  # Deep3D re-centres the mean
    np.testing.assert_array_equal(topology.triangles, mesh.faces)
    masks = topology.masks()
    assert masks["hair"][:79].min() == 1.0 and masks["hair"][81:].max() == 0.0  # the official PNG, resized
    assert masks["center_face"].sum() > 0  # not in the assets: drawn by us


def test_front_minor_region_leaves_the_side_views_what_they_see_squarely():
    # Normals turned 0..90 deg towards the image-left (-x). The front view is merged last at 80 % over its whole
    # minor region, so that region must stop before the texels the left view (yaw +30) sees far better.
    angles = np.deg2rad(np.arange(0, 91, 5, dtype=np.float64))
    normal = np.stack([-np.sin(angles), np.zeros_like(angles), np.cos(angles)], axis=-1)[None]  # (1, 19, 3)
    masks = view_validity(np.ones(normal.shape[:2], dtype=bool), normal)
    by_angle = {int(a): (bool(masks["minor_valid_front"][0, k]), bool(masks["minor_valid_left"][0, k]))
                for k, a in enumerate(np.rad2deg(angles).round())}
    assert by_angle[0] == (True, True) and by_angle[30] == (True, True)
    assert by_angle[65] == (False, True) and by_angle[70] == (False, True)
    assert (masks["major_valid_front"] <= masks["minor_valid_front"]).all()
    assert by_angle[65][0] is False and bool(masks["minor_valid_alone"][0, 13]) is True  # a lone view keeps 65 deg
