"""A real Ray autoscaler on one machine: trials waiting for resources make it add workers, the
sweep runs on two of them at once, and the idle workers are removed afterwards.

Ray's "fake multinode" provider runs the real autoscaler (Ray's monitor) and starts worker nodes
as local processes. The head starts inside `unshare --pid --fork --mount-proc --kill-child`, so
everything it and its autoscaler start lives in that PID namespace and ends with it; nothing else
on the machine is touched (no `ray stop`). The driver runs with HOME where the head's launcher
config lies, as on a head node that `ray up` started.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from search.engine.trials import tune_result_rows
from tests.conftest import free_port, ray_bin, require, run_cli, start_cli, stop_process, wait_for_nodes

pytestmark = pytest.mark.slow

EPOCHS = 4
TRIALS = 8
IDLE_TIMEOUT_MIN = 0.1  # 6 s

ALIVE_WORKERS = """
import json, ray, sys
ray.init(address=sys.argv[1], logging_level="ERROR")
print(json.dumps([n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]))
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
        return json.loads(proc.stdout.strip().splitlines()[-1])


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


def test_waiting_trials_make_the_autoscaler_add_workers_that_go_away_when_idle(
        autoscaling_cluster, base_env, tmp_path, mnist_dir):
    cluster = autoscaling_cluster
    env = {**base_env, "HOME": str(cluster.home)}  # the driver runs on the head, beside the launcher config
    assert cluster.alive_workers(env) == []  # the head alone: no CPU for a trial yet
    storage, store = tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli(["run", "smoke", "--address", cluster.address, "--name", "scaled", "--storage", str(storage),
                      "--tracking-uri", store, "--set", "scheduler.type=fifo", "--set", f"epochs={EPOCHS}",
                      "--set", "data.subset=6000"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "up to 2 trials at once as the autoscaler adds nodes" in result.stderr

    results = json.loads((storage / "scaled" / "results.json").read_text())
    assert results["status"] == "finished" and results["num_trials"] == TRIALS
    for trial in results["trials"]:
        assert [h["epoch"] for h in trial["history"]] == list(range(1, EPOCHS + 1)), trial

    # Trials ran on two worker nodes, at the same time: Tune's rows say where and when.
    spans = {}
    for rows in tune_result_rows(storage / "scaled").values():
        start = rows[0]["timestamp"] - rows[0]["time_total_s"]
        spans.setdefault(rows[-1]["node_id"], []).append((start, rows[-1]["timestamp"]))
    assert len(spans) == 2, spans
    a_spans, b_spans = spans.values()
    overlap = max(min(x[1], y[1]) - max(x[0], y[0]) for x, y in itertools.product(a_spans, b_spans))
    assert overlap > 1, spans
    client = MlflowClient(store)
    children = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], "tags.role = 'trial'")
    assert {c.data.tags["node_id"] for c in children} == set(spans)

    # Idle workers are removed after the idle timeout.
    deadline = time.time() + 120
    while (alive := cluster.alive_workers(env)):
        assert time.time() < deadline, f"workers still up 120 s after the sweep: {alive}"
        time.sleep(2)


def test_a_worker_node_lost_mid_trial_costs_its_trial_at_most_one_epoch(
        autoscaling_cluster, base_env, tmp_path, mnist_dir):
    cluster = autoscaling_cluster
    env = {**base_env, "HOME": str(cluster.home)}
    storage, store = tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment, epochs, trials = storage / "lossy", 10, 4
    sweep = start_cli(["run", "smoke", "--address", cluster.address, "--name", "lossy", "--storage", str(storage),
                       "--tracking-uri", store, "--set", "scheduler.type=fifo", "--set", f"epochs={epochs}",
                       "--set", "data.subset=12000", "--set", f"search.num_samples={trials}"],
                      env, tmp_path / "sweep.log")
    try:
        victim = None
        deadline = time.time() + 240
        while victim is None:
            assert time.time() < deadline and sweep.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
            running = [(trial, rows[-1]["node_id"]) for trial, rows in tune_result_rows(experiment).items()
                       if 2 <= rows[-1]["epoch"] <= epochs - 4]  # seconds of training left there
            victim = running[0] if running else None
            time.sleep(0.2)
        victim_trial, victim_node = victim
        cluster.kill_node(victim_node)
        assert sweep.wait(timeout=480) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    finally:
        stop_process(sweep)

    results = json.loads((experiment / "results.json").read_text())
    assert results["status"] == "finished" and results["num_trials"] == trials
    for trial in results["trials"]:  # every epoch on record, once
        assert [h["epoch"] for h in trial["history"]] == list(range(1, epochs + 1)), trial
    rows = tune_result_rows(experiment)[victim_trial]
    seen = [row["epoch"] for row in rows]
    assert seen.count(1) <= 1 and all(b >= a - 1 for a, b in itertools.pairwise(seen)), seen  # from its checkpoint
    assert rows[-1]["node_id"] != victim_node  # finished elsewhere
    client = MlflowClient(store)
    children = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], "tags.role = 'trial'")
    assert len(children) == trials
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == list(range(1, epochs + 1)), (child.data.tags["trial_id"], steps)
