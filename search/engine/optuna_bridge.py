"""Optuna as a Ray Tune searcher that knows the difference between finished and stopped trials.

Ray's `OptunaSearch` tells Optuna that a trial ASHA stopped at epoch 2 is COMPLETE
with its epoch-2 score, so TPE compares a 2-epoch loss with 12-epoch losses as if
they were the same budget. Here only a trial that reached `max_t` is COMPLETE; a
trial stopped earlier is PRUNED, and TPE ranks it by its per-epoch values.

Every epoch a trial ran is an intermediate value, the last one included: when ASHA
stops a trial (also at `max_t`), Tune hands that epoch's result to `on_trial_complete`
only, never to `on_trial_result`, so it is reported there. A COMPLETE trial's value is
its best epoch's, the score `results.json` and MLflow report for it (the tool keeps
each trial's best-validation weights).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from core.errors import UserError
from core.names import COMPLETED, trial_status
from core.urls import redact_uri
from search.engine.storage import write_atomically

log = logging.getLogger(__name__)

RAY_TRIAL_ID_ATTR = "ray_trial_id"


def open_storage(storage: str | None) -> optuna.storages.BaseStorage | None:
    """An Optuna storage from a URL (`sqlite:///x.db`, `postgresql://…`) or a journal file path."""
    if storage is None:
        return None
    if "://" in storage:
        try:
            return PasswordFreeRDBStorage(storage)
        except ImportError as err:  # SQLAlchemy found no driver for the URL's database
            extra = " -e '.[postgres]'" if storage.startswith("postgresql") else f" (the driver: {err})"
            raise UserError(f"search.storage {redact_uri(storage)}: this database's driver is not installed: "
                            f"pip install -c constraints.txt{extra}") from None
    from optuna.storages.journal import JournalFileBackend

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(storage))


class PasswordFreeRDBStorage(optuna.storages.RDBStorage):
    """An Optuna database whose pickled state (Tune saves the searcher, study and storage with the run)
    holds its URL with the password as `***`. Unpickled in a driver that opened the same database
    (a resume opens the sweep's storage first), the password comes back from that driver's memory."""

    _passwords: dict[str, str] = {}  # redacted URL -> URL, this process only  # noqa: RUF012

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.remember(url)

    @classmethod
    def remember(cls, storage: str | None) -> None:
        """Let a storage restored from a run's state connect to `storage` (the same database); a journal
        file or no storage has no password to remember."""
        if storage and "://" in storage:
            cls._passwords[redact_uri(storage)] = storage

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state["url"] = redact_uri(state["url"])
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        state = {**state, "url": self._passwords.get(state["url"], state["url"])}
        super().__setstate__(state)


WARM_START_ATTR = "warm_start_of"  # the user attribute of a trial added from an earlier run


def warm_trials(trials: list[dict[str, Any]], distributions: dict[str, Any], metric: str, max_t: int,
                source: str) -> tuple[list[optuna.trial.FrozenTrial], int]:
    """An earlier run's trials (results.json) as Optuna trials of this space: completed ones COMPLETE
    with their score, early-stopped ones PRUNED with their per-epoch values. Returns them and how many
    were left out (errored, unfinished, or a configuration outside this space)."""
    out, skipped = [], 0
    for trial in trials:
        params = {k: trial.get("config", {}).get(k) for k in distributions}
        inside = all(v is not None and distributions[k]._contains(_internal(distributions[k], v))
                     for k, v in params.items())
        history = {int(h["epoch"]): h[metric] for h in trial.get("history", [])
                   if "epoch" in h and isinstance(h.get(metric), (int, float)) and math.isfinite(h[metric])}
        if not inside or trial.get("status") not in (COMPLETED, "early_stopped") or not history:
            skipped += 1
            continue
        complete = trial["status"] == COMPLETED and trial.get("score") is not None
        out.append(optuna.trial.create_trial(
            params=params, distributions=distributions,
            state=TrialState.COMPLETE if complete else TrialState.PRUNED,
            value=trial["score"] if complete else None,
            intermediate_values={step: value for step, value in history.items() if step <= max_t},
            user_attrs={WARM_START_ATTR: source, "warm_start_trial_id": str(trial.get("trial_id"))}))
    return out, skipped


def _internal(distribution: Any, value: Any) -> Any:
    try:
        return distribution.to_internal_repr(value)
    except (ValueError, TypeError):
        return float("nan")


class BudgetAwareOptunaSearch(OptunaSearch):
    """`OptunaSearch` that reports trials stopped before `max_t` as PRUNED."""

    def __init__(self, *args: Any, max_t: int, journal_copy: str | None = None, step_key: str = "epoch",
                 warm_trials: list[optuna.trial.FrozenTrial] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._warm_trials = list(warm_trials or [])  # an earlier run's trials, added when the study is made
        self._max_t = max_t
        self._step_key = step_key  # the result key that counts epochs (a user's trainable: reports)
        self._best_values: dict[str, float] = {}  # saved with the searcher's state, so a resume keeps it
        self._journal_copy = journal_copy

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Tune's snapshot of the searcher, plus (for a run on cloud storage) a copy of the study's
        journal: Tune uploads the folder to the run folder, so the study lives with the run."""
        super().save_to_dir(checkpoint_dir, session_str)
        journal = Path(self._journal_copy) if self._journal_copy else None
        if journal is not None and journal.exists():
            write_atomically(Path(checkpoint_dir) / journal.name, journal.read_bytes())

    def _setup_study(self, mode: Any) -> None:
        super()._setup_study(mode)
        if self._warm_trials and not any(WARM_START_ATTR in t.user_attrs for t in self._ot_study.get_trials(False)):
            self._ot_study.add_trials(self._warm_trials)
        self._warm_trials = []

    @property
    def study(self) -> optuna.Study:
        return self._ot_study

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials[trial_id]
        if RAY_TRIAL_ID_ATTR not in ot_trial.user_attrs:
            ot_trial.set_user_attr(RAY_TRIAL_ID_ATTR, trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            return  # Optuna cannot rank a NaN; the trial will be told FAIL at the end
        # Report per epoch (Tune's report counter restarts when a trial resumes from a
        # checkpoint Tune did not know about).
        step = result.get(self._step_key, result.get(TRAINING_ITERATION))
        with warnings.catch_warnings():
            # An epoch reported twice (a trial restored from a checkpoint re-runs nothing it
            # reported, but its last epoch may reach us twice): Optuna keeps the first and warns.
            warnings.filterwarnings("ignore", message=".*is already reported")
            super().on_trial_result(trial_id, {**result, TRAINING_ITERATION: step})
        best = self._best_values.get(trial_id)
        if best is None or (value < best if self.mode == "min" else value > best):
            self._best_values[trial_id] = value

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        result = result or {}
        value = result.get(self.metric)
        finite = value is not None and math.isfinite(value)
        if finite and not error:
            self.on_trial_result(trial_id, result)  # the epoch at which the trial stopped
        epochs = result.get(self._step_key, result.get(TRAINING_ITERATION, 0))
        reached_max_t = trial_status(False, epochs, self._max_t) == COMPLETED
        if error or not finite:
            state, value = TrialState.FAIL, None
        elif reached_max_t:
            state, value = TrialState.COMPLETE, self._best_values.get(trial_id, value)
        else:
            state, value = TrialState.PRUNED, None  # Optuna keeps the last reported value
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except (ValueError, RuntimeError) as err:  # e.g. already told by a previous process
            log.warning("optuna: could not record trial %s as %s: %s", trial_id, state.name, err)
        self._completed_trials.add(trial_id)
