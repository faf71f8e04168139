"""MLflow recorder on a real SQLite store: one parent, nested children, nothing written twice."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from search.engine.storage import MLFLOW_IDS_FILE, ExperimentDir
from search.tracking.recorder import PARENT_TAG, MlflowRecorder, TrackingTarget, sweep_params
from spaces import load_sweep


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """One SQLite store for the module (creating one takes seconds); each test its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def store(database, tmp_path, request):
    target = TrackingTarget(database, request.node.name, "run-1", (tmp_path / "art").as_uri())
    return target, ExperimentDir(str(tmp_path / "storage"), "run-1")


def rows(epochs):
    return [{"epoch": e, "val_loss": 1.0 / e, "val_acc": 0.5 + e / 100, "timestamp": 1.7e9 + e}
            for e in epochs]


def runs(target):
    client = MlflowClient(target.tracking_uri)
    experiment = client.get_experiment_by_name(target.experiment)
    return client, client.search_runs([experiment.experiment_id])


def test_parent_and_children_are_created_once(store):
    target, experiment = store
    recorder = MlflowRecorder(target, experiment)
    parent = recorder.attach_parent({"sweep": "s"}, {"epochs": 3})
    recorder.remember_config("t1", {"lr": 0.1})
    child = recorder.ensure_child("t1")
    assert recorder.attach_parent({"sweep": "s"}, {"epochs": 3}) == parent
    assert recorder.ensure_child("t1") == child
    client, found = runs(target)
    assert len(found) == 2
    child_run = client.get_run(child)
    assert child_run.data.tags[PARENT_TAG] == parent and child_run.data.params == {"lr": "0.1"}


def test_epochs_logged_once_with_step_equal_to_epoch(store):
    target, experiment = store
    recorder = MlflowRecorder(target, experiment)
    recorder.attach_parent({}, {})
    recorder.remember_config("t1", {})
    assert recorder.log_epochs("t1", rows([1, 2, 3])) == 3
    assert recorder.log_epochs("t1", rows([2, 3, 4])) == 1
    client, _ = runs(target)
    history = client.get_metric_history(recorder.children["t1"], "val_loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert client.get_run(recorder.children["t1"]).data.tags["last_epoch"] == "4"


def test_an_epoch_missing_below_later_ones_is_filled_in(store):
    """An epoch Tune processed only while cleaning up after Ctrl-C never reached the callback; the
    resumed run logged later epochs first. The history replayed at the end fills the gap, once."""
    target, experiment = store
    first = MlflowRecorder(target, experiment)
    first.attach_parent({}, {})
    first.remember_config("t1", {})
    assert first.log_epochs("t1", rows([2, 3])) == 2
    second = MlflowRecorder(target, experiment)  # the resumed driver
    second.attach_parent({}, {})
    assert second.log_epochs("t1", rows([1, 2, 3, 4])) == 2
    assert second.log_epochs("t1", rows([1, 2, 3, 4])) == 0
    client, _ = runs(target)
    assert [m.step for m in client.get_metric_history(first.children["t1"], "val_loss")] == [1, 2, 3, 4]
    assert client.get_run(first.children["t1"]).data.tags["last_epoch"] == "4"


def test_a_new_process_reattaches_and_continues_at_the_right_step(store):
    target, experiment = store
    first = MlflowRecorder(target, experiment)
    parent = first.attach_parent({}, {})
    first.remember_config("t1", {})
    first.log_epochs("t1", rows([1, 2]))
    second = MlflowRecorder(target, experiment)  # as after `tune run --resume`
    assert second.attach_parent({}, {}) == parent
    assert second.log_epochs("t1", rows([1, 2, 3])) == 1
    client, found = runs(target)
    assert len(found) == 2
    assert [m.step for m in client.get_metric_history(first.children["t1"], "epoch")] == [1, 2, 3]


def test_lost_id_file_falls_back_to_tags(store, tmp_path):
    target, experiment = store
    first = MlflowRecorder(target, experiment)
    parent = first.attach_parent({}, {})
    first.remember_config("t1", {})
    child = first.ensure_child("t1")
    (tmp_path / "storage" / "run-1" / MLFLOW_IDS_FILE).unlink()
    second = MlflowRecorder(target, experiment)
    assert second.attach_parent({}, {}) == parent
    assert second.ensure_child("t1") == child


def test_ids_are_kept_per_store(store, tmp_path):
    target, experiment = store
    MlflowRecorder(target, experiment).attach_parent({}, {})
    other = TrackingTarget(f"sqlite:///{tmp_path / 'other.db'}", "other-exp", "run-1")
    MlflowRecorder(other, experiment).attach_parent({}, {})
    stores = experiment.read_json(MLFLOW_IDS_FILE)["stores"]
    assert set(stores) == {target.tracking_uri, other.tracking_uri}


def test_finished_child_carries_its_status(store):
    target, experiment = store
    recorder = MlflowRecorder(target, experiment)
    recorder.attach_parent({}, {})
    for trial_id, status in [("a", "completed"), ("b", "early_stopped"), ("c", "errored")]:
        recorder.remember_config(trial_id, {})
        recorder.finish_child(trial_id, status, "boom" if status == "errored" else None)
    client, _ = runs(target)
    got = {t: client.get_run(recorder.children[t]) for t in "abc"}
    assert {t: r.data.tags["status"] for t, r in got.items()} == {
        "a": "completed", "b": "early_stopped", "c": "errored"}
    assert got["c"].info.status == "FAILED" and got["a"].info.status == "FINISHED"


def test_sweep_params_describe_the_search():
    params = sweep_params(load_sweep("smoke"))
    assert params["space.lr"] == "loguniform(0.0001, 0.01)"
    assert params["space.batch_norm"] == "choice(True, False)"
    assert params["search.algorithm"] == "optuna" and params["scheduler.reduction_factor"] == 2.0


def test_sync_mlflow_does_not_let_a_run_folder_choose_a_tracking_server(tmp_path):
    """A crafted run.json naming a server would get this user's MLflow credentials sent there."""
    import json

    from core.errors import UserError
    from search.engine.storage import RUN_FILE, SWEEP_FILE
    from search.tracking.replay import sync_experiment
    from spaces import load_sweep

    folder = tmp_path / "runs" / "crafted"
    folder.mkdir(parents=True)
    (folder / SWEEP_FILE).write_text(json.dumps(load_sweep("smoke").document()))
    (folder / RUN_FILE).write_text(json.dumps({"settings": {"tracking_uri": "http://collector.example:5000"}}))
    expected = "names the tracking server http://collector.example:5000; a run folder never chooses where records go"
    with pytest.raises(UserError, match=re.escape(expected)):
        sync_experiment(str(folder), None, None, timeout_s=1)


def test_an_optuna_database_password_is_not_logged_as_a_param():
    config = load_sweep("smoke", ["search.storage=postgresql://optuna:db-secret-661@db.example:5432/studies"])
    assert sweep_params(config)["search.storage"] == "postgresql://optuna:***@db.example:5432/studies"


def test_the_sweep_file_is_uploaded_without_the_passwords_it_holds(tmp_path):
    from search.tracking.replay import parent_setup

    sweep = tmp_path / "mine.yaml"
    sweep.write_text("name: mine\nepochs: 1\nsearch:\n  storage: postgresql://optuna:db-secret-661@db.example/s\n")
    config = load_sweep(str(sweep))
    staging = tmp_path / "staging"
    staging.mkdir()
    _, params, artifacts = parent_setup(config, {}, staging)
    uploaded = [path for path, _ in artifacts]
    assert [p.rsplit("/", 1)[1] for p in uploaded] == ["sweep.json", "mine.yaml"]
    for path in uploaded:
        text = Path(path).read_text()
        assert "db-secret-661" not in text and "optuna:***@db.example" in text
    assert "db-secret-661" not in str(params)
    assert "db-secret-661" in sweep.read_text()  # the user's own file is left alone


def test_a_run_folder_cannot_hand_over_a_run_it_did_not_create(store):
    """mlflow_runs.json naming another experiment's active run (or a child of another parent) is not
    reused: a new parent and new children are made, and that run is left as it was."""
    import json

    target, experiment = store
    client = MlflowClient(target.tracking_uri)
    other = client.create_experiment(f"{target.experiment}-other")
    victim = client.create_run(other, run_name="someone-elses").info.run_id
    folder = Path(experiment.uri)
    folder.mkdir(parents=True)
    (folder / MLFLOW_IDS_FILE).write_text(json.dumps({"stores": {target.tracking_uri: {
        "experiment_id": other, "parent_run_id": victim, "children": {"t1": victim}}}}))
    recorder = MlflowRecorder(target, experiment)
    parent = recorder.attach_parent({}, {})
    recorder.remember_config("t1", {})
    child = recorder.ensure_child("t1")
    recorder.finish_child("t1", "completed", None)
    assert victim not in (parent, child)
    untouched = client.get_run(victim)
    assert untouched.info.status == "RUNNING" and "status" not in untouched.data.tags


def test_a_finalised_parent_attached_again_ends_finished(store):
    """Resuming or replaying a finished sweep reopens its parent; finishing it again ends it FINISHED
    (it stayed RUNNING: the finisher returned early for a finalised run)."""
    from search.tracking.finisher import FINALIZED_TAG, SweepEnd, finish_sweep

    target, experiment = store
    recorder = MlflowRecorder(target, experiment)
    parent = recorder.attach_parent({}, {})
    recorder.client.set_tag(parent, FINALIZED_TAG, "true")
    recorder.client.set_terminated(parent, status="FINISHED")
    for _ in range(2):  # `tune run --resume` of a finished run, then `tune sync-mlflow` twice
        assert recorder.attach_parent({}, {}) == parent
        finish_sweep(recorder, load_sweep("smoke"), [], SweepEnd(results={"status": "finished", "counts": {}}))
        assert recorder.client.get_run(parent).info.status == "FINISHED"
