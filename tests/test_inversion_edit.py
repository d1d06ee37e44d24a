"""Inversion and edit stages: in-process on real photos / the real FFHQ-UV latent, then inside the Ray pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from pipeline.config import load_config, stage_settings
from pipeline.storage import open_storage
from stages.attribute import ATTRIBUTE_VECTOR
from stages.base import Sample, Stage, StageContext, StageResult
from stages.edit import EDIT_BAD_INPUT, EDIT_MISSING_INPUT, EditStage
from stages.errors import ConfigError, SampleError
from stages.inversion import INVERSION_NO_FACE, InversionStage
from tests import tiny_gan_weights as tiny
from tests.conftest import cli_env, gpu_reason, run_cli, shared_data
from tests.tiny_deepface_weights import write_random_deepface_weights

EXAMPLE = "ffhq_uv_example"
FACE_API_ORDER = ("Gender", "Glasses", "Yaw", "Pitch", "Baldness", "Beard", "Age", "Expression")


def example_attribute_vector() -> np.ndarray:
    """FFHQ-UV's 17-dim condition of sample 01223: DPR light + the 8 Face-API values."""
    light = np.load(shared_data(f"{EXAMPLE}/lights/01223.npy")).reshape(9)
    attrs = json.loads(shared_data(f"{EXAMPLE}/attributes/01223.json").read_text())
    return np.concatenate([light, [attrs[k] for k in FACE_API_ORDER]]).astype(np.float32)


class FixedAttributeStage(Stage):
    """Attribute-stage double for the pipeline test: FFHQ-UV's recorded attributes of sample 01223."""

    name = "attribute"
    manifest_fields = (pa.field(ATTRIBUTE_VECTOR, pa.list_(pa.float32())),)
    outputs = (ATTRIBUTE_VECTOR,)

    def process(self, sample: Sample) -> StageResult:
        return StageResult(fields={"attribute_vector": example_attribute_vector()})


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """The tiny pipeline's weights (w_dim 64, 1024 px) under FFHQ-UV's names, plus deepface's emotion model."""
    root = tmp_path_factory.mktemp("weights")
    tiny.write_weights_dir(root)
    write_random_deepface_weights(root / "deepface", ("emotion",))
    return root


@pytest.fixture(scope="module")
def weights_512(tmp_path_factory) -> Path:
    """A 512-wide tiny generator and flow, to edit the real FFHQ-UV latent."""
    root = tmp_path_factory.mktemp("weights512")
    tiny.write_tf_pickle(root / tiny.TF_PICKLE_FILE, tiny.tiny_generator(seed=7, w_dim=512))
    tiny.write_styleflow(root / tiny.STYLEFLOW_FILE, tiny.tiny_flow(seed=8, dim=512, hidden=(32, 32)))
    write_random_deepface_weights(root / "deepface", ("emotion",))
    return root


def make_stage(cls: type[Stage], weights: Path | str, out: Path, *overrides: str) -> Stage:
    config = load_config("tiny", overrides=(f"output={out}", f"models.weights_dir={weights}", *overrides))
    context = StageContext(storage=open_storage(str(out)), config=config, stage_name=cls.name)
    stage = cls(stage_settings(config, cls.name), context)
    cls.preflight(stage.settings, config)
    stage.setup()
    return stage


def sample(sample_id: str, uri: str = "", **fields) -> Sample:
    return Sample(id=sample_id, uri=uri, shard=0, index=0, fields=dict(fields))


def read_png(out: Path, record) -> np.ndarray:
    return np.array(Image.open(out / record.path).convert("RGB"))


def noise_image(path: Path) -> str:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 240, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize("cls,missing", [(InversionStage, "e4e_model/e4e_ffhq_encode.pt"),
                                         (EditStage, "stylegan_model/stylegan2-ffhq-config-f.pkl")])
def test_preflight_names_the_missing_weights_file(tmp_path, cls, missing):
    config = load_config("tiny", overrides=(f"output={tmp_path}/o", f"models.weights_dir={tmp_path}"))
    with pytest.raises(ConfigError, match=rf"{missing}.*README section 'Weights'"):
        cls.preflight(stage_settings(config, cls.name), config)
    config = load_config("tiny", overrides=(f"output={tmp_path}/o",))
    with pytest.raises(ConfigError, match="models.weights_dir"):
        cls.preflight(stage_settings(config, cls.name), config)


def test_edit_preflight_needs_the_smile_direction(tmp_path, weights_512):
    config = load_config("tiny", overrides=(f"output={tmp_path}/o", f"models.weights_dir={weights_512}"))
    with pytest.raises(ConfigError, match="expression_direction.pt.*README section 'Weights'"):
        EditStage.preflight(stage_settings(config, "edit"), config)


def test_inversion_on_real_photos(tmp_path, tiny_weights):
    from stages.networks.e4e import load_e4e
    from stages.networks.stylegan2 import to_uint8

    out = tmp_path / "out"
    stage = make_stage(InversionStage, tiny_weights, out, "stages.inversion.write_aligned=true")
    samples = [sample("e4e", str(shared_data("faces/e4e_input.jpg"))), sample("noise", noise_image(tmp_path / "n.png")),
               sample("ffhq", str(shared_data(f"{EXAMPLE}/images/01223.png")))]
    results = stage.process_batch(samples)
    assert isinstance(results[1], SampleError) and results[1].code == "no_face"
    model = load_e4e(str(tiny_weights / tiny.E4E_FILE))
    for s, result in zip(samples[::2], results[::2]):
        assert isinstance(result, StageResult), result
        latent = result.fields["inversion_latent"]
        assert latent.shape == (18 * 64,) and latent.dtype == np.float32
        aligned = read_png(out, s.outputs["aligned"])
        inversion = read_png(out, s.outputs["inversion"])
        assert aligned.shape == (256, 256, 3) and inversion.shape == (1024, 1024, 3)
        x = torch.from_numpy(aligned).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.no_grad():
            expected = model.encode(x)
            decoded = to_uint8(model.decoder.synthesis(expected), rounding="e4e")[0]
        assert np.abs(latent.reshape(18, 64) - expected[0].numpy()).max() < 1e-4
        assert np.abs(inversion.astype(int) - decoded.astype(int)).max() <= 1
        assert result.fields["inversion_quad"].shape == (8,)
    assert not np.allclose(results[0].fields["inversion_latent"], results[2].fields["inversion_latent"])


def test_faceless_inversion_is_rejected_and_a_real_inversion_is_kept(tmp_path, tiny_weights):
    out = tmp_path / "out"
    stage = make_stage(InversionStage, tiny_weights, out, "stages.inversion.reject_faceless_inversion=true")
    photo = sample("ffhq", str(shared_data(f"{EXAMPLE}/images/01223.png")))
    [result] = stage.process_batch([photo])
    # The tiny random decoder draws no face, so FFHQ-UV's check drops the sample.
    assert isinstance(result, SampleError) and result.code == INVERSION_NO_FACE
    assert "inversion" not in photo.outputs
    # The same check keeps FFHQ-UV's real inversion of this photo.
    real = np.asarray(Image.open(shared_data(f"{EXAMPLE}/inversions/01223.png")).convert("RGB"))
    kept = stage._finish(photo, type("Face", (), {"image": real[::4, ::4], "quad": np.zeros((4, 2))})(),
                         np.zeros(18 * 64, np.float32), real)
    assert isinstance(kept, StageResult) and "inversion" in photo.outputs


def _real_latent() -> np.ndarray:
    latent = torch.load(shared_data(f"{EXAMPLE}/latents/01223.pt"), map_location="cpu", weights_only=True)
    return latent.detach().reshape(-1).numpy()


def test_edit_on_the_real_ffhq_uv_latent(tmp_path, weights_512):
    from stages.networks.stylegan2 import ffhq_uv_noise, load_generator, to_uint8

    out = tmp_path / "out"
    smile = shared_data("directions/smile.pt")
    stage = make_stage(EditStage, weights_512, out, f"stages.edit.smile_direction={smile}")
    s = sample("01223", inversion_latent=_real_latent(), attribute_vector=example_attribute_vector())
    [result] = stage.process_batch([s])
    assert isinstance(result, StageResult), result
    fields = result.fields
    base = [1.0] + [0.0] * 8 + [0.0, 0.0, None, 0.0, 1.0, 0.0, 23.0, 0.0]  # FFHQ-UV's front vector, yaw per view
    for view, yaw in (("front", 0.0), ("right", -30.0), ("left", 30.0)):
        expected = np.array([yaw if v is None else v for v in base], dtype=np.float32)
        assert np.allclose(fields[f"edit_attribute_{view}"], expected), view
        assert fields[f"edit_latent_{view}"].shape == (18 * 512,)
        assert read_png(out, s.outputs[f"view_{view}"]).shape == (1024, 1024, 3)
    front = fields["edit_latent_front"].reshape(18, 512)
    for view in ("left", "right"):
        turned = fields[f"edit_latent_{view}"].reshape(18, 512)
        assert np.array_equal(turned[4:], front[4:]) and np.abs(turned[:4] - front[:4]).max() > 1e-4
    assert not np.allclose(front, _real_latent().reshape(18, 512))
    assert 0 <= fields["edit_expression_steps"] <= 5 and isinstance(fields["edit_expression_happy"], bool)
    generator = load_generator(str(weights_512 / tiny.TF_PICKLE_FILE))
    generator.set_noise(ffhq_uv_noise(1024))
    with torch.no_grad():
        rendered = to_uint8(generator.synthesis(torch.from_numpy(front)[None]), rounding="tf")[0]
    assert np.abs(rendered.astype(int) - read_png(out, s.outputs["view_front"]).astype(int)).max() <= 1


def test_edit_follows_ffhq_uv_sequence(tmp_path, weights_512):
    from stages.networks.styleflow import FlowEditor, load_styleflow

    smile = shared_data("directions/smile.pt")
    stage = make_stage(EditStage, weights_512, tmp_path / "out", f"stages.edit.smile_direction={smile}",
                       "stages.edit.expression_walk=false", "stages.edit.write_views=false")
    attrs = example_attribute_vector()
    [result] = stage.process_batch([sample("01223", inversion_latent=_real_latent(), attribute_vector=attrs)])
    editor = FlowEditor(load_styleflow(str(weights_512 / tiny.STYLEFLOW_FILE)))
    state = editor.start(torch.from_numpy(_real_latent()).reshape(1, 18, 512), torch.from_numpy(attrs)[None])
    state = editor.edit(state, "Light", torch.tensor([1.0] + [0.0] * 8))
    for name, value in (("Glasses", 0.0), ("Yaw", 0.0), ("Pitch", 0.0), ("Baldness", 1.0)):
        state = editor.edit(state, name, torch.tensor([value]))
    direction = torch.load(smile, weights_only=True).reshape(1, 1, 512)
    expected = state.w + (-2.0 * 0.65) * direction
    assert np.abs(result.fields["edit_latent_front"].reshape(18, 512) - expected[0].numpy()).max() < 1e-3
    assert result.fields["edit_expression_steps"] == 0 and result.fields["edit_expression_happy"] is None


def test_edit_input_errors(tmp_path, weights_512):
    smile = shared_data("directions/smile.pt")
    stage = make_stage(EditStage, weights_512, tmp_path / "out", f"stages.edit.smile_direction={smile}",
                       "stages.edit.expression_walk=false")
    results = stage.process_batch([
        sample("none"),
        sample("short", inversion_latent=np.zeros(512, np.float32), attribute_vector=np.zeros(17, np.float32)),
        sample("nan", inversion_latent=np.full(18 * 512, np.nan, np.float32), attribute_vector=np.zeros(17)),
    ])
    assert [r.code for r in results] == [EDIT_MISSING_INPUT, EDIT_BAD_INPUT, EDIT_BAD_INPUT]


def test_inversion_and_edit_in_the_ray_pipeline(tmp_path, tiny_weights):
    from pipeline.manifest import read_manifest

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.open(shared_data("faces/e4e_input.jpg")).save(inputs / "e4e.png")
    Image.open(shared_data(f"{EXAMPLE}/images/01223.png")).resize((512, 512)).save(inputs / "ffhq.png")
    noise_image(inputs / "noise.png")
    output = tmp_path / "out"
    run_cli(["run", "--profile", "tiny", "--no-progress", "--input", str(inputs), "--output", str(output),
             "stages.enabled=[inversion,attribute,edit]", f"models.weights_dir={tiny_weights}",
             "stages.edit.batch_size=2", "stage_classes.attribute=tests.test_inversion_edit:FixedAttributeStage"],
            cli_env())
    rows = {r["id"]: r for r in read_manifest(str(output)).to_pylist()}
    assert set(rows) == {"e4e", "ffhq", "noise"}
    assert (rows["noise"]["status"], rows["noise"]["failed_stage"], rows["noise"]["error_code"]) == \
        ("failed", "inversion", "no_face")
    for sample_id in ("e4e", "ffhq"):
        row = rows[sample_id]
        assert row["status"] == "ok", row["error_message"]
        assert len(row["inversion_latent"]) == 18 * 64 and len(row["inversion_quad"]) == 8
        outputs = dict(row["outputs"])
        assert {"inversion", "view_front", "view_left", "view_right"} <= set(outputs)
        for name in ("inversion", "view_front", "view_left", "view_right"):
            assert (output / outputs[name]["path"]).stat().st_size == outputs[name]["bytes"]
        for view, yaw in (("front", 0.0), ("right", -30.0), ("left", 30.0)):
            assert len(row[f"edit_latent_{view}"]) == 18 * 64
            assert row[f"edit_attribute_{view}"][11] == yaw and row[f"edit_attribute_{view}"][:9] == [1.0] + [0.0] * 8
        front = np.array(row["edit_latent_front"]).reshape(18, 64)
        left = np.array(row["edit_latent_left"]).reshape(18, 64)
        assert np.array_equal(front[4:], left[4:])
        assert row["stage_seconds"]["inversion"] is not None and row["stage_seconds"]["edit"] is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason=gpu_reason("the GAN stages on CUDA"))
def test_gpu_fp16_paths_match_cpu(tmp_path, tiny_weights, weights_512):
    photo = str(shared_data(f"{EXAMPLE}/images/01223.png"))
    latents = []
    for device in ("cpu", "cuda"):
        stage = make_stage(InversionStage, tiny_weights, tmp_path / device, f"models.device={device}",
                           f"models.fp16={device == 'cuda'}")
        [result] = stage.process_batch([sample("ffhq", photo)])
        latents.append(result.fields["inversion_latent"])
    assert np.abs(latents[0] - latents[1]).max() < 5e-2
    smile = shared_data("directions/smile.pt")
    fronts = []
    for device in ("cpu", "cuda"):
        stage = make_stage(EditStage, weights_512, tmp_path / f"e{device}", f"models.device={device}",
                           f"models.fp16={device == 'cuda'}", f"stages.edit.smile_direction={smile}",
                           "stages.edit.expression_walk=false")
        [result] = stage.process_batch([sample("01223", inversion_latent=_real_latent(),
                                               attribute_vector=example_attribute_vector())])
        fronts.append(result.fields["edit_latent_front"])
    assert np.abs(fronts[0] - fronts[1]).max() < 1e-2
