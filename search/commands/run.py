"""`tune run`: validate, connect, run the Tuner, track in MLflow, report what was found."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import UserError
from search.engine.storage import (
    RESULTS_FILE,
    RUN_FILE,
    STUDY_FILE,
    SWEEP_FILE,
    ExperimentDir,
    check_writable,
    default_run_name,
    latest_run,
    local_root,
    resolve_storage,
)
from search.report import TrialSummary, ablation_table, results_payload, top_trials_table
from search.tracking.recorder import ensure_sqlite_store, target_for, ui_command
from spaces import SweepConfig, validate_sweep

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ALL_ERRORED = 1
EXIT_INTERRUPTED = 130
FINAL_SYNC_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class RunOptions:
    """How this invocation runs the sweep (not what the sweep is: that is SweepConfig)."""

    address: str | None = None
    run_name: str | None = None
    resume: bool = False
    dry_run: bool = False
    as_json: bool = False
    dashboard_host: str = "127.0.0.1"
    tracking_uri: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # extra parent-run tags (scheduled ticks)
    reuse_dir: bool = False  # a folder without Tune state may be taken over (a tick restarted early)


@dataclass
class SweepOutcome:
    """What `run_sweep` hands back: an exit code and the results.json payload."""

    exit_code: int
    payload: dict[str, Any]


def plan_text(config: SweepConfig) -> str:
    """The resolved sweep, trial count and epoch budget, for `--dry-run`."""
    trials = config.trial_count()
    budget = trials * config.epochs
    lines = [yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).rstrip(), ""]
    lines.append(f"trials: {trials}")
    if config.scheduler.type == "asha":
        rungs = asha_rungs(config)
        lines.append(f"epoch budget: at most {budget} ({trials} trials × {config.epochs} epochs); "
                     f"ASHA stops weak trials at epochs {', '.join(map(str, rungs))}")
    else:
        lines.append(f"epoch budget: {budget} ({trials} trials × {config.epochs} epochs, no early stopping)")
    return "\n".join(lines)


def asha_rungs(config: SweepConfig) -> list[int]:
    """The epochs at which ASHA compares trials: grace_period × reduction_factor^k < max_t."""
    rungs, rung = [], float(config.scheduler.grace_period)
    while rung < config.scheduler.max_t:
        rungs.append(int(rung))
        rung *= config.scheduler.reduction_factor
    return rungs


def prepare_run(config: SweepConfig, options: RunOptions) -> tuple[SweepConfig, ExperimentDir]:
    """Pick the experiment folder: a new one, or the interrupted one `--resume` continues."""
    storage = resolve_storage(config.storage)
    if options.resume:
        run_name = options.run_name or latest_run(storage, config.name)
        if run_name is None:
            raise UserError(f"nothing to resume: no run of sweep '{config.name}' in {storage}")
        experiment = ExperimentDir(storage, run_name)
        saved = experiment.read_json(SWEEP_FILE)
        if saved is None:
            raise UserError(f"nothing to resume at {experiment.uri}: it holds no {SWEEP_FILE}")
        return validate_sweep(saved, config.source), experiment
    experiment = ExperimentDir(storage, options.run_name or default_run_name(config.name))
    if experiment.exists() and not options.reuse_dir:
        raise UserError(f"{experiment.uri} exists already: continue it with --resume "
                        f"--name {experiment.run_name}, or pick another --name")
    return config, experiment


def run_sweep(config: SweepConfig, options: RunOptions) -> SweepOutcome:
    """Run (or resume) one sweep end to end; never raises for failed trials."""
    if options.dry_run:
        print(plan_text(config))
        return SweepOutcome(EXIT_OK, {})
    config, experiment = prepare_run(config, options)
    from trainables.data import load_data

    data = load_data(config.data.dataset, config.data.dir, subset=config.data.subset,
                     split_seed=config.data.split_seed)
    if not experiment.is_remote:
        check_writable(experiment.storage)
    from search.engine import cluster

    print(cluster.connect(options.address, options.dashboard_host, quiet=options.as_json), file=sys.stderr)
    if not (options.address or _env_address()):
        cluster.check_local_resources(config.resources.cpu, config.resources.gpu)
    cluster.check_shared_storage(experiment.storage, experiment.is_remote)
    if not options.resume:
        experiment.write_json(SWEEP_FILE, {**config.model_dump(mode="json"),
                                           "source": str(config.source) if config.source else None})
        experiment.write_json(RUN_FILE, {"tags": options.tags})
    return _fit_and_report(config, experiment, data, options)


def _env_address() -> str | None:
    import os

    return os.environ.get("RAY_ADDRESS") or None


def _fit_and_report(config: SweepConfig, experiment: ExperimentDir, data: Any,
                    options: RunOptions) -> SweepOutcome:
    from ray import tune

    from search.engine import cluster
    from search.engine.trials import load_trials
    from search.engine.tuner import build_tuner, restore_tuner

    target = target_for(config, experiment.run_name, local_root(experiment), options.tracking_uri)
    ensure_sqlite_store(target.tracking_uri)
    started = time.time()
    if options.resume and not tune.Tuner.can_restore(experiment.uri):
        print(f"{experiment.uri} holds no Tune state yet (stopped before its first trial); "
              "starting it afresh", file=sys.stderr)
    if options.resume and tune.Tuner.can_restore(experiment.uri):
        print(f"resuming {experiment.uri}", file=sys.stderr)
        tuner = restore_tuner(config, data, experiment.uri)
    else:
        slots = config.search.max_concurrent_trials or cluster.slots(config.resources.cpu,
                                                                     config.resources.gpu)
        tuner = build_tuner(config, data, storage=experiment.storage, run_name=experiment.run_name,
                            max_concurrent_trials=slots, verbose=0 if options.as_json else 1,
                            callbacks=[_tracking_callback(config, experiment, target)],
                            study_storage=None if experiment.is_remote else f"{experiment.uri}/{STUDY_FILE}")
    fit_started = time.time()
    grid = tuner.fit()
    fit_seconds = time.time() - fit_started
    # The in-memory trials: Tune's saved state can lag behind them (see load_trials).
    snapshot = load_trials(experiment.uri, config, getattr(grid, "_experiment_analysis", None))
    interrupted = snapshot.unfinished > 0 or _stopped_short(config, len(snapshot.trials),
                                                            time.time() - started)
    best = None if interrupted else _best_with_test(snapshot.trials, config, data)
    extra = {"fit_started_at": fit_started, "fit_seconds": round(fit_seconds, 2), "storage": experiment.uri,
             "mlflow": {"tracking_uri": target.tracking_uri, "experiment": target.experiment,
                        "ui_command": ui_command(target.tracking_uri)}}
    payload = results_payload(config, experiment.run_name, snapshot.trials, best,
                              status="interrupted" if interrupted else "finished",
                              wall_seconds=time.time() - started, extra=extra)
    experiment.write_json(RESULTS_FILE, payload)
    payload["mlflow"].update(_sync_mlflow(config, experiment, target, snapshot))
    experiment.write_json(RESULTS_FILE, payload)
    if interrupted:
        print(f"\ninterrupted: state saved in {experiment.uri}\nresume with: "
              f"{resume_command(config, experiment)}", file=sys.stderr)
        return SweepOutcome(EXIT_INTERRUPTED, payload)
    _print_summary(snapshot.trials, best, payload, experiment)
    if snapshot.trials and all(t.status == "errored" for t in snapshot.trials):
        return SweepOutcome(EXIT_ALL_ERRORED, payload)
    return SweepOutcome(EXIT_OK, payload)


def resume_command(config: SweepConfig, experiment: ExperimentDir) -> str:
    """The exact command that continues this run."""
    from spaces import SPACES_DIR

    shipped = config.source is None or Path(config.source).resolve().parent == SPACES_DIR
    sweep = config.name if shipped else str(config.source)
    storage = "" if experiment.storage == resolve_storage("runs") else f" --storage {experiment.storage}"
    return f"tune run {sweep} --name {experiment.run_name}{storage} --resume"


def _tracking_callback(config: SweepConfig, experiment: ExperimentDir, target: Any) -> Any:
    import tempfile

    from search.tracking.callback import MlflowCallback
    from search.tracking.replay import parent_setup

    staging = Path(tempfile.mkdtemp(prefix="sweep-parent-"))
    tags, params, artifacts = parent_setup(config, experiment, staging)
    return MlflowCallback(target, experiment, config.scheduler.max_t, tags, params, artifacts)


def _sync_mlflow(config: SweepConfig, experiment: ExperimentDir, target: Any, snapshot: Any) -> dict:
    """Fill in MLflow from Tune storage and finalise; never fails the sweep."""
    from search.tracking.replay import sync_sweep

    try:
        report = sync_sweep(config, experiment, target, snapshot, timeout_s=FINAL_SYNC_TIMEOUT_S)
    except Exception as err:
        log.warning("mlflow: could not bring %s up to date (%s: %s); the results are safe in %s; "
                    "replay them with: tune sync-mlflow %s", target.tracking_uri, type(err).__name__,
                    " ".join(str(err).split())[:200], experiment.uri, experiment.uri)
        return {"synced": False}
    return {"synced": True, "parent_run_id": report.parent_run_id,
            "registered_model": config.mlflow.registered_model or config.name,
            "registered_version": report.registered}


def _stopped_short(config: SweepConfig, trials_started: int, elapsed_s: float) -> bool:
    """Fewer trials than planned, and not because the time budget ran out."""
    budget = config.search.time_budget_s
    return trials_started < config.trial_count() and not (budget and elapsed_s >= budget)


def _best_with_test(trials: list[TrialSummary], config: SweepConfig, data: Any) -> dict[str, Any] | None:
    """The best trial, its test metrics measured here from its best-validation weights."""
    from trainables.train import as_tensors, evaluate
    from trainables.trainable import load_checkpoint_model

    best = next((t for t in trials if t.status != "errored" and t.checkpoint), None)
    if best is None:
        return None
    with _checkpoint_dir(best.checkpoint) as directory:
        model = load_checkpoint_model(directory, {**best.config, "epochs": config.epochs})
    test_loss, test_acc = evaluate(model, as_tensors(data.test))
    best.test_loss, best.test_acc = test_loss, test_acc
    return {"trial_id": best.trial_id, "config": best.config, "epoch": best.best_epoch,
            "epochs": best.epochs, "status": best.status, "score": best.score,
            "val_loss": best.val_loss, "val_acc": best.val_acc,
            "test_loss": test_loss, "test_acc": test_acc, "checkpoint": best.checkpoint}


def _checkpoint_dir(path: str):  # type: ignore[no-untyped-def]
    from ray import tune

    return tune.Checkpoint(path).as_directory()


def _print_summary(trials: list[TrialSummary], best: dict[str, Any] | None, payload: dict[str, Any],
                   experiment: ExperimentDir) -> None:
    out = sys.stderr
    counts = payload["counts"]
    print(f"\n{len(trials)} trials: {counts['completed']} completed, {counts['early_stopped']} "
          f"stopped early, {counts['errored']} errored", file=out)
    print(top_trials_table(trials), file=out)
    print("\nbatch norm × skip:", file=out)
    print(ablation_table(trials), file=out)
    if best:
        print(f"\nbest trial {best['trial_id']}: {payload['metric']} {best['score']:.4f} at epoch "
              f"{best['epoch']}, test_acc {best['test_acc']:.4f}", file=out)
    print(f"results: {experiment.uri}/{RESULTS_FILE}", file=out)
    mlflow = payload["mlflow"]
    print(f"mlflow: {mlflow['tracking_uri']} (experiment {mlflow['experiment']})", file=out)
    if mlflow.get("registered_version"):
        print(f"model: models:/{mlflow['registered_model']}@best (version {mlflow['registered_version']})",
              file=out)
    print(f"open the MLflow UI: {mlflow['ui_command']}", file=out)
