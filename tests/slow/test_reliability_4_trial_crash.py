"""Reliability 4: a trial process killed mid-epoch is retried from its checkpoint, up to
`max_failures` (2); killed once more it is `errored` in Tune and MLflow, and the sweep goes on."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import start_cli, stop_process

pytestmark = pytest.mark.slow

TRIALS = 4
EPOCHS = 6


def latest_rows(experiment: Path) -> dict[str, dict]:
    rows = {}
    for result in experiment.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines:
            rows[lines[0]["trial_id"]] = lines
    return rows


def kill_trial_process(experiment: Path, trial_id: str, killed_pids: set[int], timeout_s: float = 120) -> None:
    """SIGKILL the process now running `trial_id`, once it reports from a pid not killed yet."""
    deadline = time.time() + timeout_s
    while True:
        rows = latest_rows(experiment).get(trial_id, [])
        pid = rows[-1]["pid"] if rows else None
        if pid is not None and pid not in killed_pids and rows[-1]["epoch"] < EPOCHS:
            time.sleep(0.2)  # into the next epoch
            os.kill(pid, signal.SIGKILL)
            killed_pids.add(pid)
            return
        assert time.time() < deadline, f"trial {trial_id} never reported from a new process"
        time.sleep(0.1)


def test_killed_trials_retry_from_checkpoints_then_error(ray_head, base_env, tmp_path):
    storage = tmp_path / "runs"
    experiment = storage / "crashes"
    sweep = start_cli(["run", "smoke", "--address", ray_head.address, "--name", "crashes", "--storage", str(storage),
                       "--set", "scheduler.type=fifo", "--set", f"epochs={EPOCHS}", "--set", "data.subset=8000",
                       "--set", f"search.num_samples={TRIALS}", "--set", "search.max_concurrent_trials=2"],
                      base_env, tmp_path / "sweep.log")
    killed: set[int] = set()
    try:
        deadline = time.time() + 180
        while len(latest_rows(experiment)) < 2:
            assert time.time() < deadline and sweep.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
            time.sleep(0.2)
        retried, doomed = sorted(latest_rows(experiment))[:2]
        kill_trial_process(experiment, retried, killed)      # once: retried from its checkpoint
        for _ in range(3):                                   # three times: beyond max_failures=2
            kill_trial_process(experiment, doomed, killed)
        returncode = sweep.wait(timeout=600)
    finally:
        stop_process(sweep)
    log = (tmp_path / "sweep.log").read_text()
    assert returncode == 0, log[-3000:]  # the sweep carried on
    results = json.loads((experiment / "results.json").read_text())
    status = {t["trial_id"]: t for t in results["trials"]}
    assert status[retried]["status"] == "completed" and status[doomed]["status"] == "errored"
    assert results["counts"]["completed"] == TRIALS - 1
    rows = latest_rows(experiment)
    epochs = [row["epoch"] for row in rows[retried]]
    assert len({row["pid"] for row in rows[retried]}) >= 2, "the retried trial never moved to a new process"
    assert epochs.count(1) == 1 and sorted(set(epochs)) == list(range(1, EPOCHS + 1)), epochs

    client = MlflowClient(f"sqlite:///{storage}/mlflow.db")
    experiment_id = client.get_experiment_by_name("smoke").experiment_id
    runs = client.search_runs([experiment_id], filter_string="tags.role = 'trial'")
    by_trial = {r.data.tags["trial_id"]: r for r in runs}
    assert by_trial[doomed].data.tags["status"] == "errored" and by_trial[doomed].info.status == "FAILED"
    assert by_trial[doomed].data.tags.get("error")
    assert by_trial[retried].data.tags["status"] == "completed"
    steps = [m.step for m in client.get_metric_history(by_trial[retried].info.run_id, "val_loss")]
    assert steps == list(range(1, EPOCHS + 1))
