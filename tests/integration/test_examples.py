"""The examples in examples/ end to end, each with one `tune run examples/…` on a small budget,
started from another folder (their modules are found beside the sweep file, and reach the
trials through Ray's runtime environment)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from search.tracking.registry import load_model
from tests.conftest import REPO, require, run_cli
from trainables.data import DATASETS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wide_cnn(tmp_path_factory, ray_head):
    require(Path(DATASETS["fashion-mnist"].system_dirs[0]).is_dir(),
            "Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    folder = tmp_path_factory.mktemp("elsewhere")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    result = run_cli(["run", str(REPO / "examples/wide_cnn/sweep.yaml"), "--name", "wide", "--num-samples", "4",
                      "--set", "epochs=2", "--set", "data.subset=1200", "--address", ray_head.address, "--json"],
                     env, cwd=folder)
    return result, folder / "runs"


def test_the_wide_cnn_example_runs_from_another_folder(wide_cnn):
    result, _ = wide_cnn
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    assert payload["num_trials"] == 4 and payload["counts"]["errored"] == 0
    assert {"width", "depth", "dropout", "lr"} <= set(payload["best"]["config"])
    assert "batch_norm" not in payload["best"]["config"]  # the seed's switches are not this model's
    assert "model wide:build: " in result.stderr and "parameters; inputs (1, 28, 28) -> logits" in result.stderr
    # A table per searched categorical key (width); no batch norm × skip table.
    assert "by width (val_loss" in result.stderr and "batch norm × skip" not in result.stderr
    assert [row["width"] for row in payload["levels"]["width"]] and "batch_norm" not in payload["levels"]
    assert 0.3 < payload["best"]["test_acc"] <= 1


def test_the_wide_cnn_example_lands_in_mlflow_and_registers_its_model(wide_cnn, monkeypatch):
    result, storage = wide_cnn
    assert result.returncode == 0, result.stderr[-3000:]
    uri = f"sqlite:///{storage}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("wide-cnn")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("role") != "trial")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and all("width" in c.data.params for c in children)
    assert parent.data.params["model"] == "wide:build" and parent.data.tags["dataset"] == "fashion-mnist"
    code = {a.path for a in client.list_artifacts(parent.info.run_id, "code")}
    assert code == {"code/wide.py"}  # the model's source, as provenance
    summary = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert "summary/levels_width.csv" in summary
    monkeypatch.syspath_prepend(str(REPO / "examples/wide_cnn"))  # load_model imports the builder
    model = load_model("models:/wide-cnn@best", tracking_uri=uri)
    assert isinstance(model, torch.nn.Sequential) and not model.training
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.fixture(scope="module")
def digits(tmp_path_factory, ray_head):
    folder = tmp_path_factory.mktemp("digits")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    result = run_cli(["run", str(REPO / "examples/sklearn_digits/sweep.yaml"), "--name", "digits",
                      "--num-samples", "8", "--set", "epochs=8", "--address", ray_head.address, "--json"], env,
                     cwd=folder)
    return result, folder / "runs"


def test_the_sklearn_trainable_runs_unchanged_with_asha_stopping_it(digits):
    result, _ = digits
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    assert payload["metric"] == "val_f1" and payload["mode"] == "max" and payload["num_trials"] == 8
    assert payload["counts"]["errored"] == 0 and payload["counts"]["early_stopped"] >= 1  # ASHA at work
    best = payload["best"]
    assert set(best["config"]) == {"alpha", "eta0"} and best["score"] > 0.85 and best["test_acc"] is None
    for trial in payload["trials"]:  # every report on record, counted from 1 (Tune's counter)
        assert [h["epoch"] for h in trial["history"]] == list(range(1, trial["epochs"] + 1))
        assert {"val_f1", "val_acc", "val_loss"} <= set(trial["history"][-1])
    assert "val_f1" in result.stderr.split("best trial")[0]  # the table shows the sweep's metric


def test_the_sklearn_trainable_lands_in_mlflow_and_registers_its_model(digits):
    import mlflow
    import numpy as np
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    from sklearn.datasets import load_digits

    result, storage = digits
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    uri = f"sqlite:///{storage}/mlflow.db"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sklearn-digits").experiment_id])
    children = {r.data.tags["trial_id"]: r for r in runs if r.data.tags.get("role") == "trial"}
    assert len(children) == 8 and len(runs) == 9
    for trial in payload["trials"]:
        child = children[trial["trial_id"]]
        assert child.data.tags["status"] == trial["status"] and set(child.data.params) == {"alpha", "eta0", "epochs"}
        for key in ("val_f1", "val_acc", "val_loss"):  # every metric it reports, per step, once
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert steps == list(range(1, trial["epochs"] + 1)), (key, steps)
    version = client.get_model_version_by_alias("sklearn-digits", "best")
    assert version.tags["trial_id"] == payload["best"]["trial_id"]
    with _use_tracking_uri(uri):
        model = mlflow.pyfunc.load_model("models:/sklearn-digits@best")
    x, y = load_digits(return_X_y=True)
    assert np.mean(model.predict(x / 16.0) == y) > 0.85


NEVER_REPORTS = """
from ray import tune

def train(config):
    for step in range(config["epochs"]):
        tune.report({"score": 1.0} if config["good"] else {"loss": 0.5, "accuracy": 0.9})
"""


def test_a_trial_that_never_reports_the_metric_errors_and_the_sweep_finishes(tmp_path, ray_head):
    (tmp_path / "reports_wrong.py").write_text(NEVER_REPORTS)
    (tmp_path / "sweep.yaml").write_text(
        "name: wrong-metric\ntrainable: reports_wrong:train\nmetric: score\nmode: max\nepochs: 2\n"
        "space:\n  good: {grid: [true, false]}\nsearch: {algorithm: grid, num_samples: 1}\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    result = run_cli(["run", str(tmp_path / "sweep.yaml"), "--name", "w", "--address", ray_head.address, "--json"],
                     env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    assert payload["counts"] == {"completed": 1, "early_stopped": 0, "errored": 1, "unfinished": 0}
    errored = next(t for t in payload["trials"] if t["status"] == "errored")
    message = "trainable reports_wrong:train reported accuracy, loss but not the sweep's metric 'score'"
    assert message in errored["error"]
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("wrong-metric").experiment_id])
    child = next(r for r in runs if r.data.tags.get("trial_id") == errored["trial_id"])
    assert message in child.data.tags["error"] and child.info.status == "FAILED"


def test_the_readmes_level_2_example_runs_as_written(tmp_path, ray_head):
    """The README's complete trainable and sweep file, copied out of the README, run as a user would."""
    import re

    readme = (REPO / "README.md").read_text()
    (tmp_path / "my_train.py").write_text(re.search(r"```python\n(# my_train\.py.*?)```", readme, re.S)[1])
    (tmp_path / "my_sweep.yaml").write_text(re.search(r"```yaml\n(# my_sweep\.yaml.*?)```", readme, re.S)[1])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    result = run_cli(["run", "my_sweep.yaml", "--num-samples", "4", "--address", ray_head.address, "--json"], env,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    assert payload["sweep"] == "my_sweep" and payload["counts"]["errored"] == 0 and payload["best"]["score"] > 0.5
