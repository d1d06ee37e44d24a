"""The DCGM ffhq-features importer on all 70,000 real records and the per-file layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.attributes_import import (
    IMPORT_MISSING,
    IMPORT_MULTIPLE_FACES,
    IMPORT_NO_FACE,
    AttributeImport,
    iter_jsonl,
    map_detections,
)
from stages.errors import SampleError

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
FEATURES = DATA / "ffhq_features"
needs_data = pytest.mark.skipif(not FEATURES.exists(), reason=f"DCGM ffhq-features not found at {FEATURES}")


@needs_data
def test_all_70000_records():
    counts = {"ok": 0, IMPORT_NO_FACE: 0, IMPORT_MULTIPLE_FACES: 0}
    ids = set()
    for sample_id, detections in iter_jsonl(str(FEATURES / "ffhq_features_all.jsonl.gz")):
        ids.add(sample_id)
        try:
            values = map_detections(detections, sample_id).values
        except SampleError as error:
            counts[error.code] += 1
            continue
        counts["ok"] += 1
        assert values["Gender"] in (0.0, 1.0) and values["Glasses"] in (0.0, 1.0)
        assert 0 <= values["Age"] <= 120 and 0 <= values["Expression"] <= 1
        assert 0 <= values["Baldness"] <= 1 and 0 <= values["Beard"] <= 1
        assert -180 <= values["Yaw"] <= 180 and -90 <= values["Pitch"] <= 90  # a few profiles reach |yaw| > 90
    assert len(ids) == 70_000
    assert counts == {"ok": 70_000 - 529 - 70, IMPORT_NO_FACE: 529, IMPORT_MULTIPLE_FACES: 70}


@needs_data
@pytest.mark.parametrize("source", ["ffhq_features_all.jsonl.gz", "json"])
def test_spot_check_01223_against_ffhq_uv(source):
    imported = AttributeImport(str(FEATURES / source)).get("01223").values
    reference = json.loads((DATA / "ffhq_uv_example" / "attributes" / "01223.json").read_text())
    # DCGM measured FFHQ's 128x128 thumbnail, FFHQ-UV the e4e inversion: close, not equal.
    for key in ("Gender", "Glasses", "Beard"):
        assert imported[key] == reference[key]
    assert imported["Age"] == pytest.approx(reference["Age"], abs=2)
    assert imported["Yaw"] == pytest.approx(reference["Yaw"], abs=3)
    assert imported["Pitch"] == pytest.approx(reference["Pitch"], abs=3)


@needs_data
def test_folder_layout_reports_the_real_defects():
    folder = FEATURES / "json"
    importer = AttributeImport(str(folder))
    codes = {}
    for path in sorted(folder.glob("*.json")):
        try:
            importer.get(path.stem)
            codes[path.stem] = "ok"
        except SampleError as error:
            codes[path.stem] = error.code
    assert IMPORT_NO_FACE in codes.values() and IMPORT_MULTIPLE_FACES in codes.values()
    for stem, code in codes.items():
        faces = len(json.loads((folder / f"{stem}.json").read_text()))
        assert code == {0: IMPORT_NO_FACE, 1: "ok"}.get(faces, IMPORT_MULTIPLE_FACES)
    with pytest.raises(SampleError) as error:
        importer.get("99999")
    assert error.value.code == IMPORT_MISSING


def test_mapping_of_one_detection():
    detection = {"faceAttributes": {
        "smile": 0.25, "headPose": {"pitch": -3.5, "roll": 1.5, "yaw": 12.0}, "gender": "male", "age": 41.0,
        "facialHair": {"moustache": 0.4, "sideburns": 0.1}, "glasses": "Sunglasses", "hair": {"bald": 0.6}}}
    mapped = map_detections([detection])
    assert mapped.values == {"Gender": 1.0, "Glasses": 1.0, "Yaw": 12.0, "Pitch": -3.5, "Baldness": 0.6,
                             "Beard": 0.0, "Age": 41.0, "Expression": 0.25}
    assert mapped.roll == 1.5


def test_jsonl_lookup_from_a_written_file(tmp_path):
    path = tmp_path / "features.jsonl"
    records = [{"id": "a", "detections": []}, {"id": "b", "detections": [{}, {}]}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    importer = AttributeImport(str(path))
    assert len(importer) == 2
    for sample_id, code in (("a", IMPORT_NO_FACE), ("b", IMPORT_MULTIPLE_FACES), ("c", IMPORT_MISSING)):
        with pytest.raises(SampleError) as error:
            importer.get(sample_id)
        assert error.value.code == code
