"""The simulator drives the searcher and scheduler a sweep file builds, in simulated time (no Ray started)."""

from __future__ import annotations

import time

import pytest

from core.errors import UserError
from search.engine.simulate import Curve, quiet_optuna, simulate
from spaces import validate_sweep

MAX_T = 9


def sweep(algorithm: str = "random", scheduler: dict | None = None, num_samples: int = 40, seed: int = 0):
    return validate_sweep({
        "name": "sim", "trainable": "bench.simulated:not_called", "metric": "loss", "mode": "min", "epochs": MAX_T,
        "space": {"x": {"uniform": [0.0, 1.0]}}, "search": {"algorithm": algorithm, "num_samples": num_samples,
                                                           "seed": seed},
        "scheduler": scheduler or {"type": "fifo"}})


def flat(config: dict) -> Curve:
    """A curve whose every epoch says how good the configuration is: x itself (lower is better)."""
    return Curve([config["x"]] * MAX_T, [1.0] * MAX_T)


def test_fifo_runs_every_trial_to_the_end_on_every_worker():
    result = simulate(sweep(num_samples=1000), flat, workers=8)
    assert len(result.trials) == 1000 and set(result.stopped_at().values()) == {MAX_T}
    assert result.epochs == 1000 * MAX_T and result.end_s == pytest.approx(1000 * MAX_T / 8)


def test_thousands_of_trials_take_seconds_not_hours():
    quiet_optuna()
    started = time.perf_counter()
    simulate(sweep(num_samples=2000, scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 3}),
             flat, workers=64)
    assert time.perf_counter() - started < 30  # 2,000 trials; a real sweep of them is days on 2 cores


def test_asha_stops_trials_at_its_rungs_and_keeps_the_good_ones():
    result = simulate(sweep(scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 3}, num_samples=200),
                      flat, workers=4)
    stopped = result.stopped_at()
    assert set(stopped.values()) <= {1, 3, MAX_T}
    full = [t.config["x"] for t in result.trials.values() if t.epochs == MAX_T]
    early = [t.config["x"] for t in result.trials.values() if t.epochs == 1]
    assert len(full) < len(early) / 3 and sorted(full)[len(full) // 2] < sorted(early)[len(early) // 2]


def test_a_time_budget_ends_the_sweep_in_simulated_time():
    result = simulate(sweep(num_samples=100), flat, workers=2, time_budget_s=30)
    assert result.end_s == 30 and max(r.time_s for r in result.reports) <= 30


def test_the_same_seed_makes_the_same_decisions_and_another_seed_others():
    quiet_optuna()
    config = sweep("optuna", {"type": "asha", "grace_period": 1, "reduction_factor": 3}, num_samples=60)

    def run(c):
        return [(t.config["x"], t.epochs) for t in simulate(c, flat, workers=4).trials.values()]

    assert run(config) == run(config)
    assert run(config) != run(sweep("optuna", {"type": "asha", "grace_period": 1, "reduction_factor": 3},
                                    num_samples=60, seed=1))


def test_the_optuna_searcher_learns_from_what_the_scheduler_reports():
    quiet_optuna()
    tpe = simulate(sweep("optuna", num_samples=60), flat, workers=1)
    late = [t.config["x"] for t in list(tpe.trials.values())[30:]]
    assert sorted(late)[len(late) // 2] < 0.25  # TPE proposes near x = 0 once it has seen trials


def test_patient_asha_promotes_no_first_trial_unchallenged():
    impatient = simulate(sweep(scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 3}), flat, 1)
    patient = simulate(sweep(scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 3, "min_peers": 3}),
                       flat, 1)
    first = next(iter(impatient.trials))
    assert impatient.trials[first].epochs == MAX_T  # Ray's ASHA: nothing recorded at its rungs, so it goes on
    assert next(iter(patient.trials.values())).epochs == 1  # with min_peers, the first to arrive stops
    xs = [t.config["x"] for t in patient.trials.values()]
    for index, trial in enumerate(list(patient.trials.values())[:3]):  # below 3 peers: only a new best goes on
        assert (trial.epochs > 1) == (index > 0 and trial.config["x"] < min(xs[:index]))


def test_min_peers_belongs_to_asha():
    with pytest.raises(UserError, match=r"scheduler\.min_peers is 3, but a fifo scheduler stops no trial"):
        sweep(scheduler={"type": "fifo", "min_peers": 3})
