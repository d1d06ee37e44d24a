"""One photo through the open profile: preprocessing, stage 1 (landmark fit), stages 2 and 3 (optimisation).

``PhotoFitter`` holds what is loaded once per actor (topology, shape model, template, the 5-point template of the
alignment); ``fit`` turns an (H, W, 3) uint8 photo and its mediapipe landmarks into a ``PhotoFit``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from stages.fitting import open_fit, outputs
from stages.fitting.preprocess import CROP_SIZE, FitInput, preprocess
from stages.fitting.render import Camera, MeshBuffers
from stages.geometry.fitting import DEEP3D_FOCAL, Fit, ShapeModel, fit_views
from stages.geometry.landmark_schemes import IBUG68_SCHEME, MEDIAPIPE_TO_IBUG68

VIEW = "front"
# The open profile's 3-D 5-point alignment template (model units, x right, y up, z towards the camera): the
# HiFi3D++ head's 5 points (``head_teaser1.obj`` through the project's 68-point embedding), scaled by 0.981 and
# with the origin moved 0.677 units behind the face, the two values that best reproduce FFHQ-UV's own crops of
# faces/000007 and 000055 (FFHQ-UV's ``similarity_Lm3D_all.mat`` is authors-only; the faithful profile reads it).
OPEN_TEMPLATE5 = np.array([[-0.31248, 0.32210, 1.03261], [0.32277, 0.30952, 1.01880], [0.01696, 0.01226, 1.36984],
                           [-0.21476, -0.35543, 1.07886], [0.25363, -0.35244, 1.08050]])


@dataclass
class PhotoFit:
    """Everything one fit produces (the stage writes it out with ``outputs.py``)."""

    data: FitInput
    geometry: Fit
    problem: open_fit.Problem
    states: dict[int, open_fit.FitState]
    reports: dict[int, open_fit.StageReport]
    seconds: dict[str, float] = field(default_factory=dict)  # preprocess, stage1, stage2, stage3

    def stage_output(self, stage: int, topology) -> outputs.StageOutput:
        """What stage ``stage`` writes (``stages/fitting/outputs.py``)."""
        state = self.states[stage]
        render, coverage = open_fit.render_state(self.problem, state)
        fitted_lm = open_fit.project_landmarks(self.problem, state).numpy()
        rotation = state.current_rotation().numpy().astype(np.float64)
        coeffs = outputs.coeffs_bytes(rotation, state.translation.numpy(), state.sh.numpy(),
                                      self.geometry.coefficients, fitted_lm)
        vertices = self.geometry.vertices
        return outputs.StageOutput(render, coverage, fitted_lm, open_fit.texture_uint8(state),
                                   {"id": vertices, "exp": vertices}, coeffs)

    def angles_deg(self) -> np.ndarray:
        """(3,) final pitch, yaw, roll in degrees (Deep3D's convention)."""
        rotation = self.states[max(self.states)].current_rotation().numpy().astype(np.float64)
        return np.degrees(outputs.deep3d_angles(rotation))


def preprocess_photo(photo: np.ndarray, points468: np.ndarray, region: np.ndarray | None, template5: np.ndarray
                     ) -> tuple[FitInput, np.ndarray, np.ndarray]:
    """FFHQ-UV's preprocessing of an (H, W, 3) uint8 photo from its (468, 2+) y-down mediapipe landmarks: the
    ``FitInput``, the (68, 2) y-down photo landmarks and the (H, W) parse region used (None = from landmarks)."""
    from stages.face.region import face_region

    h, w = photo.shape[:2]
    lm68 = np.asarray(points468)[list(MEDIAPIPE_TO_IBUG68), :2].astype(np.float64)
    if region is None:
        region, _ = face_region(np.asarray(points468)[:, :2], h, w, exclude_eyes_mouth=True)
    return preprocess(photo, lm68, (region * 255).astype(np.uint8), template5), lm68, region


class PhotoFitter:
    """The open profile's per-actor state; ``fit`` runs one photo."""

    def __init__(self, topology, template: np.ndarray, steps: tuple[int, int] = (open_fit.STAGE2_STEPS,
                                                                                open_fit.STAGE3_STEPS),
                 backend: str = "cpu"):
        from stages.geometry.uv_topology import NOSE_TIP

        self.topology = topology
        self.template = template
        self.steps = steps
        self.backend = backend
        self.shape_model = ShapeModel(topology, IBUG68_SCHEME)
        self.mesh = MeshBuffers.from_topology(topology)
        size = topology.uv_size
        axis = float(topology.landmark_uv()[NOSE_TIP, 0])
        self.mirror_columns = torch.as_tensor(np.clip(np.rint(2 * axis - np.arange(size)), 0, size - 1)
                                              .astype(np.int64))
        self.symmetry_region = torch.as_tensor(topology.masks()["center_face"], dtype=torch.float32)

    def fit(self, photo: np.ndarray, points468: np.ndarray, region: np.ndarray | None = None) -> PhotoFit:
        """Fit an (H, W, 3) uint8 photo given its (468, 2+) y-down mediapipe landmarks.

        ``region``: the (H, W) bool parse mask (face minus eyes and mouth, e.g. from the face parser); None = from
        the landmarks.
        """
        from stages.fitting import texture_init

        seconds: dict[str, float] = {}
        tick = time.perf_counter()
        data, lm68, region = preprocess_photo(photo, points468, region, OPEN_TEMPLATE5)
        seconds["preprocess"] = time.perf_counter() - tick

        tick = time.perf_counter()
        lm_crop = data.landmarks_down().astype(np.float64)
        geometry = fit_views(self.shape_model, {VIEW: lm_crop}, {VIEW: (CROP_SIZE, CROP_SIZE)})
        view = texture_init.unwrap_photo(self.topology, geometry, photo, lm68, region, data.params)
        start = texture_init.completed_texture(view, self.template, self.topology)
        stage1_texture = texture_init.matched_template(self.template, view)
        problem = self._problem(data, geometry)
        pose = geometry.poses[VIEW]
        states = {1: open_fit.initial_state(stage1_texture, pose.rotation, pose.translation)}
        reports = {1: open_fit.report(problem, states[1], 1)}
        seconds["stage1"] = time.perf_counter() - tick

        tick = time.perf_counter()
        states[2], reports[2] = open_fit.run_stage(
            problem, open_fit.initial_state(start, pose.rotation, pose.translation), 2, self.steps[0])
        seconds["stage2"] = time.perf_counter() - tick
        tick = time.perf_counter()
        states[3], reports[3] = open_fit.run_stage(problem, states[2], 3, self.steps[1])
        seconds["stage3"] = time.perf_counter() - tick
        return PhotoFit(data, geometry, problem, states, reports, seconds)

    def _problem(self, data: FitInput, geometry: Fit) -> open_fit.Problem:
        pose = geometry.poses[VIEW]
        target = open_fit.FitTarget(
            image=torch.as_tensor(data.image),
            mask=torch.as_tensor(data.parse * data.skin),
            landmarks=torch.as_tensor(data.landmarks_down(), dtype=torch.float32),
            landmark_points=torch.as_tensor(self.shape_model.landmarks(geometry.coefficients), dtype=torch.float32))
        camera = Camera(DEEP3D_FOCAL, pose.centre, CROP_SIZE)
        return open_fit.Problem(torch.as_tensor(geometry.vertices, dtype=torch.float32), self.mesh, camera, target,
                                self.mirror_columns, self.symmetry_region, self.backend)
