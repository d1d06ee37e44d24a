"""Eyeglasses without a face parser (``stages/face/glasses.py``): detected from the bridge over the nose, their
footprint left out of the face region."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.face import glasses, region
from stages.face.landmarks import EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, NOSE_TIP, FaceLandmarker
from stages.imageio import decode_image
from tests.conftest import shared_data
from tests.test_face_region import photo


@pytest.fixture(scope="module")
def faces():
    """name -> (image, (468, 2) landmarks): the bare faces of the shared photos and FFHQ-UV's views, Grace Hopper."""
    images = {name: photo(name) for name in ("015309", "obama", "000007", "astronaut", "grace_hopper")}
    for view in ("left", "front"):
        images[view] = decode_image(shared_data(f"ffhq_uv_example/edit/01223_{view}.png").read_bytes())
    with FaceLandmarker(max_faces=1) as detector:
        return {name: (image, detector.detect_one(image).points[:, :2]) for name, image in images.items()}


def test_glasses_are_told_from_bare_faces(faces):
    for name, (image, points) in faces.items():
        assert glasses.wears_glasses(image, points) == (name == "grace_hopper"), name


def test_drawn_frames_on_a_bare_face_are_detected_and_covered(faces):
    """Thin black frames drawn on 015309 (lenses smaller than the footprint assumes): detected, and covered."""
    image, points = faces["015309"]
    drawn = np.zeros(image.shape[:2], np.uint8)
    eyes = [points[list(eye)].mean(axis=0) for eye in (EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT)]
    pupils = float(np.linalg.norm(eyes[1] - eyes[0]))
    across = (eyes[1] - eyes[0]) / pupils  # drawn in the face's frame: 015309 tilts her head by 12 degrees
    down = np.array([-across[1], across[0]])
    angle = float(np.degrees(np.arctan2(across[1], across[0])))
    axes = (round(0.38 * pupils), round(0.28 * pupils))
    rim = max(2, round(0.03 * pupils))
    lenses = [eye + 0.08 * pupils * down for eye in eyes]
    for lens in lenses:
        cv2.ellipse(drawn, tuple(int(v) for v in np.round(lens)), axes, angle, 0, 360, 1, rim)
    bridge = [tuple(int(v) for v in np.round(lens + side * axes[0] * across - 0.1 * pupils * down))
              for lens, side in zip(lenses, (1, -1))]
    cv2.line(drawn, bridge[0], bridge[1], 1, rim)
    wearing = image.copy()
    wearing[drawn > 0] = (25, 20, 20)
    assert not glasses.wears_glasses(image, points)
    assert glasses.wears_glasses(wearing, points)
    footprint = glasses.glasses_footprint(points, *image.shape[:2])
    assert (footprint & (drawn > 0)).sum() >= 0.97 * (drawn > 0).sum()


def test_grace_hoppers_frames_leave_the_face_region(faces):
    """Her amber frames have skin's hue and her black top rims lie on the brows: the footprint leaves the region,
    and hardly a dark pixel stays in the region between the brows and the nose tip, nostrils aside (606 without it,
    33 with it: shadows beside the nose)."""
    image, points = faces["grace_hopper"]
    h, w = image.shape[:2]
    face, masked = region.face_region(points, h, w, exclude_eyes_mouth=True, image=image)
    dark = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)[..., 0] < 60
    dark[: int(points[list(region.BROW_TOP), 1].min())] = False
    dark[int(points[NOSE_TIP, 1]):] = False
    dark &= ~region.protected_features(points, region.fill_polygon(points[region.oval_loop()], h, w))  # nostrils
    assert (face & glasses.glasses_footprint(points, h, w)).sum() == 0
    assert (face & dark).sum() < 50
    assert masked > 0.2
