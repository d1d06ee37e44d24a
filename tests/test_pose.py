"""Head pose from mediapipe landmarks, in Face-API's sign convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.face.landmarks import FaceLandmarker
from stages.face.pose import head_pose, head_rotation

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
EXAMPLE = DATA / "ffhq_uv_example"
needs_data = pytest.mark.skipif(not EXAMPLE.exists(), reason=f"FFHQ-UV example not found at {EXAMPLE}")


@pytest.fixture(scope="module")
def landmarker():
    with FaceLandmarker(max_faces=1) as detector:
        yield detector


def _pose(landmarker, image: np.ndarray):
    return head_pose(landmarker.detect_one(np.ascontiguousarray(image)).points)


def _portrait() -> Image.Image:
    path = EXAMPLE / "inversions" / "01223.png"
    if path.exists():
        return Image.open(path).convert("RGB")
    from skimage import data

    return Image.fromarray(data.astronaut())


def test_rotation_is_orthonormal(landmarker):
    rotation = head_rotation(landmarker.detect_one(np.asarray(_portrait())).points)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
    assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_horizontal_flip_flips_yaw_and_roll(landmarker):
    image = np.asarray(_portrait())
    pose = _pose(landmarker, image)
    flipped = _pose(landmarker, image[:, ::-1])
    assert abs(pose.yaw) > 5  # the example looks clearly to one side, so the sign is meaningful
    assert np.sign(flipped.yaw) == -np.sign(pose.yaw)
    assert flipped.yaw == pytest.approx(-pose.yaw, abs=3)
    assert flipped.pitch == pytest.approx(pose.pitch, abs=3)
    assert flipped.roll == pytest.approx(-pose.roll, abs=2)


@pytest.mark.parametrize("angle", [-20.0, 12.0])
def test_in_plane_rotation_changes_roll_by_the_angle(landmarker, angle):
    image = _portrait()
    base = _pose(landmarker, np.asarray(image)).roll
    # PIL rotates counter-clockwise for positive angles; Face-API roll grows counter-clockwise.
    rotated = _pose(landmarker, np.asarray(image.rotate(angle, resample=Image.BILINEAR))).roll
    assert rotated - base == pytest.approx(angle, abs=2.0)


@needs_data
def test_ffhq_uv_views_have_ordered_yaws_30_degrees_apart(landmarker):
    yaws = {view: _pose(landmarker, np.asarray(Image.open(EXAMPLE / "edit" / f"01223_{view}.png").convert("RGB"))).yaw
            for view in ("left", "front", "right")}
    # FFHQ-UV made _left with Face-API yaw +30 and _right with -30 (pipeline.md section 1).
    assert yaws["right"] < yaws["front"] < yaws["left"]
    assert abs(yaws["front"]) < 5
    assert 20 < yaws["left"] - yaws["front"] < 40
    assert 20 < yaws["front"] - yaws["right"] < 40


@needs_data
def test_inversion_pose_is_near_face_api(landmarker):
    import json

    reference = json.loads((EXAMPLE / "attributes" / "01223.json").read_text())
    pose = _pose(landmarker, np.asarray(_portrait()))
    assert pose.yaw == pytest.approx(reference["Yaw"], abs=3)
    assert pose.pitch == pytest.approx(reference["Pitch"], abs=3)
