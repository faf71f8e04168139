"""cluster.yaml: valid for Ray's schema and config preparation, bootstrapped against a mocked AWS."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration

CLUSTER_YAML = REPO / "cluster.yaml"


@pytest.fixture
def config():
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture
def fake_aws(monkeypatch, tmp_path):
    """Credentials that only moto accepts; a HOME of our own for the key pair Ray writes."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-west-2",
                       "MOTO_IAM_LOAD_MANAGED_POLICIES": "true", "HOME": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    from moto import mock_aws

    with mock_aws():
        yield


def test_matches_rays_bundled_schema(config):
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)


def test_rays_config_preparation_accepts_it(config, fake_aws):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"}
    assert types["cpu_worker"]["min_workers"] == 0 and types["cpu_worker"]["max_workers"] >= 1
    assert prepared["head_start_ray_commands"] == config["head_start_ray_commands"]  # ours, not Ray's defaults


def test_ray_bootstraps_it_on_a_mocked_aws_without_opening_the_dashboard(config, fake_aws):
    import boto3
    from ray.autoscaler._private.commands import _bootstrap_config
    from ray.autoscaler._private.util import prepare_config

    booted = _bootstrap_config(prepare_config(copy.deepcopy(config)), no_config_cache=True)
    types = booted["available_node_types"]
    assert types["gpu_worker"]["resources"]["GPU"] >= 1  # filled in from the instance type
    assert types["cpu_worker"]["resources"]["CPU"] >= 1
    head = types["head"]["node_config"]
    assert head["ImageId"].startswith("ami-") and head["SecurityGroupIds"]
    groups = boto3.client("ec2", region_name="us-west-2").describe_security_groups(
        GroupIds=head["SecurityGroupIds"])["SecurityGroups"]
    for rule in (r for g in groups for r in g["IpPermissions"]):
        world = any(ip["CidrIp"] == "0.0.0.0/0" for ip in rule.get("IpRanges", []))
        if world:
            assert (rule.get("FromPort"), rule.get("ToPort")) == (22, 22), f"open to the world: {rule}"


def test_token_auth_is_on_and_the_token_reaches_every_node(config):
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    for command in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]:
        assert "RAY_AUTH_MODE=token ray start" in command


def test_dashboard_is_never_exposed(config):
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()


def test_every_node_installs_the_pinned_project_and_tune_storage_is_s3(config):
    setup = " ".join(config["setup_commands"])
    assert "-c /home/ray/mnist-sweeps/constraints.txt" in setup and "-e /home/ray/mnist-sweeps" in setup
    storage = [o for o in config["docker"]["run_options"] if "SWEEP_STORAGE=" in o]
    assert storage and re.search(r"SWEEP_STORAGE=s3://", storage[0])
    assert config["docker"]["image"].startswith("rayproject/ray:2.60.0-py311")


def test_every_value_to_change_is_marked(config):
    text = CLUSTER_YAML.read_text()
    for marker in ("region", "bucket", "IamInstanceProfile", "InstanceType", "key pair"):
        assert marker.lower() in text.lower()
    assert text.count("CHANGE") >= 8


def test_trials_in_flight_follow_what_the_autoscaler_can_grow_to(config, fake_aws, tmp_path):
    """`tune run` on the head reads the config `ray up` leaves there: the worker types at their
    max_workers bound the trials in flight, not the head alone that is up at the start."""
    from ray.autoscaler._private.commands import _bootstrap_config
    from ray.autoscaler._private.util import prepare_config

    from search.engine.cluster import autoscaling_growth

    booted = _bootstrap_config(prepare_config(copy.deepcopy(config)), no_config_cache=True)
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(json.dumps(booted))  # what `ray up` writes on the head
    cpu_per_node = int(booted["available_node_types"]["cpu_worker"]["resources"]["CPU"])
    gpu_node = booted["available_node_types"]["gpu_worker"]["resources"]

    growth = autoscaling_growth(1, 0, path)
    assert growth.by_type["head"] == (1, 0)  # the head runs no trials
    assert growth.by_type["cpu_worker"] == (6, cpu_per_node)
    assert growth.by_type["gpu_worker"] == (2, int(gpu_node["CPU"]))  # the cluster's max_workers is 8
    assert growth.trials == 6 * cpu_per_node + 2 * int(gpu_node["CPU"])
    quarter_gpu = autoscaling_growth(1, 0.25, path)
    assert quarter_gpu.trials == 2 * min(int(gpu_node["CPU"]), int(gpu_node["GPU"] * 4))
    assert autoscaling_growth(1, 0, tmp_path / "absent.yaml") is None  # a local Ray or fixed cluster
