"""Tests of the complete stage: merging synthetic views into a final map, its properties, and filtering."""

from __future__ import annotations

import io
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.config import load_config, stage_settings
from pipeline.storage import open_storage
from stages import STAGES
from stages.base import Sample, StageContext
from stages.complete import NO_UV_VIEWS, UV_SIZE_MISMATCH, CompleteStage, template_digest
from stages.errors import SampleError
from stages.texture.color import rgb_to_yuv
from stages.texture.masks import hair_weight
from stages.texture.merge import UVView, complete_texture, merge_views, solve_unreliable
from stages.texture.template import build_template
from tests.conftest import shared_data
from tests.test_texture_ops import smooth_image
from tests.uv_regions import synthetic_regions

SIZE = 512
GAINS = {"front": 1.0, "left": 0.85, "right": 1.15}  # each view sees the face under another exposure


@pytest.fixture(scope="module")
def synthetic_case():
    regions, boxes = synthetic_regions(SIZE)
    template = build_template(regions)
    truth = smooth_image(SIZE, SIZE, seed=5).astype(np.float32)
    truth += np.random.default_rng(0).normal(0, 4, truth.shape).astype(np.float32)  # skin-like detail
    # Like FFHQ-UV's parsing mask, the views never cover the eyes and the mouth.
    holes = np.clip(regions["eye_l"] + regions["eye_r"] + regions["mouth"], 0, 1)
    coverage = {"front": regions["minor_valid_front"], "left": regions["minor_valid_left"],
                "right": regions["minor_valid_right"]}
    views = {}
    for name, covered in coverage.items():
        mask = (covered * regions["unwrap_mask"] * (1 - holes)).astype(np.float32)
        views[name] = UVView(np.clip(truth * GAINS[name], 0, 255) * mask[:, :, None], mask)
    result = complete_texture(views, template, regions, boxes)
    return regions, boxes, template, truth, views, result


def interior(mask: np.ndarray, margin: int) -> np.ndarray:
    """Texels of ``mask`` at least ``margin`` texels from its edge."""
    return cv2.erode((mask > 0.5).astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) > 0


def near(mask: np.ndarray, margin: int) -> np.ndarray:
    """Texels within ``margin`` texels of ``mask``."""
    return cv2.dilate((mask > 0.5).astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) > 0


def box_mask(boxes) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.float32)
    for row0, row1, col0, col1 in boxes.values():
        mask[row0:row1, col0:col1] = 1
    return mask


def test_final_map_is_8bit_rgb_at_the_topology_size(synthetic_case):
    *_, result = synthetic_case
    assert result.uv.shape == (SIZE, SIZE, 3) and result.uv.dtype == np.uint8
    assert set(result.seconds) == {"merge", "poisson", "blend"}


def test_front_view_wins_where_it_is_reliable(synthetic_case):
    regions, boxes, _, truth, _, result = synthetic_case
    # Away from the view's edge, the holes and the Poisson boxes, the front view comes through unchanged.
    core = interior(regions["major_valid_front"], 28) & ~near(box_mask(boxes), 12)
    core &= ~near(regions["eye_l"] + regions["eye_r"] + regions["mouth_contrast"] + regions["nosal_base"], 12)
    assert core.sum() > 1000
    error = np.abs(result.uv[core].astype(np.float32) - truth[core])
    assert error.mean() < 0.3 and error.max() <= 1.5  # uint8 rounding plus a trace of the coarsest pyramid level


def test_side_views_fill_the_sides(synthetic_case):
    regions, _, template, truth, _, result = synthetic_case
    # Each later view recolours the whole canvas (FFHQ-UV's YUV match), so side texels arrive as an affine
    # recolouring of the side view: their detail still follows the view's texture, not the template's.
    luma = rgb_to_yuv(result.uv.astype(np.float32))[:, :, 0]
    truth_luma = rgb_to_yuv(truth)[:, :, 0]
    template_luma = rgb_to_yuv(template)[:, :, 0]
    for name in ("left", "right"):
        only_side = interior(regions[f"major_valid_{name}"], 28) & ~near(regions["minor_valid_front"], 5)
        assert only_side.sum() > 2000
        assert np.corrcoef(luma[only_side], truth_luma[only_side])[0, 1] > 0.95
        assert abs(np.corrcoef(luma[only_side], template_luma[only_side])[0, 1]) < 0.5


def test_eyes_come_out_closed_from_the_template(synthetic_case):
    regions, _, template, _, _, result = synthetic_case
    luma = rgb_to_yuv(result.uv.astype(np.float32))[:, :, 0]
    template_luma = rgb_to_yuv(template)[:, :, 0]
    for eye in ("eye_l", "eye_r"):
        rows, cols = np.nonzero(regions[eye] > 0.5)
        mid, centre_cols = int(round(rows.mean())), slice(int(cols.mean()) - 10, int(cols.mean()) + 10)
        # The template's lash line crosses the eye region: dark at the midline, lighter eyelid 5 texels above.
        lash = luma[mid, centre_cols].mean()
        lid = luma[mid - 5, centre_cols].mean()
        assert lid - lash > 0.6 * (template_luma[mid - 5, centre_cols].mean() - template_luma[mid, centre_cols].mean())
        assert result.solved_mask[mid, int(cols.mean())] == 1
        assert result.unreliable_mask[mid, int(cols.mean())] == 1


def test_hair_region_is_the_raw_template(synthetic_case):
    regions, _, template, _, _, result = synthetic_case
    full_hair = hair_weight(regions["hair"]) >= 1.0 - 1e-6
    assert full_hair.sum() > 1000
    np.testing.assert_array_equal(result.uv[full_hair], np.clip(np.rint(template[full_hair]), 0, 255))


def test_fill_mask_is_the_union_of_view_fills_and_excludes_holes(synthetic_case):
    regions, _, _, _, views, result = synthetic_case
    union = np.clip(sum(result.view_fill_masks.values()), 0, 1)
    np.testing.assert_array_equal(result.fill_mask, union)
    for name, view in views.items():
        assert np.all(result.view_fill_masks[name][view.mask == 0] == 0)
    assert np.all(result.fill_mask[regions["eye_l"] > 0.5] == 0)


def test_a_lone_view_fills_its_own_wider_minor_region():
    # Several views share the face through their minor regions; a single photo is the only source, so its fill
    # reaches its own wider region (minor_valid_alone), not only the front's share next to side views.
    regions, _ = synthetic_regions(256)
    mask = regions["unwrap_mask"].copy()
    view = UVView(np.full((256, 256, 3), 150.0, np.float32) * mask[..., None], mask)
    _, fill, _ = merge_views(build_template(regions), {"front": view}, regions)
    beyond_front = interior(regions["minor_valid_alone"], 4) & (regions["minor_valid_front"] < 0.5)
    assert beyond_front.sum() > 100 and (fill[beyond_front] > 0.5).all()
    _, fill, _ = merge_views(build_template(regions), {"front": view, "left": view}, regions)
    assert fill[beyond_front & (regions["minor_valid_left"] < 0.5)].max() == 0.0


def test_single_front_view_completes_with_the_template():
    regions, boxes = synthetic_regions(256)
    template = build_template(regions)
    mask = regions["minor_valid_front"] * (1 - np.clip(regions["eye_l"] + regions["eye_r"] + regions["mouth"], 0, 1))
    texture = np.full((256, 256, 3), (180, 120, 100), np.float32) * mask[:, :, None]
    result = complete_texture({"front": UVView(texture, mask.astype(np.float32))}, template, regions, boxes)
    assert set(result.view_fill_masks) == {"front"}
    far = (regions["unwrap_mask"] > 0.5) & (regions["minor_valid_whole"] < 0.5) & (hair_weight(regions["hair"]) == 0)
    # Far from the view the template takes over, recoloured towards the view's skin: its chroma moves to the view's.
    view_chroma = rgb_to_yuv(np.array([180, 120, 100], np.float32))[1:]
    result_chroma = rgb_to_yuv(result.uv[far].astype(np.float32)).mean(axis=0)[1:]
    template_chroma = rgb_to_yuv(template[far]).mean(axis=0)[1:]
    assert np.abs(result_chroma - view_chroma).max() < 0.5 * np.abs(template_chroma - view_chroma).max()


def test_a_lone_views_tall_eye_hole_takes_the_lid_not_the_brow():
    # A photo's eye hole (the opening with its lashes) is solved from the sample's own lid between the box's top and
    # the hole; a hole taller than that band must not pull in the brow just above the box.
    rng = np.random.default_rng(3)
    lid = np.array([200, 150, 130], np.float32)
    texture = lid + rng.normal(0, 3, (128, 128, 3)).astype(np.float32)
    texture[18:30] = (70, 50, 40)  # the brow, above the box
    box = (30, 100, 20, 110)  # rows 30-100, a 13-row lid band above the 50-row hole
    unreliable = np.zeros((128, 128), np.float32)
    unreliable[45:95, 30:100] = 1.0
    texture[unreliable > 0] = 0.0  # unseen
    result, _ = solve_unreliable(texture, unreliable, np.zeros_like(texture), {"l_eye": box}, source="sample")
    filled = rgb_to_yuv(result[unreliable > 0])[:, 0]
    lid_luma = float(rgb_to_yuv(lid[None])[0, 0])
    assert np.abs(filled - lid_luma).max() < 15, (filled.min(), filled.max(), lid_luma)


def test_a_lone_view_masked_around_an_eye_shows_no_box():
    # Glasses masked out of a photo leave a ring around the eye unseen, up to and beyond its Poisson box. The box
    # closes the opening only; the rest of it is continued from the sample's skin like the unseen texels around it,
    # so no smooth rectangle shows in the skin's grain at the box's edge.
    regions, boxes = synthetic_regions(SIZE)
    template = build_template(regions)
    row0, row1, col0, col1 = boxes["l_eye"]
    # A box as roomy as mediapipe468's (its eye boxes reach well above the eye, towards the brow).
    row0, row1, col0, col1 = boxes["l_eye"] = (row0 - 40, row1 + 12, col0 - 12, col1 + 12)
    ring = np.zeros((SIZE, SIZE), np.float32)
    ring[row0 - 16:row1 + 16, col0 - 16:col1 + 16] = 1.0  # unseen: the box, its border and a margin around it
    mask = regions["minor_valid_front"] * (1 - ring)
    skin = np.array([180, 120, 100], np.float32) + np.random.default_rng(1).normal(0, 3, (SIZE, SIZE, 3))
    result = complete_texture({"front": UVView(skin * mask[..., None], mask.astype(np.float32))}, template,
                              regions, boxes)
    luma = rgb_to_yuv(result.uv.astype(np.float32))[..., 0]
    grain = luma - cv2.GaussianBlur(luma, (0, 0), 3)
    columns = slice(col0 + 8, col1 - 8)
    inside, above = grain[row0 + 4:row0 + 24, columns].std(), grain[row0 - 24:row0 - 4, columns].std()
    assert inside > 0.6 * above, (inside, above)  # the Poisson membrane there measured 0.66 against 1.88


def test_a_lone_views_mouth_opening_closes_as_lips_meeting_at_a_seam():
    # mediapipe468's layout opens the mouth wider than a thin upper lip: the opening is filled from each lip's side
    # to a soft seam in its middle, never from the skin above the upper lip (a pale band and a third lip's edge).
    regions, boxes = synthetic_regions(SIZE)
    template = build_template(regions)
    row0, row1, col0, col1 = boxes["mouth"]
    boxes["mouth"] = (row0 - 20, row1 + 20, col0, col1)  # as roomy as mediapipe468's mouth box
    top, bottom, left, right = 280, 308, 225, 285  # the opening, inside the topology's mouth region
    skin_rgb, lip_rgb = np.array([180, 120, 100], np.float32), np.array([170, 80, 85], np.float32)
    texture = np.broadcast_to(skin_rgb, (SIZE, SIZE, 3)).copy()
    texture[top - 8:top, left - 10:right + 10] = lip_rgb  # a thin upper lip
    texture[bottom:bottom + 14, left - 10:right + 10] = lip_rgb  # a fuller lower lip
    texture += np.random.default_rng(2).normal(0, 2, texture.shape)
    mask = regions["minor_valid_front"].copy()
    mask[top:bottom, left:right] = 0.0
    result = complete_texture({"front": UVView(texture * mask[..., None], mask.astype(np.float32))}, template,
                              regions, boxes).uv.astype(np.float32)
    opening = result[top:bottom, left + 10:right - 10]
    to_lip = np.linalg.norm(opening - lip_rgb, axis=-1)
    to_skin = np.linalg.norm(opening - skin_rgb, axis=-1)
    assert (to_lip < to_skin).all(), float((to_lip >= to_skin).mean())
    profile = rgb_to_yuv(opening).mean(axis=1)[:, 0]  # luma down the opening
    seam = int(np.argmin(profile))
    middle = (bottom - top) // 2
    assert abs(seam - middle) <= 2, (seam, middle)
    assert profile[seam] < min(profile[middle // 2], profile[middle + middle // 2]) - 4, profile.round(1)


# ---------------------------------------------------------------- the stage, in-process, after the real unwrap

def stage_pair(tmp_path: Path, topology: str, *overrides: str):
    """(unwrap, complete) stages of one run on a tmp storage, set up; topology caches in ``tmp_path``."""
    config = load_config("tiny", overrides=(
        f"output={tmp_path / 'run'}", f"topology.name={topology}",
        f"topology.obj={shared_data('hifi3dpp/head_teaser1.obj')}",
        f"topology.cache_dir={tmp_path / 'cache'}", "stages.complete.preview_size=96", *overrides))
    storage = open_storage(str(tmp_path / "run"))
    pair = []
    for name in ("unwrap", "complete"):
        stage = STAGES.stage_class(name)(stage_settings(config, name), StageContext(storage, config, name))
        stage.setup()
        pair.append(stage)
    return pair


@pytest.fixture(scope="module")
def ffhq_uv_run(tmp_path_factory):
    """FFHQ-UV's real three views of sample 01223, unwrapped on hifi3dpp and completed."""
    views = {v: shared_data(f"ffhq_uv_example/edit/01223_{v}.png") for v in ("front", "left", "right")}
    tmp_path = tmp_path_factory.mktemp("complete")
    unwrap, complete = stage_pair(tmp_path, "hifi3dpp")
    sample = Sample(id="01223", uri=str(views["front"]), shard=0, index=0)
    for view, path in views.items():
        unwrap.context.write_bytes(sample, f"view_{view}", f"view_{view}.png", path.read_bytes())
    sample.fields.update(unwrap.process(sample).fields)
    result = complete.process(sample)
    return tmp_path, complete, sample, result


def test_stage_completes_ffhq_uv_example(ffhq_uv_run):
    _, complete, sample, result = ffhq_uv_run
    uv = complete.context.read_image(sample.outputs["uv"].path)
    assert uv.shape == (1024, 1024, 3) and uv.dtype == np.uint8
    raw = Image.open(io.BytesIO(complete.context.read_bytes(sample.outputs["uv"].path)))
    assert raw.format == "PNG" and raw.mode == "RGB"
    preview = complete.context.read_image(sample.outputs["preview"].path)
    assert preview.shape == (96, 3 * 96, 3)
    fields = result.fields
    assert result.filter_reason is None
    assert fields["complete_views"] == ["left", "right", "front"]
    assert fields["complete_template"] == "built"
    assert fields["complete_template_digest"] == template_digest(complete.template)
    assert re.fullmatch(r"[0-9a-f]{16}", fields["complete_template_digest"])
    assert 0.85 < fields["complete_valid_ratio"] <= 1.0
    for view in ("front", "left", "right"):
        assert fields[f"complete_valid_ratio_{view}"] == pytest.approx(sample.fields[f"unwrap_valid_ratio_{view}"],
                                                                       abs=0.01)
    assert fields["complete_landmark_error"] == max(sample.fields[f"unwrap_landmark_error_{v}"]
                                                    for v in ("front", "left", "right"))
    assert 0.0 < fields["complete_bs_error"] < 20.0
    # The face comes from the photos: the centre face is skin-coloured and far from the flat template.
    centre = complete.regions["center_face"] > 0.5
    assert np.abs(uv[centre].astype(np.float32) - complete.template[centre]).mean() > 3.0


def test_hairline_has_no_rim_of_another_colour(ffhq_uv_run):
    # Under the hair override's feathered border the map lies between the template's hair and the face's skin. The
    # colour match fitted on the skin carried the built template's brown hair to navy there (V, the red-difference,
    # 8 levels below both), which showed as a dark blue line along the hairline.
    _, complete, sample, _ = ffhq_uv_run
    uv = rgb_to_yuv(complete.context.read_image(sample.outputs["uv"].path).astype(np.float32))
    hair = complete.regions["hair"] > 0.5
    weight = hair_weight(complete.regions["hair"])
    border = (weight > 0.05) & (weight < 0.95)
    template = rgb_to_yuv(np.asarray(complete.template, np.float32))
    hair_v = float(np.median(template[hair & (weight > 0.99), 2]))
    skin_v = float(np.median(uv[(complete.regions["center_face"] > 0.5) & ~near(hair, 20), 2]))
    assert border.sum() > 1000
    below = uv[border, 2] < min(hair_v, skin_v) - 3
    assert below.mean() < 0.01, (below.mean(), hair_v, skin_v)


def test_stage_fields_match_its_manifest_columns(ffhq_uv_run):
    _, complete, _, result = ffhq_uv_run
    declared = {field.name for field in complete.manifest_fields}
    assert set(result.fields) <= declared
    assert {"complete_valid_ratio", "complete_bs_error", "complete_landmark_error"} <= declared


@pytest.mark.parametrize("override, reason", [
    ("stages.complete.min_valid_ratio=0.99", "valid_ratio"),
    ("stages.complete.max_bs_error=0.5", "bs_error"),
    ("stages.complete.max_landmark_error=0.001", "landmark_error"),
])
def test_stage_filters_samples_beyond_thresholds(ffhq_uv_run, override, reason):
    tmp_path, first, sample, _ = ffhq_uv_run
    config = load_config("tiny", overrides=(
        f"output={tmp_path / 'run'}", "topology.name=hifi3dpp",
        f"topology.obj={shared_data('hifi3dpp/head_teaser1.obj')}",
        f"topology.cache_dir={tmp_path / 'cache'}", "stages.complete.preview=false", override))
    stage = CompleteStage(stage_settings(config, "complete"), StageContext(first.context.storage, config, "complete"))
    stage.setup()
    result = stage.process(sample)
    assert result.filter_reason is not None and result.filter_reason.startswith(reason)
    assert "uv" in sample.outputs  # a filtered sample keeps its map


def test_stage_without_unwrapped_views_fails_with_a_code(ffhq_uv_run):
    _, complete, _, _ = ffhq_uv_run
    with pytest.raises(SampleError) as error:
        complete.process(Sample(id="empty", uri="x", shard=0, index=1))
    assert error.value.code == NO_UV_VIEWS


def test_stage_rejects_unwraps_of_another_size(ffhq_uv_run):
    _, complete, _, _ = ffhq_uv_run
    sample = Sample(id="small", uri="x", shard=0, index=2)
    complete.context.write_image(sample, "uv_front", np.zeros((512, 512, 3), np.uint8))
    complete.context.write_image(sample, "uvmask_front", np.full((512, 512), 255, np.uint8))
    with pytest.raises(SampleError) as error:
        complete.process(sample)
    assert error.value.code == UV_SIZE_MISMATCH


def test_stage_completes_a_single_photo_on_mediapipe468(tmp_path):
    photo = shared_data("faces/000007.jpg")
    unwrap, complete = stage_pair(tmp_path, "mediapipe468", "stages.complete.preview=false")
    sample = Sample(id="000007", uri=str(photo), shard=0, index=0)
    aligned = np.asarray(Image.open(photo).convert("RGB"))
    unwrap.context.write_image(sample, "aligned", aligned)
    sample.fields.update(unwrap.process(sample).fields)
    result = complete.process(sample)
    assert result.fields["complete_views"] == ["front"]
    assert "preview" not in sample.outputs
    uv = complete.context.read_image(sample.outputs["uv"].path)
    assert uv.shape == (1024, 1024, 3)
    assert result.fields["complete_valid_ratio"] > 0.5


def test_complete_in_the_ray_pipeline(tmp_path):
    """The photo profile's default stages on a real local Ray: attribute -> relight -> unwrap -> complete."""
    from pipeline.manifest import read_manifest
    from tests.conftest import cli_env, face_and_noise_inputs, run_cli

    inputs = face_and_noise_inputs(tmp_path / "in", "faces/obama.jpg")
    output = tmp_path / "out"
    run_cli(["run", "--profile", "photo", "--no-progress", "--input", str(inputs), "--output", str(output),
             f"topology.cache_dir={tmp_path / 'cache'}", "stages.complete.preview_size=64"], cli_env())
    rows = {r["id"]: r for r in read_manifest(str(output)).to_pylist()}
    assert set(rows) == {"obama", "noise"}
    assert rows["noise"]["status"] == "failed" and rows["noise"]["complete_valid_ratio"] is None
    row = rows["obama"]
    assert row["status"] == "ok", row["error_message"]
    outputs = dict(row["outputs"])
    for name in ("uv", "preview"):
        assert (output / outputs[name]["path"]).stat().st_size == outputs[name]["bytes"]
    uv = np.asarray(Image.open(output / outputs["uv"]["path"]))
    assert uv.shape == (1024, 1024, 3) and uv.dtype == np.uint8
    assert np.asarray(Image.open(output / outputs["preview"]["path"])).shape == (64, 192, 3)
    assert row["complete_views"] == ["front"]
    assert row["complete_valid_ratio"] > 0.5 and 0 < row["complete_bs_error"] < 20
    assert row["complete_landmark_error"] == pytest.approx(row["unwrap_landmark_error_front"])
    assert row["stage_seconds"]["complete"] is not None
