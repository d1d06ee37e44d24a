"""The stage contract fails loudly: a configuration mistake is one line at start-up or one line from a worker,
never thousands of failed rows."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest
from PIL import Image

from pipeline import cli
from pipeline.config import load_config, run_schema
from pipeline.manifest import read_manifest
from pipeline.storage import open_storage
from stages import STAGES
from stages.errors import ConfigError
from tests.conftest import cli_env, run_cli, shared_data, write_images
from tests.doubles import PLUGINS


def _choice_settings(schema: type, prefix: str = "") -> list[tuple[str, tuple[str, ...]]]:
    """(dotted key, allowed values) of every Literal-typed setting under a settings dataclass."""
    found = []
    hints = typing.get_type_hints(schema)
    for item in dataclasses.fields(schema):
        kind = hints[item.name]
        if typing.get_origin(kind) is typing.Union:  # Optional[Literal[...]]
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if typing.get_origin(kind) is typing.Literal:
            found.append((f"{prefix}{item.name}", typing.get_args(kind)))
        elif dataclasses.is_dataclass(kind):
            found += _choice_settings(kind, f"{prefix}{item.name}.")
    return found


CHOICES = _choice_settings(run_schema())


def test_every_stage_has_its_choices_typed():
    keys = {key for key, _ in CHOICES}
    # One per kind of choice, so that a stage that goes back to a plain str is noticed.
    for expected in ("models.device", "input.format", "topology.name", "stages.unwrap.multiple_faces",
                     "stages.unwrap.rasterizer", "stages.unwrap.landmarks", "stages.attribute.input",
                     "stages.attribute.lighting", "stages.attribute.deepface", "stages.attribute.source_yaw",
                     "stages.relight.method", "stages.inversion.landmarks"):
        assert expected in keys
    for name in STAGES.names:
        assert dataclasses.is_dataclass(STAGES.stage_class(name).Settings)


@pytest.mark.parametrize("key, allowed", CHOICES, ids=[key for key, _ in CHOICES])
def test_a_wrong_choice_is_one_line_at_start_up(key, allowed, tmp_path, capsys):
    output = tmp_path / "run"
    code = cli.main(["run", "--output", str(output), f"{key}=bogus_value"])
    stderr = capsys.readouterr().err.strip()
    assert code == 2
    assert len(stderr.splitlines()) == 1, stderr
    assert key in stderr and "bogus_value" in stderr
    assert all(value in stderr for value in allowed), stderr
    assert not output.exists()  # nothing written: not even the run folder


def test_the_issue_typo_is_refused_before_anything_runs(tmp_path):
    result = run_cli(["run", "--input", str(tmp_path), "--output", str(tmp_path / "out"),
                      "stages.unwrap.multiple_faces=rejct"], check=False, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ffhq-uv: error: stages.unwrap.multiple_faces: Invalid value 'rejct', expected one of ['largest', 'reject']"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("override, message", [
    ("stages.complete.pyramid_levels=11", "stages.complete.pyramid_levels: 11 is out of range; allowed: 1..10"),
    ("stages.relight.threshold=-1", "stages.relight.threshold: -1.0 is out of range; allowed: >= 0"),
    ("stages.unwrap.batch_size=0", "stages.unwrap.batch_size: 0 is out of range; allowed: >= 1"),
])
def test_ranges_are_checked_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("photo", overrides=(override,))


def test_a_config_error_inside_a_worker_stops_the_run(tmp_path):
    write_images(tmp_path / "in", 6)
    output = tmp_path / "out"
    result = run_cli(["run", "--profile", "tiny", "--no-progress", "--no-visuals", "--input", str(tmp_path / "in"),
                      "--output", str(output), "stages.enabled=[attribute,relight]", *PLUGINS, "shard_size=6",
                      "stages.relight.config_error_ids=[img_003]"], cli_env(), check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        "ffhq-uv: error: relight found a configuration mistake at img_003"
    assert not list(output.glob("shards/*/stats.json"))  # no shard committed with failed rows


def test_a_chain_the_input_cannot_feed_is_refused_at_start_up(tmp_path):
    write_images(tmp_path / "in", 2)
    output = tmp_path / "out"
    result = run_cli(["run", "--input", str(tmp_path / "in"), "--output", str(output),
                      "stages.enabled=[unwrap,complete]"], check=False, timeout=120)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ffhq-uv: error: stages.enabled: stage unwrap needs one of relit_{view}, view_{view}, "
                           "aligned; input.format=folder provides only photo and no stage runs before it.")
    assert not output.exists()


def test_unwrap_and_complete_run_on_ffhq_uv_views(tmp_path):
    views = shared_data("ffhq_uv_example/edit")  # FFHQ-UV's flat <id>_<view>.png files (and a latent file)
    output = tmp_path / "out"
    run_cli(["run", "--no-progress", "--no-visuals", "--input", str(views), "--output", str(output),
             "input.format=views", "stages.enabled=[unwrap,complete]", f"topology.cache_dir={tmp_path / 'cache'}",
             "stages.complete.preview=false"], timeout=600)
    (row,) = read_manifest(open_storage(str(output))).to_pylist()
    assert (row["id"], row["status"]) == ("01223", "ok"), row
    assert row["source_uri"].endswith("01223_front.png")
    assert sorted(row["complete_views"]) == ["front", "left", "right"]
    outputs = dict(row["outputs"])
    uv = np.asarray(Image.open(output / outputs["uv"]["path"]))
    assert uv.shape == (1024, 1024, 3) and uv.std() > 10  # a real texture, not a flat fill
    # The turned views see opposite cheeks: each side view fills texels the other misses.
    left, right = (np.asarray(Image.open(output / outputs[f"uvmask_{v}"]["path"])) > 127 for v in ("left", "right"))
    assert (left & ~right).sum() > 1000 and (right & ~left).sum() > 1000


def test_views_layouts_are_listed_as_one_sample_per_id(tmp_path):
    from pipeline.inputs import list_inputs

    for view in ("front", "left", "right"):
        Image.new("RGB", (80, 80)).save(tmp_path / f"nested_{view}.png")  # flat layout
        (tmp_path / "00042").mkdir(exist_ok=True)
        Image.new("RGB", (80, 80)).save(tmp_path / "00042" / f"00042_{view}.png")  # FFHQ-UV's edit/<id>/<id>_<view>
        (tmp_path / "abc").mkdir(exist_ok=True)
        Image.new("RGB", (80, 80)).save(tmp_path / "abc" / f"{view}.png")  # a folder per sample
    Image.new("RGB", (80, 80)).save(tmp_path / "abc" / "preview.png")  # not a view: ignored
    rows = {r["id"]: dict(r["inputs"]) for r in list_inputs(str(tmp_path), "views", [".png"], None).to_pylist()}
    assert sorted(rows) == ["00042", "abc", "nested"]
    assert all(sorted(inputs) == ["view_front", "view_left", "view_right"] for inputs in rows.values())
    assert rows["abc"]["view_left"].endswith("abc/left.png")


def test_a_run_saved_before_topology_moved_still_resumes(tmp_path):
    from omegaconf import OmegaConf

    from pipeline.planning import load_run_config

    saved = OmegaConf.to_container(load_config("photo", overrides=(f"output={tmp_path}",)), resolve=True)
    del saved["topology"]
    saved["stages"]["unwrap"].update(topology="hifi3dpp", topology_obj="/heads/head.obj", cache_dir="/cache")
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(saved)))
    config = load_run_config(str(tmp_path))
    assert (config.topology.name, config.topology.obj, config.topology.cache_dir) == ("hifi3dpp", "/heads/head.obj",
                                                                                   "/cache")
