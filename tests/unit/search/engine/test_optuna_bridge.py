"""The Optuna bridge: trials ASHA stopped are PRUNED, only trials that reached max_t are COMPLETE."""

from __future__ import annotations

import math
import re

import pytest
from optuna.trial import TrialState
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from search.engine.optuna_bridge import RAY_TRIAL_ID_ATTR, BudgetAwareOptunaSearch, open_storage

SPACE = {"lr": tune.loguniform(1e-4, 1e-2)}


def searcher(cls=BudgetAwareOptunaSearch, **kwargs):
    extra = {"max_t": 4} if cls is BudgetAwareOptunaSearch else {}
    search = cls(metric="val_loss", mode="min", seed=0, **extra, **kwargs)
    search.set_search_properties("val_loss", "min", SPACE)
    return search


def feed(search, trial_id, losses, error=False):
    search.suggest(trial_id)
    for epoch, loss in enumerate(losses, start=1):
        search.on_trial_result(trial_id, {"val_loss": loss, "training_iteration": epoch})
    last = {"val_loss": losses[-1], "training_iteration": len(losses)} if losses else None
    search.on_trial_complete(trial_id, last, error=error)


def states(search):
    return {t.user_attrs[RAY_TRIAL_ID_ATTR]: t.state for t in search.study.trials}


def test_stopped_early_is_pruned_and_reaching_max_t_is_complete():
    search = searcher()
    feed(search, "stopped", [0.9, 0.8])
    feed(search, "finished", [0.9, 0.5, 0.4, 0.3])
    assert states(search) == {"stopped": TrialState.PRUNED, "finished": TrialState.COMPLETE}
    trials = {t.user_attrs[RAY_TRIAL_ID_ATTR]: t for t in search.study.trials}
    assert trials["stopped"].intermediate_values == {1: 0.9, 2: 0.8}
    assert trials["finished"].value == 0.3


def test_ray_stock_searcher_would_call_the_stopped_trial_complete():
    stock = OptunaSearch(metric="val_loss", mode="min", seed=0)
    stock.set_search_properties("val_loss", "min", SPACE)
    feed(stock, "stopped", [0.9, 0.8])
    assert stock._ot_study.trials[0].state == TrialState.COMPLETE  # the budget mix-up we fix


def test_errors_and_nan_are_failures():
    search = searcher()
    feed(search, "crashed", [0.9], error=True)
    feed(search, "diverged", [0.9, math.nan, math.nan, math.nan])
    assert states(search) == {"crashed": TrialState.FAIL, "diverged": TrialState.FAIL}


def test_a_second_completion_is_ignored():
    search = searcher()
    feed(search, "t", [0.5, 0.4, 0.3, 0.2])
    search.on_trial_complete("t", {"val_loss": 0.1, "training_iteration": 4})
    assert search.study.trials[0].value == 0.2


def test_journal_storage_keeps_the_study_across_searchers(tmp_path):
    journal = str(tmp_path / "study.journal")
    first = searcher(storage=open_storage(journal), study_name="s")
    feed(first, "a", [0.5, 0.4, 0.3, 0.2])
    second = searcher(storage=open_storage(journal), study_name="s")
    assert [t.state for t in second.study.trials] == [TrialState.COMPLETE]


@pytest.mark.parametrize("url", ["sqlite:///x.db"])
def test_storage_urls_are_rdb(tmp_path, url, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from optuna.storages import RDBStorage

    assert isinstance(open_storage(url), RDBStorage)
    assert open_storage(None) is None


def feed_as_tune_does(search, trial_id, losses):
    """Tune's order: every epoch but the last to on_trial_result; the epoch at which the scheduler
    stops the trial (an ASHA rung, or max_t) only to on_trial_complete."""
    search.suggest(trial_id)
    for epoch, loss in enumerate(losses[:-1], start=1):
        search.on_trial_result(trial_id, {"val_loss": loss, "epoch": epoch, "training_iteration": epoch})
    search.on_trial_complete(trial_id, {"val_loss": losses[-1], "epoch": len(losses),
                                        "training_iteration": len(losses)})


def test_every_epoch_a_trial_ran_is_in_the_study_the_last_one_included():
    search = searcher()
    feed_as_tune_does(search, "first_rung", [0.9])
    feed_as_tune_does(search, "second_rung", [0.9, 0.7])
    feed_as_tune_does(search, "finished", [0.8, 0.3, 0.4, 0.35])
    trials = {t.user_attrs[RAY_TRIAL_ID_ATTR]: t for t in search.study.trials}
    assert trials["first_rung"].intermediate_values == {1: 0.9}
    assert trials["second_rung"].intermediate_values == {1: 0.9, 2: 0.7}
    assert trials["finished"].intermediate_values == {1: 0.8, 2: 0.3, 3: 0.4, 4: 0.35}
    assert [trials[t].state for t in ("first_rung", "second_rung")] == [TrialState.PRUNED] * 2
    # A complete trial's value is its best epoch's: the score results.json reports for it.
    assert trials["finished"].state == TrialState.COMPLETE and trials["finished"].value == 0.3


def test_a_restored_searcher_keeps_the_best_value_so_far(tmp_path):
    search = searcher()
    search.suggest("t")
    for epoch, loss in enumerate([0.8, 0.2], start=1):
        search.on_trial_result("t", {"val_loss": loss, "epoch": epoch})
    search.save(str(tmp_path / "searcher.pkl"))
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("t", {"val_loss": 0.5, "epoch": 3})
    restored.on_trial_complete("t", {"val_loss": 0.4, "epoch": 4})
    (trial,) = restored.study.trials
    assert trial.value == 0.2 and sorted(trial.intermediate_values) == [1, 2, 3, 4]


def test_an_optuna_database_password_is_not_pickled_with_the_searcher(tmp_path, monkeypatch):
    """Tune pickles the searcher, its study and storage into the run folder: the database URL goes there
    with its password as ***, and a resuming driver that opened the same database connects with it."""
    import pickle

    import sqlalchemy

    from search.engine.optuna_bridge import PasswordFreeRDBStorage

    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    full = "postgresql://optuna:db-secret-661@db.example:5432/studies"
    storage.url = full  # as if opened on that database (no PostgreSQL here)
    saved = pickle.dumps(storage)
    assert b"db-secret-661" not in saved and b"postgresql://optuna:***@db.example:5432/studies" in saved

    create_engine = sqlalchemy.engine.create_engine
    connected: list[str] = []

    def record(url, **kwargs):
        connected.append(url)
        return create_engine(f"sqlite:///{tmp_path / 'studies.db'}")

    monkeypatch.setattr(sqlalchemy.engine, "create_engine", record)
    monkeypatch.setattr(PasswordFreeRDBStorage, "_passwords", {})
    pickle.loads(saved)  # a process that never opened it: the password is nowhere to be had
    PasswordFreeRDBStorage.remember(full)  # what a resume does with the sweep file it is given again
    pickle.loads(saved)
    assert connected == ["postgresql://optuna:***@db.example:5432/studies", full]


def test_a_database_without_its_driver_is_one_line_naming_the_extra(monkeypatch):
    import sys

    from core.errors import UserError

    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as when the "postgres" extra is not installed
    with pytest.raises(UserError, match=re.escape(
            "search.storage postgresql://optuna:***@127.0.0.1:1/studies: this database's driver is not installed: "
            "pip install -c constraints.txt -e '.[postgres]'")):
        open_storage("postgresql://optuna:secret@127.0.0.1:1/studies")
