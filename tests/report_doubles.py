"""Test doubles that give a run everything a report or notebook draws: an attribute vector, a UV map, metrics.

They extend the pipeline-core doubles (tests/doubles.py) with the outputs of the real
attribute and complete stages (``attribute_vector``, ``uv``, ``preview``,
``complete_valid_ratio``), computed cheaply from the real pixels of each photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from stages.base import Sample, StageResult
from tests.doubles import MeanFilterStage, ThumbnailStage, stage_class_overrides

UV_PX = 64


class AttributeVectorStage(ThumbnailStage):
    """The thumbnail double plus a 17-value ``attribute_vector`` from the photo's pixel statistics."""

    manifest_fields = (*ThumbnailStage.manifest_fields, pa.field("attribute_vector", pa.list_(pa.float32())))

    def process(self, sample: Sample) -> StageResult:
        result = super().process(sample)
        image = self.context.read_image(sample.outputs["aligned"].path).astype(np.float32) / 255.0
        cells = [cell.mean() for row in np.array_split(image, 3, axis=0) for cell in np.array_split(row, 3, axis=1)]
        quantiles = np.quantile(image, np.linspace(0.1, 0.9, 8))
        vector = np.concatenate([cells, quantiles]).astype(np.float32)
        if sample.id.endswith("1"):
            vector[15] = np.nan  # "Age" unavailable, as without deepface weights
        result.fields["attribute_vector"] = vector
        return result


class UVStage(MeanFilterStage):
    """The filter double plus a ``uv`` map (the relit thumbnail tiled to 64x64), a ``preview`` and a metric."""

    manifest_fields = (*MeanFilterStage.manifest_fields, pa.field("complete_valid_ratio", pa.float32()))

    def process(self, sample: Sample) -> StageResult:
        result = super().process(sample)
        relit = self.context.read_image(sample.outputs["relit_front"].path)
        reps = (UV_PX // relit.shape[0] + 1, UV_PX // relit.shape[1] + 1, 1)
        uv = np.ascontiguousarray(np.tile(relit, reps)[:UV_PX, :UV_PX])
        self.context.write_image(sample, "uv", uv)
        self.context.write_image(sample, "preview", np.ascontiguousarray(uv[:, ::-1]))
        result.fields["complete_valid_ratio"] = float((uv.mean(axis=2) > 40).mean())
        return result


PLUGINS = stage_class_overrides(attribute="tests.report_doubles:AttributeVectorStage",
                                relight="tests.doubles:InvertStage", complete="tests.report_doubles:UVStage")
STAGES = "stages.enabled=[attribute,relight,complete]"


def produce_run(root: Path) -> dict:
    """A finished local run at ROOT/out: 9 photos and a corrupt file, shard size 3, relight fails img_002."""
    from tests.conftest import cli_env, run_cli, write_images  # test process only, never the Ray workers

    ids = write_images(root / "in", 9)
    (root / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    output = root / "out"
    run_cli(["run", "--profile", "tiny", "--no-progress", "--input", str(root / "in"), "--output", str(output),
             STAGES, *PLUGINS, "shard_size=3", "stages.relight.fail_ids=[img_002]"], cli_env())
    return {"root": root, "ids": ids, "output": output}
