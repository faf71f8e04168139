"""`search.stop`: a sweep that stops improving ends before its trial budget, as a finished sweep
that says why (results.json, the summary, the MLflow parent run)."""

from __future__ import annotations

import json
import os

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_a_plateau_ends_the_sweep_and_the_parent_run_says_why(tmp_path, mnist_dir, ray_head):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    result = run_cli(["run", "smoke", "--name", "plateau", "--num-samples", "12", "--set", "epochs=2",
                      "--set", "data.subset=600", "--set", "scheduler.type=fifo",
                      "--set", "search.stop={plateau: {patience: 2, min_delta: 1.0}}", "--address", ray_head.address,
                      "--json"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    assert payload["status"] == "finished" and payload["best"] is not None
    assert payload["stop_reason"].startswith("plateau: 2 trials ended without improving the best val_loss")
    assert payload["num_trials"] < 12  # stopped before its budget
    assert "stopped early by search.stop: plateau" in result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    (parent,) = [r for r in client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
                 if r.data.tags.get("role") == "sweep"]
    assert parent.data.tags["stop_reason"] == payload["stop_reason"] and parent.info.status == "FINISHED"
    assert parent.data.tags.get("registered_model") == "smoke"  # a finished sweep: its best model registered
