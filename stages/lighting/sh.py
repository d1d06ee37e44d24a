"""Second-order spherical harmonics in DPR's convention (networks.md section 4, DPR's ``utils_SH.py``).

Order ``[1, Y, Z, X, YX, YZ, 3Z^2-1, XZ, X^2-Y^2]`` with shtools' real-SH constants
and the Lambertian band attenuation pi * [1, 2/3, 1/4], so that
``shading(n) = sh_basis(n) @ sh`` is the irradiance of a unit-albedo surface. DPR's
frame: X to the image right, Z up, Y away from the viewer (a surface facing the
camera has normal (0, -1, 0)). One 9-vector lights all colour channels (gray model).
"""

from __future__ import annotations

import numpy as np

SH_COEFFS = 9
SH_ORDER: tuple[str, ...] = ("1", "Y", "Z", "X", "YX", "YZ", "3Z^2-1", "XZ", "X^2-Y^2")

_SQRT_PI = np.sqrt(np.pi)
# shtools' orthonormal real-SH constants per coefficient, in SH_ORDER.
SH_CONSTANTS = np.array([
    0.5 / _SQRT_PI,
    np.sqrt(3) / (2 * _SQRT_PI), np.sqrt(3) / (2 * _SQRT_PI), np.sqrt(3) / (2 * _SQRT_PI),
    np.sqrt(15) / (2 * _SQRT_PI), np.sqrt(15) / (2 * _SQRT_PI),
    np.sqrt(5) / (4 * _SQRT_PI),
    np.sqrt(15) / (2 * _SQRT_PI),
    np.sqrt(15) / (4 * _SQRT_PI),
])
# Lambertian convolution per band (Ramamoorthi & Hanrahan), applied per coefficient.
BAND_ATTENUATION = np.pi * np.array([1.0, 2 / 3, 2 / 3, 2 / 3, 1 / 4, 1 / 4, 1 / 4, 1 / 4, 1 / 4])

# FFHQ-UV's "delight" target: the DC term only, i.e. even illumination (pipeline.md section 2.3).
EVEN_LIGHT: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """(N, 3) unit normals in DPR's frame -> (N, 9) attenuated SH basis (DPR's ``SH_basis``)."""
    n = np.asarray(normals, dtype=np.float64)
    x, y, z = n[:, 0], n[:, 1], n[:, 2]
    raw = np.stack([np.ones_like(x), y, z, x, y * x, y * z, 3 * z ** 2 - 1, x * z, x ** 2 - y ** 2], axis=1)
    return raw * (SH_CONSTANTS * BAND_ATTENUATION)


def shading(normals: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """(N, 3) normals in DPR's frame, (9,) SH -> (N,) irradiance."""
    return sh_basis(normals) @ np.asarray(sh, dtype=np.float64).reshape(SH_COEFFS)


def camera_to_dpr(normals: np.ndarray) -> np.ndarray:
    """Normals in image-camera axes (x right, y down, z away from the viewer) -> DPR's frame.

    This is mediapipe's landmark frame. DPR X = x, Y = z (away), Z = -y (up); a proper rotation.
    """
    n = np.asarray(normals, dtype=np.float64)
    return np.stack([n[..., 0], n[..., 2], -n[..., 1]], axis=-1)


# Ridge weight on the 8 non-DC coefficients of an SH fit on face normals. A face shows
# only the front hemisphere, where 1, Y and Y^2-like terms are nearly collinear; this
# weight (relative to the pixel count) gave the best agreement with the known lights
# of DPR's obama relighting set (first-order terms within ~0.1 of DC-relative truth).
FIT_RIDGE = 0.03


def fit_sh(normals: np.ndarray, intensity: np.ndarray, ridge: float = FIT_RIDGE) -> np.ndarray:
    """Least-squares 9 SH coefficients with ``intensity ~= shading(normals, sh)`` (constant albedo folded in).

    ``normals`` (N, 3) in DPR's frame, ``intensity`` (N,). The ridge pulls the non-DC
    terms towards even light, so ambiguity goes to the DC term.
    """
    basis = sh_basis(normals)
    penalty = np.diag([0.0] + [1.0] * (SH_COEFFS - 1))
    gram = basis.T @ basis + ridge * len(basis) * penalty
    return np.linalg.solve(gram, basis.T @ np.asarray(intensity, dtype=np.float64))


def directional_offset(sh: np.ndarray, target: np.ndarray) -> float:
    """How far a lighting is from a target, ignoring overall brightness.

    Both SH are scaled to the target's DC term, then the L2 norm of the 8 non-DC
    differences is returned (0 = same light direction and contrast). DC-relative so
    that DPR estimates and analytic fits (whose DC also holds the skin albedo) are
    judged on the same scale.
    """
    sh = np.asarray(sh, dtype=np.float64).reshape(SH_COEFFS)
    target = np.asarray(target, dtype=np.float64).reshape(SH_COEFFS)
    if sh[0] <= 0 or target[0] <= 0:
        return float("inf")
    return float(np.linalg.norm(sh[1:] / sh[0] * target[0] - target[1:]))
