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
                   "x1.4 (test_views_landmarks_support_larger_yaws_than_ffhq_uv_fit), so the gap is Deep3D's; the "
                   "yaw is a depth prior, not a measurement (test_yaw_trades_with_template_depth_at_equal_error), and "
                   "the pitch differs in sign pattern (sides -2.2 / -2.8 vs front +0.3 in FFHQ-UV's fit)")
def test_fitted_yaw_and_pitch_within_two_degrees_of_ffhq_uv(sample):
    errors = angle_errors(sample[4])
    assert all(e[0] < 2.0 and e[1] < 2.0 for e in errors.values()), errors


@pytest.mark.xfail(strict=True, reason="issue 13: FFHQ-UV's 68-point detector (run on a 224 crop, 3.7 px per crop "
                   "pixel) and mediapipe's points differ by 11.7-16.2 px in 2D on these views; the fitted head's "
                   "iBUG points sit 11.6-17.6 px off (test_fitted_head_lands_at_the_detectors_disagreement). The "
                   "file holds that detector's points, which FFHQ-UV uses to crop; its geometry comes from Deep3D's "
                   "regression of the crop, which does not take them (its unwrap_one_texture saves the "
                   "preprocessing's lm68_2d); on the front view its image-right eye corners lie 11-21 px left of "
                   "the eye's, where mediapipe's are")
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


def test_yaw_trades_with_template_depth_at_equal_error(sample):
    """Bas-relief ambiguity: the three views turn about one vertical axis, so a deeper head at smaller yaws explains
    the landmarks as well. With the template 1.55 times as deep the fit lands within 2 degrees of FFHQ-UV's yaws,
    its landmark error is no larger (the front view's 5 % smaller), and the centre-face texels move by about a pixel
    in the views: the yaw the issue targets is the depth prior's choice (Deep3D's 3DMM there, the teaser head's
    depth here, which renders of that head confirm: test_fit_recovers_known_yaws_on_renders_of_the_template_head),
    and the maps hardly depend on it."""
    import dataclasses

    from stages.geometry.fitting import ShapeModel, fit_views
    from stages.unwrap import texel_visibility

    topology, _, images, landmarks, fit = sample
    deeper = topology.vertices.copy()
    middle = deeper[:, 2].mean()
    deeper[:, 2] = middle + (deeper[:, 2] - middle) * 1.55
    deep_topology = dataclasses.replace(topology, vertices=deeper, _texel_matrix=None)
    deep_fit = fit_views(ShapeModel(deep_topology), landmarks, {v: im.shape[:2] for v, im in images.items()})
    for view in VIEWS:
        assert abs(deep3d_angles(deep_fit.poses[view])[1] - FFHQ_UV_ANGLES[view][1]) < 2.0, view
        assert deep_fit.errors_px[view] < 1.02 * fit.errors_px[view], view  # at least as good a fit
    centre = topology.masks()["center_face"].ravel()[topology.texel_samples()[0]] > 0.5
    for view in ("left", "right"):
        shallow_xyz, shallow_seen = texel_visibility(topology, fit, view, images[view].shape[:2], None)
        deep_xyz, deep_seen = texel_visibility(deep_topology, deep_fit, view, images[view].shape[:2], None)
        both = shallow_seen & deep_seen & centre
        moved = np.linalg.norm(shallow_xyz[both, :2] - deep_xyz[both, :2], axis=1)
        assert np.percentile(moved, 90) < 2.0 and np.median(moved) < 1.0, (view, np.percentile(moved, [50, 90]))


def render_turned_head(topology, texture: np.ndarray, yaw: float, size: int) -> np.ndarray:
    """(size, size, 3) uint8: the textured template turned by ``yaw`` degrees, seen by the fit's own pinhole camera.

    The head sits at the distance where its outer eye corners span a third of the image, as in FFHQ-UV's views.
    """
    from scipy.spatial.transform import Rotation

    from stages.geometry.fitting import ViewPose, focal_for
    from stages.geometry.rasterize import rasterize
    from stages.geometry.render import sample_texture

    flip = np.diag([1.0, -1.0, -1.0])  # template (y up, z to the viewer) -> OpenCV camera
    rotation = flip @ Rotation.from_euler("y", yaw, degrees=True).as_matrix()
    eye = np.linalg.norm(np.subtract(*topology.landmark_points()[[33, 263]]))
    focal = focal_for(size, size)
    pose = ViewPose(rotation, np.array([0.0, 0.0, 3 * focal * eye / size]), focal, ((size - 1) / 2,) * 2)
    screen = pose.project(topology.vertices)
    raster = rasterize(screen, topology.triangles, size, size, perspective_w=screen[:, 2])
    covered = raster.mask
    corners = topology.uvs[topology.face_uvs[raster.triangle_id[covered]]]  # (P, 3, 2)
    image = np.full((size, size, 3), 255, np.uint8)
    image[covered] = np.clip(sample_texture(texture, np.einsum("pk,pkj->pj", raster.barycentrics[covered], corners)),
                             0, 255).astype(np.uint8)
    return image


def test_fit_recovers_known_yaws_on_renders_of_the_template_head(sample):
    """The landmark embedding and fit are consistent: the textured template head turned by known yaws, rendered,
    detected by mediapipe and fitted, comes back within 3.5 degrees (measured: +28.0 / +0.5 / -23.9 at +25 / 0 / -25,
    pitch up to 2.2; mediapipe sees the teaser texture's features ~1 % of the face to the image right of the
    symmetric embedding), far less than the side views' 8.7 degrees from FFHQ-UV's fit.
    """
    if not TEASER_TEXTURE.exists():
        pytest.skip(f"needs {TEASER_TEXTURE}")
    from stages.face.landmarks import FaceLandmarker
    from stages.geometry.fitting import fit_views
    from stages.imageio import decode_image

    topology, model = sample[0], sample[1]
    texture = decode_image(TEASER_TEXTURE.read_bytes())
    yaws = {"left": 25.0, "front": 0.0, "right": -25.0}
    size = 512
    with FaceLandmarker(max_faces=1) as detector:
        landmarks = {v: detector.detect_one(render_turned_head(topology, texture, yaw, size)).points[:, :2]
                     for v, yaw in yaws.items()}
    fit = fit_views(model, landmarks, {v: (size, size) for v in yaws})
    for view, yaw in yaws.items():
        pitch, fitted_yaw, roll = deep3d_angles(fit.poses[view])
        assert abs(fitted_yaw - yaw) < 3.5 and abs(pitch) < 3.0 and abs(roll) < 2.0, (view, pitch, fitted_yaw, roll)


def test_map_side_band_gap_is_the_views_own_lighting(sample):
    """Issue 13 (3): the map's UV-left temple and jaw bands are darker than the UV-right ones (-5.6 / -6.4 luma).
    The views carry that gap themselves: the front view's own bands differ by -8.3 / -12.0, the left view's UV-left
    bands against the right view's UV-right ones by -6.9 / -13.9. The merge (colour matching, soft weights) narrows
    it (the map's gap is narrower than either) and adds none of its own."""
    from score_ffhq_uv import side_band_brightness

    from stages.texture.merge import UVView, complete_texture
    from stages.texture.quality import symmetry_axis
    from stages.texture.template import template_for
    from stages.unwrap import UnwrapSettings, unwrap_sample

    topology, model, images, landmarks, _ = sample
    regions = topology.masks()
    unwraps = unwrap_sample(topology, model, images, landmarks, UnwrapSettings())
    views = {v: UVView(u.texture.astype(np.float32), (u.mask > 127).astype(np.float32)) for v, u in unwraps.items()}
    boxes = {r.name: (r.top, r.bottom, r.left, r.right) for r in topology.fill_regions()}
    uv = complete_texture(views, template_for("hifi3dpp", regions, None), regions, boxes).uv
    centre, axis = regions["center_face"], symmetry_axis(regions["eye_l"], regions["eye_r"])
    in_map = side_band_brightness(uv, centre, axis)
    own = {v: side_band_brightness(unwraps[v].texture, centre, axis, unwraps[v].mask) for v in VIEWS}
    for band, (left, right) in in_map.items():
        front_gap = own["front"][band][0] - own["front"][band][1]
        sides_gap = own["left"][band][0] - own["right"][band][1]
        assert front_gap < -5 and sides_gap < -5, (band, front_gap, sides_gap)  # the views' own lighting
        assert max(front_gap, sides_gap) < left - right < 0, (band, left - right, front_gap, sides_gap)
