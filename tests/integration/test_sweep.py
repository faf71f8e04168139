"""`tune run smoke` end to end on a real local Ray: ASHA, the Optuna study, results.json, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from search.engine.optuna_bridge import RAY_TRIAL_ID_ATTR
from search.engine.storage import STUDY_FILE
from tests.conftest import run_cli
from trainables.data import load_data
from trainables.train import as_tensors, evaluate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, mnist_dir):
    """One `tune run smoke` (local Ray started by the CLI) shared by the assertions below."""
    import os

    storage = tmp_path_factory.mktemp("smoke")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    result = run_cli(["run", "smoke", "--name", "smoke-test", "--set", f"storage={storage}"], env)
    experiment = storage / "smoke-test"
    payload = json.loads((experiment / "results.json").read_text()) if result.returncode == 0 else None
    return result, storage, experiment, payload


def test_smoke_exits_0_with_a_summary(smoke):
    result, storage, _, _ = smoke
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batch norm × skip" in result.stderr and "best trial" in result.stderr
    assert f"mlflow ui --backend-store-uri sqlite:///{storage}/mlflow.db" in result.stderr


def test_results_json_holds_every_trial_and_the_best(smoke):
    _, _, experiment, payload = smoke
    assert payload["status"] == "finished" and payload["num_trials"] == 8
    assert sum(payload["counts"].values()) == 8 and payload["counts"]["errored"] == 0
    assert payload["counts"]["early_stopped"] >= 1, "ASHA stopped no trial"
    best = payload["best"]
    assert 0.5 < best["test_acc"] <= 1 and best["val_loss"] == min(
        t["val_loss"] for t in payload["trials"] if t["val_loss"] is not None)
    for trial in payload["trials"]:
        assert [h["epoch"] for h in trial["history"]] == list(range(1, trial["epochs"] + 1))
    assert len(payload["ablation"]) == 4
    assert payload["storage"] == str(experiment)


def test_optuna_study_marks_asha_stopped_trials_pruned(smoke):
    _, _, experiment, payload = smoke
    study = optuna.load_study(study_name="smoke", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(experiment / STUDY_FILE))))
    states = {t.user_attrs[RAY_TRIAL_ID_ATTR]: t.state for t in study.trials}
    expected = {"completed": TrialState.COMPLETE, "early_stopped": TrialState.PRUNED}
    assert states == {t["trial_id"]: expected[t["status"]] for t in payload["trials"]}
    assert TrialState.PRUNED in states.values()


def test_mlflow_holds_one_parent_and_a_child_per_trial_with_full_histories(smoke):
    _, storage, _, payload = smoke
    client = MlflowClient(f"sqlite:///{storage}/mlflow.db")
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 8 == len(runs) - 1
    by_trial = {t["trial_id"]: t for t in payload["trials"]}
    for child in children:
        trial = by_trial[child.data.tags["trial_id"]]
        assert child.data.tags["status"] == trial["status"]
        assert child.data.params["lr"] == str(trial["config"]["lr"])
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == list(range(1, trial["epochs"] + 1))
        assert set(child.data.metrics) >= {"train_loss", "train_acc", "val_loss", "val_acc", "epoch",
                                           "epoch_seconds"}
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_test_acc"] == payload["best"]["test_acc"]
    assert parent.data.params["search.algorithm"] == "optuna"
    for tag in ("ray_version", "torch_version", "optuna_version", "mlflow_version", "dataset_sha256", "host"):
        assert parent.data.tags[tag]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary", "plots", "sweep"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/optimization_history.png" in plots and "plots/param_importances.png" in plots


def test_best_model_is_registered_and_reproduces_the_test_accuracy(smoke, mnist_dir):
    _, storage, _, payload = smoke
    mlflow.set_tracking_uri(f"sqlite:///{storage}/mlflow.db")
    version = MlflowClient().get_model_version_by_alias("smoke", "best")
    assert version.tags["trial_id"] == payload["best"]["trial_id"]
    model = mlflow.pytorch.load_model("models:/smoke@best")
    data = load_data("mnist", mnist_dir, subset=2000, split_seed=0)
    _, accuracy = evaluate(model, as_tensors(data.test))
    assert accuracy == pytest.approx(payload["best"]["test_acc"], abs=1e-9)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(data.test.images[:2])))
    assert logits.shape == (2, 10)


def test_ray_tune_ls_reads_the_experiment(smoke, base_env):
    _, _, experiment, _ = smoke
    result = run_cli(["ls", str(experiment), "--columns", "trial_id,training_iteration"], base_env)
    assert result.returncode == 0, result.stderr
    assert "training_iteration" in result.stdout


@pytest.mark.parametrize("sweep, trials", [("seed_bn", 4), ("seed_skip", 4), ("smoke", 8)])
def test_dry_run_counts_trials_and_starts_nothing(base_env, tmp_path: Path, sweep, trials):
    result = run_cli(["run", sweep, "--dry-run", "--set", f"storage={tmp_path / 'out'}"], base_env)
    assert result.returncode == 0
    assert f"trials: {trials}" in result.stdout and "epoch budget" in result.stdout
    assert not (tmp_path / "out").exists()
