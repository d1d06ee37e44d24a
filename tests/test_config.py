"""The run config: profiles, overrides, typos, redaction, stage order."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from pipeline.config import PROFILES, as_overrides, enabled_stages, load_config, redacted_yaml, stage_settings
from stages.errors import ConfigError


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_resolves_with_its_stages_in_pipeline_order(profile):
    config = load_config(profile)
    assert config.profile == profile
    names = enabled_stages(config)
    assert names, f"profile {profile} enables no stage"
    order = ["inversion", "render", "attribute", "edit", "relight", "unwrap", "complete", "fit"]
    assert names == sorted(names, key=order.index)
    for name in names:
        assert stage_settings(config, name).batch_size >= 1


def test_photo_default_runs_the_four_cpu_stages():
    config = load_config("photo")
    assert enabled_stages(config) == ["attribute", "relight", "unwrap", "complete"]
    assert config.output == "runs/photo-demo" and config.models.device == "cpu"


def test_overrides_are_typed_and_enabled_order_is_fixed():
    config = load_config("photo", overrides=("shard_size=7", "stages.enabled=[complete,attribute]",
                                             "stages.relight.threshold=0.5"))
    assert config.shard_size == 7 and isinstance(config.shard_size, int)
    assert enabled_stages(config) == ["attribute", "complete"]
    assert stage_settings(config, "relight").threshold == 0.5


@pytest.mark.parametrize("override, message", [
    ("stages.unwrap.topolgy=x", "unknown config key: stages.unwrap.topolgy"),
    ("shard_size=many", "shard_size: Value 'many' .* could not be converted to Integer"),
    ("stages.enabled=[attribute,paint]", "unknown stage"),
    ("models.device=tpu", r"models.device: Invalid value 'tpu', expected one of \['cpu', 'cuda'\]"),
    ("shard_size=0", "shard_size: 0 is out of range; allowed: >= 1"),
    ("no_equals_sign", "is not key=value"),
])
def test_mistakes_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError, match=message) as raised:
        load_config("photo", overrides=(override,))
    assert "\n" not in str(raised.value)


def test_unknown_profile_and_missing_file():
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        load_config("fast")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("photo", files=("/nonexistent/config.yaml",))


def test_config_file_layers_between_profile_and_overrides(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("shard_size: 11\nname: mine\n")
    config = load_config("photo", files=(str(extra),), overrides=("name=theirs",))
    assert config.shard_size == 11 and config.name == "theirs" and config.output == "runs/theirs"


def test_saved_config_redacts_secrets_and_url_credentials():
    config = load_config("photo", overrides=("input.source=s3://AKIAFAKE:hunter2secret@bucket/in",))
    text = redacted_yaml(config)
    assert "hunter2secret" not in text and "<redacted>@bucket/in" in text


def test_overrides_round_trip_every_value():
    config = load_config("photo", overrides=("output=/tmp/with space",
                                             "stages.relight.target_sh=[1,0,0,0,0,0,0,0,0.5]"))
    values = OmegaConf.to_container(config)
    values.pop("profile")
    again = load_config("photo", overrides=tuple(as_overrides(values)))
    assert OmegaConf.to_container(again) == OmegaConf.to_container(config)
