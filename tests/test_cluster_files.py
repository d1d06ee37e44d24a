"""cluster/: the Ray launcher YAML against ray's own schema, the KubeRay manifests, the image and the run config."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.config import enabled_stages, load_config, stage_settings
from tests.conftest import ROOT

CLUSTER = ROOT / "cluster"
LAUNCHER = CLUSTER / "aws-gpu.yaml"
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
RUN_CONFIG = CLUSTER / "ffhq-uv-gpu.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
IMAGE_PROJECT_DIR = "/home/ray/ffhq-uv-rebuild"  # where cluster/Dockerfile installs the project
GPUS_PER_INSTANCE = {"g5.xlarge": 1, "g5.2xlarge": 1, "g5.4xlarge": 1, "g5.12xlarge": 4, "g6.2xlarge": 1,
                     "p4d.24xlarge": 8}  # NVIDIA GPUs of the EC2 types the launcher may use


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


# -- Ray cluster launcher (AWS) ---------------------------------------------------------------

def test_launcher_matches_rays_schema():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load(LAUNCHER)
    jsonschema.validate(config, _ray_schema())
    # What `ray up` does before launching: merge the AWS defaults, then validate again.
    validate_config(prepare_config(copy.deepcopy(config)))


def test_launcher_schema_check_can_fail():
    import jsonschema

    config = _load(LAUNCHER)
    config["available_node_types"]["gpu_worker"]["resources"] = {"GPU": 0.5}  # resources must be integers
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, _ray_schema())


def test_launcher_has_autoscaled_gpu_workers_with_s3_roles():
    config = _load(LAUNCHER)
    assert config["provider"]["type"] == "aws"
    nodes = config["available_node_types"]
    gpu = nodes["gpu_worker"]
    assert GPUS_PER_INSTANCE[gpu["node_config"]["InstanceType"]] >= 1
    assert 0 <= gpu["min_workers"] < gpu["max_workers"]
    workers = [n for name, n in nodes.items() if name != config["head_node_type"]]
    assert sum(n["max_workers"] for n in workers) <= config["max_workers"]
    for node in nodes.values():  # S3 through instance profiles, never keys on the nodes
        assert node["node_config"]["IamInstanceProfile"]["Name"].startswith("ffhq-uv-")
        assert node["node_config"]["ImageId"].startswith("resolve:ssm:/aws/service/deeplearning/")
    assert "AWS_SECRET_ACCESS_KEY" not in LAUNCHER.read_text()


def test_launcher_installs_the_project():
    import torch

    config = _load(LAUNCHER)
    assert config["file_mounts"] == {"~/ffhq-uv-rebuild": "."}
    assert any(".venv" in pattern for pattern in config["rsync_exclude"])
    commands = config["setup_commands"] + config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for command in commands:
        shlex.split(command)  # YAML did not cut a command at a '#' or leave a quote open
    torch_pin = torch.__version__.split("+")[0]
    assert f"~/venv/bin/pip install torch=={torch_pin}" in config["setup_commands"]
    assert "~/venv/bin/pip install -e ~/ffhq-uv-rebuild" in config["setup_commands"]
    assert any("--head" in c and "~/venv/bin/ray start" in c for c in config["head_start_ray_commands"])
    assert any("$RAY_HEAD_IP" in c for c in config["worker_start_ray_commands"])


# -- KubeRay ----------------------------------------------------------------------------------

def _pods(spec: dict) -> list[tuple[str, dict, dict]]:
    """(group name, rayStartParams, pod spec) of the head and every worker group."""
    head = spec["headGroupSpec"]
    pods = [("head", head["rayStartParams"], head["template"]["spec"])]
    pods += [(g["groupName"], g["rayStartParams"], g["template"]["spec"]) for g in spec["workerGroupSpecs"]]
    return pods


def test_kuberay_raycluster_fields():
    import ray

    cluster = _load(RAYCLUSTER)
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray.__version__ and spec["enableInTreeAutoscaling"] is True
    images = set()
    for group, start_params, pod in _pods(spec):
        assert isinstance(start_params, dict)
        assert all(isinstance(v, str) for v in start_params.values()), f"{group}: rayStartParams must be strings"
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            images.add(container["image"])
            assert container["resources"]["limits"]["memory"] and container["resources"]["limits"]["cpu"]
            assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes
    assert len(images) == 1  # one image for head and workers: same Ray, same code
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"

    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu_groups, "no worker group with nvidia.com/gpu"
    for group in gpu_groups:
        resources = group["template"]["spec"]["containers"][0]["resources"]
        assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]  # Kubernetes rule
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert any(t["key"] == "nvidia.com/gpu" for t in group["template"]["spec"]["tolerations"])


def test_kuberay_rayjob_entrypoint_runs_the_pipeline():
    job = _load(RAYJOB)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["rayClusterSpec"] == _load(RAYCLUSTER)["spec"]
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:3] == ["python", "-m", "pipeline.cli"]
    args = build_parser().parse_args(words[3:])  # the real CLI accepts it
    assert args.command == "run"
    assert "ray.address=auto" in args.overrides  # join the job's cluster, never start a local Ray
    files = tuple(str(ROOT / Path(f).relative_to(IMAGE_PROJECT_DIR)) for f in args.config)
    config = load_config(args.profile, files, tuple(args.overrides))  # and the config resolves
    assert str(config.output).startswith("s3://") and str(config.input.source).startswith("s3://")
    assert config.models.weights_dir == "/weights"
    mounts = {m["mountPath"] for _, _, pod in _pods(job["spec"]["rayClusterSpec"])
              for c in pod["containers"] for m in c.get("volumeMounts", [])}
    assert "/weights" in mounts


def test_dockerfile_matches_ray_and_the_job_paths():
    import ray

    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM rayproject/ray:(\S+)", text, re.MULTILINE).group(1)
    assert base.startswith(ray.__version__ + "-")
    assert f"WORKDIR {IMAGE_PROJECT_DIR}" in text
    assert "pip install --no-cache-dir -e ." in text
    ignored = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and "runs" in ignored


# -- the cluster run config -----------------------------------------------------------------------

def test_run_config_fills_the_gpu_workers():
    """The stages' GPU reservations add up to the GPU workers the launcher and KubeRay may start."""
    config = load_config("ffhq-uv", (str(RUN_CONFIG),), ("output=s3://b/run", "models.weights_dir=/weights"))
    assert config.models.device == "cuda"
    wanted = sum(stage_settings(config, s).num_gpus * stage_settings(config, s).pool_size
                 for s in enabled_stages(config))
    gpu = _load(LAUNCHER)["available_node_types"]["gpu_worker"]
    assert wanted == gpu["max_workers"] * GPUS_PER_INSTANCE[gpu["node_config"]["InstanceType"]]
    group = next(g for g in _load(RAYCLUSTER)["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    per_pod = int(group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    assert wanted == group["maxReplicas"] * per_pod
