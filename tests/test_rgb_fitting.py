"""RGB fitting (FFHQ-UV section 4.2): preprocessing against FFHQ-UV's own files, the differentiable renderer,
the open profile on the real shared photos, and the fit stage through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stages.fitting import losses, open_fit
from stages.fitting.preprocess import (
    INPUT_KEYS,
    AlignParams,
    align_params,
    arcface_similarity,
    crop_inputs,
    deep3d_five_points,
    load_input_data,
    save_input_data,
)
from stages.fitting.render import Camera, MeshBuffers, neutral_sh, render, rotation_matrix
from stages.fitting.skin import skin_mask_uint8
from stages.imageio import decode_image
from tests.conftest import shared_data

ANCHORS = ("000007", "000055")
PHOTOS = ("000007", "000055", "015309")
STEPS = (2, 2)  # FFHQ-UV's schedule (100, 200) is the CLI default and the benchmark's


def photo(name: str) -> np.ndarray:
    path = shared_data(f"faces/{name}.jpg")
    return decode_image(path.read_bytes(), source=str(path))


def anchor(name: str):
    return load_input_data(str(shared_data(f"rgb_fitting/processed_data/{name}.pt")))


@pytest.fixture(scope="module")
def detector():
    from stages.face.landmarks import FaceLandmarker

    with FaceLandmarker(max_faces=2) as landmarker:
        yield landmarker


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    from stages.geometry.topologies import load_topology

    head = shared_data("hifi3dpp/head_teaser1.obj")
    return load_topology("hifi3dpp", obj_path=str(head), cache_dir=tmp_path_factory.mktemp("topology-cache"))


@pytest.mark.parametrize("name", ANCHORS)
def test_crop_and_skin_mask_match_ffhq_uv_given_its_trans_params(name):
    reference = anchor(name)
    image = photo(name)
    ours = crop_inputs(image, np.zeros((68, 2)), skin_mask_uint8(image), np.zeros(image.shape[:2], np.uint8),
                       reference.params)
    assert np.abs(ours.image - reference.image).mean() < 1e-3
    assert np.abs(ours.skin - reference.skin).mean() < 1e-3
    a, b = ours.skin > 0.5, reference.skin > 0.5
    assert (a & b).sum() / (a | b).sum() > 0.99


@pytest.mark.parametrize("name", ANCHORS)
def test_arcface_similarity_matches_ffhq_uv(name):
    reference = anchor(name)
    np.testing.assert_allclose(arcface_similarity(reference.landmarks), reference.arcface, atol=1e-4)


@pytest.mark.parametrize("name", ANCHORS)
def test_own_alignment_lands_near_ffhq_uv(name, detector):
    from stages.fitting.photo_fit import OPEN_TEMPLATE5
    from stages.geometry.landmark_schemes import MEDIAPIPE_TO_IBUG68

    reference = anchor(name)
    image = photo(name)
    h, w = image.shape[:2]
    lm = detector.detect_one(image).points[list(MEDIAPIPE_TO_IBUG68), :2].astype(np.float64)
    lm_up = np.stack([lm[:, 0], h - 1 - lm[:, 1]], 1)
    params = align_params(lm_up, OPEN_TEMPLATE5, w, h)
    assert abs(params.scale / reference.params.scale - 1) < 0.02
    five = deep3d_five_points(params.to_crop(lm_up))
    assert np.linalg.norm(five - deep3d_five_points(reference.landmarks), axis=1).mean() < 3.0


def test_input_data_has_ffhq_uv_keys_shapes_and_round_trips(tmp_path):
    reference = anchor(ANCHORS[0])
    path = tmp_path / "input_data.pt"
    path.write_bytes(save_input_data(reference))
    from stages.networks.safe_pickle import load_torch_with_numpy

    ours = load_torch_with_numpy(str(path))
    theirs = load_torch_with_numpy(str(shared_data(f"rgb_fitting/processed_data/{ANCHORS[0]}.pt")))
    assert set(ours) == set(theirs) == set(INPUT_KEYS)
    for key in INPUT_KEYS[:-1]:
        assert ours[key].shape == theirs[key].shape and ours[key].dtype == theirs[key].dtype
        assert torch.equal(ours[key], theirs[key].cpu())
    assert ours["trans_params"].dtype == object and len(ours["trans_params"]) == 5
    assert AlignParams.from_trans_params(ours["trans_params"]) == reference.params


def test_restricted_loader_refuses_code(tmp_path):
    import pickle

    from tests.test_safe_pickle import _Shell

    path = tmp_path / "evil.pt"
    torch.save({"img": torch.zeros(1), "x": _Shell(str(tmp_path / "owned"))}, path)
    from stages.networks.safe_pickle import load_torch_with_numpy

    with pytest.raises(pickle.UnpicklingError):
        load_torch_with_numpy(str(path))
    assert not (tmp_path / "owned").exists()


def _quad_scene():
    """Two triangles facing the camera at depth 10, textured by a 4x4 map; UV spans the unit square."""
    vertices = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    triangles = np.array([[0, 1, 2], [0, 2, 3]])
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    mesh = MeshBuffers(triangles, torch.as_tensor(triangles), uv[torch.as_tensor(triangles)], 4)
    return vertices, mesh, Camera(focal=200.0, centre=(31.5, 31.5), size=64)


def test_renderer_matches_rasteriser_coverage_and_texture():
    from stages.fitting.render import project
    from stages.geometry.rasterize import rasterize

    vertices, mesh, camera = _quad_scene()
    rotation, translation = torch.eye(3), torch.tensor([0.0, 0.0, 10.0])
    texture = torch.full((3, 4, 4), 0.5)
    out = render(vertices, rotation, translation, texture, neutral_sh(), mesh, camera)
    screen = project(vertices, rotation, translation, camera).numpy()
    expected = rasterize(screen, mesh.triangles, 64, 64).mask
    assert np.array_equal(out.coverage.numpy() > 0, expected) and expected.sum() == 40 * 40
    # Neutral light is DC-only: every normal shades to 1, so the render is the texture itself.
    np.testing.assert_allclose(out.image.numpy()[expected], 0.5, atol=1e-5)


def test_renderer_gradients_reach_pose_texture_and_light():
    vertices, mesh, camera = _quad_scene()
    texture = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    target = render(vertices, rotation_matrix(torch.tensor([0.0, 0.1, 0.0])), torch.tensor([0.1, 0.0, 10.0]),
                    texture, neutral_sh(), mesh, camera).image.detach()
    delta = torch.zeros(3, requires_grad=True)
    shift = torch.tensor([0.0, 0.0, 10.0], requires_grad=True)
    tex = texture.clone().requires_grad_(True)
    sh = neutral_sh().requires_grad_(True)
    out = render(vertices, rotation_matrix(delta), shift, tex, sh, mesh, camera)
    loss = losses.photometric_l1(out.image, target, out.coverage)
    loss.backward()
    for grad in (delta.grad, shift.grad, tex.grad, sh.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # The translation gradient agrees with a finite difference of the same loss (coverage held).
    eps = 1e-3
    with torch.no_grad():
        moved = render(vertices, torch.eye(3), shift + torch.tensor([eps, 0, 0]), texture, neutral_sh(), mesh,
                       camera)
        base = render(vertices, torch.eye(3), shift, texture, neutral_sh(), mesh, camera)
    numeric = (losses.photometric_l1(moved.image, target, base.coverage)
               - losses.photometric_l1(base.image, target, base.coverage)) / eps
    assert float(numeric) * float(shift.grad[0]) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_nvdiffrast_and_cpu_renders_agree():
    vertices, mesh, camera = _quad_scene()
    args = (vertices, rotation_matrix(torch.tensor([0.0, 0.2, 0.0])), torch.tensor([0.0, 0.0, 10.0]),
            torch.rand(3, 8, 8), neutral_sh(), mesh, camera)
    cpu = render(*args, backend="cpu")
    gpu = render(*args, backend="nvdiffrast")
    assert (cpu.coverage != gpu.coverage).float().mean() < 0.01
    both = (cpu.coverage * gpu.coverage) > 0
    assert (cpu.image - gpu.image).abs()[both].mean() < 1e-2


def test_cosine_schedule_ramps_down_to_zero():
    values = [losses.cosine_lr(0.1, step, 100, 0.25) for step in range(101)]
    assert values[0] == pytest.approx(0.1) and values[74] == pytest.approx(0.1)
    assert values[100] == pytest.approx(0.0) and all(a >= b for a, b in zip(values[75:], values[76:]))


@pytest.fixture(scope="module")
def fitter(topology):
    from stages.fitting.photo_fit import PhotoFitter
    from stages.texture.template import template_for

    return PhotoFitter(topology, template_for("hifi3dpp", topology.masks(), None), steps=STEPS)


@pytest.mark.parametrize("name", PHOTOS)
def test_open_profile_fits_the_real_photos(name, fitter, detector):
    from stages.fitting.outputs import mesh_obj
    from stages.geometry.obj import parse_obj

    image = photo(name)
    result = fitter.fit(image, detector.detect_one(image).points)
    stage1, stage3 = result.reports[1], result.reports[3]
    assert stage3.photometric_l1 <= 0.7 * stage1.photometric_l1
    assert stage3.landmark_error_px <= 3.0
    # The optimisation itself lowers the photometric loss from where stage 2 starts (the unwrapped photo).
    assert result.reports[2].photometric_l1 < result.reports[2].initial_photometric_l1
    uv = open_fit.texture_uint8(result.states[3])
    assert uv.shape == (1024, 1024, 3)
    mesh = parse_obj(mesh_obj(fitter.topology, result.geometry.vertices, 3, uv))
    assert len(mesh.vertices) == 20481 and mesh.has_uvs and mesh.mtllib == "stage3_mesh.mtl"
    assert len(parse_obj(mesh_obj(fitter.topology, result.geometry.vertices, 1, uv)).colors) == 20481


def test_fit_command_writes_ffhq_uv_outputs_and_manifest(tmp_path):
    from PIL import Image

    from pipeline.manifest import read_manifest
    from tests.conftest import face_and_noise_inputs, run_cli

    inputs = face_and_noise_inputs(tmp_path / "in", "faces/000055.jpg")
    output = tmp_path / "out"
    run_cli(["fit", "--no-progress", "--no-visuals", "--input", str(inputs), "--output", str(output),
             "--topology-obj", str(shared_data("hifi3dpp/head_teaser1.obj")), "stages.fit.stage2_steps=1",
             "stages.fit.stage3_steps=1", f"topology.cache_dir={tmp_path / 'cache'}"])
    rows = {r["id"]: r for r in read_manifest(str(output)).to_pylist()}
    assert (rows["noise"]["status"], rows["noise"]["error_code"]) == ("failed", "no_face")
    row = rows["000055"]
    assert row["status"] == "ok", row["error_message"]
    assert row["fit_profile"] == "open" and row["fit_landmark_error_px"] < 3.0
    assert row["fit_photometric_l1_stage3"] < row["fit_photometric_l1_stage1"]
    assert all(row[f"fit_seconds_{part}"] > 0 for part in ("preprocess", "stage1", "stage2", "stage3"))
    folder = Path(output) / Path(dict(row["outputs"])["uv"]["path"]).parent
    expected = {"input_data.pt", *(f"stage{k}_vis.png" for k in (1, 2, 3)), "stage2_uv.png", "stage3_uv.png",
                *(f"stage{k}_mesh_{p}.obj" for k in (1, 2, 3) for p in ("id", "exp")),
                *(f"stage{k}_coeffs.pt" for k in (1, 2, 3)), "stage2_mesh.mtl", "stage3_mesh.mtl"}
    assert expected <= {p.name for p in folder.iterdir()}
    assert Image.open(folder / "stage3_uv.png").size == (1024, 1024)
    coeffs = torch.load(folder / "stage3_coeffs.pt", weights_only=True)
    assert set(coeffs) == {"coeffs", "lm68", "latents_w", "latents_z"} and coeffs["lm68"].shape == (1, 68, 2)
    assert load_input_data(str(folder / "input_data.pt")).image.shape == (224, 224, 3)


def test_preflight_names_missing_files(tmp_path):
    from pipeline.config import load_config, stage_settings
    from stages.errors import ConfigError
    from stages.fit import FitStage

    config = load_config("fit", overrides=(f"output={tmp_path}",))
    with pytest.raises(ConfigError, match="topology.obj"):
        FitStage.preflight(stage_settings(config, "fit"), config)
    config = load_config("fit", overrides=(f"output={tmp_path}", "stages.fit.profile=faithful",
                                           f"models.weights_dir={tmp_path}"))
    with pytest.raises(ConfigError, match="missing weights file texgan_model/texgan_ffhq_uv.pth"):
        FitStage.preflight(stage_settings(config, "fit"), config)


def test_parse_mask_from_face_parser_labels_and_missing_parser(tmp_path):
    from pipeline.config import load_config, stage_settings
    from stages.errors import ConfigError
    from stages.fit import FitStage, parse_mask
    from stages.networks.bisenet import EYE_LABELS, FACE_LABELS, MOUTH_LABEL

    labels = np.zeros((8, 8), np.uint8)
    labels[1:7, 1:7] = FACE_LABELS[0]
    labels[2, 2], labels[5, 4] = EYE_LABELS[0], MOUTH_LABEL
    mask = parse_mask(labels)
    assert mask.sum() == 36 - 2 and not mask[2, 2] and not mask[5, 4] and mask[2, 3]  # no erosion around the eye
    config = load_config("fit", overrides=(f"output={tmp_path}", f"topology.obj={tmp_path}/x.obj",
                                           "stages.fit.face_parser=/nonexistent/79999_iter.pth"))
    with pytest.raises(ConfigError, match="79999_iter.pth"):
        FitStage.preflight(stage_settings(config, "fit"), config)
