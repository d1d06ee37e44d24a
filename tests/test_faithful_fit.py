"""The faithful RGB-fitting profile end to end on tiny random-weight checkpoints in FFHQ-UV's formats
(``tests/tiny_fit_weights.py``): the three stages on a real photo, losses decreasing (texture GAN
``texgan_ffhq_uv.pth``), and ``ffhq-uv fit --profile faithful`` writing FFHQ-UV's output set (with eyeballs) through
the driver with the cropface630 GAN, whose paste and blends ``tests/test_cropface_texture.py`` checks in detail."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.conftest import shared_data
from tests.tiny_fit_weights import TEXGAN_RESOLUTION, TINY_DIMS, write_faithful_weights_dir

STEPS = (2, 2)  # FFHQ-UV's (100, 200) is the default


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    return write_faithful_weights_dir(tmp_path_factory.mktemp("faithful-weights"),
                                      shared_data("hifi3dpp/head_teaser1.obj"))


@pytest.fixture
def one_thread():
    """torch on one thread, as in a one-CPU Ray worker: many small ops on a shared 2-core machine run several
    times faster than with a thread pool competing for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_faithful_stages_lower_their_losses_on_a_real_photo(weights_dir, one_thread):
    from stages.face.landmarks import FaceLandmarker
    from stages.fitting.faithful_models import load_faithful_models
    from stages.fitting.faithful_photo import FaithfulFitter
    from stages.imageio import decode_image

    path = shared_data("faces/000055.jpg")
    photo = decode_image(path.read_bytes(), source=str(path))
    with FaceLandmarker(max_faces=2) as landmarker:
        points = landmarker.detect_one(photo).points
    models = load_faithful_models(weights_dir)
    result = FaithfulFitter(models, STEPS).fit(photo, points)
    for stage in (2, 3):
        report = result.reports[stage]
        assert report.losses["total"] < report.initial_losses["total"], (stage, report.losses, report.initial_losses)
        assert {"identity", "lpips", "latent", "reg_id", "reg_exp", "gamma", "landmark"} <= set(report.losses)
    # From the texture GAN's starting latent to the end of stage 3 (stage 1's uniform 3DMM albedo is no yardstick
    # for a tiny random GAN).
    assert result.reports[3].photometric_l1 < result.reports[2].initial_photometric_l1
    assert result.reports[3].landmark_error_px < 15.0  # the tiny Deep3D regresses a neutral, centred face
    state = result.states[3]
    assert state.coeffs.shape == (1, sum(TINY_DIMS) + 33) and state.latents_w.shape[0] == 1
    torch.testing.assert_close(models.texgan.z_to_w(state.latents_z), state.latents_w)
    out = result.stage_output(3, SimpleNamespace(uv_size=1024))  # the GAN's 64 px map, resized
    assert out.texture.shape == (1024, 1024, 3) and out.texture.dtype == np.uint8


def test_fit_command_faithful_profile_writes_ffhq_uv_outputs(weights_dir, tmp_path):
    """One driver run, with FFHQ-UV's cropface630 GAN (the default GAN goes through the same stage code)."""
    from PIL import Image

    from pipeline.manifest import read_manifest
    from stages.fitting.cropface_texture import MAP_HAIR_BOX
    from stages.geometry.hifi3dpp import load_hifi3dpp
    from stages.geometry.obj import read_obj
    from stages.texture.masks import FULL_COVERAGE, hair_weight
    from stages.texture.template import template_for
    from tests.conftest import face_and_noise_inputs, run_cli

    inputs = face_and_noise_inputs(tmp_path / "in", "faces/000007.jpg")
    output = tmp_path / "out"
    run_cli(["fit", "--no-progress", "--no-visuals", "--profile", "faithful", "--input", str(inputs),
             "--output", str(output), "--eyeballs", str(shared_data("eyeball")), f"models.weights_dir={weights_dir}",
             "stages.fit.stage2_steps=1", "stages.fit.stage3_steps=1", f"topology.cache_dir={tmp_path / 'cache'}",
             "stages.fit.texture_gan=cropface630"])
    rows = {r["id"]: r for r in read_manifest(str(output)).to_pylist()}
    assert (rows["noise"]["status"], rows["noise"]["error_code"]) == ("failed", "no_face")
    row = rows["000007"]
    assert row["status"] == "ok", row["error_message"]
    assert row["fit_profile"] == "faithful" and row["fit_loss_smooth"] is None
    assert all(row[f"fit_loss_{t}"] is not None for t in ("identity", "lpips", "colour", "landmark", "latent"))
    assert all(row[f"fit_seconds_{part}"] > 0 for part in ("preprocess", "stage1", "stage2", "stage3"))
    folder = Path(output) / Path(dict(row["outputs"])["uv"]["path"]).parent
    expected = {"input_data.pt", *(f"stage{k}_vis.png" for k in (1, 2, 3)), "stage2_uv.png", "stage3_uv.png",
                *(f"stage{k}_mesh_{p}.obj" for k in (1, 2, 3) for p in ("id", "exp")),
                *(f"stage{k}_coeffs.pt" for k in (1, 2, 3)), "stage2_mesh.mtl", "stage3_mesh.mtl",
                *(f"stage3_mesh_{p}_{s}_ball.obj" for p in ("id", "exp") for s in "LR"), "eye_ball_tex.png",
                "eye_ball_tex.mtl"}
    assert expected <= {p.name for p in folder.iterdir()}
    record = torch.load(folder / "stage3_coeffs.pt", weights_only=True)
    assert record["coeffs"].shape == (1, sum(TINY_DIMS) + 33) and record["lm68"].shape == (1, 68, 2)
    assert record["latents_w"].ndim == 3
    assert torch.load(folder / "stage1_coeffs.pt", weights_only=True)["latents_w"] is None
    uv = np.asarray(Image.open(folder / "stage3_uv.png").convert("RGB"), dtype=np.float32)
    assert uv.shape == (1024, 1024, 3) and TEXGAN_RESOLUTION < 1024  # pasted into the template and blended
    regions = load_hifi3dpp(None, str(weights_dir), str(tmp_path / "cache")).masks()
    hair = hair_weight(regions["hair"], MAP_HAIR_BOX, MAP_HAIR_BOX) >= FULL_COVERAGE
    template = template_for("hifi3dpp", regions, str(weights_dir))
    assert hair.sum() > 10_000 and np.abs(uv[hair] - template[hair]).max() <= 0.5  # the template's own hair
    id_mesh, exp_mesh = read_obj(folder / "stage3_mesh_id.obj"), read_obj(folder / "stage3_mesh_exp.obj")
    assert len(exp_mesh.vertices) == 20481 and exp_mesh.has_uvs and exp_mesh.mtllib == "stage3_mesh.mtl"
    assert not np.allclose(id_mesh.vertices, exp_mesh.vertices)  # the expression separates the two meshes
    assert read_obj(folder / "stage1_mesh_exp.obj").colors is not None  # stage 1: 3DMM albedo per vertex


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_faithful_render_is_the_same_on_nvdiffrast_and_the_cpu_rasteriser(weights_dir):
    from stages.fitting.faithful_models import load_faithful_models
    from stages.fitting.faithful_render import render_face

    models = load_faithful_models(weights_dir)
    coeffs = torch.zeros(1, models.face_model.coefficient_count)
    coeffs[0, -32] = 0.2  # yaw (angle = pitch, yaw, roll before gamma 27 and trans 3)
    parts = models.face_model.split(coeffs)
    uv = models.texgan.synthesize(models.texgan.z_to_w(models.texgan.initial_z()))
    cpu, gpu = (render_face(models.face_model, parts, uv, backend) for backend in ("cpu", "nvdiffrast"))
    assert (cpu.mask != gpu.mask).float().mean() < 0.01
    both = (cpu.mask * gpu.mask)[0, 0] > 0
    assert (cpu.image - gpu.image)[0].abs().sum(0)[both].mean() < 1e-2


def test_faithful_render_samples_nearest_texels_and_passes_gradients(weights_dir, one_thread):
    from stages.fitting.face_model import HiFi3DModel
    from stages.fitting.faithful_render import nearest_texels, raster_face, shade

    model = HiFi3DModel.from_mat(weights_dir / "topo_assets" / "hifi3dpp_model_info.mat")
    coeffs = torch.zeros(1, model.coefficient_count, requires_grad=True)
    uv = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    raster = raster_face(model, model.split(coeffs))
    out = shade(raster, uv)
    covered = out.mask[0, 0] > 0
    assert 5000 < int(covered.sum()) < 224 * 224 and (out.image[0][:, ~covered] == 0).all()
    # Under the initial light (gamma 0: DC 0.8 only) every pixel is its nearest texel x 0.8 * pi / sqrt(4 pi).
    pixels = out.image[0].permute(1, 2, 0).reshape(-1, 3)[raster.index]
    torch.testing.assert_close(pixels, nearest_texels(uv, raster.uv) * 0.8 * np.pi / np.sqrt(4 * np.pi))
    row, col = (raster.uv[0] * 16 / 512).long()
    assert torch.equal(nearest_texels(uv, raster.uv[:1])[0], uv[0, :, row, col])  # vtx_vt is (row, col)
    lm = out.landmarks[0].detach()
    assert ((lm > 0) & (lm < 224)).all()
    (out.image.sum() + out.landmarks.sum()).backward()
    grad = model.split(coeffs.grad)
    assert uv.grad.abs().sum() > 0  # the texels the face samples
    for name in ("id", "exp", "angle", "gamma", "trans"):
        assert getattr(grad, name).abs().sum() > 0, name


def test_preflight_names_a_missing_faithful_file_a_wrong_texture_gan_and_eyeball_template(weights_dir, tmp_path):
    import shutil

    from pipeline.config import load_config, stage_settings
    from stages.errors import ConfigError
    from stages.fit import FitStage

    partial = tmp_path / "weights"
    shutil.copytree(weights_dir, partial)
    (partial / "vgg_model" / "vgg16.pt").unlink()
    config = load_config("fit", overrides=(f"output={tmp_path / 'out'}", "stages.fit.profile=faithful",
                                           f"models.weights_dir={partial}"))
    with pytest.raises(ConfigError, match="missing weights file vgg_model/vgg16.pt"):
        FitStage.preflight(stage_settings(config, "fit"), config)
    (partial / "texgan_model" / "texgan_cropface630resize1024_ffhq_uv_interpolate.pth").unlink()
    config = load_config("fit", overrides=(f"output={tmp_path / 'out'}", "stages.fit.profile=faithful",
                                           f"models.weights_dir={partial}", "stages.fit.texture_gan=cropface630"))
    with pytest.raises(ConfigError, match="missing weights file texgan_model/texgan_cropface630resize1024_ffhq_uv_"):
        FitStage.preflight(stage_settings(config, "fit"), config)
    config = load_config("fit", overrides=(f"output={tmp_path / 'out'}", "stages.fit.texture_gan=cropface630"))
    with pytest.raises(ConfigError, match="needs the faithful profile"):
        FitStage.preflight(stage_settings(config, "fit"), config)
    with pytest.raises(ConfigError, match="texture_gan"):
        load_config("fit", overrides=(f"output={tmp_path / 'out'}", "stages.fit.texture_gan=cropface"))
    config = load_config("fit", overrides=(f"output={tmp_path / 'out'}", "stages.fit.profile=faithful",
                                           f"models.weights_dir={weights_dir}", f"stages.fit.eyeballs={tmp_path}"))
    with pytest.raises(ConfigError, match="eyeLeft_mesh_move.obj"):
        FitStage.preflight(stage_settings(config, "fit"), config)


def test_deep3d_point_buf_normals_equal_the_adjacency_sum():
    from stages.fitting.faithful_render import vertex_normals

    gen = torch.Generator().manual_seed(0)
    vertices = torch.randn(6, 3, generator=gen)
    triangles = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 4], [1, 2, 5]])
    table = [[t for t, tri in enumerate(triangles.tolist()) if v in tri] for v in range(6)]
    point_buf = torch.tensor([ids + [-1] * (8 - len(ids)) for ids in table])  # Deep3D's padded table
    torch.testing.assert_close(vertex_normals(vertices, triangles, point_buf), vertex_normals(vertices, triangles))
