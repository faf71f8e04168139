"""Two sweeps at once (two terminals, or a schedule tick while a person runs one) into the same
storage and the same SQLite MLflow store: both finish, nothing is locked out, every trial's run is
under its own sweep's parent, and `best` names the best model of the sweep that registered last."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import start_cli, stop_process

pytestmark = pytest.mark.slow


def test_two_sweeps_into_one_storage_and_one_sqlite_store(base_env, tmp_path, mnist_dir):
    storage = tmp_path / "runs"
    drivers = {name: start_cli(["run", "smoke", "--name", name, "--storage", str(storage)], base_env,
                               tmp_path / f"{name}.log") for name in ("left", "right")}
    try:
        for name, driver in drivers.items():
            assert driver.wait(timeout=600) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        for driver in drivers.values():
            stop_process(driver)
    for name in drivers:
        log = (tmp_path / f"{name}.log").read_text()
        assert "database is locked" not in log and "OperationalError" not in log, name

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke").experiment_id
    parents = {p.data.tags["sweep_run"]: p for p in client.search_runs([experiment], "tags.role = 'sweep'")}
    assert sorted(parents) == ["left", "right"]
    for name, parent in parents.items():
        assert parent.info.status == "FINISHED"
        trial_ids = {t["trial_id"] for t in json.loads((storage / name / "results.json").read_text())["trials"]}
        children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert {c.data.tags["trial_id"] for c in children} == trial_ids and len(children) == len(trial_ids)

    versions = {v.tags["sweep_run"]: v for v in client.search_model_versions("name = 'smoke'")}
    assert sorted(versions) == ["left", "right"]
    # `best` is the best model of the sweep run that registered last (whichever scored better):
    # what that run printed; each version names its run in `sweep_run`, beside its val_loss.
    last = max(versions.values(), key=lambda v: int(v.version))
    assert client.get_model_version_by_alias("smoke", "best").version == last.version
    for name, version in versions.items():
        assert version.run_id == parents[name].info.run_id
        assert float(version.tags["val_loss"]) == pytest.approx(parents[name].data.metrics["best_val_loss"])
