"""The HiFi3D++ 3DMM of FFHQ-UV's RGB fitting (``topo_assets/hifi3dpp_model_info.mat``, pipeline.md sections 3, 7).

Deep3D's parametric face, as FFHQ-UV's ``RGB_Fitting/model/hifi3dpp.py`` uses it:
- coefficients (B, 1049) = id 532 | exp 45 | tex 439 | angle 3 (pitch, yaw, roll; radians) | gamma 27 | trans 3
  (the split sizes come from the file's bases, so a small synthetic model works the same way);
- shape = mean (re-centred) + idBase @ id + exBase @ exp; albedo = meantex + texBase @ tex;
- pose: ``X @ (Rz Ry Rx)^T + trans``, then Deep3D's camera at distance 10 looking down -z, focal 1015, centre 112
  (pixels, y up), image 224;
- lighting: Deep3D's SH (9 per channel, ``0.8`` added to the DC term), per-vertex shading of the albedo;
- landmarks: the 68 ``keypoints`` vertices (1-based in the file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stages.errors import ConfigError

MODEL_INFO_KEYS = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "head_tri", "vtx_vt", "keypoints")
CAMERA_DISTANCE, FOCAL, CENTRE, IMAGE_SIZE = 10.0, 1015.0, 112.0, 224
INIT_LIGHT_DC = 0.8  # Deep3D's initial ambient light
POSE_AND_LIGHT = 3 + 27 + 3  # angle, gamma, trans
# Deep3D's SH constants: band attenuation a and normalisation c.
SH_A = (math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0))
SH_C = (1 / math.sqrt(4 * math.pi), math.sqrt(3.0) / math.sqrt(4 * math.pi),
        3 * math.sqrt(5.0) / math.sqrt(12 * math.pi))


@dataclass
class Coefficients:
    """Named parts of a (B, 1049) coefficient tensor."""

    id: torch.Tensor
    exp: torch.Tensor
    tex: torch.Tensor
    angle: torch.Tensor
    gamma: torch.Tensor
    trans: torch.Tensor


class HiFi3DModel:
    """The 3DMM as torch tensors; ``from_mat`` reads FFHQ-UV's model-info file."""

    def __init__(self, info: dict[str, np.ndarray]):
        mean = np.asarray(info["meanshape"], dtype=np.float32).reshape(-1, 3)
        self.mean_shape = torch.as_tensor(mean - mean.mean(axis=0, keepdims=True))  # Deep3D re-centres it
        self.id_base = torch.as_tensor(np.asarray(info["idBase"], dtype=np.float32))
        self.exp_base = torch.as_tensor(np.asarray(info["exBase"], dtype=np.float32))
        self.mean_tex = torch.as_tensor(np.asarray(info["meantex"], dtype=np.float32).reshape(-1, 3))
        self.tex_base = torch.as_tensor(np.asarray(info["texBase"], dtype=np.float32))
        self.face_tri = torch.as_tensor(np.asarray(info["tri"], dtype=np.int64) - 1)  # losses use the face only
        self.head_tri = torch.as_tensor(np.asarray(info["head_tri"], dtype=np.int64) - 1)
        self.vtx_vt = torch.as_tensor(np.asarray(info["vtx_vt"], dtype=np.float32))  # (N, 2) row, col in 0..512
        self.keypoints = torch.as_tensor(np.asarray(info["keypoints"], dtype=np.int64).reshape(-1) - 1)
        # Optional ``point_buf`` (N, 8): the (1-based) head triangles around each vertex, 0 = padding, which
        # Deep3D's normals sum; without it every adjacent triangle counts.
        self.point_buf = None
        if "point_buf" in info:
            self.point_buf = torch.as_tensor(np.asarray(info["point_buf"], dtype=np.int64) - 1)
        n = len(self.mean_shape)
        for name in ("id_base", "exp_base", "tex_base"):
            if getattr(self, name).shape[0] != 3 * n:
                raise ConfigError(f"hifi3dpp model info: {name} has {getattr(self, name).shape[0]} rows for {n} "
                                  "vertices (expected 3N)")
        self.dims = (self.id_base.shape[1], self.exp_base.shape[1], self.tex_base.shape[1])
        self.face_tri_numpy = self.face_tri.numpy()  # for the rasteriser, whatever the tensors' device

    def to(self, device: str | torch.device) -> HiFi3DModel:
        """Move every tensor of the model to ``device`` (in place); returns the model."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self

    @staticmethod
    def from_mat(path: str | Path) -> HiFi3DModel:
        """Read ``hifi3dpp_model_info.mat``; ConfigError naming the file or the missing key."""
        from scipy.io import loadmat

        try:
            info = loadmat(str(path))
        except FileNotFoundError:
            raise ConfigError(f"missing {path} (topo_assets/hifi3dpp_model_info.mat); "
                              "see README section 'RGB fitting'") from None
        missing = [k for k in MODEL_INFO_KEYS if k not in info]
        if missing:
            raise ConfigError(f"{path} lacks {missing}; see README section 'RGB fitting'")
        return HiFi3DModel(info)

    @property
    def coefficient_count(self) -> int:
        return sum(self.dims) + POSE_AND_LIGHT

    def split(self, coeffs: torch.Tensor) -> Coefficients:
        """(B, K) -> named parts, in FFHQ-UV's order."""
        if coeffs.shape[1] != self.coefficient_count:
            raise ValueError(f"expected (B, {self.coefficient_count}) coefficients, got {tuple(coeffs.shape)}")
        sizes = [*self.dims, 3, 27, 3]
        return Coefficients(*torch.split(coeffs, sizes, dim=1))

    def shape(self, id_coeffs: torch.Tensor, exp_coeffs: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) vertices of the model frame (y up, z towards the camera)."""
        offset = id_coeffs @ self.id_base.T + exp_coeffs @ self.exp_base.T
        return offset.reshape(len(id_coeffs), -1, 3) + self.mean_shape

    def albedo(self, tex_coeffs: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) per-vertex albedo on the file's scale."""
        return (tex_coeffs @ self.tex_base.T).reshape(len(tex_coeffs), -1, 3) + self.mean_tex


def rotation(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) pitch, yaw, roll radians -> (B, 3, 3) ``Rz @ Ry @ Rx`` (Deep3D's convention)."""
    x, y, z = angles.unbind(dim=1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rx = torch.stack([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], 1).reshape(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1).reshape(-1, 3, 3)
    rz = torch.stack([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], 1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def to_camera(vertices: torch.Tensor, angles: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) model-frame vertices -> Deep3D camera-frame vertices (camera at z = 10)."""
    return vertices @ rotation(angles).transpose(1, 2) + trans[:, None, :]


def project(camera_vertices: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) camera-frame vertices -> (B, N, 2) pixels of the 224 image, y up (Deep3D's landmark frame)."""
    depth = CAMERA_DISTANCE - camera_vertices[..., 2]
    return FOCAL * camera_vertices[..., :2] / depth[..., None] + CENTRE


def sh_shading(normals: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) unit normals, (B, 27) gamma -> (B, N, 3) Deep3D SH shading (0.8 added to each DC term)."""
    g = gamma.reshape(-1, 3, 9).clone()
    g[:, :, 0] = g[:, :, 0] + INIT_LIGHT_DC
    a, c = SH_A, SH_C
    x, y, z = normals.unbind(dim=-1)
    basis = torch.stack([
        torch.full_like(x, a[0] * c[0]), -a[1] * c[1] * y, a[1] * c[1] * z, -a[1] * c[1] * x,
        a[2] * c[2] * x * y, -a[2] * c[2] * y * z, 0.5 * a[2] * c[2] / math.sqrt(3.0) * (3 * z ** 2 - 1),
        -a[2] * c[2] * x * z, 0.5 * a[2] * c[2] * (x ** 2 - y ** 2)], dim=-1)  # (B, N, 9)
    return torch.einsum("bnk,bck->bnc", basis, g)
