"""``ffhq-uv export``: each format on a tiny finished run, local and on moto S3, read back the way training
code reads it; resume after an interruption writes nothing twice."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.export import ExportOptions, export_run
from pipeline.interpolate import InterpolateConfig, class_names, face_class
from pipeline.storage import Storage
from stages.errors import ConfigError
from stages.views import VIEW_NAMES
from tests.conftest import run_cli
from tests.tiny_runs import TinySample, condition, write_run

SAMPLES = [TinySample("00001", gender=1.0, age=41.0, beard=0.6), TinySample("00002", age=22.0),
           TinySample("00003", status="filtered", bs_error=30.0), TinySample("00004", gender=1.0, age=63.0),
           TinySample("00005", status="failed"), TinySample("00006", age=30.0), TinySample("x.7", age=50.0)]
OK = ["00001", "00002", "00004", "00006", "x.7"]


@pytest.fixture
def run(tmp_path) -> Storage:
    return write_run(str(tmp_path / "run"), tmp_path / "face-latents", SAMPLES)


def _uv(run: Storage, sample_id: str) -> bytes:
    [path] = run.glob(f"shards/*/samples/{sample_id}/uv.png")
    return run.read_bytes(path)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "_export" not in p.parts}


def test_ffhq_uv_layout_latents_and_meta_info(run, tmp_path):
    dest = tmp_path / "ffhq-uv"
    summary = export_run(run, str(dest), ExportOptions("ffhq-uv"))
    assert summary.samples == len(OK) and summary.units == 1
    expected = {"meta-info.json", *(f"uv-maps/000/{i}.png" for i in OK),
                *(f"face-latents/000/{i}/{i}_{v}_latent.pt" for i in OK for v in VIEW_NAMES)}
    assert _files(dest) == expected
    for sample_id in OK:
        assert (dest / f"uv-maps/000/{sample_id}.png").read_bytes() == _uv(run, sample_id)
        for view in VIEW_NAMES:  # the released files, byte for byte
            source = tmp_path / "face-latents" / "000" / sample_id / f"{sample_id}_{view}_latent.pt"
            assert (dest / f"face-latents/000/{sample_id}/{sample_id}_{view}_latent.pt").read_bytes() == \
                source.read_bytes()
    meta = json.loads((dest / "meta-info.json").read_text())
    assert list(meta) == OK
    assert meta["00001"] == {"ffhq_index": 1, "gender": "male", "age": 41.0, "beard": pytest.approx(0.6),
                             "status": "ok", "clip": "000"}
    assert meta["00002"]["gender"] == "female" and meta["x.7"]["ffhq_index"] is None


def test_include_filtered_adds_the_filtered_samples(run, tmp_path):
    export_run(run, str(tmp_path / "all"), ExportOptions("ffhq-uv", include_filtered=True))
    meta = json.loads((tmp_path / "all" / "meta-info.json").read_text())
    assert list(meta) == ["00001", "00002", "00003", "00004", "00006", "x.7"]
    assert meta["00003"]["status"] == "filtered"


def _read_ada_zip(path: Path) -> tuple[list[str], np.ndarray, zipfile.ZipFile]:
    """What stylegan2-ada-pytorch's ImageFolderDataset does with a zip: every member, image names sorted,
    dataset.json's labels looked up per image name, int labels -> int64, vectors -> float32."""
    archive = zipfile.ZipFile(path)
    names = set(archive.namelist())
    images = sorted(n for n in names if Path(n).suffix.lower() in Image.registered_extensions())
    labels = dict(json.loads(archive.read("dataset.json"))["labels"])
    array = np.array([labels[name] for name in images])
    return images, array.astype({1: np.int64, 2: np.float32}[array.ndim]), archive


@pytest.mark.parametrize("labels", ["attributes", "classes"])
def test_stylegan2_ada_zip_labels_line_up_with_images(run, tmp_path, labels):
    dest = tmp_path / "ada" / "ffhq-uv.zip"
    export_run(run, str(dest), ExportOptions("stylegan2-ada", labels=labels))
    images, array, archive = _read_ada_zip(dest)
    assert images == [f"00000/img{i:08d}.png" for i in range(len(OK))]
    config = InterpolateConfig()
    for name, label, sample_id in zip(images, array, OK):
        assert archive.read(name) == _uv(run, sample_id)
        front = condition(next(s for s in SAMPLES if s.id == sample_id), "front")
        if labels == "attributes":
            assert array.dtype == np.float32 and np.array_equal(label, front)
        else:
            assert array.dtype == np.int64 and class_names(config)[label] == face_class(front, config)


def test_stylegan2_ada_folder_with_cropface630(run, tmp_path):
    dest = tmp_path / "ada-folder"
    export_run(run, str(dest), ExportOptions("stylegan2-ada", labels="none", crop="cropface630"))
    assert json.loads((dest / "dataset.json").read_text()) == {"labels": None}
    image = np.asarray(Image.open(dest / "00000" / "img00000000.png"))
    assert image.shape == (1024, 1024, 3)
    uv = np.asarray(Image.open(io.BytesIO(_uv(run, "00001"))))  # 64 px: the 1024 box scaled by 1/16
    crop = np.asarray(Image.fromarray(uv[7:47, 12:52]).resize((1024, 1024), Image.LANCZOS))
    assert np.array_equal(image, crop)


def test_webdataset_shards_read_by_the_webdataset_package(run, tmp_path):
    import webdataset as wds

    dest = tmp_path / "wds"
    summary = export_run(run, str(dest), ExportOptions("webdataset", shard_size=2))
    shards = sorted(p.name for p in dest.glob("*.tar"))
    assert shards == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"] and summary.units == 3
    dataset = wds.WebDataset([str(dest / s) for s in shards], shardshuffle=False).decode("rgb8")
    records = list(dataset)
    assert [r["__key__"] for r in records] == [i.replace(".", "_") for i in OK]
    for record, sample_id in zip(records, OK):
        assert record["json"]["id"] == sample_id and record["json"]["complete_bs_error"] == 5.0
        assert np.array_equal(record["png"], np.asarray(Image.open(io.BytesIO(_uv(run, sample_id)))))
    again = tmp_path / "wds2"
    export_run(run, str(again), ExportOptions("webdataset", shard_size=2))
    assert (again / shards[0]).read_bytes() == (dest / shards[0]).read_bytes()  # deterministic shards


class _Interrupted(Exception):
    pass


def _count_writes(monkeypatch, fail_after: int | None = None) -> list[str]:
    """Record every completed destination write (files and uploads); optionally raise on write n+1."""
    written: list[str] = []
    for method in ("write_bytes", "put_file"):
        original = getattr(Storage, method)

        def wrapper(self, relpath, data, _original=original):
            if fail_after is not None and len(written) >= fail_after and "dest" in self.root_url:
                raise _Interrupted(relpath)
            _original(self, relpath, data)
            if "dest" in self.root_url:
                written.append(relpath)
        monkeypatch.setattr(Storage, method, wrapper)
    return written


@pytest.mark.parametrize("fmt", ["ffhq-uv", "webdataset", "stylegan2-ada"])
def test_interrupted_export_resumes_writing_nothing_twice(tmp_path, monkeypatch, fmt):
    samples = [TinySample(f"{i:05d}", age=20.0 + i) for i in range(7)]
    run = write_run(str(tmp_path / "run"), tmp_path / "face-latents", samples)
    options = ExportOptions(fmt, shard_size=2)
    dest = str(tmp_path / "dest")
    import pipeline.export.ffhq_uv as ffhq_uv
    import pipeline.export.stylegan2_ada as ada

    monkeypatch.setattr(ffhq_uv, "CLIP_SIZE", 3)  # several clips / image groups on a small run
    monkeypatch.setattr(ada, "GROUP_SIZE", 3)
    with monkeypatch.context() as patch:
        first = _count_writes(patch, fail_after=9)
        with pytest.raises(_Interrupted):
            export_run(run, dest, options)
    second = _count_writes(monkeypatch)
    summary = export_run(run, dest, options)
    assert summary.units_skipped >= 1
    assert not set(first) & set(second), sorted(set(first) & set(second))
    fresh = tmp_path / "fresh"
    export_run(run, str(fresh), options)
    assert _files(Path(dest)) == _files(fresh)
    for name in _files(fresh):
        assert (Path(dest) / name).read_bytes() == (fresh / name).read_bytes(), name


def test_export_refuses_another_selection_at_the_same_destination(run, tmp_path):
    export_run(run, str(tmp_path / "d"), ExportOptions("webdataset"))
    with pytest.raises(ConfigError, match="different include_filtered"):
        export_run(run, str(tmp_path / "d"), ExportOptions("webdataset", include_filtered=True))


def test_local_to_s3_and_s3_to_local(tmp_path, s3_bucket):
    import webdataset as wds

    endpoint, bucket, fs = s3_bucket
    options = {"client_kwargs": {"endpoint_url": endpoint}}
    local_run = write_run(str(tmp_path / "run"), tmp_path / "face-latents", SAMPLES)
    export_run(local_run, f"s3://{bucket}/ffhq-uv", ExportOptions("ffhq-uv"), options)
    found = {p.split("/", 2)[2] for p in fs.find(f"{bucket}/ffhq-uv") if "/_export/" not in p}
    assert found == {"meta-info.json", *(f"uv-maps/000/{i}.png" for i in OK),
                     *(f"face-latents/000/{i}/{i}_{v}_latent.pt" for i in OK for v in VIEW_NAMES)}
    assert fs.cat_file(f"{bucket}/ffhq-uv/uv-maps/000/00001.png") == _uv(local_run, "00001")

    s3_run = write_run(f"s3://{bucket}/run", tmp_path / "latents-s3", SAMPLES, storage_options=options)
    result = run_cli(["export", f"s3://{bucket}/run", str(tmp_path / "wds"), "--format", "webdataset",
                      "--endpoint-url", endpoint])
    assert f"exported {len(OK)} samples" in result.stdout
    records = list(wds.WebDataset(str(tmp_path / "wds" / "shard-000000.tar"), shardshuffle=False))
    assert len(records) == len(OK) and records[0]["png"] == _uv(s3_run, "00001")
    with tarfile.open(tmp_path / "wds" / "shard-000000.tar") as tar:
        assert tar.getnames()[:2] == ["00001.png", "00001.json"]
