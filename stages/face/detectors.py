"""The landmark backends behind one door: pick a detector by name, check it at start-up, and FFHQ's 5 points.

``stages.face.landmarks`` (mediapipe, the default) and ``stages.face.dlib68`` (dlib's 68
points, optional) each implement a ``LandmarkDetector``; this module is the one place that
knows both, so neither imports the other.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from stages.errors import ConfigError
from stages.face.dlib68 import NUM_POINTS, Dlib68Landmarker, ffhq_points68, resolve_predictor
from stages.face.landmarks import (
    EYE_IMAGE_LEFT,
    EYE_IMAGE_RIGHT,
    LANDMARK_BACKENDS,
    MOUTH_CORNER_IMAGE_LEFT,
    MOUTH_CORNER_IMAGE_RIGHT,
    NOSE_TIP,
    NUM_LANDMARKS,
    FaceLandmarker,
    LandmarkDetector,
    five_points,
)


def ffhq_points(points: np.ndarray) -> np.ndarray:
    """The 5 points FFHQ alignment uses, from (468, 2+) or (68, 2+) landmarks -> (5, 2) pixels.

    Rows: image-left eye centre, image-right eye centre, nose tip, image-left mouth
    corner, image-right mouth corner (the order of dlib's 68-point recipe:
    eye_left = mean(lm[36:42]), eye_right = mean(lm[42:48]), lm[48], lm[54]).
    """
    if points.shape[0] == NUM_POINTS:
        return ffhq_points68(points)
    if points.shape[0] != NUM_LANDMARKS:
        raise ValueError(f"expected {NUM_LANDMARKS} or {NUM_POINTS} landmarks, got {points.shape[0]}")
    return five_points(points, EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, NOSE_TIP, MOUTH_CORNER_IMAGE_LEFT,
                       MOUTH_CORNER_IMAGE_RIGHT)


def check_backend(option: str, backend: str, dlib_predictor: Optional[str], weights_dir: Optional[str]) -> None:
    """Preflight of a stage's ``landmarks`` setting: a known backend, and dlib installed with its model file.

    ``option`` is the config section quoted in errors (e.g. ``stages.inversion``). Raises ConfigError.
    """
    if backend not in LANDMARK_BACKENDS:
        raise ConfigError(f"{option}.landmarks must be one of {LANDMARK_BACKENDS}, not {backend!r}")
    if backend == "dlib":
        resolve_predictor(dlib_predictor, weights_dir, f"{option}.dlib_predictor")


def make_detector(backend: str, max_faces: int = 4, dlib_predictor: Optional[str] = None,
                  weights_dir: Optional[str] = None) -> LandmarkDetector:
    """The ``backend`` detector (``LANDMARK_BACKENDS``); dlib's model is found by ``dlib68.resolve_predictor``."""
    if backend == "dlib":
        path = resolve_predictor(dlib_predictor, weights_dir, "dlib_predictor")
        return Dlib68Landmarker(path, max_faces=max_faces)
    if backend != "mediapipe":
        raise ConfigError(f"landmarks must be one of {LANDMARK_BACKENDS}, not {backend!r}")
    return FaceLandmarker(max_faces=max_faces)
