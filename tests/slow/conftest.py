"""Servers and clusters the slow tests start on 127.0.0.1 and stop by pid: MLflow tracking servers,
a Ray cluster with a real autoscaler."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, ray_bin, require, stop_process, wait_for_nodes


@dataclass
class MlflowServer:
    """`mlflow server` on 127.0.0.1; `stop()` and `start()` again on the same port and store."""

    backend: str
    artifacts: Path
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    auth_config: Path | None = None  # an ini for `--app-name basic-auth`: the server then checks credentials

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90) -> None:
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                   "--port", str(self.port), "--backend-store-uri", self.backend,
                   "--artifacts-destination", str(self.artifacts), "--workers", "1"]
        if self.auth_config is not None:
            command += ["--app-name", "basic-auth"]
            env.update(MLFLOW_AUTH_CONFIG_PATH=str(self.auth_config), MLFLOW_FLASK_SERVER_SECRET_KEY="test-only")
        self.proc = subprocess.Popen(command, env=env, stdout=self.log.open("a"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout_s
        while not self.healthy():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.5)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-artifacts",
                          tmp_path / "mlflow-server.log")
    server.start()
    yield server
    server.stop()


# --- a small disk: a tmpfs in a mount namespace of the test's own ------------------------

SMALL_DISK_MIB = 330  # a sweep needs 200 MiB free to start, and stops below 100


@pytest.fixture
def small_disk(tmp_path):
    """A process holding a mount namespace with a tmpfs of SMALL_DISK_MIB at `<tmp>/disk`; commands enter it
    by pid (`inside`), and files are read from outside through `/proc/<pid>/root`."""
    require(shutil.which("unshare") is not None and shutil.which("nsenter") is not None, "unshare and nsenter")
    disk = tmp_path / "disk"
    disk.mkdir()
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                               f"mount -t tmpfs -o size={SMALL_DISK_MIB}m tmpfs {disk} && touch {disk}/.mounted && "
                               "exec sleep infinity"], start_new_session=True)
    try:
        deadline = time.time() + 30
        while inside(holder, ["test", "-e", str(disk / ".mounted")]).returncode != 0:
            assert holder.poll() is None and time.time() < deadline, "the tmpfs was not mounted"
            time.sleep(0.2)
        yield holder, disk
    finally:
        stop_process(holder, grace_s=1)


def inside(holder, command, **kwargs):
    return subprocess.run(["nsenter", "--target", str(holder.pid), "--mount", *command],
                          capture_output=True, text=True, **kwargs)


# --- a Ray cluster with a real autoscaler -------------------------------------------------

IDLE_TIMEOUT_MIN = 0.1  # 6 s: idle workers go soon after a sweep

ALIVE_WORKERS = """
import json, ray, sys
ray.init(address=sys.argv[1], logging_level="ERROR")
print("workers:", json.dumps([n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]))
"""


def descendants(root: int) -> list[int]:
    """`root` and every process below it, parents before children."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        found.append(pid)
        todo += children.get(pid, [])
    return found


def command_line(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def launcher_config(gcs_port: int) -> dict:
    """A cluster config of the kind `ray up` leaves on the head: a head that runs no trials and
    one-CPU workers, 0 to 2 of them, that the autoscaler adds and removes."""
    return {
        "cluster_name": "autoscaling-test",
        "max_workers": 2,
        "idle_timeout_minutes": IDLE_TIMEOUT_MIN,
        "upscaling_speed": 1.0,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{gcs_port}"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "ray.worker.cpu": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default",
        "auth": {"ssh_user": "ray"},
        # The launcher's defaults, which the monitor expects to find filled in.
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@dataclass
class AutoscalingCluster:
    address: str
    home: Path
    namespace: subprocess.Popen  # `unshare`: every process of the cluster descends from it

    def kill_node(self, node_id: str) -> None:
        """SIGKILL a worker node's raylet and everything under it (its trial processes), by pid."""
        tree = descendants(self.namespace.pid)
        raylet = next(pid for pid in tree if command_line(pid)[:1] and command_line(pid)[0].endswith(b"raylet")
                      and f"--node_id={node_id}".encode() in command_line(pid))
        for pid in reversed(descendants(raylet)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def alive_workers(self, env: dict[str, str]) -> list[str]:
        proc = subprocess.run([sys.executable, "-c", ALIVE_WORKERS, self.address], env=env, capture_output=True,
                              text=True, timeout=60, check=True)
        line = next(line for line in proc.stdout.splitlines() if line.startswith("workers: "))  # not Ray's logs
        return json.loads(line.removeprefix("workers: "))


@pytest.fixture
def autoscaling_cluster(tmp_path) -> Iterator[AutoscalingCluster]:
    require(shutil.which("unshare") is not None, "unshare (util-linux)")
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    config = home / "ray_bootstrap_config.yaml"
    config.write_text(yaml.safe_dump(launcher_config(port)))
    env = dict(os.environ, HOME=str(home), RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
    head = (f"{ray_bin()} start --head --num-cpus=0 --port={port} --node-ip-address=127.0.0.1 "
            f"--include-dashboard=false --disable-usage-stats --autoscaling-config={config} && exec sleep infinity")
    log = (tmp_path / "head.log").open("w")
    # unshare ignores SIGTERM; stop_process's SIGKILL ends it, and --kill-child the namespace.
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "bash", "-c", head],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = f"127.0.0.1:{port}"
        wait_for_nodes(address, env, 1)
        yield AutoscalingCluster(address, home, proc)
    finally:
        stop_process(proc, grace_s=1)
