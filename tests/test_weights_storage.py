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


def test_hifi3dpp_assets_from_s3(s3_bucket, monkeypatch, tmp_path):
    # The official topo_assets on object storage: the mesh is copied once per node, the mask PNGs read through
    # fsspec, and the preflight finds them (it used to look for a local path and fail).
    import cv2
    import numpy as np

    from stages.geometry.topologies import load_topology, topology_from_config
    from stages.unwrap import UnwrapStage

    endpoint, bucket, fs = s3_bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("FFHQ_UV_WEIGHTS_CACHE", str(tmp_path / "node-cache"))
    head = shared_data("hifi3dpp/head_teaser1.obj")
    hair = np.zeros((512, 512), np.uint8)
    hair[:40] = 255
    fs.put(str(head), f"{bucket}/weights/topo_assets/hifi3dpp_mean_face.obj")
    fs.pipe(f"{bucket}/weights/topo_assets/hair_mask.png", cv2.imencode(".png", hair)[1].tobytes())
    config = load_config("photo", overrides=(f"models.weights_dir=s3://{bucket}/weights", "topology.name=hifi3dpp",
                                             f"topology.cache_dir={tmp_path / 'topology'}"))
    UnwrapStage.preflight(stage_settings(config, "unwrap"), config)
    topology = topology_from_config(config)
    assert len(topology.vertices) == 20481
    masks = topology.masks()
    assert masks["hair"][:79].min() == 1.0 and masks["hair"][81:].max() == 0.0  # the official PNG, resized
    local = load_topology("hifi3dpp", obj_path=str(head), cache_dir=tmp_path / "local")
    assert not np.array_equal(local.masks()["hair"], masks["hair"])  # the drawn hair region is not the PNG's

    missing = load_config("photo", overrides=(f"models.weights_dir=s3://{bucket}/nothing", "topology.name=hifi3dpp"))
    with pytest.raises(ConfigError, match="hifi3dpp topology needs topology.obj"):
        UnwrapStage.preflight(stage_settings(missing, "unwrap"), missing)


def test_faithful_fit_weights_from_s3(s3_bucket, monkeypatch, tmp_path):
    # The faithful profile's checkpoints and assets under an s3:// weights_dir: checked and loaded like local ones.
    from stages.fitting.faithful_models import check_files, faithful_files, load_faithful_models
    from tests.tiny_fit_weights import write_faithful_weights_dir

    endpoint, bucket, fs = s3_bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("FFHQ_UV_WEIGHTS_CACHE", str(tmp_path / "node-cache"))
    root = write_faithful_weights_dir(tmp_path / "w", shared_data("hifi3dpp/head_teaser1.obj"))
    for name in faithful_files():
        fs.put(str(root / name), f"{bucket}/weights/{name}")
    check_files(f"s3://{bucket}/weights")
    models = load_faithful_models(f"s3://{bucket}/weights")
    assert models.face_model is not None and models.template5.shape == (5, 3)
    with pytest.raises(ConfigError, match=r"missing weights file .* \(the faithful fit profile\)"):
        check_files(f"s3://{bucket}/nothing")
