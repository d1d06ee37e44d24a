"""One photo through the faithful profile: FFHQ-UV's preprocessing, then Deep3D + texture-GAN fitting.

``FaithfulFitter`` holds what an actor loads once (``faithful_models.load_faithful_models``); ``fit`` turns an
(H, W, 3) uint8 photo and its mediapipe landmarks into a ``FaithfulPhotoFit``, which hands the fit stage the
same ``StageOutput`` per stage as the open profile (``stages/fitting/outputs.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from stages.fitting import faithful_fit, outputs
from stages.fitting.faithful_models import FaithfulModels
from stages.fitting.faithful_render import image_numpy, render_face
from stages.fitting.open_fit import StageReport
from stages.fitting.photo_fit import preprocess_photo
from stages.fitting.preprocess import CROP_SIZE, FitInput


@dataclass
class FaithfulPhotoFit:
    """Everything one faithful fit produces."""

    data: FitInput
    models: FaithfulModels
    states: dict[int, faithful_fit.FaithfulState]
    reports: dict[int, StageReport]
    backend: str = "cpu"
    seconds: dict[str, float] = field(default_factory=dict)  # preprocess, stage1, stage2, stage3

    def uv_map(self, stage: int, size: int) -> np.ndarray | None:
        """(size, size, 3) uint8 UV map of a GAN stage (resized when the GAN's resolution differs), else None."""
        w = self.states[stage].latents_w
        return None if w is None else uint8_map(self.models.texgan.output_map(w), size)

    def stage_output(self, stage: int, topology) -> outputs.StageOutput:
        """What stage ``stage`` writes: render, landmarks, UV map, id / exp meshes, FFHQ-UV's coeffs record."""
        state, model = self.states[stage], self.models.face_model
        parts = model.split(state.coeffs)
        with torch.no_grad():
            uv = None if state.latents_w is None else self.models.texgan.output_map(state.latents_w)
            out = render_face(model, parts, uv, self.backend)
            id_shape = model.shape(parts.id, torch.zeros_like(parts.exp))[0].double().cpu().numpy()
            exp_shape = model.shape(parts.id, parts.exp)[0].double().cpu().numpy()
            colours = (model.albedo(parts.tex)[0] / 255.0).cpu().numpy() if stage == 1 else None
        lm_up = out.landmarks[0].cpu().numpy()
        fitted_down = np.stack([lm_up[:, 0], CROP_SIZE - 1 - lm_up[:, 1]], 1)
        coeffs = outputs.faithful_coeffs_bytes(state.coeffs, lm_up[None], state.latents_w, state.latents_z)
        return outputs.StageOutput(np.clip(image_numpy(out.image), 0, 1), image_numpy(out.mask)[..., 0], fitted_down,
                                   None if uv is None else uint8_map(uv, topology.uv_size),
                                   {"id": id_shape, "exp": exp_shape}, coeffs,
                                   colours)

    def angles_deg(self) -> np.ndarray:
        """(3,) final pitch, yaw, roll in degrees (the coefficients' own angles)."""
        parts = self.models.face_model.split(self.states[max(self.states)].coeffs)
        return np.degrees(parts.angle[0].double().cpu().numpy())


def uint8_map(uv: torch.Tensor, size: int) -> np.ndarray:
    """(1, 3, R, R) map in [0, 1] -> (size, size, 3) uint8 (bilinear resize when R differs)."""
    with torch.no_grad():
        if uv.shape[-1] != size:
            uv = torch.nn.functional.interpolate(uv, size=(size, size), mode="bilinear", align_corners=False)
    return np.clip(np.rint(image_numpy(uv.clamp(0, 1)) * 255), 0, 255).astype(np.uint8)


class FaithfulFitter:
    """The faithful profile's per-actor state; ``fit`` runs one photo through stages 1-3."""

    def __init__(self, models: FaithfulModels,
                 steps: tuple[int, int] = (faithful_fit.STAGE2_STEPS, faithful_fit.STAGE3_STEPS),
                 backend: str = "cpu"):
        self.models = models
        self.steps = steps
        self.backend = backend

    def fit(self, photo: np.ndarray, points468: np.ndarray, region: np.ndarray | None = None) -> FaithfulPhotoFit:
        """Fit an (H, W, 3) uint8 photo given its (468, 2+) y-down mediapipe landmarks (``region``: the parse
        mask on the photo, None = from the landmarks)."""
        tick = time.perf_counter()
        data, _, _ = preprocess_photo(photo, points468, region, self.models.template5)
        seconds = {"preprocess": time.perf_counter() - tick}
        problem = faithful_fit.Problem(self.models, faithful_fit.FaithfulTarget.from_input(data, self.models),
                                       self.backend)
        states, reports, stage_seconds = faithful_fit.fit_stages(problem, self.steps)
        seconds.update(stage_seconds)
        return FaithfulPhotoFit(data, self.models, states, reports, self.backend, seconds)
