"""What a new user meets: the README's first command, and one-line errors for common mistakes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env, run_cli, shared_data


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    """The run must fail with exit code 2 and exactly one line on stderr, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ffhq-uv: error: ") and "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def one_photo(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(shared_data("faces/obama.jpg"), folder)
    return folder


def test_missing_weights_file(one_photo, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    line = _one_line_error(run_cli(["run", "--profile", "ffhq-uv", "--input", str(one_photo), "--output",
                                    str(tmp_path / "out"), f"models.weights_dir={weights}"], check=False))
    assert "e4e_ffhq_encode.pt" in line and "README" in line


def test_unreadable_input_path(tmp_path):
    line = _one_line_error(run_cli(["run", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")],
                                   check=False))
    assert "does not exist" in line and str(tmp_path / "nowhere") in line


def test_config_typo(one_photo, tmp_path):
    line = _one_line_error(run_cli(["run", "--input", str(one_photo), "--output", str(tmp_path / "out"),
                                    "stages.unwrap.topolgy=hifi3dpp"], check=False))
    assert "unknown config key: stages.unwrap.topolgy" in line


def test_s3_without_credentials(one_photo, tmp_path, s3_server):
    env = cli_env(AWS_EC2_METADATA_DISABLED="true", AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
                  AWS_CONFIG_FILE=str(tmp_path / "none"))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(key, None)
    line = _one_line_error(run_cli(["run", "--input", str(one_photo), "--output", "s3://bucket/out",
                                    f"storage.endpoint_url={s3_server}"], env=env, check=False))
    assert "NoCredentialsError" in line and "AWS_ACCESS_KEY_ID" in line


def _readme_first_command() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return blocks[0].strip()


def test_readme_first_command_runs_the_embedded_default(tmp_path):
    """The README's first command, as written, in a fresh copy of the project."""
    command = _readme_first_command()
    assert command.endswith("ffhq-uv run") and "pip install torch==2.13.0" in command
    project = tmp_path / "project"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True).stdout
    files = [f for f in tracked.split("\0") if f] or [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                                                        if p.is_file() and ".venv" not in p.parts]
    for relative in files:
        target = project / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    result = subprocess.run(["bash", "-c", command], cwd=project, env=env, capture_output=True, text=True,
                            timeout=1500)
    assert result.returncode == 0, result.stderr[-4000:]
    # Both pass the quality filter: the astronaut's photo is lit from one side, and relit up to the face's outline its
    # map's brightness-symmetry error is 14.1 < 20 (24.7 while the correction faded out inside the outline).
    assert "2 ok, 0 failed, 0 filtered" in result.stdout, result.stdout
    # A quiet first run: the progress line and the summary, none of Ray's internals (pipeline/quiet.py).
    ray_noise = ("core_worker.cc", "UserWarning", "Token authentication", "Traceback")
    assert not [line for line in result.stderr.splitlines() if any(n in line for n in ray_noise)], result.stderr
    uv_maps = list((project / "runs" / "photo-demo" / "shards").glob("*/samples/*/uv.png"))
    assert sorted(p.parent.name for p in uv_maps) == ["astronaut", "grace_hopper"]
    from PIL import Image

    with Image.open(uv_maps[0]) as image:
        assert image.size == (1024, 1024) and image.mode == "RGB"
    run_dir = project / "runs" / "photo-demo"
    assert (run_dir / "contact_sheet.png").stat().st_size > 0 and (run_dir / "report.html").exists()
    assert "contact sheet:" in result.stdout and "gallery:" in result.stdout
    # Grace Hopper wears glasses, whose frames are masked out of her map; the astronaut does not.
    from pipeline.manifest import read_manifest

    rows = read_manifest(str(run_dir), columns=["id", "unwrap_glasses_front", "unwrap_masked_fraction_front",
                                                "attribute_vector", "attribute_provenance"])
    by_id = {row["id"]: row for row in rows.to_pylist()}
    assert by_id["grace_hopper"]["unwrap_glasses_front"] is True and by_id["astronaut"]["unwrap_glasses_front"] is False
    assert by_id["grace_hopper"]["unwrap_masked_fraction_front"] > 0.2
    # ... and her attribute vector says so (index 10: Glasses), measured, not the default.
    assert [by_id[i]["attribute_vector"][10] for i in ("grace_hopper", "astronaut")] == [1.0, 0.0]
    assert by_id["grace_hopper"]["attribute_provenance"][10] == "glasses_bridge"
