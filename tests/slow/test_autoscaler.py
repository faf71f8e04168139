"""A real Ray autoscaler on one machine: trials waiting for resources make it add workers, the
sweep runs on two of them at once, and the idle workers are removed afterwards.

Ray's "fake multinode" provider runs the real autoscaler (Ray's monitor) and starts worker nodes
as local processes. The head starts inside `unshare --pid --fork --mount-proc --kill-child`, so
everything it and its autoscaler start lives in that PID namespace and ends with it; nothing else
on the machine is touched (no `ray stop`). The driver runs with HOME where the head's launcher
config lies, as on a head node that `ray up` started.
"""

from __future__ import annotations

import itertools
import json
import time

import pytest
from mlflow.tracking import MlflowClient

from search.engine.trials import tune_result_rows
from tests.conftest import run_cli, start_cli, stop_process

pytestmark = pytest.mark.slow

EPOCHS = 4
TRIALS = 8


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
