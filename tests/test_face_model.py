"""The HiFi3D++ 3DMM of RGB fitting, read from a small synthetic ``hifi3dpp_model_info.mat`` in FFHQ-UV's layout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.io import savemat

from stages.errors import ConfigError
from stages.fitting import face_model as fm

N, ID, EXP, TEX = 40, 4, 3, 5


def write_model_info(path, seed: int = 0) -> dict:
    """A model-info file with FFHQ-UV's keys: (1, 3N) means, (3N, K) bases, 1-based triangles and keypoints."""
    rng = np.random.default_rng(seed)
    info = {
        "meanshape": rng.normal(size=(1, 3 * N)), "meantex": rng.uniform(0, 255, (1, 3 * N)),
        "idBase": rng.normal(size=(3 * N, ID)), "exBase": rng.normal(size=(3 * N, EXP)),
        "texBase": rng.normal(size=(3 * N, TEX)),
        "tri": rng.integers(1, N + 1, (20, 3)), "head_tri": rng.integers(1, N + 1, (30, 3)),
        "vtx_vt": rng.uniform(0, 512, (N, 2)), "keypoints": rng.integers(1, N + 1, (1, 68)),
    }
    savemat(str(path), info)
    return info


def test_model_info_loads_and_splits_coefficients(tmp_path):
    info = write_model_info(tmp_path / "hifi3dpp_model_info.mat")
    model = fm.HiFi3DModel.from_mat(tmp_path / "hifi3dpp_model_info.mat")
    assert model.dims == (ID, EXP, TEX) and model.coefficient_count == ID + EXP + TEX + 33
    assert int(model.keypoints.min()) >= 0 and int(model.head_tri.max()) < N  # 1-based in the file
    coeffs = torch.randn(2, model.coefficient_count, generator=torch.Generator().manual_seed(0))
    parts = model.split(coeffs)
    assert parts.gamma.shape == (2, 27) and parts.trans.shape == (2, 3)
    torch.testing.assert_close(parts.trans, coeffs[:, -3:])
    mean = info["meanshape"].reshape(-1, 3)
    zero = model.shape(torch.zeros(1, ID), torch.zeros(1, EXP))[0].double().numpy()
    np.testing.assert_allclose(zero, mean - mean.mean(axis=0), atol=1e-5)  # Deep3D re-centres the mean shape
    one_id = model.shape(torch.eye(ID)[:1], torch.zeros(1, EXP))[0] - model.shape(torch.zeros(1, ID),
                                                                                   torch.zeros(1, EXP))[0]
    np.testing.assert_allclose(one_id.numpy().reshape(-1), info["idBase"][:, 0], atol=1e-5)
    with pytest.raises(ValueError):
        model.split(coeffs[:, :-1])


def test_missing_file_or_key_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="hifi3dpp_model_info.mat"):
        fm.HiFi3DModel.from_mat(tmp_path / "hifi3dpp_model_info.mat")
    savemat(str(tmp_path / "bad.mat"), {"meanshape": np.zeros((1, 3))})
    with pytest.raises(ConfigError, match="idBase"):
        fm.HiFi3DModel.from_mat(tmp_path / "bad.mat")


def test_deep3d_camera_rotation_and_light():
    angles = torch.tensor([[0.1, -0.3, 0.2]])
    r = fm.rotation(angles)[0]
    torch.testing.assert_close(r @ r.T, torch.eye(3), atol=1e-6, rtol=0)
    assert float(torch.linalg.det(r)) == pytest.approx(1.0, abs=1e-6)
    yaw_only = fm.rotation(torch.tensor([[0.0, 0.5, 0.0]]))[0]
    torch.testing.assert_close(yaw_only @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([math.sin(0.5), 0.0,
                                                                                         math.cos(0.5)]))
    point = torch.tensor([[[0.5, -0.2, 1.0]]])
    pixels = fm.project(fm.to_camera(point, torch.zeros(1, 3), torch.zeros(1, 3)))
    torch.testing.assert_close(pixels[0, 0], torch.tensor([112 + 1015 * 0.5 / 9, 112 - 1015 * 0.2 / 9]))
    shading = fm.sh_shading(torch.tensor([[[0.0, 0.0, 1.0]]]), torch.zeros(1, 27))
    # DC-only initial light: 0.8 * a0 * c0 = 0.8 * pi / sqrt(4 pi) for every channel.
    torch.testing.assert_close(shading, torch.full((1, 1, 3), 0.8 * math.pi / math.sqrt(4 * math.pi)))
