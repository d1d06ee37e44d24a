"""dlib's 68-point face landmarks (iBUG 300-W layout): FFHQ's and FFHQ-UV's own detector, an optional backend.

FFHQ-UV aligns with dlib: the HOG frontal-face detector ``get_frontal_face_detector()(img, 1)`` (one upsampling)
and ``shape_predictor_68_face_landmarks.dat`` (FFHQ-UV's ``checkpoints/dlib_model``). dlib and the model file are
optional dependencies (``pip install dlib==20.0.1 face-recognition-models==0.3.0``; the second ships the model
file); ``resolve_predictor`` finds the file and ``Dlib68Landmarker`` runs both on still images.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from stages.errors import ConfigError
from stages.face.landmarks import DLIB68, FaceLandmarks, LandmarkDetector, five_points

NUM_POINTS = 68
# FFHQ-UV's file name under models.weights_dir.
PREDICTOR_FILE = "dlib_model/shape_predictor_68_face_landmarks.dat"
HOG_UPSAMPLE = 1  # FFHQ-UV (and FFHQ's align script): detector(img, 1)
INSTALL_HINT = "pip install dlib==20.0.1 face-recognition-models==0.3.0"

# iBUG 68 groups (0-based). "Image-left" is the subject's right on an unmirrored photo.
JAW = tuple(range(0, 17))
EYE_IMAGE_LEFT = tuple(range(36, 42))
EYE_IMAGE_RIGHT = tuple(range(42, 48))
OUTER_EYE_IMAGE_LEFT, OUTER_EYE_IMAGE_RIGHT = 36, 45
NOSE_TIP = 30
MOUTH_CORNER_IMAGE_LEFT, MOUTH_CORNER_IMAGE_RIGHT = 48, 54


def ffhq_points68(points: np.ndarray) -> np.ndarray:
    """FFHQ's 5 alignment points from (68, 2+) iBUG landmarks -> (5, 2) float32 pixels.

    FFHQ's recipe: eye centres = mean of points 36-41 / 42-47, mouth corners 48 and 54; the nose tip (30)
    fills the third row of the 5-point layout of ``detectors.ffhq_points``.
    """
    if points.shape[0] != NUM_POINTS:
        raise ValueError(f"expected {NUM_POINTS} landmarks, got {points.shape[0]}")
    return five_points(points, EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, NOSE_TIP, MOUTH_CORNER_IMAGE_LEFT,
                       MOUTH_CORNER_IMAGE_RIGHT)


def dlib_available() -> bool:
    """True if the dlib package is installed (checked without importing it)."""
    return importlib.util.find_spec("dlib") is not None


def packaged_predictor() -> Optional[Path]:
    """The model file shipped by the face-recognition-models package, if installed.

    The package's ``__init__`` imports ``pkg_resources``, which current setuptools no longer has, so the file
    is located from the package's spec instead of importing it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / Path(PREDICTOR_FILE).name
    return path if path.is_file() else None


def resolve_predictor(setting: Optional[str], weights_dir: Optional[str], option: str) -> str:
    """Path or URL of the 68-point model; ConfigError naming what to install or which file is missing.

    ``setting`` (absolute, URL, or relative to ``weights_dir``) wins; unset, the model is
    ``weights_dir/dlib_model/shape_predictor_68_face_landmarks.dat`` if present, else face-recognition-models'
    copy. ``option`` is the config key quoted in errors.
    """
    from stages.networks import weight_location

    if not dlib_available():
        raise ConfigError(f"{option}: dlib landmarks need the dlib package ({INSTALL_HINT}); "
                          "see README section 'Weights'")
    if setting:
        return weight_location(weights_dir, setting, option)
    if weights_dir:
        try:
            return weight_location(weights_dir, PREDICTOR_FILE, option)
        except ConfigError:
            pass  # fall back to the packaged copy
    packaged = packaged_predictor()
    if packaged is None:
        raise ConfigError(f"{option}: no dlib 68-point model: put {Path(PREDICTOR_FILE).name} at "
                          f"models.weights_dir/{PREDICTOR_FILE} or {INSTALL_HINT}; see README section 'Weights'")
    return str(packaged)


class Dlib68Landmarker(LandmarkDetector):
    """dlib's HOG face detector plus the 68-point shape predictor; create once per actor."""

    scheme = DLIB68

    def __init__(self, predictor_path: str, max_faces: int = 4, upsample: int = HOG_UPSAMPLE):
        import dlib

        from stages.networks import local_weight_file

        if max_faces < 1:
            raise ConfigError(f"max_faces must be at least 1, not {max_faces}")
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(local_weight_file(predictor_path))
        self._max_faces = max_faces
        self._upsample = upsample
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[FaceLandmarks]:
        """All faces in an (H, W, 3) uint8 RGB image (at most ``max_faces``), largest box first.

        ``points``: (68, 2) float32 x, y pixels (y down; dlib's integer pixel positions). ``box``: the tight
        box around the landmarks, as the mediapipe backend reports it.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"detect expects (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        image = np.ascontiguousarray(rgb)
        faces = []
        with self._lock:
            for rect in self._detector(image, self._upsample):
                shape = self._predictor(image, rect)
                points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
                x0, y0 = points.min(axis=0)
                x1, y1 = points.max(axis=0)
                faces.append(FaceLandmarks(points=points, box=(float(x0), float(y0), float(x1), float(y1)),
                                           scheme=DLIB68))
        return sorted(faces, key=lambda f: f.area, reverse=True)[:self._max_faces]

    def close(self) -> None:
        """dlib's objects hold no external resources; nothing to release."""
