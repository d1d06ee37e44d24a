"""Hostile and unusual inputs through the photo profile's real first stage (attribute) on a local Ray.

The corpus is generated here from one real face photo (``../shared/data/faces``):
broken files (zero bytes, truncated PNG and JPEG, random bytes, text, a PNG header
declaring 30000x30000, an animated GIF, an 8x8 image, a photo without a face) and
valid variants of the face (EXIF-rotated JPEG, grayscale, 16-bit gray and 48-bit RGB
PNG, CMYK JPEG, RGBA, two faces in one photo), listed in an id,uri file that also
repeats an id and uses ids with ``../`` and unicode. Every input must come back as
exactly one manifest row: the broken ones failed with their own code, the valid ones
processed like the plain photo.
"""

from __future__ import annotations

import csv
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.manifest import read_manifest
from stages.errors import SampleError
from stages.imageio import decode_image
from tests.conftest import cli_env, run_cli, shared_data

FACE = "faces/000055.jpg"  # 367x452, one face
OTHER_FACE = "faces/000007.jpg"  # 334x500, shrunk to be the smaller face of a pair
EXIF_ORIENTATION = 0x0112
ROTATE_90_CW_TO_VIEW = 6  # EXIF orientation 6: the stored image must be turned 90 degrees clockwise to view

# id -> (file, expected error code or None for a processed sample)
BROKEN = {
    "empty": ("empty.png", "empty_file"),
    "truncated_png": ("truncated.png", "truncated_image"),
    "truncated_jpeg": ("truncated.jpg", "truncated_image"),
    "random_bytes": ("random.png", "not_an_image"),
    "text": ("notes.txt", "not_an_image"),
    "bomb": ("bomb.png", "image_too_large"),
    "animated": ("animated.gif", "animated_image"),
    "tiny": ("tiny.png", "image_too_small"),
    "no_face": ("coffee.png", "no_face"),
}
VALID = {
    "face": "face.jpg",
    "exif_rotated": "exif_rotated.jpg",
    "gray": "gray.png",
    "gray16": "gray16.png",
    "rgb48": "rgb48.png",
    "cmyk": "cmyk.jpg",
    "rgba": "rgba.png",
    "two_faces": "two_faces.png",
    "../../escape": "face.jpg",
    "visage_été_顔": "face.jpg",
    "dup": "gray.png",  # listed twice: the first occurrence (sorted by uri) is processed
}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(side: int = 30000) -> bytes:
    """A valid PNG header declaring side x side RGB pixels, with a few rows of zero data."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(bytes((1 + 3 * side) * 8), 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def make_corpus(folder: Path) -> Path:
    """Write the corpus and its id,uri list file; returns the list file."""
    import cv2
    import skimage.data

    folder.mkdir(parents=True)
    face = Image.open(shared_data(FACE)).convert("RGB")
    rgb = np.asarray(face)
    files: dict[str, bytes] = {
        "face.jpg": _encoded(face, "JPEG", quality=95),
        "empty.png": b"",
        "random.png": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "notes.txt": b"id,uri\nthis is not an image\n",
        "bomb.png": _bomb_png(),
        "tiny.png": _encoded(Image.fromarray(rgb[:8, :8]), "PNG"),
        "coffee.png": _encoded(Image.fromarray(skimage.data.coffee()), "PNG"),
        "gray.png": _encoded(face.convert("L"), "PNG"),
        "cmyk.jpg": _encoded(face.convert("CMYK"), "JPEG", quality=95),
    }
    png = _encoded(face, "PNG")
    files["truncated.png"] = png[: len(png) // 2]
    files["truncated.jpg"] = files["face.jpg"][: len(files["face.jpg"]) // 2]
    frames = [Image.fromarray(np.full((96, 96, 3), value, np.uint8)) for value in (40, 200)]
    files["animated.gif"] = _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)

    # EXIF-rotated: pixels stored turned a quarter left, with the tag saying "turn clockwise to view".
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW_TO_VIEW
    files["exif_rotated.jpg"] = _encoded(face.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)

    gray16 = (np.asarray(face.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    files["gray16.png"] = _encoded(Image.fromarray(gray16), "PNG")  # mode I;16
    ok, rgb48 = cv2.imencode(".png", (rgb[:, :, ::-1].astype(np.uint16) * 257))
    assert ok
    files["rgb48.png"] = rgb48.tobytes()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:24, :24, 3] = 0  # a transparent corner, composited on white
    files["rgba.png"] = _encoded(Image.fromarray(rgba, "RGBA"), "PNG")

    # Two faces: the photo as it is, and a second, smaller one beside it.
    other = Image.open(shared_data(OTHER_FACE)).convert("RGB")
    other = other.resize((other.width // 2, other.height // 2), Image.Resampling.LANCZOS)
    pair = Image.new("RGB", (face.width + other.width, face.height), (128, 128, 128))
    pair.paste(face, (0, 0))
    pair.paste(other, (face.width, (face.height - other.height) // 2))
    files["two_faces.png"] = _encoded(pair, "PNG")

    for name, data in files.items():
        (folder / name).write_bytes(data)
    rows = [(sample_id, name) for sample_id, (name, _) in BROKEN.items()]
    rows += [(sample_id, name) for sample_id, name in VALID.items()]
    rows.append(("dup", "rgba.png"))  # the repeated id
    list_file = folder / "list.csv"
    with open(list_file, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "uri"])
        writer.writerows(rows)
    return list_file


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    list_file = make_corpus(root / "in")
    output = root / "out"
    run_cli(["run", "--profile", "photo", "--no-progress", "--input", str(list_file), "--output", str(output),
             "stages.enabled=[attribute]", "ray.num_cpus=2", "shard_size=8", "stages.attribute.aligned_size=256"],
            cli_env())
    return root, output


def _rows(output: Path) -> dict[tuple[str, str], dict]:
    return {(r["id"], Path(r["source_uri"]).name): r for r in read_manifest(str(output)).to_pylist()}


def _aligned(output: Path, row: dict) -> np.ndarray:
    return np.asarray(Image.open(output / dict(row["outputs"])["aligned"]["path"]).convert("RGB"), dtype=np.float64)


def test_every_input_is_one_row_with_its_own_outcome(corpus_run):
    root, output = corpus_run
    rows = _rows(output)
    with open(root / "in" / "list.csv", encoding="utf-8") as handle:
        listed = [(r["id"], r["uri"]) for r in csv.DictReader(handle)]
    assert sorted(rows) == sorted(listed)  # the manifest accounts for every listed input, once

    for sample_id, (name, code) in BROKEN.items():
        row = rows[(sample_id, name)]
        assert (row["status"], row["error_code"]) == ("failed", code), row
        assert row["failed_stage"] == "attribute" and row["error_message"]
        assert not row["outputs"]
    duplicate = rows[("dup", "rgba.png")]
    assert (duplicate["status"], duplicate["failed_stage"], duplicate["error_code"]) == \
        ("failed", "input", "duplicate_id")
    for sample_id, name in VALID.items():
        row = rows[(sample_id, name)]
        assert row["status"] == "ok", row
        path = dict(row["outputs"])["aligned"]["path"]
        assert path.startswith(f"shards/{row['shard']:05d}/samples/") and ".." not in path.split("/")
        assert (output / path).resolve().is_relative_to(output.resolve())
    assert sorted(p.name for p in output.parent.iterdir()) == ["in", "out"]  # nothing written beside the run


def test_valid_variants_are_processed_like_the_plain_photo(corpus_run):
    _, output = corpus_run
    rows = _rows(output)
    reference = _aligned(output, rows[("face", "face.jpg")])
    reference_gray = reference @ np.array([0.299, 0.587, 0.114])
    h, w = reference.shape[:2]
    centre = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    # Mean absolute difference over the centre, in 8-bit levels: JPEG re-encoding and colour
    # conversions cost about 1; another face or framing costs tens.
    for sample_id, name, gray in (("exif_rotated", "exif_rotated.jpg", False), ("cmyk", "cmyk.jpg", False),
                                  ("rgba", "rgba.png", False), ("rgb48", "rgb48.png", False),
                                  ("gray", "gray.png", True), ("gray16", "gray16.png", True),
                                  ("two_faces", "two_faces.png", False)):
        aligned = _aligned(output, rows[(sample_id, name)])
        assert aligned.shape == reference.shape, sample_id
        if gray:
            assert np.array_equal(aligned[..., 0], aligned[..., 1]) and np.array_equal(aligned[..., 1], aligned[..., 2])
            error = np.abs(aligned[..., 0] - reference_gray)[centre].mean()
        else:
            error = np.abs(aligned - reference)[centre].mean()
        assert error < 3.0, (sample_id, error)  # same face, same framing: the largest face was chosen
    # The escaping and unicode ids are the same photo as "face": same result, own folders.
    for sample_id in ("../../escape", "visage_été_顔"):
        row = rows[(sample_id, "face.jpg")]
        assert np.abs(_aligned(output, row) - reference).max() == 0
        np.testing.assert_array_equal(row["attribute_vector"], rows[("face", "face.jpg")]["attribute_vector"])


def test_decoding_turns_every_valid_variant_into_upright_rgb8(tmp_path):
    make_corpus(tmp_path / "in")
    plain = decode_image((tmp_path / "in" / "face.jpg").read_bytes())
    rotated = decode_image((tmp_path / "in" / "exif_rotated.jpg").read_bytes())
    assert rotated.shape == plain.shape and np.abs(rotated.astype(float) - plain).mean() < 4.0
    for name in ("gray.png", "gray16.png", "rgb48.png", "cmyk.jpg", "rgba.png"):
        image = decode_image((tmp_path / "in" / name).read_bytes(), source=name)
        assert image.dtype == np.uint8 and image.shape == plain.shape, name
    gray16 = decode_image((tmp_path / "in" / "gray16.png").read_bytes())
    gray8 = decode_image((tmp_path / "in" / "gray.png").read_bytes())
    assert np.array_equal(gray16, gray8)  # v * 257 / 65535 * 255 == v
    rgba = decode_image((tmp_path / "in" / "rgba.png").read_bytes())
    assert (rgba[:24, :24] == 255).all()  # the transparent corner is white
    for side, declared in ((30000, "900000000 pixels"), (9000, "9000x9000")):  # Pillow's limit, then ours
        with pytest.raises(SampleError) as caught:
            decode_image(_bomb_png(side))
        assert caught.value.code == "image_too_large" and declared in caught.value.message


def test_several_faces_are_rejected_when_configured(tmp_path):
    from pipeline.config import load_config, stage_settings
    from pipeline.storage import open_storage
    from stages.attribute import AttributeStage
    from stages.base import Sample, StageContext

    make_corpus(tmp_path / "in")
    config = load_config("photo", overrides=(f"output={tmp_path / 'out'}", "stages.attribute.multiple_faces=reject",
                                             "stages.attribute.aligned_size=256"))
    context = StageContext(storage=open_storage(str(tmp_path / "out")), config=config, stage_name="attribute")
    stage = AttributeStage(stage_settings(config, "attribute"), context)
    stage.setup()
    pair = Sample(id="two_faces", uri=str(tmp_path / "in" / "two_faces.png"), shard=0, index=0)
    single = Sample(id="face", uri=str(tmp_path / "in" / "face.jpg"), shard=0, index=1)
    results = stage.process_batch([pair, single])
    assert isinstance(results[0], SampleError) and results[0].code == "multiple_faces"
    assert not isinstance(results[1], SampleError)
