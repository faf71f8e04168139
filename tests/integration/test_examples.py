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
def wide_cnn(tmp_path_factory):
    require(Path(DATASETS["fashion-mnist"].system_dirs[0]).is_dir(),
            "Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    folder = tmp_path_factory.mktemp("elsewhere")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    result = run_cli(["run", str(REPO / "examples/wide_cnn/sweep.yaml"), "--name", "wide", "--num-samples", "4",
                      "--set", "epochs=2", "--set", "data.subset=1200", "--json"], env, cwd=folder)
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
