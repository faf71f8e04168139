"""Reading a run folder back as plain JSON (what `tune sync-mlflow` trusts of it)."""

from __future__ import annotations

import json
import re

import pytest

from core.errors import UserError
from search.engine.trials import read_trials
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
