"""Bring MLflow up to date with a sweep run (parent, children, epochs), then hand its end to the finisher.

Used at the end of every `tune run`, with what the run holds in memory (`SweepEnd`), so writes lost
to an outage are filled in; and by `tune sync-mlflow`, which reads the same from a run folder in a
later process (as data: `sync_experiment`), to replay a sweep into a store that was down, or a new
one. Every step is idempotent: running it twice changes nothing the second time.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from search.engine.storage import RESULTS_FILE, RUN_FILE, SWEEP_FILE, ExperimentDir, RunSettings
from search.engine.trials import TrialsSnapshot
from search.report import TrialSummary
from search.tracking.finisher import SweepEnd, finish_sweep
from search.tracking.recorder import MlflowRecorder, TrackingTarget, ensure_sqlite_store, sweep_params, sweep_tags
from search.tracking.writer import call_with_retry
from spaces import SweepConfig

log = logging.getLogger(__name__)

@dataclass
class SyncReport:
    parent_run_id: str
    experiment_id: str
    children: int
    epochs_added: int
    registered: str | None = None


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
    report.registered = retry("finish the sweep", finish_sweep, recorder, config,
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
