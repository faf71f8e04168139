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


MY_RANGE = "203.0.113.0/24"  # the address range a user lets SSH in from


def prepare_aws_like_the_readme(config: dict) -> dict:
    """What the README has a user create before `ray up`, in the mocked AWS: the security group
    (SSH from their range, all traffic between members) and the workers' instance profile with the
    shipped bucket policy; the config then names the group's real id."""
    import boto3

    ec2, iam = boto3.client("ec2", region_name="us-west-2"), boto3.client("iam")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    group = ec2.create_security_group(GroupName="mnist-sweeps", Description="mnist-sweeps", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": MY_RANGE}]},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group}]}])
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                     "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName="mnist-sweeps-worker", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName="mnist-sweeps-worker", PolicyName="sweep-bucket",
                        PolicyDocument=(REPO / "examples" / "cluster" / "worker-policy.json").read_text())
    iam.create_instance_profile(InstanceProfileName="mnist-sweeps-worker")
    iam.add_role_to_instance_profile(InstanceProfileName="mnist-sweeps-worker", RoleName="mnist-sweeps-worker")
    text = CLUSTER_YAML.read_text().replace("sg-0123456789abcdef0", group)
    return yaml.safe_load(text)


def test_ray_bootstraps_it_on_a_mocked_aws_with_ssh_open_to_my_range_only(fake_aws):
    import boto3
    from ray.autoscaler._private.commands import _bootstrap_config
    from ray.autoscaler._private.util import prepare_config

    booted = _bootstrap_config(prepare_config(prepare_aws_like_the_readme(yaml.safe_load(CLUSTER_YAML.read_text()))),
                               no_config_cache=True)
    types = booted["available_node_types"]
    assert types["gpu_worker"]["resources"]["GPU"] >= 1  # filled in from the instance type
    assert types["cpu_worker"]["resources"]["CPU"] >= 1
    head = types["head"]["node_config"]
    assert head["ImageId"].startswith("ami-")
    group_ids = {g for t in types.values() for g in t["node_config"]["SecurityGroupIds"]}
    groups = boto3.client("ec2", region_name="us-west-2").describe_security_groups(
        GroupIds=sorted(group_ids))["SecurityGroups"]
    assert [g["GroupName"] for g in groups] == ["mnist-sweeps"]  # ours, not a group Ray made
    rules = [r for g in groups for r in g["IpPermissions"]]
    assert not [r for r in rules if any(ip["CidrIp"] == "0.0.0.0/0" for ip in r.get("IpRanges", []))]
    assert [ip["CidrIp"] for r in rules if r.get("FromPort") == 22 for ip in r["IpRanges"]] == [MY_RANGE]
    for worker in ("cpu_worker", "gpu_worker"):
        assert types[worker]["node_config"]["IamInstanceProfile"]["Arn"].endswith("/mnist-sweeps-worker")


def test_the_workers_may_touch_the_sweep_bucket_only():
    policy = json.loads((REPO / "examples" / "cluster" / "worker-policy.json").read_text())
    actions = [a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert actions and all(a.startswith("s3:") and "*" not in a for a in actions)
    resources = {r for s in policy["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str)
                                                          else s["Resource"])}
    assert resources == {"arn:aws:s3:::YOUR-BUCKET", "arn:aws:s3:::YOUR-BUCKET/sweeps/*"}
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    pass_role = json.loads((REPO / "examples" / "cluster" / "head-pass-role-policy.json").read_text())
    assert pass_role["Statement"][0]["Action"] == "iam:PassRole"
    assert pass_role["Statement"][0]["Resource"].endswith(":role/mnist-sweeps-worker")


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

    booted = _bootstrap_config(prepare_config(prepare_aws_like_the_readme(config)), no_config_cache=True)
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
