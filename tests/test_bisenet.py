"""BiSeNet face parser: official checkpoint layout, FFHQ-UV's face mask recipe, and the unwrap stage using it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stages.base import Sample, StageContext
from stages.errors import ConfigError
from stages.networks.bisenet import BiSeNet, BiSeNetConfig, FaceParser, face_parsing_mask, infer_config, load_bisenet
from tests.conftest import shared_data
from tests.tiny_bisenet_weights import BISENET_FILE, write_tiny_bisenet

# The released 79999_iter.pth: 13,300,416 parameters (53.2 MB of float32), of which 11,176,512 are the
# ResNet-18 backbone (torchvision's 11,689,512 minus its 513,000-parameter classifier), in 191 state-dict
# entries (parameters, running statistics and num_batches_tracked of the 38 batch norms).
FULL_PARAMETERS = 13_300_416
FULL_BACKBONE_PARAMETERS = 11_176_512
FULL_STATE_ENTRIES = 191
# A few official key shapes (face-parsing.PyTorch model.py / resnet.py).
OFFICIAL_SHAPES = {
    "cp.resnet.conv1.weight": (64, 3, 7, 7),
    "cp.resnet.layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "cp.resnet.layer4.1.conv2.weight": (512, 512, 3, 3),
    "cp.arm16.conv.conv.weight": (128, 256, 3, 3),
    "cp.arm16.conv_atten.weight": (128, 128, 1, 1),
    "cp.arm32.conv.conv.weight": (128, 512, 3, 3),
    "cp.arm32.bn_atten.running_var": (128,),
    "cp.conv_head32.conv.weight": (128, 128, 3, 3),
    "cp.conv_head16.bn.weight": (128,),
    "cp.conv_avg.conv.weight": (128, 512, 1, 1),
    "ffm.convblk.conv.weight": (256, 256, 1, 1),
    "ffm.conv1.weight": (64, 256, 1, 1),
    "ffm.conv2.weight": (256, 64, 1, 1),
    "conv_out.conv.conv.weight": (256, 256, 3, 3),
    "conv_out.conv.bn.running_mean": (256,),
    "conv_out.conv_out.weight": (19, 256, 1, 1),
    "conv_out16.conv.conv.weight": (64, 128, 3, 3),
    "conv_out32.conv_out.weight": (19, 64, 1, 1),
}


def test_full_size_network_has_the_official_layout():
    net = BiSeNet()
    state = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == FULL_PARAMETERS
    assert sum(p.numel() for p in net.cp.resnet.parameters()) == FULL_BACKBONE_PARAMETERS
    assert len(state) == FULL_STATE_ENTRIES
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(key.endswith(".bias") and "bn" not in key and "downsample.1" not in key for key in state)
    assert not any(key.startswith(("cp.resnet.fc", "sp.")) for key in state)  # no classifier, no spatial path
    assert infer_config(state) == BiSeNetConfig()
    logits = net.eval()(torch.zeros(1, 3, 64, 64))
    assert logits.shape == (1, 19, 64, 64)


def test_tiny_checkpoint_loads_strictly(tmp_path):
    written = write_tiny_bisenet(tmp_path)
    path = tmp_path / BISENET_FILE
    net = load_bisenet(path)
    assert net.config == written.config and net.config.blocks == (1, 1, 1, 2)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(net(x), written(x))
    state = torch.load(path, weights_only=True)
    # Files from before PyTorch 0.4.1 have no num_batches_tracked; they still load.
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, tmp_path / "old.pth")
    load_bisenet(tmp_path / "old.pth")
    # Anything else missing or extra is refused.
    torch.save({k: v for k, v in state.items() if k != "ffm.conv2.weight"}, tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="ffm.conv2.weight"):
        load_bisenet(tmp_path / "missing.pth")
    torch.save({**state, "sp.conv1.conv.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ConfigError, match="sp.conv1"):
        load_bisenet(tmp_path / "extra.pth")
    torch.save({k: v for k, v in state.items() if not k.startswith("conv_out16")}, tmp_path / "nohead.pth")
    with pytest.raises(ConfigError, match="conv_out16"):
        load_bisenet(tmp_path / "nohead.pth")
    with pytest.raises(ConfigError, match="Weights"):
        load_bisenet(tmp_path / "absent.pth")


def test_parser_batches_views_of_different_sizes(tmp_path):
    parser = FaceParser(write_tiny_bisenet(tmp_path))
    from skimage import data

    images = [cv2.resize(data.astronaut(), (80, 96)), cv2.resize(data.chelsea(), (64, 64))]
    parser.size = 64  # the tiny network does not need FFHQ-UV's 512 input
    batched = parser.parse(images)
    assert [labels.shape for labels in batched] == [(96, 80), (64, 64)]
    assert all(labels.dtype == np.uint8 and labels.max() < 19 for labels in batched)
    assert len(np.unique(batched[0])) > 1  # random weights still give a non-constant map
    for image, labels in zip(images, batched):
        assert np.array_equal(parser.parse([image])[0], labels)  # batching does not change a view's labels


def synthetic_labels() -> np.ndarray:
    """A 200x200 CelebAMask-HQ label map: a face with brows, eyes, nose, lips, mouth, glasses, ears and hair."""
    labels = np.zeros((200, 200), np.uint8)
    cv2.ellipse(labels, (100, 110), (60, 80), 0, 0, 360, 1, -1)  # skin
    labels[:30] = 17  # hair
    labels[100:130, 30:40] = 7  # left ear
    labels[100:130, 160:170] = 8  # right ear
    labels[60:66, 60:90] = 2  # brows
    labels[60:66, 110:140] = 3
    labels[75:85, 65:85] = 4  # eyes
    labels[75:85, 115:135] = 5
    labels[95:125, 95:105] = 10  # nose
    labels[140:145, 80:120] = 12  # upper lip
    labels[145:150, 85:115] = 11  # mouth opening
    labels[150:156, 80:120] = 13  # lower lip
    labels[170:180, 90:110] = 6  # glasses (here on the chin, away from the eyes)
    return labels


def test_face_mask_recipe_on_a_synthetic_label_map():
    labels = synthetic_labels()
    mask = face_parsing_mask(labels)
    assert mask.shape == labels.shape and mask.dtype == bool
    # FFHQ-UV's literal recipe: box-blur 11x11 of (1 - eyes) as floats, then >= 1.
    eye_free = 1.0 - np.isin(labels, (4, 5)).astype(np.float32)
    literal = np.isin(labels, (1, 2, 3, 4, 5, 10, 11, 12, 13)) & (labels != 11) & (cv2.blur(eye_free, (11, 11)) >= 1)
    assert np.array_equal(mask, literal)
    # Eye holes grow by exactly 5 px: the eye (rows 75..84, cols 65..84) plus 5 on every side is out.
    assert not mask[70:90, 60:90].any()
    assert mask[69, 60:90].all() and mask[90, 60:90].all() and mask[70:90, 59].all() and mask[70:90, 90].all()
    # Mouth opening out, lips, nose, brows and skin in; glasses, ears, hair and background out.
    assert not mask[145:150, 85:115].any()
    assert mask[140:145, 80:120].all() and mask[150:156, 80:120].all() and mask[95:125, 95:105].all()
    assert mask[60:66, 110:140].all()
    for excluded in (6, 7, 8, 17, 0):
        assert not mask[labels == excluded].any(), excluded
    # Without exclusion the mask is the face labels, eyes and mouth included.
    assert np.array_equal(face_parsing_mask(labels, exclude_eyes_mouth=False),
                          np.isin(labels, (1, 2, 3, 4, 5, 10, 11, 12, 13)))
    with pytest.raises(ValueError):
        face_parsing_mask(labels[None])


# ---------------------------------------------------------------- the unwrap stage with a face parser

def constant_parser(weights_dir: Path, label: int) -> None:
    """A tiny checkpoint whose output is ``label`` everywhere: constant features into a one-hot classifier."""
    net = write_tiny_bisenet(weights_dir)
    head = net.conv_out.conv
    with torch.no_grad():
        head.bn.weight.zero_()
        head.bn.bias.fill_(1.0)  # the head's features are relu(1) = 1 at every pixel
        net.conv_out.conv_out.weight.zero_()
        net.conv_out.conv_out.weight[label] = 1.0
    torch.save(net.state_dict(), weights_dir / BISENET_FILE)


def unwrap_stage(tmp_path: Path, weights: Path, *overrides: str):
    from pipeline.config import load_config, stage_settings
    from pipeline.storage import open_storage
    from stages.unwrap import UnwrapStage

    config = load_config("photo", overrides=(f"output={tmp_path / 'run'}", f"models.weights_dir={weights}",
                                             f"topology.cache_dir={tmp_path / 'cache'}",
                                             "stages.unwrap.symmetric_fill=false", *overrides))
    settings = stage_settings(config, "unwrap")
    UnwrapStage.preflight(settings, config)
    stage = UnwrapStage(settings, StageContext(open_storage(str(tmp_path / "run")), config, "unwrap"))
    stage.setup()
    return stage


def unwrap_front(stage, image: np.ndarray) -> tuple[dict, np.ndarray]:
    sample = Sample(id="01223", uri="01223_front.png", shard=0, index=0)
    stage.context.write_image(sample, "view_front", image)
    result = stage.process(sample)
    assert set(result.fields) <= {f.name for f in stage.manifest_fields}
    return result.fields, stage.context.read_image(sample.outputs["uvmask_front"].path)[..., 0] > 0


@pytest.fixture(scope="module")
def front_view():
    from stages.imageio import decode_image

    path = shared_data("ffhq_uv_example/edit/01223_front.png")
    return decode_image(path.read_bytes(), source=str(path))


def test_unwrap_stage_takes_the_face_region_from_the_parser(tmp_path, front_view):
    write_tiny_bisenet(tmp_path / "random")
    fields, _ = unwrap_front(unwrap_stage(tmp_path, tmp_path / "random", f"stages.unwrap.face_parser={BISENET_FILE}"),
                             front_view)
    assert fields["unwrap_face_region"] == "parser"

    landmark_fields, landmark_mask = unwrap_front(unwrap_stage(tmp_path, tmp_path / "random"), front_view)
    assert landmark_fields["unwrap_face_region"] == "landmarks"
    # A parser that calls every pixel skin: the region is the whole view, so the UV mask is every visible
    # texel, a superset of the landmark face oval that also keeps the eyes and mouth the landmarks drop.
    constant_parser(tmp_path / "skin", 1)
    skin_parser = tmp_path / "skin" / BISENET_FILE
    stage = unwrap_stage(tmp_path, tmp_path / "random", f"stages.unwrap.face_parser={skin_parser}")
    skin_fields, skin_mask = unwrap_front(stage, front_view)
    assert (skin_mask >= landmark_mask).all() and skin_mask.sum() > landmark_mask.sum() + 10_000
    corners = stage.topology.landmark_uv()
    for a, b in ((33, 133), (362, 263), (78, 308)):  # eye corners, inner mouth corners (mediapipe indices)
        col, row = np.round((corners[a] + corners[b]) / 2).astype(int)
        assert skin_mask[row, col] and not landmark_mask[row, col], (a, b)
    assert skin_fields["unwrap_valid_ratio_front"] > landmark_fields["unwrap_valid_ratio_front"]
    # A parser that sees only hair: no face region, nothing sampled.
    constant_parser(tmp_path / "hair", 17)
    hair_fields, hair_mask = unwrap_front(unwrap_stage(tmp_path, tmp_path / "hair",
                                                       f"stages.unwrap.face_parser={BISENET_FILE}"), front_view)
    assert not hair_mask.any() and hair_fields["unwrap_valid_ratio_front"] == 0.0


def test_missing_parser_file_is_a_config_error(tmp_path):
    from pipeline.config import load_config, stage_settings
    from stages.unwrap import UnwrapStage

    for overrides in ((f"models.weights_dir={tmp_path}", f"stages.unwrap.face_parser={BISENET_FILE}"),
                      (f"stages.unwrap.face_parser={tmp_path / 'nowhere.pth'}",),
                      (f"stages.unwrap.face_parser={BISENET_FILE}",)):
        config = load_config("photo", overrides=(f"output={tmp_path / 'run'}", *overrides))
        with pytest.raises(ConfigError, match=r"79999_iter\.pth|nowhere\.pth") as error:
            UnwrapStage.preflight(stage_settings(config, "unwrap"), config)
        assert "README section 'Weights'" in str(error.value)
