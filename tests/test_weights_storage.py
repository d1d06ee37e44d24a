"""models.weights_dir on object storage: weights are found, cached locally and loaded like local ones."""

from __future__ import annotations

import pytest

from pipeline.config import load_config, stage_settings
from pipeline.storage import open_storage
from stages.base import StageContext
from stages.errors import ConfigError
from tests.conftest import shared_data


def test_dpr_weights_from_s3(s3_bucket, monkeypatch, tmp_path):
    endpoint, bucket, fs = s3_bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # botocore's standard variable, read by s3fs clients
    fs.put(str(shared_data("dpr/trained_model_03.t7")), f"{bucket}/weights/dpr_model/trained_model_03.t7")
    from stages.relight import RelightStage

    config = load_config("photo", overrides=(f"models.weights_dir=s3://{bucket}/weights", f"output={tmp_path}",
                                             "stages.relight.method=dpr"))
    settings = stage_settings(config, "relight")
    RelightStage.preflight(settings, config)
    stage = RelightStage(settings, StageContext(storage=open_storage(str(tmp_path)), config=config,
                                                stage_name="relight"))
    stage.setup()
    assert stage.relighter is not None

    missing = load_config("photo", overrides=(f"models.weights_dir=s3://{bucket}/nothing", "stages.relight.method=dpr"))
    with pytest.raises(ConfigError, match=f"missing weights file s3://{bucket}/nothing/dpr_model/trained_model_03.t7"):
        RelightStage.preflight(stage_settings(missing, "relight"), missing)
