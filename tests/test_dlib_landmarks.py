"""dlib's 68-point landmark backend: parity with mediapipe on real photos, FFHQ alignment, and the three stages
that use it (inversion and attribute alignment, unwrap fitting). dlib is optional: those tests skip without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config, stage_settings
from pipeline.storage import open_storage
from stages.base import Sample, StageContext, StageResult
from stages.errors import ConfigError
from stages.face import dlib68
from stages.face.align import align_face, ffhq_quad
from stages.face.detectors import ffhq_points
from stages.face.landmarks import DLIB68, FaceLandmarker
from stages.geometry.landmark_schemes import IBUG68_SCHEME, MEDIAPIPE_TO_IBUG68, scheme_of
from stages.imageio import decode_image
from tests.conftest import dlib_reason

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
FACES = sorted((DATA / "faces").glob("*.jpg"))
HEAD_OBJ = DATA / "hifi3dpp" / "head_teaser1.obj"
EDIT = DATA / "ffhq_uv_example" / "edit"
VIEWS = ("front", "left", "right")

HAVE_DLIB = dlib68.dlib_available() and dlib68.packaged_predictor() is not None
NO_DLIB = dlib_reason(f"it is optional, not installed ({dlib68.INSTALL_HINT})")
needs_dlib = pytest.mark.skipif(not HAVE_DLIB, reason=NO_DLIB)
needs_faces = pytest.mark.skipif(not FACES, reason=f"real face photos not found under {DATA / 'faces'}")

# Parity tolerances, as fractions of the distance between the eye centres (55-250 px on these photos).
EYE_TOLERANCE = 0.06  # mean over the 12 eye points
MOUTH_TOLERANCE = 0.08  # mouth corners
FEATURE_TOLERANCE = 0.10  # mean over every non-jaw point


def read(path: Path) -> np.ndarray:
    return decode_image(path.read_bytes(), source=str(path))


def photos() -> list[tuple[str, np.ndarray]]:
    from skimage import data

    return [(p.stem, read(p)) for p in FACES] + [("astronaut", data.astronaut())]


@pytest.fixture(scope="module")
def mediapipe():
    with FaceLandmarker(max_faces=4) as detector:
        yield detector


@pytest.fixture(scope="module")
def dlib_detector():
    if not HAVE_DLIB:
        pytest.skip(dlib_reason(f"it is optional, not installed ({dlib68.INSTALL_HINT})"))
    with dlib68.Dlib68Landmarker(str(dlib68.packaged_predictor())) as detector:
        yield detector


# ---------------------------------------------------------------- without dlib

def test_correspondence_table_is_a_68_point_layout():
    assert len(MEDIAPIPE_TO_IBUG68) == 68 and len(set(MEDIAPIPE_TO_IBUG68)) == 68
    assert all(0 <= i < 468 for i in MEDIAPIPE_TO_IBUG68)
    assert scheme_of(68) is IBUG68_SCHEME and IBUG68_SCHEME.name == DLIB68
    # The FFHQ points of the mapped mediapipe points come from the same mediapipe eyelids and mouth corners.
    assert MEDIAPIPE_TO_IBUG68[48] == 61 and MEDIAPIPE_TO_IBUG68[54] == 291
    assert MEDIAPIPE_TO_IBUG68[36] == 33 and MEDIAPIPE_TO_IBUG68[45] == 263


def test_correspondence_table_is_mirror_symmetric():
    import json

    from stages.geometry.mediapipe468 import DATA_FILE

    # mediapipe's landmark mirror map from the committed symmetric template (x -> -x).
    template = np.asarray(json.loads(DATA_FILE.read_text())["vertices"])
    flipped = template * np.array([-1.0, 1.0, 1.0])
    mirror = np.linalg.norm(template[None, :, :] - flipped[:, None, :], axis=2).argmin(axis=1)
    ibug_pairs = ([(k, 16 - k) for k in range(8)] + [(17 + k, 26 - k) for k in range(5)] + [(31, 35), (32, 34)]
                  + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
                  + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)])
    for a, b in ibug_pairs:
        assert mirror[MEDIAPIPE_TO_IBUG68[a]] == MEDIAPIPE_TO_IBUG68[b], (a, b)
    for k in (8, 27, 28, 29, 30, 33, 51, 57, 62, 66):  # the midline
        assert mirror[MEDIAPIPE_TO_IBUG68[k]] == MEDIAPIPE_TO_IBUG68[k], k


def test_ffhq_points_follow_ffhqs_68_point_recipe():
    points = np.random.default_rng(0).uniform(0, 500, (68, 2)).astype(np.float32)
    five = ffhq_points(points)
    assert np.allclose(five[0], points[36:42].mean(axis=0), atol=1e-3)
    assert np.allclose(five[1], points[42:48].mean(axis=0), atol=1e-3)
    assert np.allclose(five[2], points[30]) and np.allclose(five[3], points[48]) and np.allclose(five[4], points[54])
    with pytest.raises(ValueError, match="468 or 68"):
        ffhq_points(points[:60])


@pytest.mark.parametrize("stage_name", ["inversion", "attribute", "unwrap"])
def test_dlib_without_its_model_file_is_a_config_error(tmp_path, stage_name):
    from stages import STAGES

    missing = tmp_path / "nowhere" / "shape_predictor_68_face_landmarks.dat"
    config = load_config("photo", overrides=(f"output={tmp_path / 'run'}", f"models.weights_dir={tmp_path}",
                                             f"stages.{stage_name}.landmarks=dlib",
                                             f"stages.{stage_name}.dlib_predictor={missing}"))
    # With dlib installed the missing file is named; without it, the package to install is.
    expected = str(missing) if dlib68.dlib_available() else "pip install dlib"
    with pytest.raises(ConfigError, match=rf"stages\.{stage_name}\.dlib_predictor.*README section 'Weights'") as error:
        STAGES.stage_class(stage_name).preflight(stage_settings(config, stage_name), config)
    assert expected in str(error.value)


def test_unknown_backend_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"stages.inversion.landmarks: Invalid value 'openface'.*mediapipe"):
        load_config("photo", overrides=(f"output={tmp_path}", "stages.inversion.landmarks=openface"))


# ---------------------------------------------------------------- backend parity on real photos

@needs_dlib
@needs_faces
def test_dlib_points_match_the_mapped_mediapipe_points(mediapipe, dlib_detector):
    jawless = [k for k in range(68) if k not in dlib68.JAW]
    for name, image in photos():
        # Largest face: dlib's HOG detector also fires on a small patch of the astronaut's suit.
        face = dlib_detector.detect_one(image)
        assert face.points.shape == (68, 2) and face.scheme == DLIB68
        x0, y0, x1, y1 = face.box
        assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
        mapped = mediapipe.detect_one(image).points[list(MEDIAPIPE_TO_IBUG68), :2]
        unit = float(np.linalg.norm(ffhq_points(face.points)[1] - ffhq_points(face.points)[0]))
        error = np.linalg.norm(face.points - mapped, axis=1) / unit
        eyes = error[list(dlib68.EYE_IMAGE_LEFT + dlib68.EYE_IMAGE_RIGHT)].mean()
        mouth = error[[dlib68.MOUTH_CORNER_IMAGE_LEFT, dlib68.MOUTH_CORNER_IMAGE_RIGHT]].max()
        assert eyes < EYE_TOLERANCE, (name, eyes)
        assert mouth < MOUTH_TOLERANCE, (name, mouth)
        assert error[jawless].mean() < FEATURE_TOLERANCE, (name, error[jawless].mean())


@needs_dlib
@needs_faces
def test_ffhq_alignment_agrees_between_backends(mediapipe, dlib_detector):
    size = 256
    for name, image in photos():
        by_dlib = align_face(image, ffhq_points(dlib_detector.detect_one(image).points), size)
        by_mediapipe = align_face(image, ffhq_points(mediapipe.detect_one(image).points), size)
        # The same eyes land at the same place in both aligned images (FFHQ puts them near rows 0.4 * size).
        eyes = ffhq_points(mediapipe.detect_one(image).points)[:2]
        a, b = by_dlib.map_points(eyes), by_mediapipe.map_points(eyes)
        assert np.abs(a - b).max() < 0.03 * size, (name, a, b)
        assert np.all(np.abs(a[:, 1] / size - 0.4) < 0.08), (name, a)
        # ... and the aligned squares are nearly the same.
        side = np.linalg.norm(by_mediapipe.quad[3] - by_mediapipe.quad[0])
        assert np.abs(by_dlib.quad - by_mediapipe.quad).max() < 0.05 * side, name


@needs_dlib
def test_several_faces_and_no_face(dlib_detector):
    from skimage import data

    from stages.errors import SampleError

    face = data.astronaut()[:300, 80:380]
    canvas = np.full((300, 700, 3), 255, dtype=np.uint8)
    canvas[:, :300] = face
    canvas[75:225, 450:600] = face[::2, ::2]
    faces = dlib_detector.detect(canvas)
    assert len(faces) == 2 and faces[0].area > faces[1].area
    with pytest.raises(SampleError) as error:
        dlib_detector.detect_one(canvas, policy="reject")
    assert error.value.code == "multiple_faces"
    assert dlib_detector.detect_one(canvas).box[2] < 300  # largest: the full-size face on the left
    with pytest.raises(SampleError) as error:
        dlib_detector.detect_one(np.full((200, 200, 3), 127, dtype=np.uint8))
    assert error.value.code == "no_face"


# ---------------------------------------------------------------- the stages with landmarks=dlib

@needs_dlib
@needs_faces
def test_inversion_aligns_with_dlib(tmp_path, dlib_detector):
    from stages.inversion import InversionStage
    from tests import tiny_gan_weights as tiny

    weights = tmp_path / "weights"
    tiny.write_weights_dir(weights)
    path = DATA / "faces" / "e4e_input.jpg"
    results = {}
    for backend in ("mediapipe", "dlib"):
        out = tmp_path / backend
        config = load_config("tiny", overrides=(f"output={out}", f"models.weights_dir={weights}",
                                                f"stages.inversion.landmarks={backend}",
                                                "stages.inversion.write_aligned=true"))
        stage = InversionStage(stage_settings(config, "inversion"),
                               StageContext(storage=open_storage(str(out)), config=config, stage_name="inversion"))
        InversionStage.preflight(stage.settings, config)
        stage.setup()
        sample = Sample(id="e4e", uri=str(path), shard=0, index=0)
        [result] = stage.process_batch([sample])
        assert isinstance(result, StageResult), result
        results[backend] = (result, stage.context.read_image(sample.outputs["aligned"].path), stage)
    assert isinstance(results["dlib"][2].landmarker, dlib68.Dlib68Landmarker)
    image = read(path)
    expected = align_face(image, ffhq_points(dlib_detector.detect_one(image).points), 256)
    quad = results["dlib"][0].fields["inversion_quad"].reshape(4, 2)
    assert np.allclose(quad, expected.quad, atol=1e-3)
    assert np.abs(results["dlib"][1].astype(int) - expected.image.astype(int)).max() <= 1
    side = np.linalg.norm(quad[3] - quad[0])
    assert np.abs(quad - results["mediapipe"][0].fields["inversion_quad"].reshape(4, 2)).max() < 0.05 * side
    # FFHQ-UV's faceless-inversion check with dlib keeps FFHQ-UV's real inversion of a photo.
    real = read(DATA / "ffhq_uv_example" / "inversions" / "01223.png")
    assert results["dlib"][2].landmarker.detect(real)


@needs_dlib
@needs_faces
def test_attribute_aligns_the_photo_with_dlib(tmp_path, dlib_detector):
    from stages.attribute import AttributeStage

    out = tmp_path / "run"
    config = load_config("photo", overrides=(f"output={out}", "stages.attribute.landmarks=dlib",
                                             "stages.attribute.lighting=analytic",
                                             "stages.attribute.deepface=optional"))
    stage = AttributeStage(stage_settings(config, "attribute"),
                           StageContext(storage=open_storage(str(out)), config=config, stage_name="attribute"))
    AttributeStage.preflight(stage.settings, config)
    stage.setup()
    path = DATA / "faces" / "obama.jpg"
    sample = Sample(id="obama", uri=str(path), shard=0, index=0)
    result = stage.process(sample)
    assert isinstance(stage.aligner, dlib68.Dlib68Landmarker)
    image = read(path)
    five = ffhq_points(dlib_detector.detect_one(image).points)
    aligned = stage.context.read_image(sample.outputs["aligned"].path)
    expected = align_face(image, five, min(1024, int(round(ffhq_quad(five[0], five[1], five[3], five[4])[1]))))
    assert aligned.shape == expected.image.shape
    assert np.abs(aligned.astype(int) - expected.image.astype(int)).max() <= 1
    assert abs(result.fields["attribute_vector"][11]) < 15  # yaw of a frontal portrait, measured on the aligned face


@needs_dlib
def test_unwrap_fits_dlib_landmarks_on_ffhq_uv_views(tmp_path):
    if not HEAD_OBJ.exists() or not all((EDIT / f"01223_{v}.png").exists() for v in VIEWS):
        pytest.skip(f"HiFi3D++ head ({HEAD_OBJ}) or FFHQ-UV example views ({EDIT}) not found")
    from stages.unwrap import UnwrapStage

    out = tmp_path / "run"
    config = load_config("ffhq-uv", overrides=(
        f"output={out}", "models.device=cpu", "stages.unwrap.landmarks=dlib", "topology.name=hifi3dpp",
        f"topology.obj={HEAD_OBJ}", f"topology.cache_dir={tmp_path / 'cache'}"))
    stage = UnwrapStage(stage_settings(config, "unwrap"),
                        StageContext(storage=open_storage(str(out)), config=config, stage_name="unwrap"))
    UnwrapStage.preflight(stage.settings, config)
    stage.setup()
    assert stage.shape_model.scheme is IBUG68_SCHEME and stage.shape_model.landmark_template.shape == (68, 3)
    sample = Sample(id="01223", uri="01223.png", shard=0, index=0)
    for view in VIEWS:
        stage.context.write_image(sample, f"view_{view}", read(EDIT / f"01223_{view}.png"))
    fields = stage.process(sample).fields
    for view in VIEWS:
        assert fields[f"unwrap_landmark_error_{view}"] < 0.02, (view, fields[f"unwrap_landmark_error_px_{view}"])
        assert fields[f"unwrap_valid_ratio_{view}"] > 0.2, view
    assert fields["unwrap_yaw_left"] > 20 and fields["unwrap_yaw_right"] < -20 and abs(fields["unwrap_yaw_front"]) < 10
    masks = {v: stage.context.read_image(sample.outputs[f"uvmask_{v}"].path)[..., 0] > 0 for v in VIEWS}
    centre = stage.topology.masks()["center_face"] > 0.5
    assert np.logical_or.reduce(list(masks.values()))[centre].mean() >= 0.85
    cols = np.arange(1024)[None, :].repeat(1024, 0)
    assert cols[masks["left"]].mean() < cols[masks["right"]].mean()
