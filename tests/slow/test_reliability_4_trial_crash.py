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

from search.engine.trials import tune_result_rows
from tests.conftest import start_cli, stop_process

pytestmark = pytest.mark.slow

TRIALS = 4
EPOCHS = 10


def kill_trial_process(experiment: Path, trial_id: str, acted: dict[str, int], timeout_s: float = 120) -> None:
    """SIGKILL the process running `trial_id` once it reports an epoch we have not acted on yet.

    Actor processes are reused between trials, so a pid alone does not name a trial: we kill
    right after a fresh report, while at least three epochs are left to run.
    """
    deadline = time.time() + timeout_s
    while True:
        rows = tune_result_rows(experiment).get(trial_id, [])
        if len(rows) > acted.get(trial_id, 0) and rows[-1]["epoch"] <= EPOCHS - 3:
            time.sleep(0.2)  # into the next epoch
            acted[trial_id] = len(rows)
            try:
                os.kill(rows[-1]["pid"], signal.SIGKILL)
            except ProcessLookupError:
                continue  # a report of the process killed last time, processed late: wait for a fresh one
            return
        assert time.time() < deadline, f"trial {trial_id} reported nothing new: {[r['epoch'] for r in rows]}"
        time.sleep(0.05)


def test_killed_trials_retry_from_checkpoints_then_error(ray_head, base_env, tmp_path):
    storage = tmp_path / "runs"
    experiment = storage / "crashes"
    sweep = start_cli(["run", "smoke", "--address", ray_head.address, "--name", "crashes", "--storage", str(storage),
                       "--set", "scheduler.type=fifo", "--set", f"epochs={EPOCHS}", "--set", "data.subset=8000",
                       "--set", f"search.num_samples={TRIALS}", "--set", "search.max_concurrent_trials=2"],
                      base_env, tmp_path / "sweep.log")
    acted: dict[str, int] = {}
    try:
        deadline = time.time() + 180
        while len(tune_result_rows(experiment)) < 2:
            assert time.time() < deadline and sweep.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
            time.sleep(0.2)
        doomed, retried = sorted(tune_result_rows(experiment))[:2]
        # `retried` dies once and is retried from its checkpoint; `doomed` dies three times,
        # one more than max_failures=2. Interleaved, so both are still running when hit.
        for trial_id in (doomed, retried, doomed, doomed):
            kill_trial_process(experiment, trial_id, acted)
        returncode = sweep.wait(timeout=600)
    finally:
        stop_process(sweep)
    log = (tmp_path / "sweep.log").read_text()
    assert returncode == 0, log[-3000:]  # the sweep carried on
    results = json.loads((experiment / "results.json").read_text())
    status = {t["trial_id"]: t for t in results["trials"]}
    assert status[retried]["status"] == "completed" and status[doomed]["status"] == "errored"
    assert results["counts"]["completed"] == TRIALS - 1
    rows = tune_result_rows(experiment)
    epochs = [row["epoch"] for row in rows[retried]]
    assert any(row["iterations_since_restore"] < row["epoch"] for row in rows[retried]), "never restored"
    assert epochs.count(1) == 1, f"restarted at epoch 1: {epochs}"
    history = [h["epoch"] for h in status[retried]["history"]]
    assert history == list(range(1, EPOCHS + 1)), history  # every epoch on record, once

    client = MlflowClient(f"sqlite:///{storage}/mlflow.db")
    experiment_id = client.get_experiment_by_name("smoke").experiment_id
    runs = client.search_runs([experiment_id], filter_string="tags.role = 'trial'")
    by_trial = {r.data.tags["trial_id"]: r for r in runs}
    assert by_trial[doomed].data.tags["status"] == "errored" and by_trial[doomed].info.status == "FAILED"
    assert by_trial[doomed].data.tags.get("error")
    assert by_trial[retried].data.tags["status"] == "completed"
    steps = [m.step for m in client.get_metric_history(by_trial[retried].info.run_id, "val_loss")]
    assert steps == list(range(1, EPOCHS + 1))
