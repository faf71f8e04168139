"""A sweep in simulated time: the searcher and scheduler `tune run` builds, on N simulated workers.

The same objects as a real sweep (`build_searcher`, `build_scheduler` from a `SweepConfig`) are
driven through Tune's public interfaces, in the order Tune's controller calls them: a trial is
made by the search algorithm (`next_trial`, Tune's own `Trial` objects), each epoch's result goes
to the scheduler (`on_trial_result` -> CONTINUE, PAUSE or STOP) and, unless it stops the trial, to
the searcher; a stopped or finished trial goes to both `on_trial_complete`. Instead of training,
an epoch is a value and a cost read from a benchmark's learning curve (`Curve`), and a clock
advances by that cost: no Ray cluster, no processes, thousands of trials a second. What it
measures is what users run, which is what lets searchers be compared over hundreds of trials
and dozens of seeds (`bench/simulated.py`), and a cluster be sized before it is paid for.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray.tune.experiment import Experiment, Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import SearchAlgorithm, Searcher, SearchGenerator

from search.engine.tuner import build_param_space, build_scheduler, build_searcher
from spaces import SweepConfig

MAX_WORKERS = 256


@dataclass(frozen=True)
class Curve:
    """One configuration's learning curve: the sweep's metric after each epoch, and each epoch's cost."""

    values: Sequence[float]
    seconds: Sequence[float]


Objective = Callable[[dict[str, Any]], Curve]


@dataclass(frozen=True)
class Report:
    """One epoch's result as the scheduler saw it, at its simulated time."""

    time_s: float
    trial_id: str
    epoch: int
    value: float


@dataclass
class SimulatedTrial:
    config: dict[str, Any]
    curve: Curve
    started_s: float
    epochs: int = 0
    status: str = "running"  # running | paused | completed | early_stopped


@dataclass
class SimulatedSweep:
    """Everything a simulated sweep did, in simulated time."""

    workers: int
    reports: list[Report] = field(default_factory=list)
    trials: dict[str, SimulatedTrial] = field(default_factory=dict)
    end_s: float = 0.0

    @property
    def epochs(self) -> int:
        return len(self.reports)

    def stopped_at(self) -> dict[str, int]:
        """Each trial's last epoch, by trial id (what a real sweep's early stopping decided)."""
        return {trial_id: trial.epochs for trial_id, trial in self.trials.items()}


class _Controller:
    """What Tune's schedulers read of the controller they are given: the trials and their states."""

    def __init__(self) -> None:
        self.trials: list[Trial] = []

    def get_trials(self) -> list[Trial]:
        return self.trials

    def get_live_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.status not in (Trial.TERMINATED, Trial.ERROR)]


def _search_algorithm(config: SweepConfig, optuna_class: type | None) -> SearchAlgorithm:
    searcher = build_searcher(config, optuna_class=optuna_class)
    algorithm = SearchGenerator(searcher) if isinstance(searcher, Searcher) else searcher
    space = build_param_space(config)
    algorithm.set_search_properties(config.metric, config.mode, space)
    with tempfile.TemporaryDirectory() as folder:  # Tune's Experiment wants a storage path; nothing is written
        experiment = Experiment("simulated", lambda _: None, config=space, num_samples=config.search.num_samples,
                                storage_path=folder)
    algorithm.add_configurations([experiment])
    return algorithm


def simulate(config: SweepConfig, objective: Objective, workers: int, *, optuna_class: type | None = None,
             time_budget_s: float | None = None) -> SimulatedSweep:
    """Run `config`'s sweep on `workers` simulated workers, each epoch's value and cost from `objective`.

    Ends when the searcher has no more trials and every worker is idle, or at `time_budget_s` of
    simulated time (the sweep's own `search.time_budget_s` when not given)."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers is {workers}, but must be in 1..{MAX_WORKERS}")
    budget = time_budget_s if time_budget_s is not None else (config.search.time_budget_s or math.inf)
    algorithm = _search_algorithm(config, optuna_class)
    scheduler = build_scheduler(config)
    scheduler.set_search_properties(config.metric, config.mode)
    controller, sweep = _Controller(), SimulatedSweep(workers)
    events: list[tuple[float, int, Trial]] = []  # (when the trial's next epoch ends, tie-break, trial)
    order = itertools.count()
    now = 0.0

    def start(trial: Trial) -> None:
        state = sweep.trials[trial.trial_id]
        trial.set_status(Trial.RUNNING)
        state.status = "running"
        heapq.heappush(events, (now + state.curve.seconds[state.epochs], next(order), trial))

    def fill_workers() -> None:
        while len(events) < workers:
            paused = scheduler.choose_trial_to_run(controller)
            if paused is not None and paused.status == Trial.PAUSED:
                start(paused)
                continue
            trial = None if algorithm.is_finished() else algorithm.next_trial()
            if trial is None:
                return
            controller.trials.append(trial)
            scheduler.on_trial_add(controller, trial)
            curve = objective(dict(trial.config))
            sweep.trials[trial.trial_id] = SimulatedTrial(dict(trial.config), curve, now)
            start(trial)

    fill_workers()
    while events:
        when, _, trial = heapq.heappop(events)
        if when > budget:
            now = budget
            break
        now = when
        _report(config, scheduler, algorithm, controller, sweep, trial, now)
        if sweep.trials[trial.trial_id].status == "running":
            state = sweep.trials[trial.trial_id]
            heapq.heappush(events, (now + state.curve.seconds[state.epochs], next(order), trial))
        fill_workers()
    sweep.end_s = now
    return sweep


def _report(config: SweepConfig, scheduler: TrialScheduler, algorithm: SearchAlgorithm, controller: _Controller,
            sweep: SimulatedSweep, trial: Trial, now: float) -> None:
    """One epoch's result, through the scheduler and the searcher as Tune's controller passes it."""
    state = sweep.trials[trial.trial_id]
    state.epochs += 1
    value = float(state.curve.values[state.epochs - 1])
    sweep.reports.append(Report(now, trial.trial_id, state.epochs, value))
    result = {config.metric: value, "epoch": state.epochs, "training_iteration": state.epochs,
              "time_total_s": now - state.started_s, "trial_id": trial.trial_id, "done": False}
    last = state.epochs >= min(len(state.curve.values), config.epochs)
    decision = scheduler.on_trial_result(controller, trial, result)
    trial.update_last_result(result)
    if decision != TrialScheduler.STOP:
        algorithm.on_trial_result(trial.trial_id, result)  # Tune's order: a result that stops the trial is not sent
    if decision == TrialScheduler.STOP or last:  # stopped, or its trainable returned after its last epoch
        scheduler.on_trial_complete(controller, trial, result)
        algorithm.on_trial_complete(trial.trial_id, result=result)
        trial.set_status(Trial.TERMINATED)
        state.status = "completed" if last else "early_stopped"
        return
    if decision == TrialScheduler.PAUSE:
        trial.set_status(Trial.PAUSED)
        state.status = "paused"


def quiet_optuna() -> None:
    """Optuna logs a line per trial; thousands of simulated trials would bury everything else."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
