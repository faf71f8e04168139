"""SweepConfig -> ray.tune.Tuner: search space, Optuna or Tune's generators, ASHA, run config."""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, SearchAlgorithm, Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.stopper import Stopper

from search.engine.optuna_bridge import BudgetAwareOptunaSearch, open_storage
from search.engine.patient_asha import PatientASHAScheduler
from spaces import SweepConfig, is_distribution
from trainables.data import Data
from trainables.trainable import train_trial

MAX_FAILURES = 2
CHECKPOINTS_KEPT = 2


def build_param_space(config: SweepConfig) -> dict[str, Any]:
    """Tune's `param_space`: distributions for searched keys, fixed values for the rest."""
    space = {
        key: value.to_tune() if is_distribution(value) else value
        for key, value in config.space_entries().items()
    }
    space["epochs"] = config.epochs
    return space


def tpe_startup_trials(num_samples: int) -> int:
    """Random trials before TPE takes over: Optuna's 10, fewer for short sweeps."""
    return max(3, min(10, num_samples // 4))


def build_searcher(config: SweepConfig, default_storage: str | None = None,
                   optuna_class: type[OptunaSearch] | None = None, *,
                   upload_journal: bool = False, warm_trials: list | None = None) -> Searcher | SearchAlgorithm:
    """Optuna TPE (seeded, PRUNED-aware), or Tune's random/grid generator.

    `optuna_class` is the Tune searcher that wraps the study (default: the PRUNED-aware bridge;
    benchmarks compare Ray's stock `OptunaSearch`); it takes `max_t` and `step_key` besides
    OptunaSearch's arguments. The study lives in `search.storage` when the sweep names one, else in
    `default_storage` (a journal file beside the Tune experiment, or its local working copy for
    a run on cloud storage: `upload_journal` then has every Tune snapshot upload it), else in
    memory. A space with nothing to search repeats its one configuration `num_samples` times.
    `search.start_from` is evaluated first (Tune's `points_to_evaluate`); `warm_trials` (Optuna
    trials of an earlier run, `optuna_bridge.warm_trials`) are added to the study when it is made.
    """
    search = config.search
    if search.algorithm == "optuna" and config.searched():
        import optuna

        sampler = optuna.samplers.TPESampler(
            seed=search.seed,
            n_startup_trials=tpe_startup_trials(search.num_samples),
            multivariate=True,
            constant_liar=True,  # parallel trials are not proposed on top of each other
        )
        return (optuna_class or BudgetAwareOptunaSearch)(
            metric=config.metric,
            mode=config.mode,
            sampler=sampler,
            storage=open_storage(search.storage or default_storage),
            study_name=search.study_name or config.name,
            max_t=config.scheduler.max_t,
            step_key=config.step_key,
            points_to_evaluate=list(search.start_from) or None,
            **({"warm_trials": warm_trials} if warm_trials else {}),
            **({"journal_copy": default_storage} if upload_journal and not search.storage else {}),
        )
    return BasicVariantGenerator(random_state=search.seed, points_to_evaluate=list(search.start_from) or None)


def build_scheduler(config: SweepConfig) -> TrialScheduler:
    """ASHA on epochs (waiting for `min_peers` results at a rung when the sweep asks), or FIFO when early
    stopping is off."""
    scheduler = config.scheduler
    if scheduler.type == "fifo":
        return FIFOScheduler()
    # ASHA counts epochs, not Tune's report counter: a trial restored from a checkpoint Tune
    # did not know about reports its true epoch. A trainable of the user's counts reports.
    rungs = {"time_attr": config.step_key, "max_t": scheduler.max_t, "grace_period": scheduler.grace_period,
             "reduction_factor": scheduler.reduction_factor}
    if scheduler.min_peers:
        return PatientASHAScheduler(**rungs, min_peers=scheduler.min_peers)
    return ASHAScheduler(**rungs)


def build_trainable(config: SweepConfig, data: Data | None, experiment_uri: str) -> Any:
    """The function trainable with the data in the object store and the trial's resources; a
    trainable of the user's gets no data (it loads its own)."""
    resources = {"cpu": config.resources.cpu, "gpu": config.resources.gpu}
    if config.trainable:
        from trainables.user import run_user_trainable

        trainable = tune.with_parameters(run_user_trainable, ref=config.trainable, metric=config.metric)
    else:
        trainable = tune.with_parameters(train_trial, data=data, experiment_uri=experiment_uri, model=config.model,
                                         keep=(config.metric, config.mode))
    return tune.with_resources(trainable, resources)


RUNNING_MIN_FREE_BYTES = 100 * 1024 * 1024  # below this a running sweep stops, its state saved


class DiskSpaceGuard(tune.Callback):
    """Stops the sweep like Ctrl-C, its state saved, when the local storage runs low on space,
    before a full disk can leave a checkpoint, Tune's state or an MLflow record half-written;
    after space is freed, `--resume` finishes it. Checked every `every_s` seconds."""

    def __init__(self, path: str, min_free_bytes: int = RUNNING_MIN_FREE_BYTES, every_s: float = 2.0) -> None:
        self.path = path
        self.min_free_bytes = min_free_bytes
        self.every_s = every_s
        self._checked = float("-inf")
        self._stopping = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if self._stopping or now - self._checked < self.every_s:
            return
        self._checked = now
        free = shutil.disk_usage(self.path).free
        if free < self.min_free_bytes:
            self._stopping = True
            print(f"storage {self.path}: only {free >> 20} MiB free, below the {self.min_free_bytes >> 20} MiB "
                  "a running sweep keeps; stopping with the sweep's state saved: free space, then resume it",
                  file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGINT)  # Tune's own graceful stop, as Ctrl-C


class SweepStopper(Stopper, tune.Callback):
    """`search.stop`: ends the sweep (no new trials; running ones stopped) once a trial reports a
    score that reaches `target`, or once `patience` trials in a row ended without improving the
    best score by more than `min_delta`. Why it stopped is kept in `reasons[run_name]` (this
    process's Tune may have restored the stopper from a snapshot)."""

    reasons: ClassVar[dict[str, str]] = {}

    def __init__(self, run_name: str, metric: str, mode: str, target: float | None = None,
                 patience: int | None = None, min_delta: float = 0.0) -> None:
        self.run_name, self.metric, self.mode = run_name, metric, mode
        self.target, self.patience, self.min_delta = target, patience, min_delta
        self._trial_best: dict[str, float] = {}
        self._best: float | None = None
        self._ended = self._ended_at_best = 0

    def _better(self, a: float, b: float, by: float = 0.0) -> bool:
        return a < b - by if self.mode == "min" else a > b + by

    def __call__(self, trial_id: str, result: dict) -> bool:
        score = result.get(self.metric)
        if not isinstance(score, (int, float)) or math.isnan(score):
            return False
        if trial_id not in self._trial_best or self._better(score, self._trial_best[trial_id]):
            self._trial_best[trial_id] = score
        if self.target is not None and not self._better(self.target, score) and self.run_name not in self.reasons:
            self.reasons[self.run_name] = f"target: trial {trial_id} reached {self.metric} {score:.6g} " \
                                          f"(target {self.target:g})"
        return False

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.patience is None or trial.trial_id not in self._trial_best:
            return
        self._ended += 1
        score = self._trial_best[trial.trial_id]
        if self._best is None or self._better(score, self._best, self.min_delta):
            self._best, self._ended_at_best = score, self._ended
        elif self._best is not None and self._better(score, self._best):
            self._best = score  # better, but by no more than min_delta: not an improvement
        if self._ended - self._ended_at_best >= self.patience and self.run_name not in self.reasons:
            self.reasons[self.run_name] = (f"plateau: {self.patience} trials ended without improving the best "
                                           f"{self.metric} ({self._best:.6g}) by more than {self.min_delta:g}")

    def stop_all(self) -> bool:
        return self.run_name in self.reasons


def build_stopper(config: SweepConfig, run_name: str) -> SweepStopper | None:
    """The sweep's `search.stop`, or None when it has none."""
    stop = config.search.stop
    if stop.plateau is None and stop.target is None:
        return None
    return SweepStopper(run_name, config.metric, config.mode, stop.target,
                        stop.plateau.patience if stop.plateau else None,
                        stop.plateau.min_delta if stop.plateau else 0.0)


def build_tuner(
    config: SweepConfig,
    data: Data | None,
    searcher: Searcher | SearchAlgorithm,
    *,
    storage: str,
    run_name: str,
    max_concurrent_trials: int,
    callbacks: Sequence[tune.Callback] = (),
    verbose: int = 1,
) -> tune.Tuner:
    """A fresh Tuner for `config` with `searcher` (see `build_searcher`), writing to `<storage>/<run_name>`.

    Tune's JSON and CSV loggers are named here: the CLI turns Tune's automatic loggers off
    (no TensorBoard), and `result.json` is what trials are read back from.
    """
    search = config.search
    stopper = build_stopper(config, run_name)
    return tune.Tuner(
        build_trainable(config, data, f"{storage}/{run_name}"),
        param_space=build_param_space(config),
        tune_config=tune.TuneConfig(
            metric=config.metric,
            mode=config.mode,
            search_alg=searcher,
            scheduler=build_scheduler(config),
            num_samples=search.num_samples,
            max_concurrent_trials=max_concurrent_trials,
            time_budget_s=search.time_budget_s,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=storage,
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), *callbacks, *([stopper] if stopper else [])],
            stop=stopper,
            verbose=verbose,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
        ),
    )


def restore_tuner(config: SweepConfig, data: Data | None, experiment_uri: str) -> tune.Tuner:
    """The Tuner of an interrupted sweep: unfinished and errored trials continue from checkpoints."""
    return tune.Tuner.restore(
        experiment_uri,
        build_trainable(config, data, experiment_uri),
        resume_unfinished=True,
        resume_errored=True,
        param_space=build_param_space(config),
    )
