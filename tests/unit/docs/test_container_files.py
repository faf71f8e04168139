"""The image and CronJob files the README points to: what they copy, install and run matches the
project (no Docker engine here to build the image; see the README's known limits)."""

from __future__ import annotations

import re
import shlex

import yaml

from search.cli import cli
from tests.conftest import REPO

FOLDER = REPO / "examples" / "kubernetes"


def test_the_image_copies_every_package_and_installs_the_pinned_cpu_build():
    dockerfile = (FOLDER / "Dockerfile").read_text()
    listed = re.search(r"^packages = \[(.*)\]$", (REPO / "pyproject.toml").read_text(), re.M)[1]
    packages = re.findall(r'"([\w.]+)"', listed)
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, re.M))
    assert copied == {p.split(".")[0] for p in packages}, "a package of pyproject.toml is not copied into the image"
    ignore = (FOLDER / "Dockerfile.dockerignore").read_text()
    assert all(f"!{name}/" in ignore for name in copied)
    install = next(line for line in dockerfile.splitlines() if line.startswith("RUN pip install"))
    assert "-c constraints.txt" in install and "download.pytorch.org/whl/cpu" in install
    assert re.search(r"^USER sweeps$", dockerfile, re.M) and 'ENTRYPOINT ["tune"]' in dockerfile


def test_the_cronjob_runs_one_tick_of_a_real_command_with_resources_and_no_overlap():
    job = yaml.safe_load((FOLDER / "cronjob.yaml").read_text())
    spec = job["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] in cli.commands and "--once" in args
    flags = {opt for param in cli.commands[args[0]].params for opt in param.opts}
    assert {a for a in args if a.startswith("--")} <= flags
    assert args[args.index("--cron") + 1] == spec["schedule"]  # the scheduler's tick is the CronJob's
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/data", "/dev/shm"} <= mounts
    readme = (REPO / "README.md").read_text()
    assert "examples/kubernetes/cronjob.yaml" in readme and "examples/kubernetes/Dockerfile" in readme
    assert shlex.join(["docker", "build", "-f", "examples/kubernetes/Dockerfile"]) in readme
