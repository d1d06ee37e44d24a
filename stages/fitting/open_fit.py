"""The open profile of RGB fitting: FFHQ-UV's three stages with nothing but pip packages.

- Stage 1: shape and pose from the 68 landmarks of the 224 crop (``stages/geometry/fitting.py``), lit by neutral
  light, textured by the template recoloured to the photo (the counterpart of Deep3D's linear texture).
- Stage 2 (``STAGE2_STEPS``): the texture's texels, starting from the photo's unwrap completed with the
  template, and the SH lighting, optimised by the masked photometric L1 with smoothness and left/right symmetry
  priors; pose fixed (FFHQ-UV also fixes the shape in its stage 2). The optimised texels are a residual map at
  1 / ``RESIDUAL_FACTOR`` of the UV resolution, bilinearly up-sampled onto the starting texture: a 224 render
  samples the 1024 map sparsely, and texels optimised at full resolution would move one by one (a speckle where
  the face is foreshortened), while the residual texels each collect the gradient of a dense neighbourhood.
- Stage 3 (``STAGE3_STEPS``): texels, SH and pose together, photometric + landmark losses.
Both optimised stages use Adam with FFHQ-UV's cosine schedule and seed. No identity loss (no offline ArcFace).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from stages.fitting import losses
from stages.fitting.render import Camera, MeshBuffers, neutral_sh, project, render, rotation_matrix

STAGE2_STEPS, STAGE3_STEPS = 100, 200  # FFHQ-UV's schedule
SEED = 123
RAMPDOWN = {2: 0.25, 3: 0.4}  # FFHQ-UV's cosine-schedule rampdown per stage
COLOUR_WEIGHT = {2: 10.0, 3: 1.6}  # FFHQ-UV's colour weights per stage
LANDMARK_WEIGHT = 2e-3  # FFHQ-UV stage 3
GAMMA_WEIGHT = 10.0  # FFHQ-UV stage 3 (variance of SH over RGB)
# Texture priors of the open profile (no GAN to keep the map plausible): a total-variation term on the change
# from the starting texture, and a mirror-symmetry term over the centre face. Weights relative to the L1.
SMOOTH_WEIGHT, SYMMETRY_WEIGHT = 2.0, 0.05
# Learning rates: texels and SH in [0, 1] units per step; pose as FFHQ-UV's 0.01 x 0.05 (radians, model units).
LR_TEXTURE, LR_SH, LR_POSE = 0.01, 0.01, 0.01 * 0.05
LR_SH_STAGE3 = 0.01 * 0.05
RESIDUAL_FACTOR = 4  # 1024 UV -> a 256 residual grid


@dataclass
class FitTarget:
    """What the photo gives the optimisation: image (224, 224, 3) and mask (224, 224) tensors, landmarks (68, 2)
    y-down pixels, and the 68 landmark points of the fitted shape (68, 3) in the template frame."""

    image: torch.Tensor
    mask: torch.Tensor
    landmarks: torch.Tensor
    landmark_points: torch.Tensor


@dataclass
class FitState:
    """The parameters one stage hands to the next: the starting texture (3, S, S) and its optimised residual
    (3, S / RESIDUAL_FACTOR, S / RESIDUAL_FACTOR), SH (3, 9), rotation (3, 3) base and its axis-angle delta,
    translation (3,)."""

    base: torch.Tensor
    residual: torch.Tensor
    sh: torch.Tensor
    rotation: torch.Tensor
    delta: torch.Tensor
    translation: torch.Tensor

    def texture(self) -> torch.Tensor:
        """(3, S, S) in [0, 1]: the base plus the up-sampled residual."""
        up = torch.nn.functional.interpolate(self.residual[None], size=self.base.shape[1:], mode="bilinear",
                                             align_corners=False)[0]
        return (self.base + up).clamp(0.0, 1.0)

    def current_rotation(self) -> torch.Tensor:
        return rotation_matrix(self.delta) @ self.rotation

    def detached(self) -> FitState:
        return FitState(*(t.detach().clone() for t in (self.base, self.residual, self.sh, self.rotation, self.delta,
                                                        self.translation)))

    def folded(self) -> FitState:
        """The same state with its residual folded into the base (the next stage starts from a zero residual)."""
        out = self.detached()
        out.base = self.texture().detach().clone()
        out.residual = torch.zeros_like(self.residual)
        return out


@dataclass
class StageReport:
    """Final losses per term, the photometric L1 and landmark error at 224, timings (seconds) by part."""

    losses: dict[str, float]
    photometric_l1: float
    landmark_error_px: float
    seconds: dict[str, float] = field(default_factory=dict)
    initial_photometric_l1: float | None = None  # at the stage's first step (optimised stages)
    initial_losses: dict[str, float] | None = None  # every term (and "total") at the first step (faithful)


@dataclass
class Problem:
    """The fixed parts of a fit: mesh vertices (N, 3) tensor, mesh buffers, camera, target and texture priors."""

    vertices: torch.Tensor
    mesh: MeshBuffers
    camera: Camera
    target: FitTarget
    mirror_columns: torch.Tensor
    symmetry_region: torch.Tensor
    backend: str = "cpu"


def evaluate(problem: Problem, state: FitState, stage: int,
             seconds: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], object]:
    """The stage's total loss, its terms and the render."""
    seconds = {} if seconds is None else seconds
    tick = time.perf_counter()
    rotation = state.current_rotation()
    texture = state.texture()
    out = render(problem.vertices, rotation, state.translation, texture, state.sh, problem.mesh,
                 problem.camera, problem.backend)
    seconds["render"] = seconds.get("render", 0.0) + time.perf_counter() - tick
    tick = time.perf_counter()
    target = problem.target
    predicted = project(target.landmark_points, rotation, state.translation, problem.camera)[:, :2]
    terms = {
        "colour": losses.photometric_l1(out.image, target.image, out.coverage * target.mask),
        "smooth": losses.total_variation(state.residual),
        "symmetry": losses.symmetry(texture, problem.mirror_columns, problem.symmetry_region),
        "gamma": losses.sh_colour_variance(state.sh),
        "landmark": losses.landmark_loss(predicted, target.landmarks, losses.landmark_weights(len(predicted))),
    }
    weights = {"colour": COLOUR_WEIGHT[stage], "smooth": SMOOTH_WEIGHT, "symmetry": SYMMETRY_WEIGHT,
               "gamma": GAMMA_WEIGHT if stage == 3 else 0.0, "landmark": LANDMARK_WEIGHT if stage == 3 else 0.0}
    total = sum(weights[k] * v for k, v in terms.items())
    seconds["losses"] = seconds.get("losses", 0.0) + time.perf_counter() - tick
    return total, terms, out


def run_stage(problem: Problem, state: FitState, stage: int, steps: int) -> tuple[FitState, StageReport]:
    """Optimise one stage (2 or 3) for ``steps`` Adam steps; returns the new state and its report."""
    torch.manual_seed(SEED)
    state = state.folded()
    groups = [{"params": [state.residual], "lr": LR_TEXTURE},
              {"params": [state.sh], "lr": LR_SH if stage == 2 else LR_SH_STAGE3}]
    if stage == 3:
        groups.append({"params": [state.delta, state.translation], "lr": LR_POSE})
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
        group["initial_lr"] = group["lr"]
    optimiser = torch.optim.Adam(groups)
    seconds: dict[str, float] = {}
    initial = None
    for step in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = losses.cosine_lr(group["initial_lr"], step, steps, RAMPDOWN[stage])
        total, terms, _ = evaluate(problem, state, stage, seconds)
        initial = float(terms["colour"].detach()) if initial is None else initial
        tick = time.perf_counter()
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        seconds["backward"] = seconds.get("backward", 0.0) + time.perf_counter() - tick
    final = report(problem, state.detached(), stage, seconds)
    final.initial_photometric_l1 = initial
    return state.detached(), final


def report(problem: Problem, state: FitState, stage: int, seconds: dict[str, float] | None = None) -> StageReport:
    """The losses of ``state`` (no gradient), its photometric L1 and landmark error."""
    with torch.no_grad():
        _, terms, _ = evaluate(problem, state, max(stage, 2))
        predicted = project_landmarks(problem, state)
    return StageReport({k: float(v) for k, v in terms.items()}, float(terms["colour"]),
                       losses.landmark_error_px(predicted, problem.target.landmarks), dict(seconds or {}))


def project_landmarks(problem: Problem, state: FitState) -> torch.Tensor:
    """(68, 2) y-down pixels of the fitted landmark points under the state's pose."""
    return project(problem.target.landmark_points, state.current_rotation(), state.translation,
                   problem.camera)[:, :2]


def render_state(problem: Problem, state: FitState) -> tuple[np.ndarray, np.ndarray]:
    """The state's render: (224, 224, 3) float in [0, 1] and (224, 224) coverage, numpy."""
    with torch.no_grad():
        out = render(problem.vertices, state.current_rotation(), state.translation, state.texture(), state.sh,
                     problem.mesh, problem.camera, problem.backend)
    return out.image.clamp(0, 1).numpy(), out.coverage.numpy()


def initial_state(texture_uint8: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> FitState:
    """A state from an (S, S, 3) uint8 texture and a pose, under neutral light."""
    texture = torch.as_tensor(texture_uint8.transpose(2, 0, 1).astype(np.float32) / 255.0)
    size = texture.shape[1] // RESIDUAL_FACTOR
    return FitState(texture, torch.zeros(3, size, size), neutral_sh(), torch.as_tensor(rotation, dtype=torch.float32),
                    torch.zeros(3), torch.as_tensor(translation, dtype=torch.float32))


def texture_uint8(state: FitState) -> np.ndarray:
    """The state's texture as (S, S, 3) uint8."""
    return np.clip(np.rint(state.texture().numpy().transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
