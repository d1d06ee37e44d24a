"""Landmarks (mediapipe FaceMesh) and FFHQ alignment on real photos."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.errors import SampleError
from stages.face import landmarks as lmk
from stages.face.align import align_face
from stages.face.detectors import ffhq_points
from stages.face.landmarks import FaceLandmarker

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
FACES = sorted((DATA / "faces").glob("*.jpg"))
needs_data = pytest.mark.skipif(not FACES, reason=f"real face photos not found under {DATA / 'faces'}")


@pytest.fixture(scope="module")
def landmarker():
    with FaceLandmarker(max_faces=4) as detector:
        yield detector


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_index_constants_match_mediapipe_contours():
    from mediapipe.python.solutions import face_mesh_connections as conn

    assert set(lmk.EYE_IMAGE_LEFT) == set(itertools.chain(*conn.FACEMESH_RIGHT_EYE))
    assert set(lmk.EYE_IMAGE_RIGHT) == set(itertools.chain(*conn.FACEMESH_LEFT_EYE))
    lips = set(itertools.chain(*conn.FACEMESH_LIPS))
    assert {lmk.MOUTH_CORNER_IMAGE_LEFT, lmk.MOUTH_CORNER_IMAGE_RIGHT} <= lips


@needs_data
@pytest.mark.parametrize("path", FACES, ids=lambda p: p.stem)
def test_one_face_in_each_real_photo(landmarker, path):
    image = _load(path)
    faces = landmarker.detect(image)
    assert len(faces) == 1
    face = faces[0]
    assert face.points.shape == (lmk.NUM_LANDMARKS, 3)
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
    five = ffhq_points(face.points)
    # y-down pixels: eyes above the nose, the nose above the mouth, image-left before image-right.
    assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0]
    assert max(five[0, 1], five[1, 1]) < five[2, 1] < min(five[3, 1], five[4, 1])


def test_astronaut_has_one_face(landmarker):
    image = _astronaut()
    face = landmarker.detect_one(image, policy="reject")
    x0, y0, x1, y1 = face.box
    # The face is in the upper middle of the 512x512 picture.
    assert 150 < (x0 + x1) / 2 < 300 and 50 < (y0 + y1) / 2 < 200


def test_two_faces_follow_the_policy(landmarker):
    big = _astronaut()[20:276, 100:356]  # a 256x256 head-and-shoulders crop
    small = np.asarray(Image.fromarray(big).resize((160, 160), Image.LANCZOS))
    canvas = np.zeros((256, 256 + 160, 3), dtype=np.uint8)
    canvas[:, :256] = big
    canvas[48:208, 256:] = small
    with pytest.raises(SampleError) as error:
        landmarker.detect_one(canvas, policy="reject")
    assert error.value.code == lmk.MULTIPLE_FACES
    chosen = landmarker.detect_one(canvas, policy="largest")
    assert (chosen.box[0] + chosen.box[2]) / 2 < 256  # the full-size astronaut, not the half-size copy
    assert len(landmarker.detect(canvas)) == 2


def test_blank_image_has_no_face(landmarker):
    with pytest.raises(SampleError) as error:
        landmarker.detect_one(np.full((256, 256, 3), 127, dtype=np.uint8))
    assert error.value.code == lmk.NO_FACE


def test_closed_landmarker_refuses_work():
    detector = FaceLandmarker(max_faces=1)
    detector.close()
    detector.close()
    with pytest.raises(RuntimeError):
        detector.detect(_astronaut())


@needs_data
@pytest.mark.parametrize("size", [256, 1024])
def test_alignment_puts_eyes_at_consistent_positions(landmarker, size):
    images = [_load(p) for p in FACES[:3]] + [_astronaut()]
    mapped_eyes = []
    for image in images:
        five = ffhq_points(landmarker.detect_one(image).points)
        aligned = align_face(image, five, output_size=size)
        assert aligned.image.shape == (size, size, 3) and aligned.image.dtype == np.uint8
        eyes = aligned.map_points(five[:2])
        mapped_eyes.append(eyes / size)
        # The matrix agrees with the pixels: landmarks found again in the aligned image
        # land where the matrix sends the source landmarks.
        again = ffhq_points(landmarker.detect_one(aligned.image).points)
        assert np.abs(again[:2] - eyes).max() < 0.015 * size
    mapped_eyes = np.array(mapped_eyes)
    # FFHQ geometry: eyes level, about a quarter of the width apart, above the centre.
    assert np.ptp(mapped_eyes, axis=0).max() < 0.01
    left, right = mapped_eyes.mean(axis=0)
    assert abs(left[1] - right[1]) < 0.005
    assert 0.2 < right[0] - left[0] < 0.3 and 0.4 < left[1] < 0.5


@needs_data
def test_realigning_an_ffhq_image_is_nearly_identity(landmarker):
    path = DATA / "ffhq_uv_example" / "images" / "01223.png"
    image = _load(path)
    aligned = align_face(image, ffhq_points(landmarker.detect_one(image).points), output_size=256)
    corners = np.array([[0, 0], [0, 1023], [1023, 1023], [1023, 0]], dtype=np.float64)
    # mediapipe's eye centres differ a little from dlib's, so the square is within ~3% of the frame.
    assert np.abs(aligned.quad - corners).max() < 0.03 * 1024
