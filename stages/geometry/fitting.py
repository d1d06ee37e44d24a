"""Fit a topology's template to detected landmarks: a camera pose per view, one identity shape, a residual per view.

Camera: a pinhole with FFHQ-UV's field of view (Deep3D: f = 1015 px for a 224 crop, pipeline.md 2.4(c)), scaled
to each image, principal point at the image centre; OpenCV camera frame (x right, y down, z forward).

Shape: ``vertices = template + basis @ coeffs``, shared by every view of a sample. With a 3DMM (official HiFi3D++
model info) the basis is its identity and expression bases; otherwise a smooth non-rigid deformation whose
basis is Gaussian radial functions on the template centred on the landmarks (each control point moves its
neighbourhood in x, y and z), regularised towards the template by a ridge penalty.

Solver: alternate (1) per-view pose by PnP (OpenCV, iterative refinement) and (2) the shape coefficients by
linear least squares on the projection equations linearised at the current depth; a few rounds converge
because the camera is nearly orthographic. With several views, each view then gets a residual on top of the
shared shape, in the same basis and more strongly regularised (``VIEW_RESIDUAL_RIDGE``), poses fixed: the views
of one sample share an identity but are not one rigid head (the GAN's turned views change the expression a
little; FFHQ-UV fits each view on its own). The landmark reprojection error per view is reported in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.geometry.landmark_schemes import IBUG68_SCHEME, MEDIAPIPE468_SCHEME, LandmarkScheme
from stages.geometry.uv_topology import Topology

# Deep3D's camera (FFHQ-UV): focal 1015 px at a 224 px crop, i.e. a 12.6 degree field of view.
DEEP3D_FOCAL, DEEP3D_CROP = 1015.0, 224.0
# Non-rigid basis on a head whose landmarks are surface points among many vertices (hifi3dpp): every third
# landmark controls a wide Gaussian (width in outer-eye-corner distances), strongly regularised, so the head
# keeps its template shape away from the face.
RBF_SIGMA, RBF_CONTROL_STRIDE, RIDGE_RBF = 0.35, 3, 0.05
# iBUG's 68 points are sparse already: each controls one of those wide Gaussians.
IBUG68_CONTROL_STRIDE = 1
# On a mesh made of the landmarks themselves (mediapipe468) every landmark controls a narrow Gaussian with a
# light ridge: the mesh follows the detection almost exactly, which keeps single photos pixel-aligned in UV.
DENSE_RBF_SIGMA, DENSE_RBF_CONTROL_STRIDE, DENSE_RIDGE_RBF = 0.1, 1, 0.001
RIDGE_3DMM = 1e-3  # ridge weight on 3DMM coefficients
ROUNDS = 4  # pose/shape alternations
# Contour landmarks (mediapipe's face oval, iBUG's jaw) are silhouette-like and noisier: half weight in the shape
# solve.
FACE_OVAL_WEIGHT = 0.5
# Ridge of the per-view residual relative to the shared shape's. On FFHQ-UV's three views of 01223 it takes the
# mediapipe reprojection error from 3.7 / 3.3 / 2.6 px (left, right, front) to 3.2 / 2.6 / 1.6 px while moving no
# vertex more than 3 % of the eye distance; weaker ridges gain little more with this smooth basis.
VIEW_RESIDUAL_RIDGE = 10.0


@dataclass
class ViewPose:
    """Camera pose of one view: rotation (3, 3) and translation (3,) from template to OpenCV camera frame."""

    rotation: np.ndarray
    translation: np.ndarray
    focal: float  # pixels
    centre: tuple[float, float]  # principal point (x, y) in pixels

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) template-frame points -> (N, 3) camera-frame points (z = depth in front of the camera)."""
        return points @ self.rotation.T + self.translation

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) template-frame points -> (N, 3): x, y in y-down pixels, camera depth z."""
        cam = self.to_camera(points)
        z = cam[:, 2]
        return np.stack([self.focal * cam[:, 0] / z + self.centre[0], self.focal * cam[:, 1] / z + self.centre[1], z],
                        axis=1)

    def yaw_degrees(self) -> float:
        """Head yaw seen by this camera in degrees (positive = the camera sees more of the image-left cheek)."""
        forward = self.rotation @ np.array([0.0, 0.0, 1.0])  # template +z (face normal) in the camera frame
        return float(np.degrees(np.arctan2(forward[0], -forward[2])))


@dataclass
class Fit:
    """The result of fitting one sample: the shared shape, poses and per-view reprojection errors (pixels)."""

    vertices: np.ndarray  # (N, 3) fitted template-frame vertices
    coefficients: np.ndarray  # (K,) shape coefficients
    poses: dict[str, ViewPose]
    errors_px: dict[str, float]  # mean landmark reprojection error per view, pixels
    # (N, 3) per view: the shared shape plus that view's residual (multi-view fits); a view absent here uses
    # ``vertices``.
    view_vertices: dict[str, np.ndarray] = field(default_factory=dict)

    def vertices_of(self, view: str) -> np.ndarray:
        """(N, 3) template-frame vertices that a view's pose projects: its own residual shape where it has one."""
        return self.view_vertices.get(view, self.vertices)


def focal_for(width: int, height: int) -> float:
    """Deep3D's focal length for an image of this size (its 224 crop spans the face like FFHQ's alignment)."""
    return DEEP3D_FOCAL / DEEP3D_CROP * max(width, height)


class ShapeModel:
    """The linear shape space of a topology: template plus basis, and its restriction to a scheme's landmarks."""

    def __init__(self, topology: Topology, scheme: LandmarkScheme = MEDIAPIPE468_SCHEME):
        self.topology = topology
        self.scheme = scheme
        embedding = scheme.embedding(topology.landmarks)
        lm = embedding.points(topology.vertices, topology.triangles)
        left, right = scheme.outer_eyes
        eye = float(np.linalg.norm(lm[right] - lm[left]))
        if topology.id_basis is not None:
            parts = [topology.id_basis] + ([topology.exp_basis] if topology.exp_basis is not None else [])
            self.basis = np.concatenate(parts, axis=1)  # (3N, K), rows x0, y0, z0, x1, ...
            self.ridge = RIDGE_3DMM
            self.pose_rounds = ROUNDS
        else:
            # Dense: the mesh is made of the landmarks themselves (mediapipe468 fitted to its own 468 points).
            dense = embedding.on_vertices and len(lm) == len(topology.vertices)
            sigma, stride, ridge = ((DENSE_RBF_SIGMA, DENSE_RBF_CONTROL_STRIDE, DENSE_RIDGE_RBF) if dense
                                    else (RBF_SIGMA, RBF_CONTROL_STRIDE, RIDGE_RBF))
            if scheme is IBUG68_SCHEME:
                stride = IBUG68_CONTROL_STRIDE
            controls = lm[::stride]
            d2 = ((topology.vertices[:, None, :] - controls[None, :, :]) ** 2).sum(-1)
            phi = np.exp(-d2 / (2 * (sigma * eye) ** 2))  # (N, C)
            # Expand to xyz: coefficient 3c + a moves axis a of control c's neighbourhood.
            basis = np.zeros((len(topology.vertices), 3, controls.shape[0], 3))
            for a in range(3):
                basis[:, a, :, a] = phi
            self.basis = basis.reshape(3 * len(topology.vertices), -1)
            self.ridge = ridge * eye**2
            # The dense basis can mimic a small head rotation, so poses are fixed after the first (template) round.
            self.pose_rounds = 1 if dense else ROUNDS
        tri = topology.triangles[embedding.triangles]  # (L, 3)
        bary = embedding.barycentrics
        b3 = self.basis.reshape(len(topology.vertices), 3, -1)
        self.landmark_basis = np.einsum("lk,lkaj->laj", bary, b3[tri])  # (L, 3, K)
        self.landmark_template = lm

    def vertices(self, coeffs: np.ndarray) -> np.ndarray:
        """(N, 3) vertices for shape coefficients (K,)."""
        return self.topology.vertices + (self.basis @ coeffs).reshape(-1, 3)

    def landmarks(self, coeffs: np.ndarray) -> np.ndarray:
        """(L, 3) landmark positions for shape coefficients (K,)."""
        return self.landmark_template + self.landmark_basis @ coeffs


def _solve_pose(points3d: np.ndarray, points2d: np.ndarray, focal: float, centre: tuple[float, float],
                previous: ViewPose | None) -> ViewPose:
    import cv2

    camera = np.array([[focal, 0, centre[0]], [0, focal, centre[1]], [0, 0, 1]], dtype=np.float64)
    if previous is None:
        ok, rvec, tvec = cv2.solvePnP(points3d, points2d, camera, None, flags=cv2.SOLVEPNP_EPNP)
        use_guess = bool(ok)
    else:
        rvec, tvec, use_guess = cv2.Rodrigues(previous.rotation)[0], previous.translation.reshape(3, 1), True
    ok, rvec, tvec = cv2.solvePnP(points3d, points2d, camera, None, rvec=rvec, tvec=tvec,
                                  useExtrinsicGuess=use_guess, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise RuntimeError("PnP failed")
    return ViewPose(cv2.Rodrigues(rvec)[0], tvec.reshape(3), focal, centre)


def fit_views(model: ShapeModel, landmarks: dict[str, np.ndarray], image_sizes: dict[str, tuple[int, int]],
              rounds: int = ROUNDS) -> Fit:
    """Fit poses per view and one shape to (L, 2) y-down pixel landmarks (``model.scheme``) of (H, W) views.

    With several views and ``rounds`` > 0 each view also gets its residual shape (``Fit.view_vertices``).
    """
    num = model.landmark_template.shape[0]
    weights = np.ones(num)
    weights[list(model.scheme.contour)] = FACE_OVAL_WEIGHT
    coeffs = np.zeros(model.basis.shape[1])
    poses: dict[str, ViewPose] = {}
    for round_index in range(rounds):
        current = model.landmarks(coeffs)
        for view, points in landmarks.items():
            if round_index >= model.pose_rounds:
                break
            h, w = image_sizes[view]
            poses[view] = _solve_pose(current, points.astype(np.float64), focal_for(w, h),
                                      ((w - 1) / 2.0, (h - 1) / 2.0), poses.get(view))
        systems = [_projection_rows(model, poses[view], current, points, weights)
                   for view, points in landmarks.items()]
        a = np.concatenate([rows for rows, _ in systems])
        b = np.concatenate([rhs for _, rhs in systems])
        coeffs = ridge_solve(a, b, _ridge(model, poses))
    final = model.landmarks(coeffs)
    for view, points in landmarks.items():
        if 0 < model.pose_rounds < rounds:
            continue
        h, w = image_sizes[view]
        poses[view] = _solve_pose(final, points.astype(np.float64), focal_for(w, h), ((w - 1) / 2.0, (h - 1) / 2.0),
                                  poses.get(view))
    several = len(landmarks) > 1 and rounds > 0
    view_coeffs = _view_residuals(model, poses, coeffs, landmarks, weights) if several else {}
    errors = {view: float(np.linalg.norm(poses[view].project(model.landmarks(view_coeffs.get(view, coeffs)))[:, :2]
                                         - points, axis=1).mean())
              for view, points in landmarks.items()}
    return Fit(vertices=model.vertices(coeffs), coefficients=coeffs, poses=poses, errors_px=errors,
               view_vertices={view: model.vertices(c) for view, c in view_coeffs.items()})


def ridge_solve(a: np.ndarray, b: np.ndarray, ridge: float) -> np.ndarray:
    """argmin |a x - b|^2 + ridge |x|^2 for (R, K) ``a`` and (R,) ``b``: the (K,) solution.

    Solved through the smaller Gram matrix, by Cholesky: (a^T a + ridge I) x = a^T b when K <= R, else its equal
    x = a^T (a a^T + ridge I)^-1 b. The dense mediapipe468 fit has K = 1404 coefficients and 936 rows per view,
    so a single photo's solves cost about a third of the K x K system's.
    """
    from scipy.linalg import cho_factor, cho_solve

    if a.shape[1] <= a.shape[0]:
        return cho_solve(cho_factor(a.T @ a + ridge * np.eye(a.shape[1])), a.T @ b)
    return a.T @ cho_solve(cho_factor(a @ a.T + ridge * np.eye(a.shape[0])), b)


def _ridge(model: ShapeModel, poses: dict[str, ViewPose]) -> float:
    """The shape ridge in the pixel units of the projection rows (landmark units times focal / distance)."""
    return model.ridge * float(np.mean([p.focal / np.linalg.norm(p.translation) for p in poses.values()])) ** 2


def _projection_rows(model: ShapeModel, pose: ViewPose, current: np.ndarray, points: np.ndarray,
                     weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One view's projection equations, linear in the shape coefficients: ((2L, K) rows, (2L,) right-hand side).

    (p - c) * z = f * (x, y) in camera coordinates with z from ``current`` (L, 3) landmarks, divided back by z
    so that residuals are in pixels, times the per-landmark ``weights`` (L,).
    """
    depth = pose.to_camera(current)[:, 2]
    scale = weights / np.maximum(depth, 1e-9)
    rows, rhs = [], []
    for axis in range(2):
        target = (points[:, axis] - pose.centre[axis]) * depth  # (L,)
        # f * (r[axis] . (X0 + B c) + t[axis]) = target
        a = pose.focal * np.einsum("j,ljk->lk", pose.rotation[axis], model.landmark_basis)
        b = target - pose.focal * (model.landmark_template @ pose.rotation[axis] + pose.translation[axis])
        rows.append(a * scale[:, None])
        rhs.append(b * scale)
    return np.concatenate(rows), np.concatenate(rhs)


def _view_residuals(model: ShapeModel, poses: dict[str, ViewPose], coeffs: np.ndarray,
                    landmarks: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Per view the shape coefficients (K,) of the shared shape plus that view's ridge-regularised residual."""
    current = model.landmarks(coeffs)
    ridge = VIEW_RESIDUAL_RIDGE * _ridge(model, poses)
    out = {}
    for view, points in landmarks.items():
        a, b = _projection_rows(model, poses[view], current, points.astype(np.float64), weights)
        delta = ridge_solve(a, b - a @ coeffs, ridge)
        out[view] = coeffs + delta
    return out
