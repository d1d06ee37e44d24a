"""Rebuilding from FFHQ-UV's released latents: the ``latents`` input format, the render stage, the
``from-latents`` profile.

The real released sample (``../shared/data/face_latents/000/01223/``) is listed, read through the restricted
loader, planned and rendered by a 512-wide tiny generator in FFHQ-UV's TF pickle format (the real config-f
weights are not available); then the whole ``from-latents`` chain runs in a local Ray run on latents of the tiny
pipeline's shape (w_dim 64), in the released layout, with a generator that draws a face (the geometry stages
need one).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import load_config, stage_settings
from pipeline.inputs import list_inputs, make_plan
from pipeline.storage import open_storage
from stages.base import Sample, StageContext
from stages.errors import ConfigError, SampleError
from stages.latents import LATENT_BAD_SHAPE, LATENT_UNREADABLE, read_view_latent, write_view_latent
from stages.networks.stylegan2 import ffhq_uv_noise, load_generator, to_uint8
from stages.render import RENDER_MISSING_LATENT, RenderStage
from stages.views import VIEW_NAMES
from tests import tiny_gan_weights as tiny
from tests.conftest import cli_env, run_cli, shared_data
from tests.face_drawing_gan import draw_fixed_face_

YAW = {"front": 0.0, "left": 30.0, "right": -30.0}  # FFHQ-UV's view names (pipeline.md 2.3)
YAW_INDEX = 11


@pytest.fixture(scope="module")
def released() -> Path:
    return shared_data("face_latents")


@pytest.fixture(scope="module")
def weights_512(tmp_path_factory) -> Path:
    """A generator of the real latents' width (512) in FFHQ-UV's TF pickle format (1024 px, few channels)."""
    root = tmp_path_factory.mktemp("weights512")
    tiny.write_tf_pickle(root / tiny.TF_PICKLE_FILE, tiny.tiny_generator(seed=11, w_dim=512))
    return root


def make_render(weights: Path, out: Path, *overrides: str) -> RenderStage:
    config = load_config("from-latents", overrides=(f"output={out}", f"models.weights_dir={weights}",
                                                    "models.device=cpu", *overrides))
    stage = RenderStage(stage_settings(config, "render"), StageContext(open_storage(str(out)), config, "render"))
    RenderStage.preflight(stage.settings, config)
    stage.setup()
    return stage


def test_real_released_latents_are_listed_read_and_planned(released, tmp_path):
    pairs = list_inputs(str(released), "latents", [], open_storage(str(tmp_path)))
    assert pairs["id"].to_pylist() == ["01223"]
    folder = Path(pairs["uri"][0].as_py())
    assert folder.resolve() == (released / "000" / "01223").resolve()
    plan = make_plan(pairs, shard_size=1000)
    assert plan.num_samples == 1 and plan.num_shards == 1
    for view in VIEW_NAMES:
        path = folder / f"01223_{view}_latent.pt"
        latent = read_view_latent(path.read_bytes(), str(path))
        assert latent.latent.shape == (18, 512) and latent.latent.dtype == np.float32
        assert latent.attribute.shape == (17,)
        # FFHQ-UV's normalised condition: even light (DC 1), no glasses, bald, neutral; only the yaw differs.
        assert latent.attribute[0] == 1.0 and latent.attribute[YAW_INDEX] == YAW[view]
        assert latent.attribute[13] == 1.0 and latent.attribute[16] == 0.0


def test_render_draws_the_real_latents_as_gen_face_from_latent(released, weights_512, tmp_path):
    """Each view = G.synthesis(w) with RandomState(0) noise and TF rounding, in a batch with another sample."""
    stage = make_render(weights_512, tmp_path / "out")
    folder = str(released / "000" / "01223")
    other = _write_released(tmp_path / "other", ["00002"], 512) / "000" / "00002"
    samples = [Sample(id="01223", uri=folder, shard=0, index=0), Sample(id="00002", uri=str(other), shard=0, index=1)]
    results = stage.process_batch(samples)
    assert all(not isinstance(r, SampleError) for r in results), results
    assert results[0].fields["render_layout"] == "released"
    reference = load_generator(str(weights_512 / tiny.TF_PICKLE_FILE))
    reference.set_noise(ffhq_uv_noise(reference.config.resolution, 0))
    for view in VIEW_NAMES:
        latent = read_view_latent((Path(folder) / f"01223_{view}_latent.pt").read_bytes(), view)
        with torch.no_grad():  # alone, not batched
            expected = to_uint8(reference.synthesis(torch.from_numpy(latent.latent)[None]), rounding="tf")[0]
        drawn = np.asarray(Image.open(tmp_path / "out" / samples[0].outputs[f"view_{view}"].path))
        difference = np.abs(drawn.astype(int) - expected)
        # The batched grouped convolution sums in another order: a pixel may round the other way.
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3, view
        np.testing.assert_array_equal(results[0].fields[f"render_attribute_{view}"], latent.attribute)


def test_bad_latent_files_fail_their_sample_only(weights_512, tmp_path):
    good, bad_shape, not_torch, missing = (tmp_path / "in" / name for name in ("a", "b", "c", "d"))
    for folder in (good, bad_shape, not_torch, missing):
        folder.mkdir(parents=True)
    for view in VIEW_NAMES:
        (good / f"a_{view}_latent.pt").write_bytes(write_view_latent(np.zeros((18, 512)), np.zeros(17)))
        (bad_shape / f"b_{view}_latent.pt").write_bytes(write_view_latent(np.zeros((18, 64)), np.zeros(17)))
        (not_torch / f"c_{view}_latent.pt").write_bytes(b"not a torch file")
    (missing / "d_front_latent.pt").write_bytes(write_view_latent(np.zeros((18, 512)), np.zeros(17)))
    stage = make_render(weights_512, tmp_path / "out")
    samples = [Sample(id=f.name, uri=str(f), shard=0, index=i) for i, f in enumerate((good, bad_shape, not_torch,
                                                                                        missing))]
    results = stage.process_batch(samples)
    assert not isinstance(results[0], SampleError)
    assert [r.code for r in results[1:]] == [LATENT_BAD_SHAPE, LATENT_UNREADABLE, RENDER_MISSING_LATENT]
    assert set(samples[0].outputs) == {f"view_{v}" for v in VIEW_NAMES} and not samples[1].outputs


def test_flat_dataset_project_latent_becomes_the_inversion(weights_512, tmp_path):
    """``dataset_project/latents/<id>.pt`` (a bare W+ tensor) -> ``inversion_latent`` and its image."""
    flat = tmp_path / "latents"
    flat.mkdir()
    w = torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    torch.save(w, buffer)
    (flat / "00042.pt").write_bytes(buffer.getvalue())
    pairs = list_inputs(str(flat), "latents", [], open_storage(str(tmp_path / "out")))
    assert pairs.select(["id", "uri"]).to_pylist() == [{"id": "00042", "uri": str(flat / "00042.pt")}]
    stage = make_render(weights_512, tmp_path / "out")
    sample = Sample(id="00042", uri=str(flat / "00042.pt"), shard=0, index=0)
    [result] = stage.process_batch([sample])
    assert result.fields["render_layout"] == "flat"
    np.testing.assert_array_equal(result.fields["inversion_latent"], w.numpy().reshape(-1))
    assert set(sample.outputs) == {"inversion"}


def test_preflight_names_the_missing_generator(tmp_path):
    config = load_config("from-latents", overrides=(f"models.weights_dir={tmp_path}",))
    with pytest.raises(ConfigError, match="stylegan2-ffhq-config-f.pkl"):
        RenderStage.preflight(stage_settings(config, "render"), config)


def _write_released(root: Path, ids: list[str], w_dim: int, seed: int = 0) -> Path:
    """Latents of the tiny network's shape in the released layout ``face-latents/<clip>/<id>/``."""
    rng = np.random.default_rng(seed)
    for sample_id in ids:
        folder = root / "face-latents" / "000" / sample_id
        folder.mkdir(parents=True)
        base = rng.standard_normal((18, w_dim)).astype(np.float32)
        for view in VIEW_NAMES:
            attribute = np.zeros(17, np.float32)
            attribute[0], attribute[13], attribute[15], attribute[YAW_INDEX] = 1.0, 1.0, 30.0, YAW[view]
            turned = base.copy()
            turned[:4] += 0.1 * YAW[view] / 30.0  # StyleFlow's yaw edit changes rows 0-3 only
            (folder / f"{sample_id}_{view}_latent.pt").write_bytes(write_view_latent(turned, attribute))
    return root / "face-latents"


def test_from_latents_profile_end_to_end(tmp_path):
    """render -> relight -> unwrap -> complete in one local Ray run; every sample ends with a UV map."""
    face = shared_data("ffhq_uv_example/edit/01223_front.png")
    topology = shared_data("hifi3dpp/head_teaser1.obj")
    weights = tmp_path / "weights"
    generator = tiny.tiny_generator(seed=0)
    draw_fixed_face_(generator, face_path=face)
    tiny.write_tf_pickle(weights / tiny.TF_PICKLE_FILE, generator)
    source = _write_released(tmp_path, ["00001", "00002"], tiny.TINY_W_DIM)
    output = tmp_path / "out"
    overrides = [f"models.weights_dir={weights}", "models.device=cpu", "shard_size=2", "ray.num_cpus=2",
                 *(f"stages.{name}.num_gpus=0" for name in ("render", "relight")),
                 "stages.render.noise_seed=null",  # the drawn face lives in the checkpoint's noise buffers
                 "stages.relight.method=analytic", "stages.complete.preview=false",
                 f"topology.obj={topology}", f"topology.cache_dir={tmp_path / 'cache'}"]
    result = run_cli(["run", "--profile", "from-latents", "--no-progress", "--no-visuals", "--input", str(source),
                      "--output", str(output), *overrides], cli_env(), timeout=900)
    assert "2 ok, 0 failed" in result.stdout, result.stdout
    from pipeline.manifest import read_manifest

    rows = {row["id"]: row for row in read_manifest(str(output)).to_pylist()}
    assert sorted(rows) == ["00001", "00002"]
    for sample_id, row in rows.items():
        outputs = dict(row["outputs"])
        assert {"uv", *(f"view_{v}" for v in VIEW_NAMES), *(f"uv_{v}" for v in VIEW_NAMES)} <= set(outputs)
        assert row["render_layout"] == "released" and row["render_attribute_left"][YAW_INDEX] == 30.0
        assert row["source_uri"] == str(source / "000" / sample_id)
        uv = np.asarray(Image.open(output / outputs["uv"]["path"]))
        assert uv.shape == (1024, 1024, 3) and uv.std() > 10
        for name in ("render", "relight", "unwrap", "complete"):
            assert row["stage_seconds"][name] >= 0
