"""Fidelity to FFHQ-UV on its own three views of FFHQ 01223 (hifi3dpp topology): pose, landmarks, face region.

The figures come from ``bench/score_ffhq_uv.py``, which prints them all; these tests hold the measured ones and
mark FFHQ-UV's own targets (issue 13) that the landmark fit does not reach yet as strict expected failures, so
they turn into errors the day they pass.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

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
    read_ffhq_uv_landmarks,
)


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


@pytest.mark.xfail(strict=True, reason="issue 13: the landmark fit turns the side views 6-9 degrees further than "
                   "FFHQ-UV's Deep3D fit (+30.9 / -28.2 against +22.2 / -23.0)")
def test_fitted_yaw_and_pitch_within_two_degrees_of_ffhq_uv(sample):
    errors = angle_errors(sample[4])
    assert all(e[0] < 2.0 and e[1] < 2.0 for e in errors.values()), errors


@pytest.mark.xfail(strict=True, reason="issue 13: FFHQ-UV's 68-point detector and mediapipe's 468 points differ "
                   "by ~7 px after a similarity on these views; the fitted head's iBUG points sit 12-17 px off")
def test_ffhq_uv_landmarks_reprojected_within_two_pixels(sample):
    _, model, _, _, fit = sample
    ffhq = read_ffhq_uv_landmarks()
    errors = {v: lm68_error(model, fit, v, ffhq[v]) for v in VIEWS}
    assert max(errors.values()) < 2.0, errors


def test_fitted_head_lands_near_ffhq_uv_landmarks(sample):
    _, model, _, _, fit = sample
    ffhq = read_ffhq_uv_landmarks()
    for view in VIEWS:
        assert lm68_error(model, fit, view, ffhq[view]) < 20.0, view  # of a ~480 px wide face


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
