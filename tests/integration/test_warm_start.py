"""Warm starts: `search.start_from` is evaluated first, and `--warm-start RUN` gives a new sweep's
Optuna study the finished trials of an earlier run (completed as COMPLETE, early-stopped as PRUNED)."""

from __future__ import annotations

import json
import os

import optuna
import pytest
from mlflow.tracking import MlflowClient

from search.engine.optuna_bridge import WARM_START_ATTR
from search.engine.storage import STUDY_FILE
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

SMALL = ["--num-samples", "4", "--set", "epochs=3", "--set", "data.subset=600"]
START = "{lr: 0.002, batch_norm: false, skip: true, l2: 1.0e-4, dropout: 0.1, batch_size: 64}"


def test_start_from_then_a_warm_started_sweep(tmp_path, mnist_dir, ray_head):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    first = run_cli(["run", "smoke", "--name", "first", *SMALL, "--address", ray_head.address,
                     "--set", f"search.start_from=[{START}]", "--json"], env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    earlier = json.loads(first.stdout)
    # The configuration to evaluate first ran first, exactly as given.
    study = optuna.load_study(study_name="smoke", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "runs" / "first" / STUDY_FILE))))
    assert study.trials[0].params == {"lr": 0.002, "batch_norm": False, "skip": True, "l2": 1.0e-4,
                                      "dropout": 0.1, "batch_size": 64}

    second = run_cli(["run", "smoke", "--name", "second", *SMALL, "--address", ray_head.address,
                      "--warm-start", "first", "--json"], env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    finished = [t for t in earlier["trials"] if t["status"] in ("completed", "early_stopped")]
    completed = sum(t["status"] == "completed" for t in finished)
    assert f"warm start: {len(finished)} trials of {tmp_path}/runs/first ({completed} completed" in second.stderr
    study = optuna.load_study(study_name="smoke", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "runs" / "second" / STUDY_FILE))))
    warm = [t for t in study.trials if WARM_START_ATTR in t.user_attrs]
    assert len(warm) == len(finished) and len(study.trials) == len(finished) + 4
    by_id = {t.user_attrs["warm_start_trial_id"]: t for t in warm}
    for trial in finished:
        ot = by_id[trial["trial_id"]]
        assert ot.params == {k: trial["config"][k] for k in ot.params}
        if trial["status"] == "completed":
            assert ot.state.name == "COMPLETE" and ot.value == pytest.approx(trial["score"])
        else:
            assert ot.state.name == "PRUNED" and sorted(ot.intermediate_values) == \
                [h["epoch"] for h in trial["history"]]
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    parents = {r.data.tags["sweep_run"]: r for r in client.search_runs(
        [client.get_experiment_by_name("smoke").experiment_id]) if r.data.tags.get("role") == "sweep"}
    assert parents["second"].data.tags["warm_start"] == "first"


@pytest.mark.parametrize("args, expected", [
    (["--warm-start", "nowhere"], "--warm-start nowhere: no run with trials there"),
    (["--warm-start", "x", "--resume"], "--resume continues a sweep's own study; it takes no --warm-start"),
    (["--set", "search.start_from=[{lr: 5}]"], "search.start_from.0.lr: 5 is not a value of loguniform"),
    (["--set", "search.algorithm=random", "--warm-start", "x"], "--warm-start seeds an Optuna study"),
])
def test_bad_warm_starts_are_one_line(tmp_path, args, expected):
    result = run_cli(["run", "smoke", *args], dict(os.environ), cwd=tmp_path)
    assert result.returncode == 2 and expected in result.stderr and result.stderr.count("\n") == 1, result.stderr
