"""DPR HourglassNet with its real weights (FFHQ-UV and DPR references), tiny checkpoints, SH helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stages.errors import ConfigError
from stages.lighting import sh
from stages.networks.dpr import DEMO_SH_SCALE, DPRConfig, DPRRelighter, HourglassNet, load_dpr
from tests.conftest import gpu_reason
from tests.tiny_dpr_weights import DPR_FILE, official_format, write_tiny_dpr

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
WEIGHTS = DATA / "dpr" / "trained_model_03.t7"
needs_weights = pytest.mark.skipif(not WEIGHTS.exists(), reason=f"real DPR weights not found at {WEIGHTS}")


@pytest.fixture(scope="module")
def relighter() -> DPRRelighter:
    return DPRRelighter(load_dpr(WEIGHTS))


def _bgr(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path))
    assert image is not None, path
    return image


@needs_weights
def test_real_weights_reproduce_ffhq_uv_lighting(relighter):
    estimate = relighter.estimate([_bgr(DATA / "ffhq_uv_example" / "inversions" / "01223.png")])
    reference = np.load(DATA / "ffhq_uv_example" / "lights" / "01223.npy").reshape(1, 9)
    assert estimate.shape == (1, 9)
    assert np.abs(estimate - reference).max() <= 0.01


@needs_weights
@pytest.mark.parametrize("index", range(7))
def test_real_weights_reproduce_dpr_relighting(relighter, index):
    target = np.loadtxt(DATA / "dpr" / "relit" / f"rotate_light_{index:02d}.txt")[:9] * DEMO_SH_SCALE
    relit, _ = relighter.relight(_bgr(DATA / "faces" / "obama.jpg"), target)
    reference = _bgr(DATA / "dpr" / "relit" / f"obama_{index:02d}.jpg")
    assert relit.shape == reference.shape
    assert np.abs(relit.astype(np.float64) - reference).mean() <= 3.0


@needs_weights
def test_keep_detail_relights_like_dpr_and_keeps_the_full_resolution_texture(relighter):
    import cv2

    image = _bgr(DATA / "faces" / "obama.jpg")  # 727x909: DPR works on it at 512
    target = np.loadtxt(DATA / "dpr" / "relit" / "rotate_light_03.txt")[:9] * DEMO_SH_SCALE
    demo, _ = relighter.relight(image, target)
    detailed, _ = relighter.relight(image, target, keep_detail=True)

    def at_512(bgr):
        return cv2.resize(bgr, (512, 512), interpolation=cv2.INTER_AREA).astype(np.float64)

    def detail(bgr):  # high-frequency energy of the gray image
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)
        return np.abs(cv2.Laplacian(gray, cv2.CV_64F)).mean()

    assert np.abs(at_512(detailed) - at_512(demo)).mean() <= 3.0  # the same relighting at DPR's scale
    assert detail(detailed) > 0.9 * detail(image) and detail(demo) < 0.8 * detail(image)


@needs_weights
def test_relit_image_is_estimated_near_its_target(relighter):
    image = _bgr(DATA / "faces" / "obama.jpg")
    before = relighter.estimate([image])[0]
    relit, from_relight = relighter.relight(image, np.array(sh.EVEN_LIGHT))
    np.testing.assert_allclose(from_relight, before, atol=1e-5)  # the relight pass reports the input's light
    after = relighter.estimate([relit])[0]
    # DPR is not idempotent: its re-estimate of its own output moves most, not all, of the way.
    assert sh.directional_offset(after, sh.EVEN_LIGHT) < 0.75 * sh.directional_offset(before, sh.EVEN_LIGHT)


def test_tiny_checkpoint_in_official_format_loads_with_same_code(tmp_path):
    net = write_tiny_dpr(tmp_path)
    state = torch.load(tmp_path / DPR_FILE, weights_only=True)
    assert any(k.startswith("light.") for k in state) and any(k.startswith("HG0.") for k in state)
    loaded = load_dpr(tmp_path / DPR_FILE)
    assert loaded.config == DPRConfig(base_filter=4, nc_light=5, nc_light_hidden=8)
    lum = torch.rand(1, 1, 64, 64)
    target = torch.randn(1, 9, 1, 1)
    with torch.no_grad():
        expected = net(lum, target)
        got = loaded(lum, target)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b)
    assert got[0].shape == (1, 1, 64, 64) and got[1].shape == (1, 9, 1, 1)
    assert 0 <= float(got[0].min()) and float(got[0].max()) <= 1


def test_inconsistent_alias_and_missing_file_are_refused(tmp_path):
    state = official_format(HourglassNet(DPRConfig(base_filter=4, nc_light=5, nc_light_hidden=8)))
    state["light.predict_FC1.weight"] = state["light.predict_FC1.weight"] + 1
    path = tmp_path / "bad.t7"
    torch.save(state, path)
    with pytest.raises(ConfigError, match="differs"):
        load_dpr(path)
    with pytest.raises(ConfigError, match="Weights"):
        load_dpr(tmp_path / "absent.t7")


def _sphere(size: int = 64) -> np.ndarray:
    """Visible normals of DPR's demo sphere: x right, z up, y = -sqrt(1 - x^2 - z^2) towards the viewer."""
    x, z = np.meshgrid(np.linspace(-1, 1, size), np.linspace(1, -1, size))
    valid = x ** 2 + z ** 2 < 1
    y = -np.sqrt(1 - x[valid] ** 2 - z[valid] ** 2)
    return np.stack([x[valid], y, z[valid]], axis=1)


def test_sh_basis_constants_and_fit():
    normals = _sphere()
    # DC basis = 0.5/sqrt(pi) * pi; a light from +Z brightens the top of the sphere.
    np.testing.assert_allclose(sh.sh_basis(normals)[:, 0], 0.5 / np.sqrt(np.pi) * np.pi)
    light = np.array([0.8, 0.0, 0.4, 0.0, 0, 0, 0, 0, 0])
    shade = sh.shading(normals, light)
    assert shade[normals[:, 2] > 0.5].mean() > shade[normals[:, 2] < -0.5].mean()
    truth = np.array([0.9, -0.1, 0.3, 0.2, 0.05, -0.04, -0.1, 0.03, 0.08])
    fitted = sh.fit_sh(normals, sh.shading(normals, truth), ridge=0.0)
    np.testing.assert_allclose(fitted, truth, atol=1e-8)
    assert sh.directional_offset(truth * 2, truth) == pytest.approx(0.0, abs=1e-12)
    assert sh.directional_offset(light, sh.EVEN_LIGHT) == pytest.approx(0.5)


def test_camera_to_dpr_is_a_rotation():
    basis = sh.camera_to_dpr(np.eye(3))
    assert np.linalg.det(basis) == pytest.approx(1.0)
    # Facing the camera (mediapipe z towards the viewer is negative) is DPR's -Y.
    np.testing.assert_allclose(sh.camera_to_dpr(np.array([0.0, 0.0, -1.0])), [0, -1, 0])


@needs_weights
def test_cuda_fp16_matches_cpu(relighter):
    if not torch.cuda.is_available():
        pytest.skip(gpu_reason("DPR in half precision on CUDA"))
    image = _bgr(DATA / "ffhq_uv_example" / "inversions" / "01223.png")
    gpu = DPRRelighter(load_dpr(WEIGHTS, "cuda"), device="cuda", fp16=True)
    np.testing.assert_allclose(gpu.estimate([image]), relighter.estimate([image]), atol=0.02)
