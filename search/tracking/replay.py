"""Bring MLflow up to date with a sweep run, then record its end.

Used at the end of every `tune run`, with what the run holds in memory (`SweepEnd`), so
writes lost to an outage are filled in; and by `tune sync-mlflow`, which reads the same
from Tune storage in a later process, to replay a sweep into a store that was down, or a
new one. Every step is idempotent: running it twice changes nothing the second time.
"""

from __future__ import annotations

import csv
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from search.engine.storage import RESULTS_FILE, RUN_FILE, SWEEP_FILE, ExperimentDir, RunSettings
from search.engine.trials import TrialsSnapshot
from search.report import TrialSummary, ablation_rows, config_keys
from search.tracking.recorder import MlflowRecorder, TrackingTarget, ensure_sqlite_store, sweep_params, sweep_tags
from search.tracking.writer import call_with_retry
from spaces import SweepConfig

log = logging.getLogger(__name__)

FINALIZED_TAG = "finalized"
VERSION_TAG = "registered_model_version"


@dataclass
class SyncReport:
    parent_run_id: str
    experiment_id: str
    children: int
    epochs_added: int
    registered: str | None = None


@dataclass
class SweepEnd:
    """How a sweep run ended: results.json's payload, the run's tags and, in the process that ran
    it, the best model and the recorder that tracked it (a replay finds both again)."""

    results: dict[str, Any] | None
    tags: dict[str, str] = field(default_factory=dict)
    best_model: Any = None
    recorder: MlflowRecorder | None = None
    # False when `results` was read back from a run folder (`tune sync-mlflow`): its scores are claims,
    # so the best model is measured again before it is registered or challenges `champion`.
    measured: bool = True


def parent_setup(config: SweepConfig, tags: dict[str, str], staging: Path
                 ) -> tuple[dict[str, str], dict[str, Any], list[tuple[str, str]]]:
    """Tags, params and artifacts of a sweep's parent run: the resolved sweep and its file."""
    from trainables.data import DATASETS, TRAIN_FILES

    if config.data.is_custom:  # a user's callable: its data is identified by its name only
        parent_tags = {**sweep_tags(config, config.data.dataset, ""), **tags}
    else:
        spec = DATASETS[config.data.dataset]
        parent_tags = {**sweep_tags(config, spec.name, spec.sha256[TRAIN_FILES[0]]), **tags}
    resolved = staging / SWEEP_FILE
    resolved.write_text(_json(config.document()))
    artifacts = [(str(resolved), "sweep")]
    if config.source and Path(config.source).is_file():
        artifacts.append((_without_passwords(config, Path(config.source), staging / "file"), "sweep"))
    artifacts += [(path, "code") for path in user_code_files(config)]
    return parent_tags, sweep_params(config), artifacts


def _without_passwords(config: SweepConfig, source: Path, staging: Path) -> str:
    """The sweep file to upload: itself, or a copy with the password of each URL it names as `***`."""
    import urllib.parse

    from core.urls import REDACTED
    from spaces import SECRET_URLS

    urls = [getattr(getattr(config, section), key) for section, key in SECRET_URLS]
    passwords = [p for p in (urllib.parse.urlsplit(u).password for u in urls if u) if p and p != REDACTED]
    text = source.read_text(errors="replace")
    if not any(p in text for p in passwords):
        return str(source)
    for password in passwords:
        text = text.replace(password, REDACTED)
    staging.mkdir(exist_ok=True)
    copy = staging / source.name
    copy.write_text(text)
    return str(copy)


def user_code_files(config: SweepConfig) -> list[str]:
    """The source files of the sweep's own callables, logged with the parent run as provenance.
    Only modules this process imported already count (`tune run` imports them when it loads the
    sweep file): `tune sync-mlflow` imports no code that a run folder names."""
    import inspect
    import sys

    refs = [config.model, config.trainable, config.data.dataset if config.data.is_custom else None]
    files = []
    for ref in filter(None, refs):
        module = sys.modules.get(ref.partition(":")[0])
        try:
            path = inspect.getsourcefile(module) if module is not None else None
        except TypeError:
            path = None
        if path and Path(path).is_file() and path not in files:
            files.append(path)
    return files


def _json(payload: Any) -> str:
    import json

    return json.dumps(payload, indent=2, default=str)


def sync_sweep(
    config: SweepConfig,
    experiment: ExperimentDir,
    target: TrackingTarget,
    snapshot: TrialsSnapshot,
    end: SweepEnd,
    *,
    timeout_s: float,
) -> SyncReport:
    """Make MLflow hold the parent run, every trial's child run, status and epochs; finalise if done."""
    ensure_sqlite_store(target.tracking_uri)
    deadline = time.monotonic() + timeout_s
    recorder = end.recorder if end.recorder is not None and end.recorder.target == target else None
    recorder = recorder or MlflowRecorder(target, experiment)

    def retry(what: str, fn: Callable[..., Any], *args: Any) -> Any:
        return call_with_retry(lambda: fn(*args), what, deadline)

    with tempfile.TemporaryDirectory() as staging:
        tags, params, artifacts = parent_setup(config, end.tags, Path(staging))
        retry("open the parent run", recorder.attach_parent, tags, params, artifacts)
    results = end.results
    finished = results is not None and results.get("status") == "finished"
    added = 0
    for trial in snapshot.trials:
        started_ms, ended_ms = _trial_times(trial)
        recorder.remember_config(trial.trial_id, {**trial.config, "epochs": config.epochs}, started_ms)
        retry(f"open the run of {trial.trial_id}", recorder.ensure_child, trial.trial_id)
        extra = {"node_id": trial.node_id} if trial.node_id else None
        added += retry(f"log epochs of {trial.trial_id}", recorder.log_epochs, trial.trial_id,
                       trial.history, extra)
        # In a finished sweep no trial is unfinished; Tune's saved state can still say so of a
        # trial that errored for good (it does not re-save it), so it is closed as errored.
        status = "errored" if finished and trial.status == "unfinished" else trial.status
        if status != "unfinished":
            retry(f"close the run of {trial.trial_id}", recorder.finish_child, trial.trial_id,
                  status, trial.error, ended_ms)
    report = SyncReport(recorder.parent_id, recorder.experiment_id, len(snapshot.trials), added)
    if not finished:
        retry("mark the parent run", recorder.set_parent_status, "KILLED")
        return report
    report.registered = retry("finalise the parent run", finalize_parent, recorder, config,
                              snapshot.trials, end)
    return report


def _trial_times(trial: TrialSummary) -> tuple[int | None, int | None]:
    """When a trial started and ended (ms), from its epochs' report times."""
    reported = [h for h in trial.history if "timestamp" in h]
    if not reported:
        return None, None
    first = reported[0]
    started = first["timestamp"] - first.get("epoch_seconds", 0)
    return int(started * 1000), int(reported[-1]["timestamp"] * 1000)


def finalize_parent(recorder: MlflowRecorder, config: SweepConfig, trials: Sequence[TrialSummary],
                    end: SweepEnd) -> str | None:
    """Test metrics of the evaluated trials, best metrics, summary artifacts and the registered best
    model, once per parent run. A scheduled tick (tag `schedule`) also lets its model challenge the
    `champion`.
    """
    client, parent = recorder.client, recorder.parent_id
    existing = client.get_run(parent).data.tags
    if existing.get(FINALIZED_TAG) == "true":  # a resumed or replayed run: it ended already, and ends FINISHED
        client.set_terminated(parent, status="FINISHED")
        return existing.get(VERSION_TAG)
    results, tags = end.results, end.tags
    best = results.get("best")
    _log_test_metrics(recorder, trials)
    _log_summary_metrics(recorder, results)
    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging)
        _write_summary_files(folder, trials, results)
        client.log_artifacts(parent, str(folder), "summary")
        from search.tracking.plots import write_plots

        plots = folder / "plots"
        plots.mkdir()
        if write_plots(trials, config, plots):
            client.log_artifacts(parent, str(plots), "plots")
    version = existing.get(VERSION_TAG)
    model_name = config.mlflow.registered_model or config.name
    if best and best.get("checkpoint"):
        client.set_tag(parent, "best_checkpoint", best["checkpoint"])
    if best and best.get("checkpoint") and version is None:
        registered = _register_best(recorder, config, best, end.best_model, end.measured)
        version = registered.version if registered else None
    if version is not None:
        client.set_tag(parent, "registered_model", model_name)
        client.set_tag(parent, VERSION_TAG, version)
    if version is not None and tags.get("schedule"):
        from search.tracking.champion import decide_champion

        decision = decide_champion(client, model_name, version, config.metric, config.mode,
                                   _paired_rule(config, recorder.target.tracking_uri, model_name))
        client.set_tag(parent, "champion_moved", str(decision.moved).lower())
        client.set_tag(parent, "champion_version", decision.champion_version)
        client.set_tag(parent, "champion_decision", decision.reason)
        for key, value in decision.paired.items():
            client.set_tag(parent, f"champion_{key}", f"{value:.6g}")
        log.info("champion: %s", decision.reason)
    if best:
        client.set_tag(parent, "best_trial_id", best["trial_id"])
    if results.get("stop_reason"):  # search.stop ended the sweep before its trial budget
        client.set_tag(parent, "stop_reason", results["stop_reason"])
    client.set_tag(parent, FINALIZED_TAG, "true")
    client.set_terminated(parent, status="FINISHED")
    return version


def _paired_rule(config: SweepConfig, tracking_uri: str, model_name: str):  # type: ignore[no-untyped-def]
    """The paired rule for this sweep's models (None: compare the registered numbers): the seed network or a
    `model:` network on a built-in dataset, whose validation split this process can load."""
    import functools

    from search.tracking.champion import PairedRule

    if config.schedule.promote != "paired" or config.trainable or config.data.is_custom:
        return None

    @functools.cache
    def validation() -> tuple[Any, Any]:
        from trainables.data import load_data
        from trainables.train import as_tensors

        data = load_data(config.data.dataset, config.data.dir, subset=config.data.subset,
                         split_seed=config.data.split_seed)
        return as_tensors(data.val)

    def load(version: str) -> Any:
        from search.tracking.registry import load_model

        return load_model(f"models:/{model_name}/{version}", tracking_uri)

    return PairedRule(config.schedule.confidence, validation, load)


def _log_test_metrics(recorder: MlflowRecorder, trials: Sequence[TrialSummary]) -> None:
    """The test metrics the driver measured, on the child runs of the trials it evaluated."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    for trial in trials:
        if trial.test_acc is None or trial.trial_id not in recorder.children:
            continue
        step = trial.best_epoch or trial.epochs
        metrics = [Metric(key, float(value), now, step) for key, value in
                   (("test_loss", trial.test_loss), ("test_acc", trial.test_acc)) if value is not None]
        recorder.client.log_batch(recorder.children[trial.trial_id], metrics=metrics)


def _log_summary_metrics(recorder: MlflowRecorder, results: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    best = results.get("best") or {}
    values = {f"best_{k}": best.get(k) for k in ("val_loss", "val_acc", "test_loss", "test_acc")}
    values |= {f"trials_{k}": v for k, v in results["counts"].items()}
    values["wall_seconds"] = results.get("wall_seconds")
    metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None]
    recorder.client.log_batch(recorder.parent_id, metrics=metrics)


def _write_summary_files(folder: Path, trials: Sequence[TrialSummary], results: dict[str, Any]) -> None:
    (folder / RESULTS_FILE).write_text(_json(results))
    keys = config_keys(trials)
    columns = ["trial_id", "status", *keys, "epochs", "best_epoch", "val_loss", "val_acc",
               "test_loss", "test_acc", "node_id"]
    _write_csv(folder / "results.csv", [{c: getattr(t, c, None) if c not in keys
                                         else t.config.get(c) for c in columns} for t in trials], columns)
    rows = ablation_rows(trials)
    _write_csv(folder / "ablation_batch_norm_x_skip.csv", rows, list(rows[0]))
    for key, rows in (results.get("levels") or {}).items():
        if rows:
            _write_csv(folder / f"levels_{key}.csv", rows, list(rows[0]))


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _register_best(recorder: MlflowRecorder, config: SweepConfig, best: dict[str, Any],
                   model: Any = None, measured: bool = True):  # type: ignore[no-untyped-def]
    """Register the best trial's model: the one in memory, else the one in its checkpoint. A trainable
    of the user's is registered when its checkpoint holds an MLflow model (`mlflow_model/`); else None.

    Not `measured` (a replay of a run folder): the seed network's scores are measured again from its
    checkpoint on the validation and test splits, and those are what the version carries; a user
    trainable's version carries no scores, so it never challenges `champion`.
    """
    from search.tracking.registry import log_and_register, register_saved_model

    tags = {"sweep_run": recorder.target.run_name, "trial_id": best["trial_id"],
            config.metric: best.get("score"), "val_acc": best.get("val_acc"),
            "test_acc": best.get("test_acc"), "test_loss": best.get("test_loss")}
    if (config.model or config.data.is_custom) and model is None:
        log.warning("not registering the best model: rebuilding a `model:` network or loading a `data.dataset:` "
                    "callable means importing the code its run folder names, which tune sync-mlflow never does "
                    "(tune run registers it at its end)")
        return None
    if config.trainable:
        if not measured:  # a user's own model: nothing here can measure it again
            tags = {"sweep_run": tags["sweep_run"], "trial_id": tags["trial_id"],
                    "scores": "not measured (replayed from a run folder)"}
        return register_saved_model(recorder.target.tracking_uri, recorder.parent_id, best["checkpoint"],
                                    config.mlflow.registered_model or config.name,
                                    {k: v for k, v in tags.items() if v is not None})

    trial_config = {**best["config"], "epochs": config.epochs}
    if model is None:
        from ray import tune

        from trainables.trainable import load_checkpoint_model

        with tune.Checkpoint(best["checkpoint"]).as_directory() as directory:
            model = load_checkpoint_model(directory, trial_config, config.model)
    if not measured:
        measured_tags = _measure_again(config, model, best)
        if measured_tags is None:
            return None
        tags.update(measured_tags)
    saved_config = {**trial_config, "model": config.model} if config.model else trial_config
    return log_and_register(recorder.target.tracking_uri, recorder.parent_id, model, saved_config,
                            config.mlflow.registered_model or config.name,
                            {k: v for k, v in tags.items() if v is not None}, dataset=config.data.dataset)


def _measure_again(config: SweepConfig, model: Any, best: dict[str, Any]) -> dict[str, float] | None:
    """The best model's validation and test scores as its checkpoint gives them (not as results.json
    says); None, with a warning, when the data cannot be loaded here."""
    from core.errors import UserError
    from trainables.data import load_data
    from trainables.train import as_tensors, evaluate

    try:
        data = load_data(config.data.dataset, config.data.dir, subset=config.data.subset,
                         split_seed=config.data.split_seed)
    except (UserError, OSError) as err:
        log.warning("not registering the best model: its checkpoint must be measured again on %s, which is "
                    "not available here (%s)", config.data.dataset, err)
        return None
    val_loss, val_acc = evaluate(model, as_tensors(data.val))
    test_loss, test_acc = evaluate(model, as_tensors(data.test))
    measured = {"val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc}
    for key, recorded in (("val_loss", best.get("val_loss")), ("val_acc", best.get("val_acc")),
                          ("test_acc", best.get("test_acc"))):
        if not isinstance(recorded, (int, float)) or abs(recorded - measured[key]) > 1e-4 * max(1.0, abs(recorded)):
            log.warning("best trial %s: results.json says %s %s, its checkpoint measures %.6g; the registered "
                        "version carries what was measured", best.get("trial_id"), key, recorded, measured[key])
    tags: dict[str, float] = dict(measured)
    if config.metric not in measured:  # a training score is not measured again: no champion challenge
        tags[config.metric] = None  # type: ignore[assignment]
    return tags


def sync_experiment(experiment_dir: str, tracking_uri: str | None, env_tracking_uri: str | None,
                    timeout_s: float) -> SyncReport:
    """`tune sync-mlflow`: replay the sweep run in `experiment_dir` into MLflow.

    The store is `tracking_uri` when given, else `env_tracking_uri` (refused when it names another
    store than the one the run was started with: never switched silently), else the store the run
    folder names, which may only be the SQLite store beside it (`search.settings.store_from_folder`:
    a folder never chooses a server or a database elsewhere). The sweep file named in sweep.json is
    not uploaded (the folder is not trusted to name files on this machine); the resolved sweep is.
    """
    from core.errors import UserError
    from search.engine.storage import local_root, resolve_storage
    from search.engine.trials import checkpoint_in_run, read_trials, recorded_trials
    from search.settings import default_tracking_uri, normalize_uri, store_from_folder
    from search.tracking.recorder import target_for
    from spaces import validate_sweep

    uri = resolve_storage(experiment_dir)
    storage, _, run_name = uri.rpartition("/")
    experiment = ExperimentDir(storage, run_name)
    saved = experiment.read_json(SWEEP_FILE) if experiment.exists() else None
    if saved is None:
        raise UserError(f"{experiment_dir}: not a sweep run folder (no {SWEEP_FILE})")
    saved.pop("source", None)
    config = validate_sweep(saved)
    run = experiment.read_json(RUN_FILE)
    run = run if isinstance(run, dict) else {}
    settings = RunSettings.from_json(run)
    own_store = default_tracking_uri(local_root(experiment))
    if settings is not None:  # as data: normalised, before any comparison
        settings = replace(settings, tracking_uri=normalize_uri(settings.tracking_uri, f"{experiment_dir}: {RUN_FILE}"))
    if tracking_uri:
        store = tracking_uri
    elif env_tracking_uri:
        if settings is not None:
            settings.refuse_another_store(env_tracking_uri, experiment_dir, "pass --tracking-uri to choose the store")
        store = env_tracking_uri
    elif settings is not None:
        store = store_from_folder(settings.tracking_uri, f"{experiment_dir}: {RUN_FILE}", own_store)
    else:
        store = store_from_folder(config.mlflow.tracking_uri, f"{experiment_dir}: {SWEEP_FILE}", own_store)
    target = target_for(config, run_name, store, local_root(experiment))
    # A finished run is replayed as the tool recorded it at its end; an interrupted one from Tune's last
    # state (on cloud storage an older driver's state can still be the newest uploaded).
    # Plain JSON either way: a run folder is not trusted to run code.
    results = experiment.read_json(RESULTS_FILE)
    snapshot = recorded_trials(experiment.uri, results)
    if snapshot is None:
        snapshot = read_trials(experiment.uri, config)
        _restore_test_metrics(snapshot.trials, results)
    if isinstance(results, dict) and isinstance(results.get("best"), dict):
        best = results["best"]
        best["checkpoint"] = checkpoint_in_run(experiment.uri, best.get("checkpoint"))
    end = SweepEnd(results=results, tags=settings.tags if settings else _old_tags(run), measured=False)
    return sync_sweep(config, experiment, target, snapshot, end, timeout_s=timeout_s)


def _old_tags(run: dict[str, Any]) -> dict[str, str]:
    """A run.json written before the settings were saved keeps its parent-run tags at the top: strings only."""
    tags = run.get("tags")
    if not isinstance(tags, dict):
        return {}
    return {k: v for k, v in tags.items() if isinstance(k, str) and isinstance(v, str) and len(k) + len(v) < 5000}


def _restore_test_metrics(trials: Sequence[TrialSummary], results: dict[str, Any] | None) -> None:
    """The test metrics the driver measured at the end of the run, as results.json recorded them."""
    recorded = {t["trial_id"]: t for t in (results or {}).get("trials", [])}
    for trial in trials:
        saved = recorded.get(trial.trial_id, {})
        trial.test_loss, trial.test_acc = saved.get("test_loss"), saved.get("test_acc")
