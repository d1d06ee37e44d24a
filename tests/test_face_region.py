"""The landmark face region on real photos (``stages/face/region.py``): hair and glasses out, bare skin in."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from stages.face import region
from stages.imageio import decode_image
from tests.conftest import shared_data


def photo(name: str) -> np.ndarray:
    """A shared photo, or a face photo that ships with an installed package (``pipeline/inputs.py``)."""
    if name == "astronaut":
        path = Path(importlib.util.find_spec("skimage").origin).parent / "data" / "astronaut.png"
    elif name == "grace_hopper":
        path = Path(importlib.util.find_spec("matplotlib").origin).parent / "mpl-data/sample_data/grace_hopper.jpg"
    else:
        path = shared_data(f"faces/{name}.jpg")
    return decode_image(path.read_bytes())


@pytest.fixture(scope="module")
def regions():
    """name -> (image, landmarks (468, 2), face oval, face region, masked fraction) for the photos below."""
    from stages.face.landmarks import FaceLandmarker

    out = {}
    with FaceLandmarker(max_faces=1) as detector:
        for name in ("015309", "obama", "astronaut", "grace_hopper"):
            image = photo(name)
            points = detector.detect_one(image).points[:, :2]
            h, w = image.shape[:2]
            oval = region.fill_polygon(points[region.oval_loop()], h, w)
            face, masked = region.face_region(points, h, w, exclude_eyes_mouth=False, image=image)
            out[name] = (image, points, oval, face, masked)
    return out


@pytest.mark.parametrize("name, at_least", [("015309", 0.02), ("astronaut", 0.015), ("grace_hopper", 0.01)])
def test_hair_and_glasses_over_the_face_are_masked(regions, name, at_least):
    """015309's blonde strands at her temples and over her cheek, the astronaut's fringe, Grace Hopper's glasses
    frames: a share of the inner upper face oval is left out of the face region (obama's, below, is 0)."""
    *_, masked = regions[name]
    assert masked > at_least, masked


def test_a_bare_forehead_is_kept_up_to_the_hairline(regions):
    """Obama's bald forehead: nothing inside the face oval is masked, and the region reaches above the oval (the
    oval stops about a third of the forehead below the hairline)."""
    _, points, oval, face, masked = regions["obama"]
    assert masked < 0.002, masked
    width = region.face_width_px(points)
    assert np.nonzero(oval)[0].min() - np.nonzero(face)[0].min() > 0.1 * width
