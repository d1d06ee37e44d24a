"""Head pose (yaw, pitch, roll in degrees) from mediapipe's 468 3D landmarks, in Face-API's sign convention.

The 3D reference is the head's own anatomical frame, read off the landmarks:
- x: the mean direction of four left/right mirror pairs (outer and inner eye
  corners, mouth corners, cheek contour), image-left to image-right;
- y: chin (152) to forehead (10), made orthogonal to x;
- z = x cross y, out of the face.
mediapipe's z is a relative depth in the same pixel scale as x, so the frame is a
true 3D rotation; the chin-forehead line being vertical at zero pitch matches
Face-API's zero on FFHQ-UV's example (front view: pitch 0.4; inversion of 01223:
-8.1 here, -5.6 from Face-API).

Sign convention (Microsoft Face API ``headPose``, used by FFHQ-UV and StyleFlow):
- yaw > 0: the face turns towards the image right (the subject's left); FFHQ-UV's
  ``_left`` view is made with yaw +30 and shows the image-left cheek;
- pitch > 0: the face tilts up;
- roll > 0: the face rotates counter-clockwise as seen in the image.
Angles are the intrinsic yaw-pitch-roll decomposition R = Ry(yaw) Rx(-pitch) Rz(roll)
in camera axes x right, y up, z towards the viewer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.face.landmarks import NUM_LANDMARKS

# Mirror pairs (image-left index, image-right index) of mediapipe's face mesh.
MIRROR_PAIRS: tuple[tuple[int, int], ...] = ((33, 263), (133, 362), (61, 291), (234, 454))
CHIN, FOREHEAD = 152, 10


@dataclass(frozen=True)
class HeadPose:
    """Head pose in degrees (Face-API convention, see module doc) and the (3, 3) head-to-camera rotation."""

    yaw: float
    pitch: float
    roll: float
    rotation: np.ndarray


def head_rotation(points: np.ndarray) -> np.ndarray:
    """(468, 3) landmarks (x, y pixels y-down, z depth, smaller = nearer) -> (3, 3) rotation.

    Columns are the head's x (to the image right), y (up) and z (out of the face) axes
    in camera axes x right, y up, z towards the viewer.
    """
    if points.shape != (NUM_LANDMARKS, 3):
        raise ValueError(f"expected ({NUM_LANDMARKS}, 3) landmarks, got {points.shape}")
    p = np.asarray(points, dtype=np.float64) * np.array([1.0, -1.0, -1.0])  # to y up, z towards the viewer
    x_axis = np.zeros(3)
    for left, right in MIRROR_PAIRS:
        step = p[right] - p[left]
        x_axis += step / np.linalg.norm(step)
    x_axis /= np.linalg.norm(x_axis)
    up = p[FOREHEAD] - p[CHIN]
    y_axis = up - x_axis * (up @ x_axis)
    y_axis /= np.linalg.norm(y_axis)
    return np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)], axis=1)


def head_pose(points: np.ndarray) -> HeadPose:
    """Yaw, pitch and roll in degrees (Face-API signs) from (468, 3) landmarks."""
    rotation = head_rotation(points)
    yaw = np.arctan2(rotation[0, 2], rotation[2, 2])
    pitch = np.arcsin(np.clip(rotation[1, 2], -1.0, 1.0))
    roll = np.arctan2(rotation[1, 0], rotation[1, 1])
    return HeadPose(yaw=float(np.degrees(yaw)), pitch=float(np.degrees(pitch)), roll=float(np.degrees(roll)),
                    rotation=rotation)
