"""The faithful ``ffhq-uv`` profile end to end: all six stages streaming in one local Ray run (the CLI in a
subprocess) with a weights folder of tiny checkpoints under FFHQ-UV's file names, on FFHQ-UV's example photo
and the sample faces; then the manifest, column by column, and every output file.

Weights: tiny random e4e / StyleGAN2 (TF pickle) / StyleFlow in their official formats, deepface's three models
at random weights, and the real DPR file. The generator and the flow are set by ``tests/face_drawing_gan.py``
(the geometry stages need a face, a random GAN draws none): the generator draws FFHQ-UV's real left, front or
right view of 01223 (heads turned by about +22 / -2 / -23 degrees) as W+ row 0 says, and StyleFlow's yaw
condition moves W+ along that code, so the edit stage's yaw edits (+-30, rows 0-3) really turn the head. The
photos differ in their latents and attributes, while their views, UV maps and metrics are near-identical; the
fitted yaw signs, each view's visibility and the three-view merge are checked on every sample.
"""

from __future__ import annotations

import functools
import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from stages import STAGES
from tests import tiny_gan_weights as tiny
from tests.conftest import cli_env, run_cli, shared_data
from tests.face_drawing_gan import draw_turned_faces_, turn_code, yaw_flow_

VIEWS = ("front", "left", "right")
MERGE_ORDER = ["left", "right", "front"]  # FFHQ-UV's merge order, the complete stage's ``complete_views``
VIEW_YAW = {"front": 0.0, "left": 30.0, "right": -30.0}  # StyleFlow yaw of each view's condition
W_DIM, NUM_WS, NUM_ATTRIBUTES = tiny.TINY_W_DIM, 18, 17
INDEX = {name: 9 + i for i, name in enumerate(("Gender", "Glasses", "Yaw", "Pitch", "Baldness", "Beard", "Age",
                                               "Expression"))}
PROVENANCE = ["dpr"] * 9 + ["deepface", "glasses_bridge", "mediapipe_pose", "mediapipe_pose", "default", "default",
                            "deepface", "deepface"]
DEFAULT_BALDNESS = 0.04  # stages.attribute.DEFAULTS
RELIGHT_THRESHOLD = 0.1  # below DPR's reading of the drawn face (about 0.2), so every view is relit
SHARD_SIZE = 3
PROFILE_STAGES = ("inversion", "attribute", "edit", "relight", "unwrap", "complete")  # the ffhq-uv profile
# Samples allowed not to end ``ok``, with (status, failed stage, error code) and why. Every photo has one clear
# face and the tiny generator draws one, so none is expected.
EXPECTED_NOT_OK: dict[str, tuple[str, str | None, str | None]] = {}
TURN = turn_code(tiny.expression_direction())  # how W+ row 0 and StyleFlow's yaw encode the drawn view
UV_MIDDLE = 512  # HiFi3D++'s UV layout is left/right symmetric about this column
TURNED_MIN_CHANNELS = 5  # the view-selecting circuit needs 5 feature maps at 512 px (4 at 1024)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, random_deepface_home) -> Path:
    """FFHQ-UV's weights folder: face-drawing tiny GAN checkpoints, random deepface, the real DPR file."""
    faces = {view: shared_data(f"ffhq_uv_example/edit/01223_{view}.png") for view in VIEWS}
    dpr = shared_data("dpr/trained_model_03.t7")
    root = tmp_path_factory.mktemp("weights")
    tiny.write_weights_dir(root, min_channels=TURNED_MIN_CHANNELS,
                           prepare_generator=functools.partial(draw_turned_faces_, faces=faces, code=TURN),
                           prepare_flow=functools.partial(yaw_flow_, code=TURN))
    (root / "deepface").symlink_to(random_deepface_home, target_is_directory=True)
    (root / "dpr_model").mkdir()
    shutil.copy(dpr, root / "dpr_model" / "trained_model_03.t7")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory, weights_dir) -> dict:
    """One ``ffhq-uv run`` over FFHQ-UV's example photo and the sample faces."""
    topology = shared_data("hifi3dpp/head_teaser1.obj")
    photos = [shared_data("ffhq_uv_example/images/01223.png"), *sorted(shared_data("faces").glob("*.jpg"))]
    root = tmp_path_factory.mktemp("e2e")
    inputs = root / "in"
    inputs.mkdir()
    for photo in photos:
        shutil.copy(photo, inputs / photo.name)
    output = root / "out"
    overrides = [f"models.weights_dir={weights_dir}", "models.device=cpu", f"shard_size={SHARD_SIZE}",
                 *(f"stages.{name}.num_gpus=0" for name in STAGES.names),
                 "topology.name=hifi3dpp", f"topology.obj={topology}",
                 f"topology.cache_dir={root / 'topology_cache'}",
                 "stages.edit.noise_seed=null",  # keep the checkpoint's noise buffers: they hold the drawn face
                 f"stages.relight.threshold={RELIGHT_THRESHOLD}"]
    result = run_cli(["run", "--profile", "ffhq-uv", "--no-progress", "--no-visuals", "--input", str(inputs),
                      "--output", str(output), *overrides], cli_env(), timeout=900)
    from pipeline.manifest import read_manifest

    table = read_manifest(str(output))
    return {"output": output, "inputs": inputs, "ids": sorted(p.stem for p in photos), "table": table,
            "rows": {row["id"]: row for row in table.to_pylist()}, "stdout": result.stdout}


def _png(output: Path, record: dict) -> np.ndarray:
    """A PNG output of the run after checking its size and sha256 against the manifest record."""
    data = (output / record["path"]).read_bytes()
    assert len(data) == record["bytes"] and hashlib.sha256(data).hexdigest() == record["sha256"], record["path"]
    image = Image.open(output / record["path"])
    assert image.format == "PNG"
    return np.asarray(image)


def _finite(values, length: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    assert length is None or array.shape == (length,), array.shape
    assert np.isfinite(array).all()
    return array


def _ok_rows(run: dict) -> list[dict]:
    """The rows that ended ok: never empty, so that a loop over them cannot pass by checking nothing."""
    rows = [row for row in run["rows"].values() if row["status"] == "ok"]
    assert rows, {i: (r["status"], r["error_code"], r["error_message"]) for i, r in run["rows"].items()}
    return rows


def test_the_tiny_generators_draw_the_view_the_latent_encodes(weights_dir):
    """Precondition of the run: the e4e decoder and the TF pickle, read by the official loaders, draw FFHQ-UV's
    left / front / right view of 01223 as W+ row 0's projection on the turn direction says, and the flow's yaw
    condition moves W+ along that direction (``tests/face_drawing_gan.py``)."""
    import torch

    from stages.face.landmarks import FaceLandmarker
    from stages.networks.e4e import load_e4e
    from stages.networks.styleflow import load_styleflow
    from stages.networks.stylegan2 import load_generator, to_uint8

    decoder = load_e4e(str(weights_dir / tiny.E4E_FILE)).decoder
    generator = load_generator(str(weights_dir / tiny.TF_PICKLE_FILE))
    d = TURN.direction
    ws = torch.randn(1, NUM_WS, W_DIM, generator=torch.Generator().manual_seed(0)) * 0.3
    ws = ws - (ws @ d)[..., None] * d  # projection 0: the front view
    shifts = {view: -TURN.step * VIEW_YAW[view] for view in VIEWS}  # a yaw edit from 0 to the view's yaw
    ws = torch.cat([ws + shifts[view] * d for view in VIEWS])
    assert [TURN.view_of(float(w[0] @ d)) for w in ws] == list(VIEWS)
    with torch.no_grad():
        from_e4e = to_uint8(decoder.synthesis(ws[:1]), rounding="e4e")[0]
        from_tf = to_uint8(generator.synthesis(ws), rounding="tf")
    assert from_tf.shape == (3, 1024, 1024, 3)
    assert np.abs(from_e4e.astype(int) - from_tf[0]).max() <= 1  # one generator in both formats
    references = {view: np.asarray(Image.open(shared_data(f"ffhq_uv_example/edit/01223_{view}.png")).convert("L"),
                                   dtype=float) for view in VIEWS}
    with FaceLandmarker() as landmarker:
        for view, image in zip(VIEWS, from_tf):
            gray = np.asarray(Image.fromarray(image).convert("L"), dtype=float)
            distance = {ref: np.abs(gray - references[ref]).mean() for ref in VIEWS}
            assert min(distance, key=distance.get) == view and distance[view] < 8, (view, distance)
            [face] = landmarker.detect(image)
            x0, y0, x1, y1 = face.box
            assert x1 - x0 > 300 and y1 - y0 > 300
    flow = load_styleflow(str(weights_dir / tiny.STYLEFLOW_FILE))
    condition = torch.zeros(2, NUM_ATTRIBUTES)
    condition[:, INDEX["Yaw"]] = torch.tensor([0.0, 30.0])
    with torch.no_grad():
        moved = flow(ws[:1].expand(2, -1, -1), condition) - ws[:1]
    assert torch.allclose(moved[0], torch.zeros(()), atol=1e-4)
    assert torch.allclose(moved[1], TURN.step * 30.0 * d.expand(NUM_WS, -1), atol=1e-3)


def test_every_sample_ends_ok_in_its_shard(run):
    rows = run["rows"]
    assert sorted(rows) == run["ids"]
    not_ok = {i: (r["status"], r["failed_stage"], r["error_code"]) for i, r in rows.items() if r["status"] != "ok"}
    assert not_ok == EXPECTED_NOT_OK, {i: rows[i]["error_message"] or rows[i]["filter_reason"] for i in not_ok}
    for row in rows.values():
        if row["status"] == "ok":
            assert row["failed_stage"] is row["error_code"] is row["error_message"] is row["filter_reason"] is None
    # Shards: sorted ids cut into SHARD_SIZE; inputs indexed once each; the source is the input file.
    for position, sample_id in enumerate(run["ids"]):
        row = rows[sample_id]
        assert row["shard"] == position // SHARD_SIZE
        assert Path(row["source_uri"]).resolve().parent == run["inputs"].resolve()
        assert Path(row["source_uri"]).stem == sample_id
    assert sorted(r["input_index"] for r in rows.values()) == list(range(len(rows)))
    counts = {status: sum(r["status"] == status for r in rows.values()) for status in ("ok", "failed", "filtered")}
    assert f"{counts['ok']} ok, {counts['failed']} failed, {counts['filtered']} filtered" in run["stdout"]


def test_manifest_schema_has_every_stage_column(run):
    schema: pa.Schema = run["table"].schema
    for name in STAGES.names:
        for field in STAGES.stage_class(name).manifest_fields:
            assert schema.field(field.name).type == field.type, field.name
    assert schema.field("stage_seconds").type == pa.struct([(name, pa.float64()) for name in STAGES.names])
    for row in _ok_rows(run):
        for name in PROFILE_STAGES:
            seconds = row["stage_seconds"][name]
            assert seconds is not None and math.isfinite(seconds) and seconds >= 0, (row["id"], name)


def test_output_files(run):
    import cv2

    output = run["output"]
    for row in _ok_rows(run):
        outputs = dict(row["outputs"])
        expected = {"inversion", "uv", "preview", *(f"{kind}_{view}" for kind in ("view", "uv", "uvmask")
                                                     for view in VIEWS)}
        expected |= {f"relit_{view}" for view in row["relight_views"]}
        assert set(outputs) == expected, row["id"]
        images = {}
        for name, record in outputs.items():
            assert record["path"] == f"shards/{row['shard']:05d}/samples/{row['id']}/{name}.png"
            images[name] = _png(output, record)
        for name, image in images.items():
            if name == "preview":
                assert image.shape == (512, 3 * 512, 3)  # front and +-45 degrees at preview_size 512
            elif name.startswith("uvmask_"):
                assert image.shape == (1024, 1024) and set(np.unique(image)) <= {0, 255}
            else:
                assert image.shape == (1024, 1024, 3) and image.dtype == np.uint8, name
        # The yaw edits reach the images: three different views.
        assert len({outputs[f"view_{view}"]["sha256"] for view in VIEWS}) == 3
        # The final map is built from the views: where the front view's unwrap is valid (away from its edge),
        # the completed map is that unwrap.
        front_mask = cv2.erode(images["uvmask_front"], np.ones((41, 41), np.uint8)) > 127
        assert front_mask.mean() > 0.1
        difference = np.abs(images["uv"].astype(int) - images["uv_front"])[front_mask]
        assert difference.mean() < 3, difference.mean()
        # Outside every view the template fills the map: no black holes in the face's square.
        assert (images["uv"][256:768, 256:768].sum(axis=2) > 0).mean() > 0.99


def test_inversion_columns(run, weights_dir):
    import torch

    from stages.networks.e4e import load_e4e
    from stages.networks.stylegan2 import to_uint8

    rows = _ok_rows(run)
    latents = {row["id"]: _finite(row["inversion_latent"], NUM_WS * W_DIM) for row in rows}
    for row in rows:
        quad = _finite(row["inversion_quad"], 8).reshape(4, 2)
        side = np.linalg.norm(quad[1] - quad[0])
        assert side > 64 and abs(np.linalg.norm(quad[2] - quad[1]) - side) < 1e-2 * side  # a square
    # Different photos, different e4e codes.
    values = list(latents.values())
    assert all(not np.allclose(a, b) for i, a in enumerate(values) for b in values[i + 1:])
    # The stored 1024 inversion is the checkpoint's decoder applied to the stored latent.
    row = run["rows"]["01223"]
    decoder = load_e4e(str(weights_dir / tiny.E4E_FILE)).decoder
    with torch.no_grad():
        expected = to_uint8(decoder.synthesis(torch.from_numpy(latents["01223"]).float().reshape(1, NUM_WS, W_DIM)),
                            rounding="e4e")[0]
    stored = _png(run["output"], dict(row["outputs"])["inversion"])
    assert np.abs(stored.astype(int) - expected).max() <= 1


def test_attribute_columns(run):
    for row in _ok_rows(run):
        vector = _finite(row["attribute_vector"], NUM_ATTRIBUTES)
        assert row["attribute_provenance"] == PROVENANCE
        assert vector[0] > 0  # DPR's DC light of a lit face
        male = row["attribute_male_probability"]
        assert 0 <= male <= 1 and vector[INDEX["Gender"]] == float(male > 0.5)
        emotion = _finite(row["attribute_emotion"], 7)
        assert (emotion >= 0).all() and abs(emotion.sum() - 1) < 1e-4
        assert vector[INDEX["Expression"]] == pytest.approx(emotion[3], abs=1e-6)  # P(happy), deepface's order
        assert 0 < vector[INDEX["Age"]] < 101
        assert vector[INDEX["Glasses"]] == 0 and vector[INDEX["Beard"]] == 0
        assert vector[INDEX["Baldness"]] == pytest.approx(DEFAULT_BALDNESS)
        # The inversion draws the front view (its latent's turn code is near 0): mediapipe's pose is near frontal.
        assert abs(vector[INDEX["Yaw"]]) < 10 and abs(vector[INDEX["Pitch"]]) < 15
        assert abs(row["attribute_roll"]) < 10
        x0, y0, x1, y1 = _finite(row["attribute_face_box"], 4)
        assert 0 <= x0 < x1 <= 1024 and 0 <= y0 < y1 <= 1024 and x1 - x0 > 300


def test_edit_columns(run):
    for row in _ok_rows(run):
        attributes = np.asarray(row["attribute_vector"])
        latents = {view: _finite(row[f"edit_latent_{view}"], NUM_WS * W_DIM).reshape(NUM_WS, W_DIM)
                   for view in VIEWS}
        for view in VIEWS:
            condition = _finite(row[f"edit_attribute_{view}"], NUM_ATTRIBUTES)
            # FFHQ-UV's set_normal: even light, no glasses, frontal, bald, neutral expression; kept beard and age.
            assert condition[:9].tolist() == [1.0] + [0.0] * 8
            assert condition[INDEX["Glasses"]] == 0 and condition[INDEX["Pitch"]] == 0
            assert condition[INDEX["Baldness"]] == 1 and condition[INDEX["Expression"]] == 0
            assert condition[INDEX["Yaw"]] == VIEW_YAW[view]
            for kept in ("Gender", "Beard", "Age"):
                assert condition[INDEX[kept]] == pytest.approx(attributes[INDEX[kept]], abs=1e-4)
        for view in ("left", "right"):  # the yaw edit replaces W+ rows 0-3 only
            assert np.array_equal(latents[view][4:], latents["front"][4:])
            assert np.abs(latents[view][:4] - latents["front"][:4]).max() > 1e-3
        assert not np.allclose(latents["front"], np.asarray(row["inversion_latent"]).reshape(NUM_WS, W_DIM))
        # The yaw edit moves rows 0-3 along the turn code by -step * yaw, which picks the view the generator draws.
        projection = {view: latents[view][:4] @ TURN.direction.numpy() for view in VIEWS}
        for view in VIEWS:
            assert TURN.view_of(float(projection[view][0])) == view, projection
            shift = projection[view] - projection["front"]
            assert np.allclose(shift, -TURN.step * VIEW_YAW[view], atol=1e-3), (view, shift)
        assert 0 <= row["edit_expression_steps"] <= 5 and isinstance(row["edit_expression_happy"], bool)


def test_edit_views_are_the_checkpoint_generator_of_the_latents(run, weights_dir):
    """With ``noise_seed=null`` the views come from the TF pickle with its own noise buffers."""
    import torch

    from stages.networks.stylegan2 import load_generator, to_uint8

    row = run["rows"]["01223"]
    generator = load_generator(str(weights_dir / tiny.TF_PICKLE_FILE))
    w = torch.from_numpy(np.asarray(row["edit_latent_left"], dtype=np.float32)).reshape(1, NUM_WS, W_DIM)
    with torch.no_grad():
        expected = to_uint8(generator.synthesis(w), rounding="tf")[0]
    stored = _png(run["output"], dict(row["outputs"])["view_left"])
    assert np.abs(stored.astype(int) - expected).max() <= 1


def test_relight_columns(run):
    from stages.lighting.sh import directional_offset

    even = np.array([1.0] + [0.0] * 8)
    for row in _ok_rows(run):
        assert row["relight_method"] == "dpr"
        assert sorted(row["relight_views"]) == sorted(VIEWS)  # every view is above the lowered threshold
        for view in VIEWS:
            before = _finite(row[f"relight_sh_before_{view}"], 9)
            after = _finite(row[f"relight_sh_after_{view}"], 9)
            offset_before, offset_after = row[f"relight_offset_before_{view}"], row[f"relight_offset_after_{view}"]
            assert offset_before == pytest.approx(directional_offset(before, even), abs=1e-5)
            assert offset_after == pytest.approx(directional_offset(after, even), abs=1e-5)
            assert offset_before > RELIGHT_THRESHOLD
            assert offset_after < offset_before  # DPR moved the view's light towards even
            for when in ("before", "after"):
                symmetry = row[f"relight_symmetry_{when}_{view}"]
                assert math.isfinite(symmetry) and 0 <= symmetry < 0.5


def test_unwrap_and_complete_columns(run):
    for row in _ok_rows(run):
        for view in VIEWS:
            error_px, error = row[f"unwrap_landmark_error_px_{view}"], row[f"unwrap_landmark_error_{view}"]
            assert math.isfinite(error_px) and 0 <= error_px < 20
            assert 0 <= error < 0.05 and error_px / error > 300  # fraction of a face 300+ px wide
            assert 0.5 < row[f"unwrap_valid_ratio_{view}"] <= 1
            assert row[f"complete_valid_ratio_{view}"] == pytest.approx(row[f"unwrap_valid_ratio_{view}"], abs=2e-3)
        # The fitted heads turn as the views' yaw conditions say (FFHQ-UV fits these images at +22 / -2 / -23).
        yaws = {view: row[f"unwrap_yaw_{view}"] for view in VIEWS}
        assert yaws["left"] > 15 and yaws["right"] < -15 and abs(yaws["front"]) < 10, yaws
        assert 0.5 <= row["complete_valid_ratio"] <= 1  # the profile's min_valid_ratio
        assert math.isfinite(row["complete_bs_error"]) and 0 <= row["complete_bs_error"] <= 20  # max_bs_error
        assert row["complete_landmark_error"] == pytest.approx(
            max(row[f"unwrap_landmark_error_{view}"] for view in VIEWS), rel=1e-6)
        assert row["complete_views"] == MERGE_ORDER
        assert row["complete_template"] == "built"  # no topo_assets in the weights folder


def test_each_turned_view_covers_its_own_side_of_the_map(run):
    """Visibility: a turned view's unwrap covers more of its own side of the UV map (the image-left half for
    ``left``, pipeline.md section 1) than of the other side, and more of it than the opposite view does."""
    halves = {"left": np.s_[:, :UV_MIDDLE], "right": np.s_[:, UV_MIDDLE:]}
    for row in _ok_rows(run):
        outputs = dict(row["outputs"])
        masks = {view: _png(run["output"], outputs[f"uvmask_{view}"]) > 127 for view in VIEWS}
        cover = {(view, side): masks[view][half].mean() for view in VIEWS for side, half in halves.items()}
        for view, other in (("left", "right"), ("right", "left")):
            assert cover[view, view] > 1.5 * cover[view, other], (row["id"], cover)
            assert cover[view, view] > 1.5 * cover[other, view], (row["id"], cover)
        assert abs(cover["front", "left"] - cover["front", "right"]) < 0.1 * cover["front", "left"], cover


def test_the_merged_map_takes_each_turned_view_where_only_it_sees_the_face(run, weights_dir):
    """The three-view merge: the complete stage's merge, recomputed from the stored unwraps, gives the stored map;
    without the left (right) view, the map where only that view sees the face moves away from its unwrap. The
    front view's region is checked in ``test_output_files``."""
    import cv2

    from pipeline.config import load_config
    from stages.geometry.topologies import topology_from_config
    from stages.texture.merge import UVView, complete_texture
    from stages.texture.template import template_for

    config = load_config("ffhq-uv", overrides=("topology.name=hifi3dpp",
                                               f"topology.obj={shared_data('hifi3dpp/head_teaser1.obj')}",
                                               f"topology.cache_dir={run['output'].parent / 'topology_cache'}"))
    topology = topology_from_config(config)
    regions = topology.masks()
    boxes = {r.name: (r.top, r.bottom, r.left, r.right) for r in topology.fill_regions()}
    template = template_for(topology.name, regions, str(weights_dir))
    outputs = dict(run["rows"]["01223"]["outputs"])
    views = {}
    for view in MERGE_ORDER:
        mask = (_png(run["output"], outputs[f"uvmask_{view}"]) > 127).astype(np.float32)
        views[view] = UVView(_png(run["output"], outputs[f"uv_{view}"]).astype(np.float32) * mask[..., None], mask)
    merged = complete_texture(views, template, regions, boxes).uv.astype(float)
    assert np.abs(merged - _png(run["output"], outputs["uv"])).max() <= 1
    kernel = np.ones((21, 21), np.uint8)
    grown = {view: cv2.dilate(views[view].mask.astype(np.uint8), kernel) > 0 for view in VIEWS}
    for view in ("left", "right"):
        only = cv2.erode(views[view].mask.astype(np.uint8), kernel) > 0
        only &= ~np.logical_or.reduce([grown[other] for other in VIEWS if other != view])
        # A strip along the cheek that only this view sees (the face region stops at the hair and background the
        # view shows, stages/face/region.py, so the strip is narrower on the side that meets the hair).
        assert only.sum() > 500, only.sum()
        without = complete_texture({k: v for k, v in views.items() if k != view}, template, regions, boxes).uv
        unwrap = views[view].texture
        difference = {name: np.abs(uv - unwrap)[only].mean() for name, uv in (("with", merged), ("without", without))}
        # A map flat over the strip (the template's skin there) follows nothing: correlation 0, not NaN.
        correlation = {name: np.nan_to_num(np.corrcoef(np.mean(uv, axis=2)[only], unwrap.mean(axis=2)[only])[0, 1])
                       for name, uv in (("with", merged), ("without", without))}
        assert difference["with"] < 0.7 * difference["without"], (view, difference)
        assert correlation["with"] > correlation["without"] + 0.3, (view, correlation)
