"""Reading a run folder back as plain JSON (what `tune sync-mlflow` trusts of it)."""

from __future__ import annotations

import json
import re

import pytest

from core.errors import UserError
from search.engine.trials import checkpoint_in_run, read_trials, recorded_trials
from spaces import load_sweep


def run_folder(tmp_path, trials):
    """A run folder as Tune leaves it: an experiment state naming trial folders, and the folders."""
    folder = tmp_path / "run"
    folder.mkdir()
    data = []
    for trial_id, status, logdir, epochs, error in trials:
        state = {"trial_id": trial_id, "status": status, "relative_logdir": logdir, "config": {}}
        data.append([json.dumps(state), json.dumps({"error_filename": error})])
        if "/" in logdir:
            continue
        (folder / logdir).mkdir()
        (folder / logdir / "params.json").write_text(json.dumps({"lr": 0.01, "batch_norm": True}))
        rows = [{"trial_id": trial_id, "epoch": e, "val_loss": 1.0 / e, "val_acc": 0.5, "node_id": "n1"}
                for e in range(1, epochs + 1)]
        (folder / logdir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if error:
            (folder / logdir / error).write_text("Traceback …\nRuntimeError: the trial broke\n")
    (folder / "experiment_state-2026-11-29_10-00-00.json").write_text(json.dumps({"trial_data": data}))
    return folder


def test_statuses_histories_and_errors_come_from_json(tmp_path):
    config = load_sweep("smoke", values={"epochs": 4})
    folder = run_folder(tmp_path, [("a", "TERMINATED", "t_a", 4, None), ("b", "TERMINATED", "t_b", 1, None),
                                   ("c", "RUNNING", "t_c", 2, "error.txt"), ("d", "PENDING", "t_d", 0, None)])
    snapshot = read_trials(str(folder), config)
    by_id = {t.trial_id: t for t in snapshot.trials}
    assert by_id["a"].status == "completed" and by_id["a"].epochs == 4 and by_id["a"].config["lr"] == 0.01
    assert by_id["b"].status == "early_stopped"
    assert by_id["c"].status == "errored" and by_id["c"].error == "RuntimeError: the trial broke"
    assert by_id["d"].status == "unfinished" and snapshot.unfinished == 1


def test_a_trial_folder_outside_the_run_is_refused(tmp_path):
    folder = run_folder(tmp_path, [("a", "TERMINATED", "../../elsewhere", 0, None)])
    expected = "names the folder '../../elsewhere', which is not a folder of this run"
    with pytest.raises(UserError, match=re.escape(expected)):
        read_trials(str(folder), load_sweep("smoke"))


def test_the_newest_state_is_chosen_by_its_session_time_not_its_file_time(tmp_path):
    """A resumed driver writes a new state file; an object store's whole-second times can make the old one
    look newer. Tune chooses by the time in the name, and so does the reader."""
    import os

    folder = run_folder(tmp_path, [("a", "TERMINATED", "t_a", 4, None)])
    older = folder / "experiment_state-2026-11-29_09-00-00.json"
    older.write_text(json.dumps({"trial_data": [[json.dumps({"trial_id": "old", "status": "ERROR",
                                                             "relative_logdir": "t_a"}), json.dumps({})]]}))
    os.utime(older, (2_000_000_000, 2_000_000_000))  # touched after the newer session's file
    snapshot = read_trials(str(folder), load_sweep("smoke", values={"epochs": 4}))
    assert [t.trial_id for t in snapshot.trials] == ["a"]


def finished_results(checkpoint):
    trial = {"trial_id": "a", "status": "completed", "config": {"lr": 0.01}, "epochs": 2, "best_epoch": 2,
             "score": 0.1, "val_loss": 0.1, "val_acc": 0.97, "test_loss": 0.09, "test_acc": 0.975,
             "checkpoint": checkpoint, "history": [{"epoch": 1, "val_loss": 0.2}, {"epoch": 2, "val_loss": 0.1}]}
    return {"status": "finished", "trials": [trial]}


def test_a_finished_run_is_read_as_the_tool_recorded_it_with_checkpoints_in_its_own_folder(tmp_path):
    moved = str(tmp_path / "moved" / "run")
    snapshot = recorded_trials(moved, finished_results("/old/place/run/t_a/checkpoint_000001"))
    (trial,) = snapshot.trials
    assert (trial.status, trial.test_acc, trial.history[1]) == ("completed", 0.975, {"epoch": 2, "val_loss": 0.1})
    assert trial.checkpoint == f"{moved}/t_a/checkpoint_000001"
    assert snapshot.unfinished == 0


@pytest.mark.parametrize("named", ["/etc/passwd", "/run/../checkpoint_000001", "s3://b/run/t_a/../../x", 7])
def test_a_checkpoint_that_is_not_a_trial_checkpoint_is_dropped(named):
    assert checkpoint_in_run("s3://bucket/runs/r", named) is None


def test_an_interrupted_run_is_not_read_from_its_results_and_a_malformed_one_is_one_line(tmp_path):
    assert recorded_trials(str(tmp_path), {**finished_results(None), "status": "interrupted"}) is None
    bad = finished_results(None)
    bad["trials"][0]["history"] = [{"epoch": "one"}]
    with pytest.raises(UserError, match=r"results.json: trials\.0\.history\.0\.epoch: Input should be a valid number"):
        recorded_trials(str(tmp_path), bad)
    bad = finished_results(None)
    bad["trials"][0]["status"] = "RUNNING"
    with pytest.raises(UserError, match="has the status 'RUNNING', not one of completed"):
        recorded_trials(str(tmp_path), bad)


@pytest.mark.parametrize("change, expected", [
    (lambda t: t.update(score=float("inf")), "score is inf, not a value a run records"),
    (lambda t: t.update(val_acc=1e300), "val_acc is 1e+300, not a value a run records"),
    (lambda t: t["history"][0].update(val_loss=-float("inf")), "history.0.val_loss is -inf"),
    (lambda t: t.update(trial_id="x" * 1000), "its id or history is longer than a run writes"),
    (lambda t: t["config"].update(note="y" * 100_000), "config.note is longer than a run writes"),
])
def test_numbers_and_strings_a_run_cannot_produce_are_refused(tmp_path, change, expected):
    results = finished_results(None)
    change(results["trials"][0])
    with pytest.raises(UserError, match=re.escape(expected)):
        recorded_trials(str(tmp_path), results)


def test_a_diverged_trials_nan_and_a_long_error_are_kept_as_data(tmp_path):
    results = finished_results(None)
    results["trials"][0]["history"][0]["val_loss"] = float("nan")
    results["trials"][0]["error"] = "e" * 50_000
    (trial,) = recorded_trials(str(tmp_path), results).trials
    assert trial.history[0]["val_loss"] != trial.history[0]["val_loss"] and len(trial.error) < 20_010


def test_a_run_folders_json_that_is_not_json_is_one_line(tmp_path):
    from search.engine.storage import ExperimentDir

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text('{"status": "finished", "trials": [')
    with pytest.raises(UserError, match=r"run/results.json: not valid JSON"):
        ExperimentDir(str(tmp_path), "run").read_json("results.json")
