"""Importer of Face-API detections in the DCGM ffhq-features format (pipeline.md section 6).

Input: either a folder of ``<id>.json`` files, each a JSON list of Face-API v1.0
detections (the original DCGM layout), or a ``.jsonl`` / ``.jsonl.gz`` file with one
``{"id": ..., "detections": [...]}`` per line. Any fsspec URL works.

FFHQ-UV keeps a sample only when Face-API found exactly one face; an empty list and
several faces become their own error codes. The mapping to StyleFlow's 8 attributes:
Age = age; Gender = 1 if male else 0; Glasses = 0 if NoGlasses else 1; Yaw, Pitch =
headPose (degrees); Baldness = hair.bald; Beard = facialHair.beard (0 if missing);
Expression = smile. Roll is kept as well (headPose.roll).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional, Union

from stages.condition import ATTRIBUTE_NAMES
from stages.errors import SampleError

# Error codes of this module (documented in README's error table).
IMPORT_NO_FACE = "attr_import_no_face"
IMPORT_MULTIPLE_FACES = "attr_import_multiple_faces"
IMPORT_MISSING = "attr_import_missing"
IMPORT_INVALID = "attr_import_invalid"

IMPORTED_FIELDS: tuple[str, ...] = ATTRIBUTE_NAMES  # every attribute of the condition has a Face-API source


@dataclass(frozen=True)
class ImportedAttributes:
    """StyleFlow attributes of one face (FFHQ-UV's JSON keys and units) plus the head roll in degrees."""

    values: dict[str, float]
    roll: float


def map_detections(detections: Any, sample_id: str = "?") -> ImportedAttributes:
    """Map one image's Face-API detection list; raises SampleError unless it holds exactly one face."""
    if not isinstance(detections, list):
        raise SampleError(IMPORT_INVALID, f"{sample_id}: imported detections are a {type(detections).__name__}, "
                                          "not a list")
    if not detections:
        raise SampleError(IMPORT_NO_FACE, f"{sample_id}: Face-API found no face (empty detection list)")
    if len(detections) > 1:
        raise SampleError(IMPORT_MULTIPLE_FACES, f"{sample_id}: Face-API found {len(detections)} faces")
    try:
        attrs = detections[0]["faceAttributes"]
        pose = attrs["headPose"]
        values = {
            "Gender": 1.0 if attrs["gender"] == "male" else 0.0,
            "Glasses": 0.0 if attrs["glasses"] == "NoGlasses" else 1.0,
            "Yaw": float(pose["yaw"]),
            "Pitch": float(pose["pitch"]),
            "Baldness": float(attrs["hair"]["bald"]),
            "Beard": float(attrs.get("facialHair", {}).get("beard", 0.0)),
            "Age": float(attrs["age"]),
            "Expression": float(attrs["smile"]),
        }
        return ImportedAttributes(values=values, roll=float(pose.get("roll", 0.0)))
    except (KeyError, TypeError, ValueError) as error:
        raise SampleError(IMPORT_INVALID, f"{sample_id}: Face-API record lacks or mangles {error}") from None


def iter_jsonl(url: str) -> Iterator[tuple[str, Any]]:
    """(id, detections) for every line of a DCGM ``.jsonl`` / ``.jsonl.gz`` file."""
    import fsspec

    with fsspec.open(url, "rt", compression="infer", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                yield str(record["id"]), record["detections"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{url} line {number}: not a {{id, detections}} record ({error})") from None


class AttributeImport:
    """Lookup of imported attributes by sample id, from a folder of JSON files or a JSONL file."""

    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        self._fs, self._root = fsspec.core.url_to_fs(self.url)
        self._table: Optional[dict[str, Union[ImportedAttributes, SampleError]]] = None
        if not self._fs.isdir(self._root):
            # One file: read and map it all now, then keep only the small results.
            self._table = {}
            for sample_id, detections in iter_jsonl(self.url):
                try:
                    self._table[sample_id] = map_detections(detections, sample_id)
                except SampleError as error:
                    self._table[sample_id] = error

    def __len__(self) -> int:
        return len(self._table) if self._table is not None else len(self._fs.glob(f"{self._root}/*.json"))

    def get(self, sample_id: str) -> ImportedAttributes:
        """The mapped attributes of ``sample_id``; SampleError for missing, faceless or multi-face records."""
        if self._table is not None:
            found = self._table.get(sample_id)
            if found is None:
                raise SampleError(IMPORT_MISSING, f"no imported attributes for {sample_id} in {self.url}")
            if isinstance(found, SampleError):
                raise SampleError(found.code, found.message)
            return found
        path = f"{self._root}/{sample_id}.json"
        if "/" in sample_id or not self._fs.isfile(path):
            raise SampleError(IMPORT_MISSING, f"no imported attributes file {sample_id}.json in {self.url}")
        try:
            with self._fs.open(path, "rt", encoding="utf-8") as handle:
                detections = json.load(handle)
        except json.JSONDecodeError as error:
            raise SampleError(IMPORT_INVALID, f"{path} is not JSON: {error}") from None
        return map_detections(detections, sample_id)
