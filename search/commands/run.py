"""`tune run`: validate, connect, run the Tuner, track in MLflow, report what was found."""

from __future__ import annotations

import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from core.errors import UserError
from core.names import ERRORED
from search.engine.storage import (
    DEFAULT_DASHBOARD_HOST,
    RESULTS_FILE,
    RUN_FILE,
    STUDY_FILE,
    SWEEP_FILE,
    ExperimentDir,
    RunSettings,
    check_writable,
    default_run_name,
    is_uri,
    latest_run,
    local_root,
    resolve_storage,
    schedule_folder,
    scheduler_holding,
)
from search.report import (
    TrialSummary,
    ablation_table,
    asha_rungs,
    chosen_trials,
    format_table,
    results_payload,
    top_trials_table,
)
from search.settings import RunOptions, default_tracking_uri, new_settings, resumed_settings
from search.tracking.recorder import (
    TrackingTarget,
    check_tracking_access,
    ensure_sqlite_store,
    runs_url,
    target_for,
    ui_command,
)
from spaces import SweepConfig, validate_sweep

if TYPE_CHECKING:
    from trainables.data import Data

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ALL_ERRORED = 1
EXIT_INTERRUPTED = 130
FINAL_SYNC_TIMEOUT_S = 180.0


@dataclass
class SweepOutcome:
    """What `run_sweep` hands back: an exit code and the results.json payload."""

    exit_code: int
    payload: dict[str, Any]


def plan_text(config: SweepConfig) -> str:
    """The resolved sweep, trial count and epoch budget, for `--dry-run`."""
    trials = config.trial_count()
    budget = trials * config.epochs
    lines = [yaml.safe_dump(config.dump(), sort_keys=False).rstrip(), ""]
    lines.append(f"trials: {trials}")
    if config.scheduler.type == "asha":
        rungs = asha_rungs(config)
        lines.append(f"epoch budget: at most {budget} ({trials} trials × {config.epochs} epochs); "
                     f"ASHA stops weak trials at epochs {', '.join(map(str, rungs))}")
    else:
        lines.append(f"epoch budget: {budget} ({trials} trials × {config.epochs} epochs, no early stopping)")
    return "\n".join(lines)


def plan_payload(config: SweepConfig) -> dict[str, Any]:
    """`--dry-run --json`: the resolved sweep and its budget as one JSON document."""
    rungs = asha_rungs(config) if config.scheduler.type == "asha" else []
    return {"dry_run": True, "sweep": config.dump(), "trials": config.trial_count(),
            "max_epochs": config.trial_count() * config.epochs, "asha_rungs": rungs}


def prepare_run(config: SweepConfig, options: RunOptions) -> tuple[SweepConfig, ExperimentDir, RunSettings]:
    """Pick the experiment folder (a new one, or the one `--resume` continues) and its settings."""
    storage = resolve_storage(config.storage)
    if is_uri(storage):
        check_writable(storage)  # a cloud probe writes nothing here; before anything reads the bucket
    if options.resume:
        run_name = options.run_name or latest_run(storage, config.name)
        if run_name is None:
            raise UserError(f"nothing to resume: no run of sweep '{config.name}' in {storage}")
        experiment = ExperimentDir(storage, run_name)
        saved = experiment.read_json(SWEEP_FILE)
        if saved is None:
            raise UserError(f"nothing to resume at {experiment.uri}: it holds no {SWEEP_FILE}")
        config = validate_sweep(saved, config.source).with_secrets_of(config)
        saved_settings = RunSettings.from_json(experiment.read_json(RUN_FILE) or {})
        schedule = (saved_settings.tags if saved_settings else {}).get("schedule")
        if schedule and not options.tags.get("schedule"):  # by hand, not by the scheduler itself
            holder = scheduler_holding(schedule_folder(storage, schedule))
            if holder:
                raise UserError(f"{experiment.uri} is a tick of schedule '{schedule}', whose scheduler (pid "
                                f"{holder}) is running and resumes its ticks itself; stop it first")
        if saved_settings is not None:
            return config, experiment, resumed_settings(saved_settings, options, experiment.uri)
        return config, experiment, new_settings(options, config.mlflow.tracking_uri, local_root(experiment))
    experiment = ExperimentDir(storage, options.run_name or default_run_name(config.name))
    if experiment.exists() and not options.reuse_dir:
        raise UserError(f"{experiment.uri} exists already: continue it with --resume "
                        f"--name {experiment.run_name}, or pick another --name")
    return config, experiment, new_settings(options, config.mlflow.tracking_uri, local_root(experiment))


def run_sweep(config: SweepConfig, options: RunOptions, optuna_class: type | None = None) -> SweepOutcome:
    """Run (or resume) one sweep end to end; never raises for failed trials.

    `optuna_class` replaces the PRUNED-aware Optuna searcher (benchmarks compare Ray's stock one).
    """
    if options.dry_run:
        payload = plan_payload(config)
        if config.model or config.data.is_custom:  # tried before anything is printed
            payload["model_check"] = check_model(config, _load_data(config))
        print(plan_text(config))
        if "model_check" in payload:
            print(model_check_text(payload["model_check"]))
        return SweepOutcome(EXIT_OK, payload)
    config, experiment, settings = prepare_run(config, options)
    warm = _warm_trials(config, options.warm_start, experiment.storage) if options.warm_start else None
    data = None if config.trainable else _load_data(config)  # a trainable of the user's loads its own
    if config.model or config.data.is_custom:
        print(model_check_text(check_model(config, data)), file=sys.stderr)
    if not experiment.is_remote:
        check_writable(experiment.storage)  # after the data: bad data leaves nothing written
    from search.engine import cluster

    check_tracking_access(settings.tracking_uri, config.mlflow.experiment or config.name, experiment.run_name)
    print(cluster.connect(settings.address, settings.dashboard_host, quiet=options.as_json,
                          auth_disabled=options.env.ray_auth_disabled,
                          runtime_env=code_runtime_env(config, experiment)), file=sys.stderr)
    if not settings.address:
        cluster.check_local_resources(config.resources.cpu, config.resources.gpu)
    cluster.check_shared_storage(experiment.storage, experiment.is_remote)
    if not options.resume:
        experiment.write_json(SWEEP_FILE, config.document())
    experiment.write_json(RUN_FILE, {"settings": settings.as_json()})
    return _fit_and_report(config, experiment, data, settings, options, optuna_class, warm)


def _load_data(config: SweepConfig) -> Data:
    from trainables.data import load_data

    return load_data(config.data.dataset, config.data.dir, subset=config.data.subset,
                     split_seed=config.data.split_seed)


def check_model(config: SweepConfig, data: Data) -> dict[str, Any]:
    """Build the sweep's network once (each searched key at its first value or low end) and run it
    on two training inputs: its parameter count and output shape, or one line saying what is wrong."""
    import numpy as np
    import torch

    from spaces import representative
    from trainables.train import TrainParams, build_model

    values = {k: representative(v) for k, v in config.space_entries().items()}
    params = TrainParams.from_config({**values, "epochs": config.epochs}, config.model)
    what = f"model {config.model}" if config.model else "the seed network"
    try:
        model = build_model(params, data.num_classes).eval()
        with torch.no_grad():
            out = model(torch.from_numpy(np.asarray(data.train.images[:2], dtype=np.float32)))
    except Exception as err:
        raise UserError(f"{what}, built with {values}, failed on a batch of inputs of shape "
                        f"{tuple(np.shape(data.train.images[:2]))}: {type(err).__name__}: "
                        f"{' '.join(str(err).split())[:300]}") from None
    expected = (2, data.num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"{what}: its output for 2 inputs has shape {found}, but must be logits of shape "
                        f"{expected} ({data.num_classes} classes in {data.name})")
    return {"model": config.model or "seed", "parameters": sum(p.numel() for p in model.parameters()),
            "input_shape": list(np.shape(data.train.images)[1:]), "output_shape": list(out.shape),
            "num_classes": data.num_classes, "built_with": values}


def model_check_text(check: dict[str, Any]) -> str:
    return (f"model {check['model']}: {check['parameters']:,} parameters; inputs "
            f"{tuple(check['input_shape'])} -> logits {tuple(check['output_shape'])} "
            f"({check['num_classes']} classes)")


def code_runtime_env(config: SweepConfig, experiment: ExperimentDir) -> dict[str, Any] | None:
    """Ray's runtime environment that carries the sweep's own modules to every trial on every node:
    their folder as the job's working directory (without the run's storage, git or virtualenvs)."""
    folders = config.code_folders()
    if not folders:
        return None
    excludes = [".git", "__pycache__", ".venv", "venv", "runs", "mlruns", "*.pt"]
    if not experiment.is_remote:
        storage = Path(experiment.storage)
        if storage.is_relative_to(folders[0]):
            excludes.append(f"/{storage.relative_to(folders[0]).as_posix()}")
    return {"working_dir": str(folders[0]), "excludes": excludes}


def _fit_and_report(config: SweepConfig, experiment: ExperimentDir, data: Data | None, settings: RunSettings,
                    options: RunOptions, optuna_class: type | None, warm: list | None = None) -> SweepOutcome:
    from search.engine.trials import load_trials

    target = target_for(config, experiment.run_name, settings.tracking_uri, local_root(experiment))
    ensure_sqlite_store(target.tracking_uri)
    started = time.time()
    trial_data = data.without_test() if data is not None else None
    tuner, callback = _tuner_for(config, experiment, trial_data, target, settings, options, optuna_class, warm)
    fit_started = time.time()
    grid = tuner.fit()
    fit_seconds = time.time() - fit_started
    # The in-memory trials: Tune's saved state can lag behind them (see load_trials).
    snapshot = load_trials(experiment.uri, config, getattr(grid, "_experiment_analysis", None))
    from search.engine.tuner import SweepStopper

    stop_reason = SweepStopper.reasons.pop(experiment.run_name, None)  # search.stop ended it early
    interrupted = stop_reason is None and (snapshot.unfinished > 0 or _stopped_short(
        config, len(snapshot.trials), time.time() - started))
    models = {} if interrupted or data is None else evaluate_chosen(snapshot.trials, config, data,
                                                                     every=options.evaluate_all)
    best = None if interrupted else best_record(snapshot.trials)
    extra = {"fit_started_at": fit_started, "fit_seconds": round(fit_seconds, 2), "storage": experiment.uri,
             "stop_reason": stop_reason,
             "settings": settings.as_json(),
             "mlflow": {"tracking_uri": target.tracking_uri, "experiment": target.experiment,
                        "ui_command": ui_command(target.tracking_uri)}}
    payload = results_payload(config, experiment.run_name, snapshot.trials, best,
                              status="interrupted" if interrupted else "finished",
                              wall_seconds=time.time() - started, extra=extra)
    experiment.write_json(RESULTS_FILE, payload)  # on disk before MLflow is told: a crash loses nothing
    from search.tracking.finisher import SweepEnd

    end = SweepEnd(results=payload, tags=settings.tags, best_model=models.get(best["trial_id"]) if best else None,
                   recorder=callback.recorder if callback is not None else None)
    payload["mlflow"].update(_sync_mlflow(config, experiment, target, snapshot, end))
    experiment.write_json(RESULTS_FILE, payload)
    if interrupted:
        print(f"\ninterrupted: state saved in {experiment.uri}\nresume with: "
              f"{resume_command(config, experiment, settings)}", file=sys.stderr)
        return SweepOutcome(EXIT_INTERRUPTED, payload)
    _print_summary(snapshot.trials, best, payload, experiment)
    if snapshot.trials and all(t.status == ERRORED for t in snapshot.trials):
        return SweepOutcome(EXIT_ALL_ERRORED, payload)
    return SweepOutcome(EXIT_OK, payload)


def _tuner_for(config: SweepConfig, experiment: ExperimentDir, trial_data: Data | None, target: TrackingTarget,
               settings: RunSettings, options: RunOptions, optuna_class: type | None,
               warm: list | None = None) -> tuple[Any, Any]:
    """The restored Tuner of a resumed run, or a new one with its MLflow callback (None when restored:
    Tune brings the callback back with its state). Trials get the data without its test split."""
    from ray import tune

    from search.engine import cluster
    from search.engine.tuner import DiskSpaceGuard, build_searcher, build_tuner, restore_tuner

    journal = experiment.study_journal()
    if options.resume and tune.Tuner.can_restore(experiment.uri):
        print(f"resuming {experiment.uri}", file=sys.stderr)
        if experiment.is_remote:  # the study as of Tune's last snapshot, consistent with its state
            experiment.download(STUDY_FILE, journal)
        from search.engine.optuna_bridge import PasswordFreeRDBStorage

        PasswordFreeRDBStorage.remember(config.search.storage)  # its password is not in Tune's state
        return restore_tuner(config, trial_data, experiment.uri), None
    if options.resume:
        print(f"{experiment.uri} holds no Tune state yet (stopped before its first trial); "
              "starting it afresh", file=sys.stderr)
    if experiment.is_remote:
        journal.unlink(missing_ok=True)  # a working copy left by an older run of the same URI
    slots = config.search.max_concurrent_trials
    if not slots:
        slots, why = cluster.trial_slots(config.resources.cpu, config.resources.gpu, bool(settings.address))
        if why:
            print(why, file=sys.stderr)
    tags = {**settings.tags, **({"warm_start": options.warm_start} if options.warm_start else {})}
    callback = _tracking_callback(config, experiment, target, tags)
    searcher = build_searcher(config, str(journal), optuna_class, upload_journal=experiment.is_remote,
                              warm_trials=warm)
    guards = [] if experiment.is_remote else [DiskSpaceGuard(experiment.storage)]
    tuner = build_tuner(config, trial_data, searcher,
                        storage=experiment.storage, run_name=experiment.run_name, max_concurrent_trials=slots,
                        verbose=0 if options.as_json else 1, callbacks=[callback, *guards])
    return tuner, callback


def _warm_trials(config: SweepConfig, source: str, storage: str) -> list[Any]:
    """`--warm-start RUN`: the finished trials of an earlier run on this space, as Optuna trials."""
    from search.engine.optuna_bridge import warm_trials
    from search.engine.storage import find_run

    if config.search.algorithm != "optuna" or not config.searched():
        raise UserError(f"--warm-start seeds an Optuna study, but {config.name} searches with "
                        f"{config.search.algorithm}" + ("" if config.searched() else " and searches nothing"))
    run = find_run(source, storage)
    results = run.read_json(RESULTS_FILE) if run is not None else None
    if not results or not results.get("trials"):
        raise UserError(f"--warm-start {source}: no run with trials there (a run's name in {storage}, its "
                        "folder or its URI)")
    if results.get("metric") != config.metric:
        raise UserError(f"--warm-start {source}: its trials were scored by {results.get('metric')}, this sweep "
                        f"by {config.metric}")
    distributions = {k: d.to_optuna() for k, d in config.searched().items()}
    trials, skipped = warm_trials(results["trials"], distributions, config.metric, config.scheduler.max_t,
                                  run.uri)
    if not trials:
        raise UserError(f"--warm-start {source}: none of its {len(results['trials'])} trials is a finished "
                        "configuration of this sweep's space")
    complete = sum(t.state.name == "COMPLETE" for t in trials)
    print(f"warm start: {len(trials)} trials of {run.uri} ({complete} completed, {len(trials) - complete} "
          f"pruned){f'; {skipped} left out (errored, unfinished or outside this space)' if skipped else ''}",
          file=sys.stderr)
    return trials


def resume_command(config: SweepConfig, experiment: ExperimentDir, settings: RunSettings) -> str:
    """The exact command that continues this run, from any folder.

    Storage is always named (the run is found there). The tracking URI, address and dashboard
    host are saved with the run, so `--resume` uses them anyway; those that differ from the
    defaults are named too, so that the command says where everything goes.
    """
    from spaces import SPACES_DIR

    shipped = config.source is None or Path(config.source).resolve().parent == SPACES_DIR
    sweep = config.name if shipped else str(config.source)
    parts = ["tune run", shlex.quote(sweep), "--name", shlex.quote(experiment.run_name),
             "--storage", shlex.quote(experiment.storage)]
    if settings.tracking_uri != default_tracking_uri(local_root(experiment)):
        parts += ["--tracking-uri", shlex.quote(settings.tracking_uri)]
    if settings.address:
        parts += ["--address", shlex.quote(settings.address)]
    if settings.dashboard_host != DEFAULT_DASHBOARD_HOST:
        parts += ["--dashboard-host", shlex.quote(settings.dashboard_host)]
    return " ".join([*parts, "--resume"])


def _tracking_callback(config: SweepConfig, experiment: ExperimentDir, target: TrackingTarget,
                       tags: dict[str, str]) -> Any:
    import atexit
    import shutil
    import tempfile

    from search.tracking.callback import MlflowCallback
    from search.tracking.replay import parent_setup

    staging = Path(tempfile.mkdtemp(prefix="sweep-parent-"))
    # the callback uploads these when its writer first reaches MLflow, at any time during the sweep
    atexit.register(shutil.rmtree, staging, ignore_errors=True)
    parent_tags, params, artifacts = parent_setup(config, tags, staging)
    return MlflowCallback(target, experiment, config.scheduler.max_t, parent_tags, params, artifacts,
                          step_key=config.step_key)


def _sync_mlflow(config: SweepConfig, experiment: ExperimentDir, target: TrackingTarget, snapshot: Any,
                 end: Any) -> dict:
    """Fill in MLflow from the trials in memory and finalise; never fails the sweep."""
    from search.tracking.replay import sync_sweep

    try:
        report = sync_sweep(config, experiment, target, snapshot, end, timeout_s=FINAL_SYNC_TIMEOUT_S)
    except Exception as err:
        log.warning("mlflow: could not bring %s up to date (%s: %s); the results are safe in %s; "
                    "replay them with: tune sync-mlflow %s", target.tracking_uri, type(err).__name__,
                    " ".join(str(err).split())[:200], experiment.uri, shlex.quote(experiment.uri))
        return {"synced": False}
    return {"synced": True, "parent_run_id": report.parent_run_id, "experiment_id": report.experiment_id,
            "runs_url": runs_url(target.tracking_uri, report.experiment_id),
            "registered_model": config.mlflow.registered_model or config.name,
            "registered_version": report.registered}


def _stopped_short(config: SweepConfig, trials_started: int, elapsed_s: float) -> bool:
    """Fewer trials than planned, and not because the time budget ran out."""
    budget = config.search.time_budget_s
    return trials_started < config.trial_count() and not (budget and elapsed_s >= budget)


def evaluate_chosen(trials: list[TrialSummary], config: SweepConfig, data: Data, every: bool = False
                    ) -> dict[str, Any]:
    """The one evaluation on the test split: the best trial by validation, and the best of each
    batch_norm × skip group (`every`: every trial with a checkpoint, as an ablation compares them all);
    their test metrics go into their summaries. Returns the chosen trials' models by trial."""
    from trainables.train import evaluate_on_test
    from trainables.trainable import load_checkpoint_model

    chosen = {t.trial_id for t in chosen_trials(trials)}
    evaluated = [t for t in trials if t.status != ERRORED and t.checkpoint] if every else chosen_trials(trials)
    models = {}
    for trial in evaluated:
        with _checkpoint_dir(trial.checkpoint) as directory:
            model = load_checkpoint_model(directory, {**trial.config, "epochs": config.epochs}, config.model)
        metrics = evaluate_on_test(model, data.test)
        trial.test_loss, trial.test_acc = metrics["test_loss"], metrics["test_acc"]
        if trial.trial_id in chosen:
            models[trial.trial_id] = model
    return models


def best_record(trials: list[TrialSummary]) -> dict[str, Any] | None:
    """results.json's `best`: the best trial by validation, with its test metrics."""
    best = next((t for t in trials if t.status != ERRORED and t.checkpoint), None)
    if best is None:
        return None
    return {"trial_id": best.trial_id, "config": best.config, "epoch": best.best_epoch,
            "epochs": best.epochs, "status": best.status, "score": best.score,
            "val_loss": best.val_loss, "val_acc": best.val_acc,
            "test_loss": best.test_loss, "test_acc": best.test_acc, "checkpoint": best.checkpoint}


def _checkpoint_dir(path: str):  # type: ignore[no-untyped-def]
    from ray import tune

    return tune.Checkpoint(path).as_directory()


def _print_summary(trials: list[TrialSummary], best: dict[str, Any] | None, payload: dict[str, Any],
                   experiment: ExperimentDir) -> None:
    """The results, on stdout (`tune run smoke > log` keeps them; with `--json`, stdout is redirected to
    stderr and holds only the JSON document)."""
    out = sys.stdout
    counts = payload["counts"]
    print(f"\n{len(trials)} trials: {counts['completed']} completed, {counts['early_stopped']} "
          f"stopped early, {counts['errored']} errored", file=out)
    print(top_trials_table(trials, payload["metric"]), file=out)
    levels = payload.get("levels") or {}
    if "batch_norm" in levels and "skip" in levels:
        budget = (payload.get("common_budget") or {}).get("epoch")
        print(f"\nbatch norm × skip (validation: trials_at_budget and mean_val_acc_at_budget at epoch {budget}, "
              "the largest budget 8 trials reached; best_val_acc over each trial's best epoch; test_acc of each "
              "group's best trial by validation):", file=out)
        print(ablation_table(trials, budget), file=out)
    for key, rows in levels.items():
        print(f"\nby {key} ({payload['metric']}: best and mean over the trials that ran the full budget):", file=out)
        print(format_table(rows, list(rows[0]) if rows else []), file=out)
    if best:
        test = f", test_acc {best['test_acc']:.4f}" if best.get("test_acc") is not None else ""
        print(f"\nbest trial {best['trial_id']}: {payload['metric']} {best['score']:.4f} at epoch "
              f"{best['epoch']}{test}", file=out)
    if payload.get("stop_reason"):
        print(f"stopped early by search.stop: {payload['stop_reason']}", file=out)
    print(f"results: {experiment.uri}/{RESULTS_FILE}", file=out)
    mlflow = payload["mlflow"]
    print(f"mlflow: {mlflow['tracking_uri']} (experiment {mlflow['experiment']})", file=out)
    if mlflow.get("registered_version"):
        print(f"model: models:/{mlflow['registered_model']}@best (version {mlflow['registered_version']})",
              file=out)
    print(f"open the MLflow UI: {mlflow['ui_command']}", file=out)
    if mlflow.get("runs_url"):
        print(f"compare the trials: {mlflow['runs_url']}", file=out)
