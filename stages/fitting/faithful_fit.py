"""The faithful profile's three-stage optimisation (FFHQ-UV ``ours_fit_model.py``, pipeline.md section 7).

- Stage 1: Deep3D regresses the 3DMM coefficients from the 224 crop (no optimisation).
- Stage 2 (``STAGE2_STEPS``): shape fixed; spherical Adam (lr 0.1) on the texture GAN's Gaussianised latent z
  (W+ = z * w_std + w_avg, z from ``RandomState(123)``); losses ``STAGE2_WEIGHTS``.
- Stage 3 (``STAGE3_STEPS``): Adam on W+ and the id / exp / angle / gamma / trans coefficients, learning rates
  0.01 x ``STAGE3_LR_SCALE``; losses ``STAGE3_WEIGHTS``.
Both use FFHQ-UV's cosine schedule (rampdown 0.25 / 0.4) and seed 123. Loss terms, as FFHQ-UV computes them
on the render composited over the photo: ``identity`` 1 - cos of the ArcFace embeddings (the render warped by
``M`` re-estimated from the predicted landmarks), ``colour`` masked L1 over render x parse x skin, ``lpips``
LPIPS-VGG of render and photo both masked by render x parse, ``latent`` geocross of W+, ``reg_id`` / ``reg_exp``
sum of squared coefficients, ``gamma`` SH variance over RGB, ``landmark`` weighted squared 68-point error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from stages.fitting import face_model as fm
from stages.fitting import losses
from stages.fitting.faithful_models import FaithfulModels
from stages.fitting.faithful_render import FaceRaster, FaceRender, composite, raster_face, shade
from stages.fitting.open_fit import StageReport
from stages.fitting.preprocess import FitInput, arcface_similarity
from stages.fitting.spherical import SphericalOptimizer
from stages.networks.arcface import identity_embedding, identity_loss
from stages.networks.lpips_vgg import vgg_loss

STAGE2_STEPS, STAGE3_STEPS = 100, 200
SEED = 123
STAGE2_LR, STAGE3_LR = 0.1, 0.01
RAMPDOWN = {2: 0.25, 3: 0.4}
STAGE2_WEIGHTS = {"identity": 10.0, "colour": 10.0, "lpips": 100.0, "latent": 0.05}
STAGE3_WEIGHTS = {"identity": 0.2, "colour": 1.6, "reg_id": 2e-4, "reg_exp": 1.6e-3, "gamma": 10.0,
                  "latent": 0.05, "landmark": 2e-3}
# Stage 3 learning rates relative to STAGE3_LR (FFHQ-UV's tex_lr_scale 0.05 and pose_lr_scale 0.05).
STAGE3_LR_SCALE = {"w": 0.05, "id": 1.0, "exp": 1.0, "angle": 0.05, "gamma": 0.05, "trans": 0.05}
BETAS = (0.9, 0.999)
ALL_TERMS = ("identity", "colour", "lpips", "latent", "reg_id", "reg_exp", "gamma", "landmark")


@dataclass
class FaithfulTarget:
    """The photo as tensors: ``image`` (1, 3, 224, 224) in [0, 1], ``skin`` / ``parse`` (1, 1, 224, 224),
    ``landmarks`` (1, 68, 2) y up, ``feature`` (1, 512) its ArcFace embedding (through FFHQ-UV's ``M``)."""

    image: torch.Tensor
    skin: torch.Tensor
    parse: torch.Tensor
    landmarks: torch.Tensor
    feature: torch.Tensor

    @staticmethod
    def from_input(data: FitInput, models: FaithfulModels) -> FaithfulTarget:
        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(array, device=models.device)

        image = tensor(data.image).permute(2, 0, 1)[None].contiguous()
        with torch.no_grad():
            feature = identity_embedding(models.arcface, image, tensor(data.arcface)[None])
        return FaithfulTarget(image, tensor(data.skin)[None, None], tensor(data.parse)[None, None],
                              tensor(data.landmarks)[None], feature)


@dataclass
class FaithfulState:
    """One stage's result in FFHQ-UV's ``stage*_coeffs.pt`` terms: ``coeffs`` (1, K), latents (1, L, C) or None."""

    coeffs: torch.Tensor
    latents_z: torch.Tensor | None = None
    latents_w: torch.Tensor | None = None


@dataclass
class Problem:
    """What every step reads: the models, the target and the rasteriser backend."""

    models: FaithfulModels
    target: FaithfulTarget
    backend: str = "cpu"
    seconds: dict[str, float] = field(default_factory=dict)
    fixed_raster: FaceRaster | None = None  # stage 2: the shape is fixed, so its raster is computed once

    def tick(self, part: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[part] = self.seconds.get(part, 0.0) + now - since
        return now


def evaluate(problem: Problem, parts: fm.Coefficients, w: torch.Tensor | None, weights: dict[str, float]
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor], FaceRender]:
    """Total loss, the weighted terms (plus photometric ``colour`` and ``landmark`` always) and the render."""
    models, target = problem.models, problem.target
    tick = time.perf_counter()
    uv = None if w is None else models.texgan.synthesize(w)
    raster = problem.fixed_raster or raster_face(models.face_model, parts, problem.backend)
    out = shade(raster, uv)
    tick = problem.tick("render", tick)
    face = composite(out, target.image)
    mask = out.mask.detach()
    landmark_weights = losses.landmark_weights(68).to(face.device)
    terms = {"colour": losses.photometric_l1(face[0].permute(1, 2, 0), target.image[0].permute(1, 2, 0),
                                             (mask * target.parse * target.skin)[0, 0]),
             "landmark": losses.landmark_loss(out.landmarks[0], target.landmarks[0], landmark_weights)}
    if weights.get("identity"):
        matrix = arcface_similarity(out.landmarks[0].detach().double().cpu().numpy())
        matrix = torch.as_tensor(matrix, dtype=face.dtype, device=face.device)[None]
        feature = identity_embedding(models.arcface, face, matrix)
        terms["identity"] = identity_loss(feature, target.feature)
    if weights.get("lpips"):
        region = mask * target.parse
        terms["lpips"] = vgg_loss(face * region, target.image * region, models.lpips)
    if w is not None:
        terms["latent"] = losses.latent_geocross(w)
    terms["reg_id"] = parts.id.square().sum() / len(parts.id)
    terms["reg_exp"] = parts.exp.square().sum() / len(parts.exp)
    terms["gamma"] = losses.sh_colour_variance(parts.gamma.reshape(3, 9))
    total = sum(weight * terms[name] for name, weight in weights.items() if name in terms)
    problem.tick("losses", tick)
    return total, terms, out


def descend(problem: Problem, optimiser, variables: Callable, stage: int, steps: int) -> dict[str, float]:
    """``steps`` steps of ``optimiser`` on the stage's loss with the cosine schedule; returns the first step's
    terms (``variables()`` gives the current (parts, W+) from the optimised leaves)."""
    weights = STAGE2_WEIGHTS if stage == 2 else STAGE3_WEIGHTS
    initial_lrs = [group["lr"] for group in optimiser.param_groups]
    first: dict[str, float] = {}
    for step in range(steps):
        for group, lr0 in zip(optimiser.param_groups, initial_lrs):
            group["lr"] = losses.cosine_lr(lr0, step, steps, RAMPDOWN[stage])
        parts, w = variables()
        total, terms, _ = evaluate(problem, parts, w, weights)
        if not first:
            first = {"total": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
        tick = time.perf_counter()
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        problem.tick("backward", tick)
    return first


def report(problem: Problem, state: FaithfulState, stage: int, first: dict[str, float] | None = None
           ) -> StageReport:
    """Every loss term of ``state`` (no gradient), its photometric L1 and landmark error at 224."""
    weights = {name: 1.0 for name in ALL_TERMS} if state.latents_w is not None else {"colour": 1.0}
    parts = problem.models.face_model.split(state.coeffs)
    seconds = dict(problem.seconds)  # the optimisation's, before this evaluation
    with torch.no_grad():
        _, terms, out = evaluate(problem, parts, state.latents_w, weights)
    values = {name: float(value) for name, value in terms.items()}
    if stage > 1:
        stage_weights = STAGE2_WEIGHTS if stage == 2 else STAGE3_WEIGHTS
        values["total"] = sum(w * values[name] for name, w in stage_weights.items() if name in values)
    result = StageReport(values, values["colour"],
                         losses.landmark_error_px(out.landmarks[0], problem.target.landmarks[0]),
                         seconds)
    if first:
        result.initial_photometric_l1 = first["colour"]
        result.initial_losses = first
    return result


def run_stage1(problem: Problem) -> FaithfulState:
    """Deep3D's regression of the crop."""
    with torch.no_grad():
        coeffs = problem.models.deep3d(problem.target.image)  # the crop, (1, 3, 224, 224) in [0, 1]
    return FaithfulState(coeffs.float())


def run_stage2(problem: Problem, state: FaithfulState, steps: int) -> tuple[FaithfulState, dict[str, float]]:
    """Spherical Adam on z with the shape, pose and light of ``state`` fixed; the state and the first terms."""
    texgan = problem.models.texgan
    z = texgan.initial_z().requires_grad_(True)
    optimiser = SphericalOptimizer([z], torch.optim.Adam, lr=STAGE2_LR, betas=BETAS)
    parts = problem.models.face_model.split(state.coeffs.detach())
    with torch.no_grad():
        problem.fixed_raster = raster_face(problem.models.face_model, parts, problem.backend)
    try:
        first = descend(problem, optimiser, lambda: (parts, texgan.z_to_w(z)), 2, steps)
    finally:
        problem.fixed_raster = None
    z = z.detach()
    return FaithfulState(state.coeffs.detach().clone(), z.clone(), texgan.z_to_w(z)), first


def run_stage3(problem: Problem, state: FaithfulState, steps: int) -> tuple[FaithfulState, dict[str, float]]:
    """Adam on W+ and id / exp / angle / gamma / trans (the 3DMM texture coefficients stay fixed)."""
    model, texgan = problem.models.face_model, problem.models.texgan
    w = state.latents_w.detach().clone().requires_grad_(True)
    parts = model.split(state.coeffs.detach().clone())
    leaves = {name: getattr(parts, name).clone().requires_grad_(True) for name in ("id", "exp", "angle", "gamma",
                                                                                   "trans")}
    groups = [{"params": [w], "lr": STAGE3_LR * STAGE3_LR_SCALE["w"]}]
    groups += [{"params": [leaves[name]], "lr": STAGE3_LR * STAGE3_LR_SCALE[name]} for name in leaves]
    optimiser = torch.optim.Adam(groups, betas=BETAS)

    def variables() -> tuple[fm.Coefficients, torch.Tensor]:
        return fm.Coefficients(tex=parts.tex, **leaves), w

    first = descend(problem, optimiser, variables, 3, steps)
    final = variables()[0]
    coeffs = torch.cat([final.id, final.exp, final.tex, final.angle, final.gamma, final.trans], dim=1).detach()
    w = w.detach()
    return FaithfulState(coeffs, texgan.w_to_z(w), w.clone()), first


def fit_stages(problem: Problem, steps: tuple[int, int]
               ) -> tuple[dict[int, FaithfulState], dict[int, StageReport], dict[str, float]]:
    """Stages 1-3 on the problem's photo: states, reports and seconds per stage."""
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    states, reports, seconds = {}, {}, {}
    runs = {1: lambda: (run_stage1(problem), None), 2: lambda: run_stage2(problem, states[1], steps[0]),
            3: lambda: run_stage3(problem, states[2], steps[1])}
    for stage, run in runs.items():
        tick = time.perf_counter()
        problem.seconds = {}
        states[stage], first = run()
        reports[stage] = report(problem, states[stage], stage, first)
        seconds[f"stage{stage}"] = time.perf_counter() - tick
    return states, reports, seconds
