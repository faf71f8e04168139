"""A real multi-node Ray on 127.0.0.1: trials spread over two workers, and survive losing one.

A head (no CPUs for trials) and two one-CPU workers are started with `ray start`, token auth on,
and stopped by pid afterwards even when the test fails.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from search.engine.trials import tune_result_rows
from tests.conftest import free_port, start_cli, start_ray_node, stop_process, wait_for_nodes

pytestmark = pytest.mark.slow

EPOCHS = 8
TRIALS = 6
NODE_OPTIONS = ("--object-store-memory=300000000",)

NODE_IDS_BY_PORT = """
import json, ray, sys
ray.init(address=sys.argv[1], logging_level="ERROR")
print(json.dumps({n["NodeManagerPort"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}))
"""


@pytest.fixture
def cluster(tmp_path):
    env = dict(os.environ)
    head = start_ray_node(env, num_cpus=0, extra=NODE_OPTIONS)
    workers, temp_dirs = {}, []
    try:
        wait_for_nodes(head.address, env, 1)
        for _ in range(2):
            port = free_port()
            # Nodes on one machine need temp dirs of their own: their sockets live there.
            temp_dir = tempfile.mkdtemp(prefix="ray-worker-", dir="/tmp")
            temp_dirs.append(temp_dir)
            node = start_ray_node(env, num_cpus=1, head_address=head.address,
                                  extra=(*NODE_OPTIONS, f"--node-manager-port={port}", f"--temp-dir={temp_dir}"))
            workers[port] = node
        wait_for_nodes(head.address, env, 3)
        ids = json.loads(subprocess.run([sys.executable, "-c", NODE_IDS_BY_PORT, head.address], env=env,
                                        capture_output=True, text=True, check=True).stdout)
        yield head.address, {ids[str(port)]: node for port, node in workers.items()}
    finally:
        for node in workers.values():
            stop_process(node.proc)
        stop_process(head.proc)
        for temp_dir in temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)


def test_trials_use_both_workers_and_a_killed_worker_costs_at_most_one_epoch(cluster, base_env, tmp_path):
    address, workers = cluster
    storage = tmp_path / "shared"
    experiment = storage / "multinode"
    sweep = start_cli(["run", "smoke", "--address", address, "--name", "multinode", "--storage", str(storage),
                       "--set", "scheduler.type=fifo", "--set", f"epochs={EPOCHS}", "--set", "data.subset=6000",
                       "--set", f"search.num_samples={TRIALS}"], base_env, tmp_path / "sweep.log")
    try:
        victim = None
        deadline = time.time() + 240
        while victim is None:
            assert time.time() < deadline and sweep.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
            running = {rows[-1]["node_id"] for rows in tune_result_rows(experiment).values()
                       if 2 <= rows[-1]["epoch"] <= EPOCHS - 4}  # seconds of training left there
            victim = next((node for node in running if node in workers), None)
            time.sleep(0.2)
        os.killpg(workers[victim].proc.pid, signal.SIGKILL)  # the whole node dies at once
        returncode = sweep.wait(timeout=600)
    finally:
        stop_process(sweep)
    log = (tmp_path / "sweep.log").read_text()
    assert returncode == 0, log[-3000:]
    rows = tune_result_rows(experiment)
    assert len(rows) == TRIALS
    assert set(workers) <= {row["node_id"] for trial in rows.values() for row in trial}, "a worker got no trial"
    interrupted = 0
    for trial_id, trial in rows.items():
        epochs = [row["epoch"] for row in trial]
        assert epochs[-1] == EPOCHS, (trial_id, epochs)
        for before, after in itertools.pairwise(epochs):
            assert after >= before, f"{trial_id} went back more than one epoch: {epochs}"
        nodes = [row["node_id"] for row in trial]
        if victim in nodes and nodes[-1] != victim:
            interrupted += 1
            assert epochs.count(1) == 1, f"{trial_id} restarted from scratch: {epochs}"
    assert interrupted >= 1, "no trial was running on the killed worker"
    results = json.loads((experiment / "results.json").read_text())
    assert results["counts"] == {"completed": TRIALS, "early_stopped": 0, "errored": 0, "unfinished": 0}
    for trial in results["trials"]:  # every epoch on record, once
        assert [h["epoch"] for h in trial["history"]] == list(range(1, EPOCHS + 1)), trial["trial_id"]


OWN_MODEL = """
from torch import nn

def build(width, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, width), nn.ReLU(), nn.Linear(width, num_classes))
"""


def test_a_users_own_module_reaches_the_trials_on_the_worker_nodes(cluster, base_env, tmp_path):
    """The model's module exists only on the driver's machine, in a `code:` folder beside the sweep:
    Ray's runtime environment carries it to the workers (the head runs no trials)."""
    address, workers = cluster
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "tiny_net_on_workers.py").write_text(OWN_MODEL)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "own.yaml").write_text(
        "name: own\nmodel: tiny_net_on_workers:build\ncode: ../code\nepochs: 2\n"
        "space:\n  width: {choice: [8, 16]}\nsearch: {num_samples: 4}\nscheduler: {type: fifo}\n"
        "data: {subset: 600}\n")
    storage = tmp_path / "shared"
    sweep = start_cli(["run", str(tmp_path / "sweeps" / "own.yaml"), "--address", address, "--name", "own",
                       "--storage", str(storage)], base_env, tmp_path / "own.log", cwd=tmp_path)
    try:
        returncode = sweep.wait(timeout=400)
    finally:
        stop_process(sweep)
    assert returncode == 0, (tmp_path / "own.log").read_text()[-3000:]
    results = json.loads((storage / "own" / "results.json").read_text())
    assert results["counts"]["completed"] == 4
    nodes = {trial["node_id"] for trial in results["trials"]}
    assert nodes and nodes <= set(workers), nodes
