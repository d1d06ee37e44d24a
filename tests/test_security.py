"""Security: malicious checkpoints, hostile sample ids, secrets, and what a local Ray exposes.

``tests/test_safe_pickle.py`` covers the restricted unpicklers themselves (TF and ADA
pickles with a shell command and an ``exec`` file write). Here every product loader
of every checkpoint format (TF pickle, ADA pickle, torch zip, torch legacy) meets
three payloads (a shell command, ``eval``, a file opened for writing) and must
refuse with an error naming the offending global, with no side effect.
"""

from __future__ import annotations

import ipaddress
import pickle
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from pipeline import layout
from pipeline.config import load_config, redacted_yaml
from pipeline.manifest import read_manifest
from pipeline.storage import open_storage
from stages.base import Sample, StageContext
from tests.conftest import CLI, ROOT, cli_env, write_images
from tests.doubles import PLUGINS
from tests.test_safe_pickle import _ada_pickle_with, _Shell, _tf_pickle_with

# -- malicious checkpoints ----------------------------------------------------------------


class _Eval:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


class _OpenForWriting:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# payload -> how the refusal names its global (restricted unpicklers: module.name; torch: "GLOBAL name")
ATTACKS = {"shell": (_Shell, r"(posix|os|nt)\.system|GLOBAL (posix|os|nt)?\.?system"),
           "eval": (_Eval, r"builtins\.eval|GLOBAL (builtins\.)?eval"),
           "file_write": (_OpenForWriting, r"(io|_io|builtins)\.open|GLOBAL (io\.|_io\.|builtins\.)?open")}


def _torch_zip(payload: object, state: dict) -> bytes:
    path = Path(tempfile.mkdtemp()) / "c.pt"
    torch.save({**state, "evil": payload}, path)
    return path.read_bytes()


def _torch_legacy(payload: object, state: dict) -> bytes:
    path = Path(tempfile.mkdtemp()) / "c.t7"
    torch.save({**state, "evil": payload}, path, _use_new_zipfile_serialization=False)
    return path.read_bytes()


def _load_generator(path: str):
    from stages.networks.stylegan2 import load_generator

    return load_generator(path)


def _load_e4e(path: str):
    from stages.networks.e4e import load_e4e

    return load_e4e(path)


def _load_styleflow(path: str):
    from stages.networks.styleflow import load_styleflow

    return load_styleflow(path)


def _load_dpr(path: str):
    from stages.networks.dpr import load_dpr

    return load_dpr(path)


def _load_bisenet(path: str):
    from stages.networks.bisenet import load_bisenet

    return load_bisenet(path)


# format -> (checkpoint file name, writer of a checkpoint carrying the payload, the product loader)
CHECKPOINTS = {
    "tf_pickle": ("stylegan2-ffhq-config-f.pkl", _tf_pickle_with, _load_generator),
    "ada_pickle": ("network-snapshot-000000.pkl", _ada_pickle_with, _load_generator),
    "torch_zip_rosinality": ("stylegan2-ffhq-config-f.pt", lambda p: _torch_zip(p, {"g_ema": {}}), _load_generator),
    "torch_zip_e4e": ("e4e_ffhq_encode.pt", lambda p: _torch_zip(p, {"state_dict": {}}), _load_e4e),
    "torch_zip_styleflow": ("modellarge10k.pt", lambda p: _torch_zip(p, {}), _load_styleflow),
    "torch_legacy_dpr": ("trained_model_03.t7", lambda p: _torch_legacy(p, {}), _load_dpr),
    "torch_zip_bisenet": ("79999_iter.pth", lambda p: _torch_zip(p, {}), _load_bisenet),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("checkpoint", sorted(CHECKPOINTS))
def test_malicious_checkpoints_are_refused_without_side_effects(tmp_path, checkpoint, attack):
    filename, write, load = CHECKPOINTS[checkpoint]
    payload_cls, global_name = ATTACKS[attack]
    marker = tmp_path / "pwned"
    path = tmp_path / filename
    path.write_bytes(write(payload_cls(str(marker))))
    with pytest.raises(Exception) as caught:
        load(str(path))
    assert re.search(global_name, str(caught.value)), f"{type(caught.value).__name__}: {caught.value}"
    assert isinstance(caught.value, pickle.UnpicklingError) or "weights" in str(caught.value).lower()
    assert not marker.exists()


def test_the_payloads_are_live(tmp_path):
    # The ordinary unpickler runs each payload: the refusals above are what stops them.
    for name, (payload_cls, _) in ATTACKS.items():
        marker = tmp_path / name
        pickle.loads(pickle.dumps(payload_cls(str(marker))))
        assert marker.exists(), name


# -- hostile sample ids ----------------------------------------------------------------------

HOSTILE_IDS = ["..", ".", "", "../../etc/passwd", "/etc/passwd", "a/../../b", "..\\..\\windows", "~root",
               "a\x00b", "-rf", ".hidden", "x" * 400, "CON", "\u00e9", "e\u0301", "shards/00000/stats.json",
               "../00001/samples/victim", "%2e%2e%2f", "a/b", "a_b", "nul\n", " ", "面孔/../../x"]


def test_no_sample_id_can_write_outside_its_own_folder(tmp_path):
    root = tmp_path / "out"
    storage = open_storage(str(root))
    config = load_config("tiny", overrides=(f"output={root}",))
    context = StageContext(storage=storage, config=config, stage_name="attribute")
    folders = set()
    for index, sample_id in enumerate(HOSTILE_IDS):
        sample = Sample(id=sample_id, uri="unused", shard=0, index=index)
        record = context.write_image(sample, "aligned", np.zeros((2, 2, 3), np.uint8))
        folder = Path(storage.full_path(record.path)).parent
        assert folder.parent == root / "shards" / "00000" / "samples", (sample_id, record.path)
        assert (folder / "aligned.png").is_file()
        folders.add(folder.name)
    assert len(folders) == len(HOSTILE_IDS)  # distinct ids never share (or overwrite) a folder
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p.is_relative_to(root / "shards" / "00000" / "samples") for p in written)
    for relpath in ("../x", "/etc/passwd", "shards/../../x", "a/../../x"):
        with pytest.raises(ValueError, match="escapes the output root"):
            storage.full_path(relpath)
    assert layout.safe_component("00042") == "00042"  # plain FFHQ ids keep their names


# -- secrets and network exposure --------------------------------------------------------------


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _listening(processes: list[psutil.Process]) -> dict[tuple[str, int], str]:
    found = {}
    for process in processes:
        try:
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found[(conn.laddr.ip, conn.laddr.port)] = " ".join(process.cmdline())[:120]
        except psutil.Error:
            continue
    return found


def test_secrets_stay_out_of_every_artifact_and_local_ray_listens_on_loopback_only(s3_bucket, tmp_path):
    endpoint, bucket, fs = s3_bucket
    write_images(tmp_path / "in", 10, seed=9)
    secret, token = f"fake-secret-{uuid.uuid4().hex}", f"fake-token-{uuid.uuid4().hex}"
    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths live inside it
    env = cli_env(AWS_ACCESS_KEY_ID="AKIDFAKEEXAMPLE", AWS_SECRET_ACCESS_KEY=secret,
                  AWS_SESSION_TOKEN=token, RAY_TMPDIR=ray_tmp)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # as in a user's shell: loopback is the driver's job
    output = f"s3://{bucket}/secret-run"
    args = ["run", "--profile", "tiny", "--no-progress", "--input", str(tmp_path / "in"), "--output", output,
            "stages.enabled=[attribute,relight,complete]", *PLUGINS, "shard_size=5", f"storage.endpoint_url={endpoint}",
            "ray.include_dashboard=true", "stages.relight.crash_ids=[img_001]", "stages.attribute.sleep_s=0.4"]
    try:
        _check_run_with_secrets(args, env, output, endpoint, bucket, fs, ray_tmp, (secret, token))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _check_run_with_secrets(args, env, output, endpoint, bucket, fs, ray_tmp, secrets) -> None:
    # stdout/stderr go to files: pipes could fill up and stall the run while it is being watched.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(CLI + args, env=env, cwd=ROOT, stdout=out, stderr=err, text=True,
                                   start_new_session=True)
        listening: dict[tuple[str, int], str] = {}
        deadline = time.time() + 240
        while process.poll() is None and time.time() < deadline:
            try:
                tree = [psutil.Process(process.pid)] + psutil.Process(process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                break
            listening.update(_listening(tree))
            time.sleep(0.3)
        process.wait(timeout=60)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    assert process.returncode == 0, stderr[-3000:]

    dashboard = {address: cmd for address, cmd in listening.items() if "dashboard/dashboard.py" in cmd}
    assert dashboard, f"no dashboard seen listening among {sorted(listening)}"
    exposed = {address: cmd for address, cmd in listening.items() if not _is_loopback(address[0])}
    assert not exposed, exposed

    texts = {"stdout": stdout, "stderr": stderr}
    for key in fs.find(f"{bucket}/secret-run"):
        if not key.endswith(".parquet"):
            texts[key] = fs.cat_file(key).decode("utf-8", "replace")
    storage = open_storage(output, {"client_kwargs": {"endpoint_url": endpoint}})
    manifest = read_manifest(storage)
    texts["manifest"] = str(manifest.to_pylist())
    assert "stage_exception" in texts["manifest"] and any("driver-" in key for key in texts)
    for path in Path(ray_tmp).rglob("*"):
        if path.is_file() and not path.is_socket() and path.stat().st_size < 50_000_000:
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    assert len(texts) > 20  # the run's files and Ray's session logs were all read
    # The workers' own logs were among them: the crash's traceback is there.
    assert any("relight crashed on img_001" in text for name, text in texts.items() if name.startswith(ray_tmp))
    for name, text in texts.items():
        assert not any(secret in text for secret in secrets), f"a credential leaked into {name}"


def test_saved_config_redacts_credentials_in_urls_and_secret_keys():
    config = load_config("tiny", overrides=("storage.endpoint_url=https://user:hunter2-pass@minio.example:9000",
                                            "input.source=s3://AKIDX:hunter2-key@bucket/photos"))
    saved = redacted_yaml(config)
    assert "hunter2" not in saved and "minio.example:9000" in saved and "bucket/photos" in saved


def test_run_log_strips_credentials_from_urls(tmp_path):
    from pipeline import driver

    storage = open_storage(str(tmp_path / "out"))
    with driver._run_log(storage) as run_log:
        driver.log.warning("cannot list %s", "s3://AKIDX:hunter2-key@bucket/photos")
    text = Path(run_log.path).read_text()
    assert "cannot list s3://<redacted>@bucket/photos" in text and "hunter2" not in text
