"""Unwrapping views into UV: real FFHQ-UV views, a synthetic round trip, single photos, and the stage itself."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from stages.base import PHOTO, Sample, Stage, StageContext, StageResult
from stages.errors import SampleError
from stages.geometry.fitting import Fit, ShapeModel, ViewPose, focal_for
from stages.geometry.rasterize import interpolate, rasterize
from stages.geometry.topologies import load_topology
from stages.imageio import decode_image
from stages.unwrap import UnwrapSettings, ViewInput, match_mirror_to_seam, unwrap_sample, unwrap_view
from stages.views import FRONT, VIEW, view_key

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
HEAD_OBJ = DATA / "hifi3dpp" / "head_teaser1.obj"
TEXTURE = DATA / "hifi3dpp" / "tex_teaser1.png"
EDIT = DATA / "ffhq_uv_example" / "edit"
FACES = sorted((DATA / "faces").glob("*.jpg"))


def read(path: Path) -> np.ndarray:
    return decode_image(path.read_bytes(), source=str(path))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("topology-cache")


@pytest.fixture(scope="module")
def hifi(cache):
    if not HEAD_OBJ.exists():
        pytest.skip(f"HiFi3D++ head not found at {HEAD_OBJ}")
    topology = load_topology("hifi3dpp", obj_path=str(HEAD_OBJ), cache_dir=cache)
    return topology, ShapeModel(topology)


@pytest.fixture(scope="module")
def detector():
    from stages.face.landmarks import FaceLandmarker

    with FaceLandmarker(max_faces=2) as landmarker:
        yield landmarker


def test_ffhq_uv_views_cover_the_centre_face(hifi, detector):
    views = {v: EDIT / f"01223_{v}.png" for v in ("left", "right", "front")}
    if not all(p.exists() for p in views.values()):
        pytest.skip(f"FFHQ-UV example views not found in {EDIT}")
    topology, model = hifi
    images = {v: read(p) for v, p in views.items()}
    landmarks = {v: detector.detect_one(im).points[:, :2] for v, im in images.items()}
    out = unwrap_sample(topology, model, images, landmarks, UnwrapSettings())
    centre = topology.masks()["center_face"] > 0.5
    union = np.logical_or.reduce([o.mask > 0 for o in out.values()])
    assert union[centre].mean() >= 0.90
    for view, o in out.items():
        assert o.error_px / o.face_width_px < 0.02, (view, o.error_px, o.face_width_px)
        assert o.texture.shape == (1024, 1024, 3) and o.mask.shape == (1024, 1024)
        assert (o.texture[o.mask == 0] == 0).all()
    # The side views are seen from the side they are named after, and they see that half of the face best.
    assert out["left"].yaw_degrees > 20 and out["right"].yaw_degrees < -20 and abs(out["front"].yaw_degrees) < 10
    cols = np.arange(1024)[None, :].repeat(1024, 0)
    assert cols[out["left"].mask > 0].mean() < cols[out["right"].mask > 0].mean()


def render_head(topology, texture: np.ndarray, pose: ViewPose, size: int) -> np.ndarray:
    """Render the textured template with a perspective camera (perspective-correct UVs), grey background."""
    screen = pose.project(topology.vertices)
    raster = rasterize(screen, topology.triangles, size, size, perspective_w=screen[:, 2])
    uv = interpolate(topology.uvs[topology.face_uvs], raster)
    s = texture.shape[0]
    image = cv2.remap(texture, uv[..., 0] * s - 0.5, (1 - uv[..., 1]) * s - 0.5, cv2.INTER_LINEAR)
    image[~raster.mask] = 128
    return image


def synthetic_pose(yaw: float, size: int) -> ViewPose:
    flip = np.diag([1.0, -1.0, -1.0])
    turn = Rotation.from_euler("yx", [yaw, 3.0], degrees=True).as_matrix()
    return ViewPose(flip @ turn, np.array([0.0, -0.3, 45.0]), focal_for(size, size), ((size - 1) / 2,) * 2)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_synthetic_round_trip_recovers_the_texture(hifi, detector):
    if not TEXTURE.exists():
        pytest.skip(f"teaser texture not found at {TEXTURE}")
    topology, model = hifi
    texture = read(TEXTURE)
    size = 1024
    settings = UnwrapSettings(exclude_eyes_mouth=False)
    yaws = {"left": 30.0, "right": -30.0, "front": 0.0}
    poses = {v: synthetic_pose(y, size) for v, y in yaws.items()}
    images = {v: render_head(topology, texture, p, size) for v, p in poses.items()}
    truth = Fit(topology.vertices, np.zeros(0), poses, {v: 0.0 for v in yaws})
    for view, image in images.items():
        landmarks = detector.detect_one(image).points[:, :2]
        out = unwrap_view(topology, truth, ViewInput(view, image, landmarks), settings)
        valid = out.mask > 0
        assert valid.sum() > 50_000, view
        # Known poses: the unwrap recovers the texture wherever the view says it is valid.
        assert psnr(out.texture[valid], texture[valid]) >= 30.0, view
    # With the poses and shape fitted from detected landmarks, the maps still line up with the texture.
    landmarks = {v: detector.detect_one(im).points[:, :2] for v, im in images.items()}
    fitted = unwrap_sample(topology, model, images, landmarks, settings)
    for view, out in fitted.items():
        assert abs(out.yaw_degrees - yaws[view]) < 5
        valid = out.mask > 0
        assert psnr(out.texture[valid], texture[valid]) >= 24.0, view


def test_symmetric_fill_leaves_a_seen_eyes_opening_and_mirrors_a_hidden_eye(hifi):
    # A photo sees both eyes: a texel one eye's hole takes out (its lashes) must not come back as the other eye's
    # lid from the mirror, or the lashes the hole removed return. An eye the view does not see is mirrored.
    from stages.unwrap import ViewUnwrap, symmetric_fill

    topology, _ = hifi
    size = topology.uv_size
    boxes = {box.name: box for box in topology.fill_regions()}

    def unwrap_with_hole(hidden: str | None) -> ViewUnwrap:
        mask = np.where(topology.masks()["unwrap_mask"] > 0.5, 255, 0).astype(np.uint8)
        left = boxes["l_eye"]
        mask[left.top + 20:left.top + 40, left.left + 30:left.left + 90] = 0  # l_eye's hole, r_eye has none
        if hidden:
            box = boxes[hidden]
            mask[box.top:box.bottom, box.left:box.right] = 0
        return ViewUnwrap(np.full((size, size, 3), 120, np.uint8) * (mask[..., None] > 0), mask, 0.0, 1.0, 0.0, 0.0)

    seen = unwrap_with_hole(None)
    symmetric_fill(topology, seen)
    left = boxes["l_eye"]
    assert (seen.mask[left.top + 20:left.top + 40, left.left + 30:left.left + 90] == 0).all()
    hidden = unwrap_with_hole("r_eye")
    symmetric_fill(topology, hidden)
    right = boxes["r_eye"]
    assert (hidden.mask[right.top:right.bottom, right.left:right.right] > 0).mean() > 0.5


@pytest.fixture(scope="module")
def mediapipe(cache):
    topology = load_topology("mediapipe468", cache_dir=cache)
    return topology, ShapeModel(topology)


def single_photos() -> list[tuple[str, np.ndarray]]:
    from skimage import data

    return [(p.name, read(p)) for p in FACES] + [("astronaut", data.astronaut())]


def test_single_view_photos_are_pixel_aligned(mediapipe, detector):
    if not FACES:
        pytest.skip(f"no face photos in {DATA / 'faces'}")
    from stages.geometry.fitting import fit_views

    topology, model = mediapipe
    anchors = [33, 133, 362, 263, 61, 291]  # eye and mouth corners
    expected = topology.landmark_uv()[anchors]
    flat, vids, bary = topology.texel_samples()
    rows, cols = np.divmod(flat, topology.uv_size)
    for name, image in single_photos():
        landmarks = detector.detect_one(image).points[:, :2]
        fit = fit_views(model, {"front": landmarks}, {"front": image.shape[:2]})
        out = unwrap_view(topology, fit, ViewInput("front", image, landmarks), UnwrapSettings())
        assert out.valid_ratio > 0.5, name
        assert out.error_px / out.face_width_px < 0.03, name
        # Geometric check: the texel that samples each detected corner's pixel is where the topology puts
        # that corner, for every photo.
        texel_xy = np.einsum("pk,pkc->pc", bary, fit.poses["front"].project(fit.vertices)[vids][:, :, :2])
        for point, target in zip(landmarks[anchors], expected):
            nearest = np.argmin(((texel_xy - point) ** 2).sum(axis=1))
            offset = np.hypot(cols[nearest] - target[0], rows[nearest] - target[1])
            assert offset < 6, (name, offset)  # a few texels, even for small faces upsampled ~5x into UV
        # Independent check: mediapipe re-detects a face on the UV map itself (it looks like a frontal face)
        # with its corners near the topology's positions (the detector's own bias on such an unusual image
        # is about 10 texels, measured on the astronaut photo the template comes from).
        uv_faces = detector.detect(out.texture)
        assert uv_faces, f"{name}: no face found on its UV map"
        found = uv_faces[0].points[anchors, :2]
        assert np.linalg.norm(found - expected, axis=1).mean() < 20, name


# ---------------------------------------------------------------- the stage: in-process, then in the Ray pipeline

class SourceAsFrontViewStage(Stage):
    """Edit-stage double for the pipeline test: the input photo itself is the front view."""

    name = "edit"
    inputs = (PHOTO,)
    outputs = (VIEW,)

    def process(self, sample: Sample) -> StageResult:
        self.context.write_image(sample, view_key(VIEW, FRONT), self.context.read_source_image(sample))
        return StageResult()


def photo_stage(tmp_path: Path, *overrides: str):
    from pipeline.config import load_config, stage_settings
    from pipeline.storage import open_storage
    from stages import STAGES

    config = load_config("photo", overrides=(f"output={tmp_path / 'run'}", *overrides))
    storage = open_storage(str(tmp_path / "run"))
    stage = STAGES.stage_class("unwrap")(stage_settings(config, "unwrap"), StageContext(storage, config, "unwrap"))
    stage.setup()
    return stage


def test_mirrored_texels_meet_the_views_own_without_a_step():
    """A lone view's own far side is darker (lit from the other side) than the mirror of its near side: the mirrored
    texels next to the seam take the own side's level, and far from it keep their own, with no step between."""
    size = 512  # the correction fades over 24 texels at this size
    seen = np.zeros((size, size), bool)
    seen[:, :256] = True
    seen[200:280, 256:300] = True  # a jagged edge, as a visibility test leaves it
    own = np.where(seen[..., None], 90, 0).astype(np.uint8).repeat(3, axis=2)
    mirrored = np.full((size, size, 3), 140, np.uint8)
    matched = mirrored.astype(np.float32)
    matched[~seen] = match_mirror_to_seam(own, seen, mirrored, np.ones_like(seen), ~seen)
    row = matched[100, 256:, 0]  # the mirrored texels of one row, from the seam outwards
    assert abs(row[0] - 90) < 3  # at the seam: the own side's level, no step
    assert np.all(row[30:] == 140)  # beyond the fade: the mirror's own brightness
    assert np.all(np.diff(row) >= 0) and np.diff(row).max() <= 3  # a gentle ramp in between, not a 50-level edge


def test_stage_unwraps_an_aligned_photo_and_reports_fields(tmp_path, cache):
    from skimage import data

    stage = photo_stage(tmp_path, f"topology.cache_dir={cache}")
    sample = Sample(id="astronaut", uri="astronaut.png", shard=0, index=0)
    stage.context.write_image(sample, "aligned", data.astronaut())
    result = stage.process(sample)
    assert {"uv_front", "uvmask_front"} <= set(sample.outputs)
    uv = stage.context.read_image(sample.outputs["uv_front"].path)
    mask = stage.context.read_image(sample.outputs["uvmask_front"].path)[..., 0]
    assert uv.shape == (1024, 1024, 3) and set(np.unique(mask)) <= {0, 255}
    assert (uv[mask == 0] == 0).all() and (mask > 0).mean() > 0.2
    declared = {f.name for f in stage.manifest_fields}
    assert set(result.fields) <= declared
    assert result.fields["unwrap_landmark_error_px_front"] < 2.0
    assert 0 < result.fields["unwrap_landmark_error_front"] < 0.02
    # one frontal view plus its mirror image, less the fringe over her forehead (masked as hair)
    assert result.fields["unwrap_valid_ratio_front"] > 0.7
    assert abs(result.fields["unwrap_yaw_front"]) < 15


def test_stage_errors_have_codes(tmp_path, cache):
    stage = photo_stage(tmp_path, f"topology.cache_dir={cache}")
    empty = Sample(id="none", uri="none.png", shard=0, index=0)
    with pytest.raises(SampleError) as error:
        stage.process(empty)
    assert error.value.code == "no_views"
    faceless = Sample(id="noise", uri="noise.png", shard=0, index=1)
    stage.context.write_image(faceless, "aligned", np.random.default_rng(0).integers(0, 255, (256, 256, 3),
                                                                                      dtype=np.uint8))
    with pytest.raises(SampleError) as error:
        stage.process(faceless)
    assert error.value.code == "no_face"


def test_preflight_rejects_bad_options(tmp_path):
    from pipeline.config import load_config, stage_settings
    from stages.errors import ConfigError
    from stages.unwrap import UnwrapStage

    for override, message in (("topology.name=bfm", "topology.name: Invalid value 'bfm'"),
                              ("stages.unwrap.rasterizer=opengl", "stages.unwrap.rasterizer: Invalid value 'opengl'")):
        with pytest.raises(ConfigError, match=message):  # choices: refused when the config is loaded
            load_config("photo", overrides=(f"output={tmp_path}", override))
    config = load_config("photo", overrides=(f"output={tmp_path}", "topology.name=hifi3dpp"))
    with pytest.raises(ConfigError, match="Weights"):  # a missing source: refused by the preflight
        UnwrapStage.preflight(stage_settings(config, "unwrap"), config)


def test_unwrap_in_the_ray_pipeline(tmp_path, cache):
    from PIL import Image

    from pipeline.manifest import read_manifest
    from tests.conftest import cli_env, run_cli, shared_data

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.open(shared_data("faces/obama.jpg")).save(inputs / "obama.png")
    Image.open(shared_data("faces/000055.jpg")).save(inputs / "small.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(inputs / "noise.png")
    output = tmp_path / "out"
    run_cli(["run", "--profile", "photo", "--no-progress", "--input", str(inputs), "--output", str(output),
             "stages.enabled=[edit,unwrap]", "stage_classes.edit=tests.test_unwrap:SourceAsFrontViewStage",
             f"topology.cache_dir={cache}"], cli_env())
    rows = {r["id"]: r for r in read_manifest(str(output)).to_pylist()}
    assert set(rows) == {"obama", "small", "noise"}
    assert (rows["noise"]["status"], rows["noise"]["failed_stage"], rows["noise"]["error_code"]) == \
        ("failed", "unwrap", "no_face")
    for sample_id in ("obama", "small"):
        row = rows[sample_id]
        assert row["status"] == "ok", row["error_message"]
        outputs = dict(row["outputs"])
        for name in ("uv_front", "uvmask_front"):
            assert (output / outputs[name]["path"]).stat().st_size == outputs[name]["bytes"]
        assert row["unwrap_valid_ratio_front"] > 0.5
        assert row["unwrap_landmark_error_front"] < 0.02
        assert row["unwrap_valid_ratio_left"] is None  # a single view: no side columns
        assert row["stage_seconds"]["unwrap"] is not None


def _depth_hidden(topology, model, image, landmarks) -> np.ndarray:
    """(S, S) bool: texels of a single view that face the camera but the z-buffer test hides."""
    from stages.geometry.fitting import fit_views
    from stages.unwrap import texel_visibility

    fit = fit_views(model, {"front": landmarks}, {"front": image.shape[:2]})
    _, facing = texel_visibility(topology, fit, "front", image.shape[:2], None)
    _, seen = texel_visibility(topology, fit, "front", image.shape[:2], "cpu")
    hidden = np.zeros(topology.uv_size ** 2, bool)
    hidden[topology.texel_samples()[0]] = facing & ~seen
    return hidden.reshape(topology.uv_size, topology.uv_size)


def test_depth_test_hides_occluded_surface_but_not_the_silhouette(hifi, detector):
    """The z-buffer test hides what the head itself occludes (the neck under the jaw on a turned view) and not the
    silhouette of a frontal photo's face: a surface seen edge-on lies behind its own nearer part in the buffer
    neighbourhood, which hid 5.8 % of the astronaut's facing texels as a comb of notches along the outline
    (stretched into spikes in UV) before the depth tolerance followed the surface's slope."""
    from skimage import data

    path = EDIT / "01223_left.png"
    if not path.exists():
        pytest.skip(f"FFHQ-UV example views not found in {EDIT}")
    topology, model = hifi
    image = read(path)
    hidden = _depth_hidden(topology, model, image, detector.detect_one(image).points[:, :2])
    below_jaw = int(0.85 * topology.uv_size)
    assert hidden.sum() > 30000 and hidden[below_jaw:].mean() > 0.1, (hidden.sum(), hidden[below_jaw:].mean())

    mp = load_topology("mediapipe468")
    photo = data.astronaut()
    hidden = _depth_hidden(mp, ShapeModel(mp), photo, detector.detect_one(photo).points[:, :2])
    facing = mp.masks()["unwrap_mask"] > 0.5
    assert hidden[facing].mean() < 0.005, hidden[facing].mean()
