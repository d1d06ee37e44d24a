"""Pool sizes from the cluster's resources, the device Ray assigned, the node-local weights cache (no Ray needed)."""

from __future__ import annotations

import pytest

from pipeline import placement
from pipeline.cluster_checks import is_local_path
from pipeline.config import load_config, stage_settings
from pipeline.placement import PoolSize, assigned_device, pool_sizes
from stages.base import StageSettings
from stages.errors import ConfigError
from stages.networks import weights_cache


def test_auto_gives_one_actor_per_gpu_and_fills_the_cpus_left():
    settings = {"inversion": StageSettings(num_cpus=1, num_gpus=1, pool_size="auto"),
                "unwrap": StageSettings(num_cpus=2, pool_size="auto"),
                "complete": StageSettings(num_cpus=1, pool_size=2)}
    pools = pool_sizes(settings, {"CPU": 16.0, "GPU": 4.0})
    assert pools["inversion"] == PoolSize(4, 4)  # one per GPU
    assert pools["complete"] == PoolSize(2, 2)
    assert pools["unwrap"] == PoolSize(5, 5)  # (16 - 2 fixed - 4 for the GPU actors) / 2


def test_auto_gpu_stages_share_the_gpus_left_by_fixed_pools():
    settings = {"inversion": StageSettings(num_gpus=0.5, pool_size="auto"),
                "edit": StageSettings(num_gpus=0.5, pool_size="auto"),
                "relight": StageSettings(num_gpus=0.25, pool_size=4)}
    pools = pool_sizes(settings, {"CPU": 64.0, "GPU": 8.0})
    assert pools["inversion"] == pools["edit"] == PoolSize(7, 7)  # (8 - 1) GPUs / (0.5 + 0.5) per set
    assert pool_sizes(settings, {"CPU": 4.0})["inversion"] == PoolSize(1, 1)  # no GPU yet: one, waiting


@pytest.mark.parametrize("profile, gpus, actors", [("ffhq-uv", 6.0, 4), ("from-latents", 6.0, 8)])
def test_gpu_profiles_size_their_gpu_pools_from_the_cluster_by_default(profile, gpus, actors):
    """The GPU profiles' GPU stages default to ``pool_size: auto``: as many actor sets as the GPUs hold."""
    config = load_config(profile, overrides=("models.weights_dir=/weights",))
    enabled = list(config.stages.enabled)
    settings = {name: stage_settings(config, name) for name in enabled}
    pools = pool_sizes(settings, {"CPU": 64.0, "GPU": gpus})
    gpu_stages = [name for name in enabled if settings[name].num_gpus > 0]
    assert gpu_stages and all(pools[name] == PoolSize(actors, actors) for name in gpu_stages)
    assert sum(settings[name].num_gpus * actors for name in gpu_stages) <= gpus


def test_max_pool_size_makes_an_autoscaling_pool():
    pools = pool_sizes({"a": StageSettings(pool_size=2, max_pool_size=6),
                        "b": StageSettings(num_gpus=1, pool_size="auto", max_pool_size="auto")}, {"CPU": 8, "GPU": 2})
    assert pools["a"] == PoolSize(2, 6) and pools["a"].describe() == "2 to 6 actors"
    assert pools["b"] == PoolSize(2, None)


@pytest.mark.parametrize("override, message", [
    ("stages.relight.pool_size=many", "stages.relight.pool_size must be a positive integer or 'auto', not 'many'"),
    ("stages.relight.pool_size=0", "stages.relight.pool_size must be a positive integer"),
    ("stages.relight.max_pool_size=1", "stages.relight.max_pool_size (1) is below stages.relight.pool_size (2)"),
])
def test_a_bad_pool_size_is_refused_at_config_load(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config("tiny", overrides=("stages.relight.pool_size=2", override) if "max" in override else (override,))


def test_the_device_is_the_gpu_ray_assigned_as_torch_numbers_it(monkeypatch):
    monkeypatch.setattr(placement, "_ray_gpu_ids", lambda: [5])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert assigned_device("cuda") == "cuda:1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    assert assigned_device("cuda") == "cuda:0"
    assert assigned_device("cpu") == "cpu"
    monkeypatch.setattr(placement, "_ray_gpu_ids", lambda: [])
    assert assigned_device("cuda") == "cuda"  # outside a GPU actor: as configured


def test_local_paths_are_told_from_urls():
    assert is_local_path("runs/x") and is_local_path("/data/in") and is_local_path("file:///data")
    assert not is_local_path("s3://bucket/run") and not is_local_path("builtin:samples")


def test_remote_weights_are_downloaded_once_and_again_when_they_change(tmp_path, monkeypatch):
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.pipe("/weights-cache-test/net.bin", b"first")
    downloads = []
    real_download = weights_cache._download
    monkeypatch.setattr(weights_cache, "_download", lambda fs, path, local: (downloads.append(path),
                                                                            real_download(fs, path, local)))
    first = weights_cache.cached_copy("memory://weights-cache-test/net.bin", root=str(tmp_path))
    again = weights_cache.cached_copy("memory://weights-cache-test/net.bin", root=str(tmp_path))
    assert first == again and open(first, "rb").read() == b"first" and len(downloads) == 1
    assert first.startswith(str(tmp_path / "local"))  # outside Ray: the "local" node folder
    memory.pipe("/weights-cache-test/net.bin", b"second, longer")
    assert open(weights_cache.cached_copy("memory://weights-cache-test/net.bin", root=str(tmp_path)), "rb").read() \
        == b"second, longer"
    assert len(downloads) == 2
