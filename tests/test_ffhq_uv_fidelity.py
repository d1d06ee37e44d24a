"""Fidelity to FFHQ-UV on its own three views of FFHQ 01223 (hifi3dpp topology): pose, landmarks, face region.

The figures come from ``bench/score_ffhq_uv.py``, which prints them all; these tests hold the measured ones and
mark FFHQ-UV's own targets (issue 13) that the landmark fit does not reach as strict expected failures, so they
turn into errors the day they pass. Why they are not reached is measured here too: the fit recovers known yaws
on renders of the template head, and the views' landmarks themselves (no template) support yaws 1.4 times
FFHQ-UV's Deep3D ones, where the fit lands; FFHQ-UV's 68 points come from another detector, 12-16 px from
mediapipe's on these views.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from stages.geometry.landmark_schemes import IBUG68_SCHEME

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from score_ffhq_uv import (  # noqa: E402
    EDIT,
    FFHQ_UV_ANGLES,
    HEAD_OBJ,
    LM68,
    VIEWS,
    deep3d_angles,
    lm68_error,
    pose_evidence,
    read_ffhq_uv_landmarks,
)

TEASER_TEXTURE = HEAD_OBJ.parent / "tex_teaser1.png"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Topology, shape model, views, their mediapipe landmarks and the fit of 01223."""
    if not (HEAD_OBJ.exists() and EDIT.exists() and LM68.exists()):
        pytest.skip(f"needs {HEAD_OBJ}, {EDIT} and {LM68} (../shared/data)")
    from stages.face.landmarks import FaceLandmarker
    from stages.geometry.fitting import ShapeModel, fit_views
    from stages.geometry.topologies import load_topology
    from stages.imageio import decode_image

    topology = load_topology("hifi3dpp", obj_path=str(HEAD_OBJ), cache_dir=tmp_path_factory.mktemp("cache"))
    model = ShapeModel(topology)
    images = {v: decode_image((EDIT / f"01223_{v}.png").read_bytes()) for v in VIEWS}
    with FaceLandmarker(max_faces=1) as detector:
        landmarks = {v: detector.detect_one(im).points[:, :2] for v, im in images.items()}
    fit = fit_views(model, landmarks, {v: im.shape[:2] for v, im in images.items()})
    return topology, model, images, landmarks, fit


def angle_errors(fit) -> dict[str, np.ndarray]:
    """|fitted - FFHQ-UV's| (pitch, yaw, roll) per view, degrees."""
    return {v: np.abs(np.array(deep3d_angles(fit.poses[v])) - np.array(FFHQ_UV_ANGLES[v])) for v in VIEWS}


def test_front_view_pose_matches_ffhq_uv_and_side_views_turn_the_right_way(sample):
    fit = sample[4]
    errors = angle_errors(fit)
    assert errors["front"][1] < 2.0, errors  # yaw of the frontal view within 2 degrees of FFHQ-UV's fit
    for view in VIEWS:
        assert errors[view][0] < 4.5 and errors[view][2] < 2.0, (view, errors[view])  # pitch, roll
    yaws = {v: deep3d_angles(fit.poses[v])[1] for v in VIEWS}
    assert 20 < yaws["left"] < 32 and -31 < yaws["right"] < -20, yaws  # FFHQ-UV: +22.2, -23.0


@pytest.mark.xfail(strict=True, reason="issue 13: the fit turns the side views to +30.9 / -28.2, FFHQ-UV's Deep3D "
                   "regression to +22.2 / -23.0; the views' own landmarks, as one rigid shape, support FFHQ-UV's yaws "
                   "x1.4 (test_views_landmarks_support_larger_yaws_than_ffhq_uv_fit), so the gap is Deep3D's")
def test_fitted_yaw_and_pitch_within_two_degrees_of_ffhq_uv(sample):
    errors = angle_errors(sample[4])
    assert all(e[0] < 2.0 and e[1] < 2.0 for e in errors.values()), errors


@pytest.mark.xfail(strict=True, reason="issue 13: FFHQ-UV's 68-point detector (run on a 224 crop, 3.7 px per crop "
                   "pixel) and mediapipe's points differ by 11.7-16.2 px in 2D on these views; the fitted head's "
                   "iBUG points sit 11.8-17.5 px off (test_fitted_head_lands_at_the_detectors_disagreement)")
def test_ffhq_uv_landmarks_reprojected_within_two_pixels(sample):
    _, model, _, _, fit = sample
    ffhq = read_ffhq_uv_landmarks()
    errors = {v: lm68_error(model, fit, v, ffhq[v]) for v in VIEWS}
    assert max(errors.values()) < 2.0, errors


def test_fitted_head_lands_at_the_detectors_disagreement(sample):
    """The fitted head's 68 points are as far from FFHQ-UV's as mediapipe's own detections are, plus < 2 px."""
    _, model, _, landmarks, fit = sample
    ffhq = read_ffhq_uv_landmarks()
    rows = list(IBUG68_SCHEME.from_mediapipe)
    for view in VIEWS:
        gap = np.linalg.norm(landmarks[view][rows] - ffhq[view], axis=1).mean()
        assert lm68_error(model, fit, view, ffhq[view]) < gap + 2.0, view


def test_views_landmarks_support_larger_yaws_than_ffhq_uv_fit(sample):
    """Template-free: one rigid point set explains both detectors' landmarks best with FFHQ-UV's yaws x1.3-1.5."""
    _, _, _, landmarks, fit = sample
    evidence = pose_evidence(landmarks, read_ffhq_uv_landmarks())
    for name, (best, residuals) in evidence["yaw_scale"].items():
        assert 1.25 < best < 1.55, (name, best)
        assert residuals[1.0] > 1.2 * residuals[best], (name, residuals)  # FFHQ-UV's own yaws fit clearly worse
    yaws = {v: deep3d_angles(fit.poses[v])[1] for v in ("left", "right")}
    assert yaws["left"] > 1.25 * FFHQ_UV_ANGLES["left"][1] and yaws["right"] < 1.15 * FFHQ_UV_ANGLES["right"][1]


def test_fit_recovers_known_yaws_on_renders_of_the_template_head(sample):
    """The landmark embedding and fit are consistent: the textured template head turned by known yaws, rendered,
    detected by mediapipe and fitted, comes back within 3 degrees (so the side views' yaw is not an embedding bias).
    """
    if not TEASER_TEXTURE.exists():
        pytest.skip(f"needs {TEASER_TEXTURE}")
    from scipy.spatial.transform import Rotation

    from stages.face.landmarks import FaceLandmarker
    from stages.geometry.fitting import fit_views
    from stages.geometry.make_hifi3dpp_landmarks import render_textured
    from stages.imageio import decode_image

    topology, model = sample[0], sample[1]
    texture = decode_image(TEASER_TEXTURE.read_bytes())
    yaws = {"left": 25.0, "front": 0.0, "right": -25.0}
    size = 512
    landmarks = {}
    with FaceLandmarker(max_faces=1) as detector:
        for view, yaw in yaws.items():
            turned = topology.vertices @ Rotation.from_euler("y", yaw, degrees=True).as_matrix().T
            image = render_textured(turned, topology.triangles, topology.uvs, topology.face_uvs, texture, size)[0]
            landmarks[view] = detector.detect_one(image).points[:, :2]
    fit = fit_views(model, landmarks, {v: (size, size) for v in yaws})
    for view, yaw in yaws.items():
        pitch, fitted_yaw, roll = deep3d_angles(fit.poses[view])
        assert abs(fitted_yaw - yaw) < 3.0 and abs(pitch) < 2.0 and abs(roll) < 2.0, (view, pitch, fitted_yaw, roll)


def test_embedded_features_sit_in_ffhq_uv_fill_boxes(sample):
    """The mouth, nose base and eyes of the landmark embedding are centred in FFHQ-UV's fixed Poisson boxes."""
    topology = sample[0]
    uv = topology.landmark_uv()
    boxes = {b.name: b for b in topology.fill_regions()}
    mouth = (uv[61] + uv[291]) / 2  # mouth corners
    box = boxes["mouth"]
    assert abs(mouth[0] - (box.left + box.right) / 2) < 4, mouth
    assert abs(uv[61, 0] - box.left) < 6 and abs(uv[291, 0] - box.right) < 6  # the box spans the corners
    nose = boxes["nosal_base"]
    assert abs(uv[2, 0] - (nose.left + nose.right) / 2) < 4  # subnasal point on the box's centre column
    # The layout's mirror axis (between the eye boxes) is the embedding's: eye centres mirror each other.
    axis = (boxes["l_eye"].left + boxes["l_eye"].right + boxes["r_eye"].left + boxes["r_eye"].right) / 4
    assert abs((uv[33, 0] + uv[263, 0]) / 2 - axis) < 3


def test_hair_mask_starts_at_ffhq_uv_hairline_and_face_region_reaches_it(sample):
    from stages.unwrap import UnwrapSettings, ViewInput, unwrap_view

    topology, _, images, landmarks, fit = sample
    hair = topology.masks()["hair"] > 0.5
    centre_column = topology.uv_size // 2
    assert abs(np.nonzero(hair[:, centre_column])[0].max() - 144) <= 2  # FFHQ-UV fills from row ~144
    front = ViewInput("front", images["front"], landmarks["front"])
    out = unwrap_view(topology, fit, front, UnwrapSettings())
    rows = np.nonzero(out.mask[:, centre_column] > 0)[0]
    assert rows.min() < 152, rows.min()  # the skin model takes the forehead up to the hairline
    bare = unwrap_view(topology, fit, front, UnwrapSettings(skin_region=False))
    assert np.nonzero(bare.mask[:, centre_column] > 0)[0].min() > rows.min() + 30  # the landmark oval stops short
    assert out.masked_fraction is not None and out.masked_fraction < 0.02  # no hair over this face
