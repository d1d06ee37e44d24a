"""Landmark layouts the fitting understands: mediapipe's 468 points and iBUG's 68 (dlib), both on every topology.

Each topology embeds mediapipe's 468 face-mesh landmarks on its surface (``Topology.landmarks``). iBUG's 68 points
are a fixed subset of those: ``MEDIAPIPE_TO_IBUG68[k]`` is the mediapipe landmark at iBUG point ``k``, so the
68-point embedding of any topology is the 468-point one restricted to these rows.

Origin of the table: the widely used mediapipe-to-dlib correspondence (as in PeizhiYan/Mediapipe_2_Dlib_Landmarks,
where a few points average two mediapipe landmarks; here each is one landmark), with six mirror pairs replaced
after comparing dlib's 68 points with mediapipe's 468 on ``shared/data/faces/*.jpg``, FFHQ 01223 (photo and
front view) and skimage's astronaut: for each iBUG pair the mirror-symmetric mediapipe pair nearest dlib's points
(mean distance in eye-distance units). The replaced pairs are the jaw points 3/13, 4/12, 6/10 and 7/9, where
the common table follows mediapipe's outer face oval while dlib's jaw runs lower on the cheek (mean 0.15 -> 0.07),
and the inner eye corners 39/42 (0.034 -> 0.018). The remaining points differ from dlib's by 0.01-0.08 eye
distances. ``tests/test_dlib_landmarks.py`` checks the table's symmetry and, with dlib installed, the agreement.
The jaw is a silhouette in both detectors, which is why the fitting down-weights contour points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from stages.face import dlib68
from stages.face.landmarks import DLIB68, MEDIAPIPE468, NUM_LANDMARKS
from stages.geometry.uv_topology import (
    EAR_FRONT,
    FACE_OVAL_LANDMARKS,
    OUTER_EYE_IMAGE_LEFT,
    OUTER_EYE_IMAGE_RIGHT,
    LandmarkEmbedding,
)

# iBUG 68 point k (0-based) -> mediapipe face-mesh landmark. Image-left = the subject's right.
MEDIAPIPE_TO_IBUG68: tuple[int, ...] = (
    # 0-16 jaw, image-left ear to image-right ear through the chin (8)
    127, 234, 93, 215, 172, 136, 149, 148, 152, 377, 378, 365, 397, 435, 323, 454, 356,
    # 17-21 image-left brow, 22-26 image-right brow (outer to inner, inner to outer)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # 27-30 nose bridge down to the tip, 31-35 nostrils image-left to image-right
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    # 36-41 image-left eye, 42-47 image-right eye (clockwise from the outer / inner corner; dlib's inner corners
    # sit on mediapipe's lower lid next to the corner landmarks 133 / 362)
    33, 160, 158, 155, 153, 144, 382, 385, 387, 263, 373, 380,
    # 48-59 outer lips from the image-left corner, 60-67 inner lips
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
)


@dataclass(frozen=True)
class LandmarkScheme:
    """A detector's landmark layout as the fitting sees it (indices are into this scheme's own points)."""

    name: str
    size: int
    from_mediapipe: Optional[tuple[int, ...]]  # rows of the 468-point embedding; None = all of them, in order
    outer_eyes: tuple[int, int]  # image-left and image-right outer eye corners (the fitting's length unit)
    contour: tuple[int, ...]  # silhouette-like points, down-weighted in the shape solve
    face_width: tuple[int, int]  # points in front of the ears: their distance is the face width

    def embedding(self, mediapipe: LandmarkEmbedding) -> LandmarkEmbedding:
        """This scheme's surface points from a topology's 468-point embedding."""
        if self.from_mediapipe is None:
            return mediapipe
        rows = list(self.from_mediapipe)
        return LandmarkEmbedding(mediapipe.triangles[rows], mediapipe.barycentrics[rows])


MEDIAPIPE468_SCHEME = LandmarkScheme(
    name=MEDIAPIPE468, size=NUM_LANDMARKS, from_mediapipe=None,
    outer_eyes=(OUTER_EYE_IMAGE_LEFT, OUTER_EYE_IMAGE_RIGHT), contour=FACE_OVAL_LANDMARKS, face_width=EAR_FRONT)
IBUG68_SCHEME = LandmarkScheme(
    name=DLIB68, size=dlib68.NUM_POINTS, from_mediapipe=MEDIAPIPE_TO_IBUG68,
    outer_eyes=(dlib68.OUTER_EYE_IMAGE_LEFT, dlib68.OUTER_EYE_IMAGE_RIGHT), contour=dlib68.JAW,
    face_width=(dlib68.JAW[0], dlib68.JAW[-1]))
SCHEMES: dict[str, LandmarkScheme] = {s.name: s for s in (MEDIAPIPE468_SCHEME, IBUG68_SCHEME)}


def scheme_of(points_count: int) -> LandmarkScheme:
    """The scheme of a detection with this many points (468 or 68)."""
    for scheme in SCHEMES.values():
        if scheme.size == points_count:
            return scheme
    raise ValueError(f"no landmark scheme has {points_count} points")
