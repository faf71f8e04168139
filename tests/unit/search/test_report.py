"""Trial summaries, ranking, the batch-norm × skip table and the dry-run plan."""

from __future__ import annotations

import math

from core.names import trial_status
from search.report import ablation_rows, history_from_rows, rank_trials, summarize_trial


def summary(trial_id, bn, skip, losses, max_t=3, errored=False):
    history = [{"epoch": e, "val_loss": v, "val_acc": 1 - v} for e, v in enumerate(losses, 1)]
    return summarize_trial(trial_id, {"batch_norm": bn, "skip": skip, "lr": 0.1, "epochs": max_t}, history,
                           errored=errored, max_t=max_t, metric="val_loss", mode="min")


def test_status_from_epochs_reached():
    assert trial_status(False, 3, 3) == "completed"
    assert trial_status(False, 1, 3) == "early_stopped"
    assert trial_status(True, 3, 3) == "errored"
    assert trial_status(False, 1, 3, unfinished=True) == "unfinished"


def test_history_keeps_the_last_report_of_a_rerun_epoch():
    rows = [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.4}, {"epoch": 2, "val_loss": 0.39},
            {"epoch": math.nan}]
    assert history_from_rows(rows) == [{"epoch": 1.0, "val_loss": 0.5}, {"epoch": 2.0, "val_loss": 0.39}]


def test_best_epoch_and_ranking():
    good, worse = summary("a", True, True, [0.5, 0.2, 0.3]), summary("b", False, True, [0.6])
    assert (good.best_epoch, good.score, good.status) == (2, 0.2, "completed")
    assert worse.status == "early_stopped"
    crashed = summary("c", True, False, [], errored=True)
    assert [t.trial_id for t in rank_trials([crashed, worse, good], "min")] == ["a", "b", "c"]


def test_ablation_table_has_every_combination():
    trials = [summary("a", True, True, [0.1]), summary("b", True, True, [0.3]), summary("c", False, False, [0.5])]
    rows = {(r["batch_norm"], r["skip"]): r for r in ablation_rows(trials)}
    assert len(rows) == 4
    assert rows[(True, True)]["trials"] == 2 and rows[(True, True)]["best_val_acc"] == 0.9
    assert abs(rows[(True, True)]["mean_val_acc"] - 0.8) < 1e-9
    assert rows[(True, False)]["trials"] == 0 and rows[(True, False)]["best_val_acc"] is None
