"""Face landmark detectors behind one interface, and the default backend: mediapipe 0.10.21 FaceMesh (468 points).

Two backends, chosen by a stage setting ``landmarks`` (``LANDMARK_BACKENDS``): ``mediapipe`` (468 points, the
default) and ``dlib`` (iBUG's 68 points, FFHQ-UV's own detector, ``stages/face/dlib68.py``). Both are
``LandmarkDetector``s returning ``FaceLandmarks`` in y-down pixels with a box, largest face first.

mediapipe's legacy ``solutions.face_mesh`` ships its detector and landmark models in
the wheel, so this runs offline on a bare CPU machine. One ``FaceLandmarker`` is
created per actor (the graph takes ~100 ms to build) and reused for every image.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Self, get_args

import numpy as np

from stages.errors import ConfigError, SampleError

NUM_LANDMARKS = 468  # FaceMesh without iris refinement (478 with refine_landmarks=True)

# Error codes of this module (documented in README's error table).
NO_FACE = "no_face"
MULTIPLE_FACES = "multiple_faces"

# Choice settings of every stage that detects faces (omegaconf checks them at config load).
MultiFacePolicy = Literal["largest", "reject"]  # several faces: take the largest, or fail multiple_faces
LandmarkBackend = Literal["mediapipe", "dlib"]  # mediapipe 468 points, or dlib 68 (optional package)
MULTI_FACE_POLICIES: tuple[str, ...] = get_args(MultiFacePolicy)
LANDMARK_BACKENDS: tuple[str, ...] = get_args(LandmarkBackend)
# Landmark layouts (FaceLandmarks.scheme): mediapipe's face mesh and iBUG's 68 points (dlib).
MEDIAPIPE468, DLIB68 = "mediapipe468", "ibug68"

# Landmark indices of mediapipe's face mesh (the contours in
# mediapipe/python/solutions/face_mesh_connections.py). "Image-left" is the
# subject's right side of the face on an unmirrored photo.
EYE_IMAGE_LEFT = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246)  # FACEMESH_RIGHT_EYE
EYE_IMAGE_RIGHT = (249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)  # FACEMESH_LEFT_EYE
# Each eyelid-contour point above paired with the point of mediapipe's next ring of mesh points outwards (eyeUpper1,
# eyeLower1 and the corners of its mesh annotations), image-left eye then image-right: on a 1024 px FFHQ face about
# 15 px above the upper lid's rim (the upper lashes' tips), 13 px below the lower lid's, 7 px past the corners.
EYELID_RING_UPPER = {246: 247, 161: 30, 160: 29, 159: 27, 158: 28, 157: 56, 173: 190,
                     466: 467, 388: 260, 387: 259, 386: 257, 385: 258, 384: 286, 398: 414}
EYELID_RING_LOWER = {7: 25, 163: 110, 144: 24, 145: 23, 153: 22, 154: 26, 155: 112,
                     249: 255, 390: 339, 373: 254, 374: 253, 380: 252, 381: 256, 382: 341}
EYELID_RING_OUTER_CORNER = {33: 130, 263: 359}
EYELID_RING_INNER_CORNER = {133: 243, 362: 463}
MOUTH_CORNER_IMAGE_LEFT = 61
MOUTH_CORNER_IMAGE_RIGHT = 291
NOSE_TIP = 1


@dataclass(frozen=True)
class FaceLandmarks:
    """One detected face.

    ``points``: x, y in pixels of the input image (y down). mediapipe468: (468, 3) float32,
    z the relative depth in the same pixel scale (smaller = nearer the camera, origin near
    the head centre, as mediapipe defines it); ibug68: (68, 2) float32. ``box``: (x0, y0,
    x1, y1) pixels, the tight box around the landmarks.
    """

    points: np.ndarray
    box: tuple[float, float, float, float]
    scheme: str = MEDIAPIPE468

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def five_points(points: np.ndarray, eye_left: Sequence[int], eye_right: Sequence[int], nose: int,
                mouth_left: int, mouth_right: int) -> np.ndarray:
    """(N, 2+) landmarks -> (5, 2) float32: the two eye centres (means of their contours), nose, mouth corners."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    return np.stack([xy[list(eye_left)].mean(axis=0), xy[list(eye_right)].mean(axis=0), xy[nose],
                     xy[mouth_left], xy[mouth_right]]).astype(np.float32)


class LandmarkDetector:
    """A face landmark backend: ``detect`` (all faces) from the subclass, the several-faces policy here."""

    scheme: str

    def detect(self, rgb: np.ndarray) -> list[FaceLandmarks]:
        """All faces in an (H, W, 3) uint8 RGB image, largest box first."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the backend's resources (idempotent)."""
        raise NotImplementedError

    def detect_one(self, rgb: np.ndarray, policy: str = "largest") -> FaceLandmarks:
        """The single face of an image under a several-faces ``policy`` (largest | reject).

        Raises SampleError ``no_face`` or, with ``reject``, ``multiple_faces``.
        """
        if policy not in MULTI_FACE_POLICIES:
            raise ConfigError(f"multiple-face policy must be one of {MULTI_FACE_POLICIES}, not {policy!r}")
        faces = self.detect(rgb)
        if not faces:
            raise SampleError(NO_FACE, f"no face found in the {rgb.shape[1]}x{rgb.shape[0]} image")
        if len(faces) > 1 and policy == "reject":
            raise SampleError(MULTIPLE_FACES, f"{len(faces)} faces found and the policy is 'reject'")
        return faces[0]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class FaceLandmarker(LandmarkDetector):
    """A mediapipe FaceMesh graph for still images; create once per actor, then call ``detect``.

    The graph is not re-entrant, so calls are serialised with a lock (Ray actors run
    one batch at a time anyway; the lock makes thread pools safe too). Use as a
    context manager or call ``close()`` to free the graph.
    """

    scheme = MEDIAPIPE468

    def __init__(self, max_faces: int = 4, refine_landmarks: bool = False, min_confidence: float = 0.5):
        from mediapipe.python.solutions import face_mesh

        if max_faces < 1:
            raise ConfigError(f"max_faces must be at least 1, not {max_faces}")
        # max_faces > 1 even for single-face work: "several faces" can only be
        # reported if the graph is allowed to find them.
        self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_faces,
                                        refine_landmarks=refine_landmarks,
                                        min_detection_confidence=min_confidence)
        self._lock = threading.Lock()
        self._closed = False

    def detect(self, rgb: np.ndarray) -> list[FaceLandmarks]:
        """All faces in an (H, W, 3) uint8 RGB image, largest box first."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"detect expects (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        height, width = rgb.shape[:2]
        # mediapipe 0.10.21 projects landmarks of a rotated face wrongly on a
        # non-square image ("NORM_RECT without IMAGE_DIMENSIONS is only supported for
        # the square ROI"), so the image is zero-padded to a square first.
        side = max(height, width)
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[:height, :width] = rgb
        with self._lock:
            if self._closed:
                raise RuntimeError("FaceLandmarker is closed")
            result = self._mesh.process(square)
        faces = []
        for face in result.multi_face_landmarks or ():
            normalized = np.array([(p.x, p.y, p.z) for p in face.landmark[:NUM_LANDMARKS]], dtype=np.float32)
            # mediapipe normalises x and y by the (square) side and z "roughly like x".
            points = normalized * np.float32(side)
            x0, y0 = points[:, :2].min(axis=0)
            x1, y1 = points[:, :2].max(axis=0)
            faces.append(FaceLandmarks(points=points, box=(float(x0), float(y0), float(x1), float(y1))))
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def close(self) -> None:
        """Release the mediapipe graph (idempotent)."""
        with self._lock:
            if not self._closed:
                self._mesh.close()
                self._closed = True
