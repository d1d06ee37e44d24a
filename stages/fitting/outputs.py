"""FFHQ-UV's per-photo output set of RGB fitting, as bytes (the stage writes them to storage).

- ``stage{k}_vis.png``: the 224 crop | the fitted render over it | the render with target (green) and fitted
  (red) landmarks;
- ``stage{k}_uv.png`` (k = 2, 3): the UV texture, (S, S, 3) at the topology's size (1024 for HiFi3D++);
- ``stage{k}_mesh_{id,exp}.obj``: the fitted head in the template frame (y up); stage 1 with vertex colours
  sampled from its texture, stages 2-3 with ``vt`` and an ``.mtl`` naming the stage's UV map. The open profile's
  shape has no identity/expression split (its landmark fit is one non-rigid deformation), so both files hold the
  same mesh there; the faithful profile's 3DMM separates them;
- ``stage{k}_coeffs.pt``: ``{coeffs, lm68, latents_w, latents_z}``; ``coeffs`` a dict of named tensors
  (``angle`` [1,3] pitch/yaw/roll radians in Deep3D's convention, ``trans`` [1,3], ``gamma`` [1,27] SH in DPR's
  basis, ``shape`` [1,K] the landmark fit's coefficients), ``lm68`` [1,68,2] fitted landmarks in 224 pixels
  (y up, as FFHQ-UV), latents None without a texture GAN; the faithful profile writes FFHQ-UV's own record
  (``coeffs`` the (1, 1049) coefficient tensor, latents (1, L, 512)), ``faithful_coeffs_bytes``.
Both profiles hand the stage one ``StageOutput`` per stage.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np

from stages.geometry.obj import Mesh, format_mtl, format_obj

LANDMARK_TARGET_RGB = (0, 255, 0)
LANDMARK_FIT_RGB = (255, 0, 0)
# Deep3D's camera frame flips y and z relative to the OpenCV frame of the fitting (pipeline.md section 7).
_OPENCV_TO_DEEP3D = np.diag([1.0, -1.0, -1.0])
DEEP3D_CAMERA_DISTANCE = 10.0


@dataclass
class StageOutput:
    """What one fitting stage writes: ``render`` (224, 224, 3) in [0, 1] and its ``coverage`` (224, 224);
    ``fitted_lm`` (68, 2) y-down 224 pixels; ``texture`` (S, S, 3) uint8 (the UV map of stages 2-3; stage 1's
    texture for sampling vertex colours, or None); ``meshes`` {"id", "exp"} -> (N, 3) template-frame vertices;
    ``colours`` (N, 3) in [0, 1] vertex colours of stage 1 (None: sampled from ``texture``); ``coeffs`` the
    ``stage*_coeffs.pt`` bytes."""

    render: np.ndarray
    coverage: np.ndarray
    fitted_lm: np.ndarray
    texture: Optional[np.ndarray]
    meshes: dict[str, np.ndarray]
    coeffs: bytes
    colours: Optional[np.ndarray] = None


def deep3d_angles(rotation_opencv: np.ndarray) -> np.ndarray:
    """(3, 3) template -> OpenCV camera rotation -> (3,) Deep3D (pitch, yaw, roll) radians, R = Rz Ry Rx."""
    r = _OPENCV_TO_DEEP3D @ rotation_opencv
    yaw = -np.arcsin(np.clip(r[2, 0], -1.0, 1.0))
    return np.array([np.arctan2(r[2, 1], r[2, 2]), yaw, np.arctan2(r[1, 0], r[0, 0])])


def deep3d_translation(translation_opencv: np.ndarray) -> np.ndarray:
    """(3,) OpenCV camera translation -> Deep3D's (camera at z = 10 looking down -z)."""
    return _OPENCV_TO_DEEP3D @ (np.asarray(translation_opencv) - np.array([0.0, 0.0, DEEP3D_CAMERA_DISTANCE]))


def visualisation(image: np.ndarray, render: np.ndarray, coverage: np.ndarray, target_lm: np.ndarray,
                  fitted_lm: np.ndarray) -> np.ndarray:
    """(224, 672, 3) uint8: crop, render over crop, render with landmarks. Inputs in [0, 1], landmarks y down."""
    import cv2

    photo = np.clip(image * 255, 0, 255).astype(np.uint8)
    over = np.where(coverage[..., None] > 0, np.clip(render * 255, 0, 255), photo).astype(np.uint8)
    marked = over.copy()
    for points, colour in ((target_lm, LANDMARK_TARGET_RGB), (fitted_lm, LANDMARK_FIT_RGB)):
        for x, y in np.asarray(points):
            cv2.circle(marked, (int(round(x)), int(round(y))), 1, colour, -1)
    return np.concatenate([photo, over, marked], axis=1)


def mesh_obj(topology, vertices: np.ndarray, stage: int, texture: Optional[np.ndarray],
             colours: Optional[np.ndarray] = None) -> str:
    """OBJ text of the fitted head: stage 1 with vertex colours (``colours`` in [0, 1], else sampled from
    ``texture``), later stages with vt + mtllib."""
    if stage == 1:
        if colours is None:
            from stages.geometry.render import sample_texture

            first_corner = np.zeros(len(vertices), dtype=np.int64)
            first_corner[topology.triangles.reshape(-1)] = topology.face_uvs.reshape(-1)
            colours = sample_texture(texture, topology.uvs[first_corner]) / 255.0
        return format_obj(Mesh(vertices=vertices, faces=topology.triangles, colors=np.clip(colours, 0.0, 1.0)))
    return format_obj(Mesh(vertices=vertices, faces=topology.triangles, uvs=topology.uvs,
                           face_uvs=topology.face_uvs, mtllib=f"stage{stage}_mesh.mtl",
                           materials=(f"stage{stage}_uv",)))


def mesh_mtl(stage: int) -> str:
    """The ``.mtl`` of a stage's meshes: one material textured by ``stage{k}_uv.png``."""
    return format_mtl({f"stage{stage}_uv": f"stage{stage}_uv.png"})


def coeffs_bytes(rotation: np.ndarray, translation: np.ndarray, sh: np.ndarray, shape: np.ndarray,
                 lm68_down: np.ndarray, crop_size: int = 224) -> bytes:
    """``stage*_coeffs.pt`` bytes (see the module docstring)."""
    import torch

    lm_up = np.stack([lm68_down[:, 0], crop_size - 1 - lm68_down[:, 1]], 1)
    record = {
        "coeffs": {
            "angle": torch.as_tensor(deep3d_angles(rotation), dtype=torch.float32)[None],
            "trans": torch.as_tensor(deep3d_translation(translation), dtype=torch.float32)[None],
            "gamma": torch.as_tensor(np.asarray(sh).reshape(-1), dtype=torch.float32)[None],
            "shape": torch.as_tensor(np.asarray(shape), dtype=torch.float32)[None],
        },
        "lm68": torch.as_tensor(lm_up, dtype=torch.float32)[None],
        "latents_w": None,
        "latents_z": None,
    }
    buffer = io.BytesIO()
    torch.save(record, buffer)
    return buffer.getvalue()


def faithful_coeffs_bytes(coeffs, lm68_up, latents_w=None, latents_z=None) -> bytes:
    """FFHQ-UV's own ``stage*_coeffs.pt``: ``coeffs`` (1, 1049), ``lm68`` (1, 68, 2) y up, latents (1, L, C) or
    None (stage 1), as torch tensors."""
    import torch

    def tensor(value):
        return None if value is None else torch.as_tensor(value, dtype=torch.float32).detach().cpu().clone()

    buffer = io.BytesIO()
    torch.save({"coeffs": tensor(coeffs), "lm68": tensor(lm68_up), "latents_w": tensor(latents_w),
                "latents_z": tensor(latents_z)}, buffer)
    return buffer.getvalue()
