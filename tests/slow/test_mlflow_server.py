"""MLflow through a real `mlflow server`: HTTP tracking, a 20-second outage mid-sweep, replay, the UI.

One sweep runs against a server on 127.0.0.1; the server is stopped for about 20 s while
trials train and is then started again on the same port and store. Everything the
sweep produced must still be in MLflow, exactly once.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from search.tracking.registry import load_model
from tests.conftest import REPO, require, run_cli, start_cli, stop_process
from tests.slow.conftest import MlflowServer
from trainables.data import load_data
from trainables.train import as_tensors, evaluate

pytestmark = pytest.mark.slow

OUTAGE_S = 20
EPOCHS = 8
TRIALS = 8
ARTIFACTS = REPO / "test-artifacts"


def hierarchy(client: MlflowClient, experiment: str = "smoke"):
    """(parent runs, child runs by trial id) of an experiment."""
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    children = {r.data.tags["trial_id"]: r for r in runs if r.data.tags.get("role") == "trial"}
    assert len(runs) == len(parents) + len(children), "a run is neither parent nor child"
    return parents, children


def steps(client: MlflowClient, run_id: str, key: str = "val_loss") -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


@pytest.fixture(scope="module")
def outage_sweep(tmp_path_factory, mnist_dir):
    import os

    root = tmp_path_factory.mktemp("outage")
    server = MlflowServer(f"sqlite:///{root / 'server.db'}", root / "artifacts", root / "server.log")
    server.start()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    log = root / "sweep.log"
    sweep = start_cli(["run", "smoke", "--name", "outage", "--storage", str(root / "runs"),
                       "--set", f"mlflow.tracking_uri={server.url}", "--set", "scheduler.type=fifo",
                       "--set", f"epochs={EPOCHS}"], env, log)
    try:
        client = MlflowClient(server.url)
        deadline = time.time() + 180
        while not _some_epoch_logged(client):
            assert time.time() < deadline and sweep.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        server.stop()
        outage_started = time.time()
        time.sleep(OUTAGE_S)
        server.start()
        outage = (outage_started, time.time())
        returncode = sweep.wait(timeout=600)
        yield server, root, returncode, log.read_text(), outage
    finally:
        stop_process(sweep)
        server.stop()


def _some_epoch_logged(client: MlflowClient) -> bool:
    experiment = client.get_experiment_by_name("smoke")
    if experiment is None:
        return False
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.role = 'trial'")
    return any("val_loss" in r.data.metrics for r in runs)


def test_outage_mid_sweep_costs_no_trial_and_no_metric(outage_sweep):
    server, root, returncode, log, (began, _) = outage_sweep
    assert returncode == 0, log[-3000:]
    assert "retrying with backoff" in log  # the driver saw the outage and kept going
    results = json.loads((root / "runs" / "outage" / "results.json").read_text())
    assert results["status"] == "finished" and results["counts"]["completed"] == TRIALS
    finished_at = max(h["timestamp"] for t in results["trials"] for h in t["history"])
    assert finished_at > began, "every epoch ended before the outage: it tested nothing"
    client = MlflowClient(server.url)
    parents, children = hierarchy(client)
    assert len(parents) == 1 and len(children) == TRIALS
    for child in children.values():
        assert steps(client, child.info.run_id) == list(range(1, EPOCHS + 1))
        assert steps(client, child.info.run_id, "train_acc") == list(range(1, EPOCHS + 1))
        assert child.info.status == "FINISHED" and child.data.tags["status"] == "completed"


def test_http_store_has_the_same_hierarchy_and_registered_model(outage_sweep, mnist_dir):
    server, root, _, _, _ = outage_sweep
    client = MlflowClient(server.url)
    parents, children = hierarchy(client)
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["finalized"] == "true"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children.values())
    assert {"batch_norm", "skip", "lr", "l2", "dropout", "batch_size", "epochs"} <= set(
        next(iter(children.values())).data.params)
    results = json.loads((root / "runs" / "outage" / "results.json").read_text())
    version = client.get_model_version_by_alias("smoke", "best")
    assert version.tags["trial_id"] == results["best"]["trial_id"]
    mlflow.set_tracking_uri(server.url)
    model = load_model("models:/smoke@best", tracking_uri=server.url)
    data = load_data("mnist", mnist_dir, subset=2000)
    assert evaluate(model, as_tensors(data.test))[1] == pytest.approx(results["best"]["test_acc"], abs=1e-9)
    exported = mlflow.pytorch.load_model("models:/smoke@best")
    images = torch.from_numpy(np.ascontiguousarray(data.test.images[:100]))
    with torch.no_grad():
        assert torch.allclose(exported(images), model(images), atol=1e-5)


def test_sync_mlflow_rebuilds_the_hierarchy_in_an_empty_store_and_never_duplicates(outage_sweep, base_env,
                                                                                   tmp_path):
    server, root, _, _, _ = outage_sweep
    experiment_dir = str(root / "runs" / "outage")
    empty = f"sqlite:///{tmp_path / 'replayed.db'}"
    for attempt in range(2):
        result = run_cli(["sync-mlflow", experiment_dir, "--tracking-uri", empty], base_env)
        assert result.returncode == 0, result.stderr[-3000:]
        added = int(result.stdout.split(" epochs added")[0].rsplit(" ", 1)[-1])
        assert added == (TRIALS * EPOCHS if attempt == 0 else 0)
    original, replayed = MlflowClient(server.url), MlflowClient(empty)
    (source_parent,), source_children = hierarchy(original)
    (parent,), children = hierarchy(replayed)
    assert set(children) == set(source_children)
    for trial_id, child in children.items():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["status"] == source_children[trial_id].data.tags["status"]
        assert steps(replayed, child.info.run_id) == steps(original, source_children[trial_id].info.run_id)
    assert len(replayed.search_model_versions("name='smoke'")) == 1
    assert parent.data.metrics["best_test_acc"] == source_parent.data.metrics["best_test_acc"]


def test_mlflow_ui_in_a_real_browser_shows_the_nested_runs(outage_sweep):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    require(Path(chromium).exists(), "Chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    server, _, _, log, _ = outage_sweep
    _, children = hierarchy(MlflowClient(server.url))
    experiment_id = MlflowClient(server.url).get_experiment_by_name("smoke").experiment_id
    # The page the end of the run points at: the experiment's runs (not MLflow 3's GenAI overview).
    url = next(line.removeprefix("compare the trials: ") for line in log.splitlines()
               if line.startswith("compare the trials: "))
    assert url == f"{server.url}/#/experiments/{experiment_id}/runs"
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "mlflow_ui_nested_runs.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text("outage", exact=True).first.wait_for(timeout=60_000)
            row = page.locator("[role=row]", has_text="outage").first
            row.locator("[col-id='attributes.`Run Name`'] button").first.click()  # expand the parent
            for trial_id in children:
                page.get_by_text(trial_id, exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
