"""Trial summaries, ranking, the batch-norm × skip table and the dry-run plan."""

from __future__ import annotations

import math

import pytest

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


def _trial(trial_id: str, epochs: int, bn: bool = True, skip: bool = True, errored: bool = False):
    history = [{"epoch": e, "val_loss": 1.0 / e, "val_acc": 0.9 + 0.01 * e} for e in range(1, epochs + 1)]
    return summarize_trial(trial_id, {"batch_norm": bn, "skip": skip, "lr": 0.001}, history, errored=errored,
                           max_t=9, metric="val_loss", mode="min")


def test_the_common_budget_is_the_largest_rung_that_eight_trials_reached():
    from search.report import common_budget, value_at
    from spaces import load_sweep

    config = load_sweep("default", ["epochs=12", "scheduler.grace_period=1"])  # ASHA rungs 1, 3, 9 of 12 epochs
    trials = [_trial(f"t{i}", e) for i, e in enumerate([12, 12, 9, 9, 9, 9, 3, 3, 3, 3, 1, 1])]
    assert common_budget(trials, config) == (3, 10)  # 9 epochs: 6 trials; 3 epochs: 10
    trials += [_trial("late1", 9), _trial("late2", 9), _trial("broken", 12, errored=True)]
    assert common_budget(trials, config) == (9, 8)  # early-stopped after epoch 9 counts; errored does not
    assert value_at(trials[0], 3, "val_loss") == pytest.approx(1 / 3) and value_at(trials[-4], 9, "val_acc") is None
    assert common_budget(trials[:3], config) == (9, 3)  # never 8: the budget most trials reached, the larger
    assert common_budget([*trials[:2], _trial("x", 1)], config) == (1, 3)


def test_the_batch_norm_skip_table_counts_trials_at_the_budget():
    trials = [_trial("a", 9, True, True), _trial("b", 3, True, True), _trial("c", 1, True, True),
              _trial("d", 9, False, False)]
    rows = {(r["batch_norm"], r["skip"]): r for r in ablation_rows(trials, budget=3)}
    on = rows[True, True]
    assert on["trials"] == 3 and on["trials_at_budget"] == 2 and on["budget_epoch"] == 3
    assert on["mean_val_acc_at_budget"] == pytest.approx(0.93) and rows[False, False]["trials_at_budget"] == 1
    assert rows[True, False]["trials_at_budget"] == 0 and rows[True, False]["mean_val_acc_at_budget"] is None
