"""Landmark fitting: known poses and shapes are recovered from their own projections."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from stages.geometry.fitting import ShapeModel, ViewPose, fit_views, focal_for
from stages.geometry.mediapipe468 import load_mediapipe468

SIZE = 512
YAWS = {"left": 30.0, "right": -30.0, "front": 0.0}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return ShapeModel(load_mediapipe468(cache_dir=tmp_path_factory.mktemp("cache")))


def camera(yaw: float, pitch: float = 5.0, distance: float = 12.0) -> ViewPose:
    # Template (y up, z to the viewer) -> OpenCV camera (y down, z forward): flip y and z, then turn the head.
    flip = np.diag([1.0, -1.0, -1.0])
    turn = Rotation.from_euler("yx", [yaw, pitch], degrees=True).as_matrix()
    return ViewPose(flip @ turn, np.array([0.1, -0.2, distance]), focal_for(SIZE, SIZE), ((SIZE - 1) / 2,) * 2)


def test_recovers_known_poses_and_shape(model):
    rng = np.random.default_rng(0)
    truth = rng.normal(0, 1.0, model.basis.shape[1])  # a random smooth deformation of the template,
    truth *= 0.03 / np.sqrt(((model.landmark_basis @ truth) ** 2).mean())  # moving landmarks by ~3% of the eyes' span
    points3d = model.landmarks(truth)
    landmarks = {v: camera(y).project(points3d)[:, :2] for v, y in YAWS.items()}
    fit = fit_views(model, landmarks, {v: (SIZE, SIZE) for v in YAWS})
    for view, yaw in YAWS.items():
        assert fit.errors_px[view] < 2.0, fit.errors_px  # faces are ~480 px wide here: < 0.5%
        assert abs(fit.poses[view].yaw_degrees() - yaw) < 4.0  # shape and pose trade off a little
    # The recovered shape explains the landmarks better than the undeformed template.
    template_fit = fit_views(model, landmarks, {v: (SIZE, SIZE) for v in YAWS}, rounds=0)
    assert np.mean(list(fit.errors_px.values())) < 0.5 * np.mean(list(template_fit.errors_px.values()))


def test_noise_gives_proportional_error_and_one_shape(model):
    rng = np.random.default_rng(1)
    points3d = model.landmarks(np.zeros(model.basis.shape[1]))
    landmarks = {v: camera(y).project(points3d)[:, :2] + rng.normal(0, 1.0, (468, 2)) for v, y in YAWS.items()}
    fit = fit_views(model, landmarks, {v: (SIZE, SIZE) for v in YAWS})
    assert all(0.3 < e < 2.0 for e in fit.errors_px.values()), fit.errors_px
    assert fit.vertices.shape == model.topology.vertices.shape


def test_3dmm_basis_is_used_when_the_topology_has_one(model):
    topology = load_mediapipe468(cache_dir=None)
    rng = np.random.default_rng(2)
    topology.id_basis = rng.normal(0, 0.02, (3 * 468, 5))
    dmm = ShapeModel(topology)
    assert dmm.basis.shape == (3 * 468, 5)
    truth = np.array([1.0, -0.5, 0.3, 0.0, 0.8])
    landmarks = {v: camera(y).project(dmm.landmarks(truth))[:, :2] for v, y in YAWS.items()}
    fit = fit_views(dmm, landmarks, {v: (SIZE, SIZE) for v in YAWS})
    np.testing.assert_allclose(fit.coefficients, truth, atol=0.1)


def test_each_view_gets_a_residual_for_what_the_views_do_not_share(model):
    """One view's extra deformation (an expression the other views lack) is taken up by that view's residual."""
    rng = np.random.default_rng(3)

    def deformation(size: float) -> np.ndarray:
        coeffs = rng.normal(0, 1.0, model.basis.shape[1])
        return coeffs * size / np.sqrt(((model.landmark_basis @ coeffs) ** 2).mean())

    shared, expression = deformation(0.03), deformation(0.02)
    landmarks = {v: camera(y).project(model.landmarks(shared + (expression if v == "left" else 0)))[:, :2]
                 for v, y in YAWS.items()}
    fit = fit_views(model, landmarks, {v: (SIZE, SIZE) for v in YAWS})
    topology = model.topology
    for view in YAWS:
        projected = fit.poses[view].project(topology.landmark_points(fit.vertices))[:, :2]
        shared_error = float(np.linalg.norm(projected - landmarks[view], axis=1).mean())
        assert fit.errors_px[view] < 0.5 * shared_error, (view, fit.errors_px[view], shared_error)
    # The left view's shape differs from the front's by the expression, as the left camera sees it (measured 0.72;
    # each view also undoes its share of what the shared shape took from the expression, so not 1).
    found = topology.landmark_points(fit.vertices_of("left")) - topology.landmark_points(fit.vertices_of("front"))
    truth = model.landmark_basis @ expression
    seen = fit.poses["left"].rotation[:2]
    correlation = np.corrcoef((found @ seen.T).ravel(), (truth @ seen.T).ravel())[0, 1]
    assert correlation > 0.6, correlation
    single = fit_views(model, {"front": landmarks["front"]}, {"front": (SIZE, SIZE)})
    assert single.view_vertices == {} and single.vertices_of("front") is single.vertices  # one view: one shape
