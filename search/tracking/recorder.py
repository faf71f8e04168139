"""Driver-side MLflow tracking: one parent run per sweep run, one nested child run per trial.

All MLflow traffic goes from the driver (never from trial workers), so a remote
cluster only needs the tracking server reachable from the head node. Every write is
idempotent: a parent is found again by its `sweep_run` tag, a child by `trial_id`
under its parent, and epochs already logged are skipped, so `--resume` and
`tune sync-mlflow` add what is missing and never duplicate.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.urls import redact_uri, uri_scheme
from search.engine.storage import MLFLOW_IDS_FILE, ExperimentDir
from search.report import is_metric
from search.settings import is_http, sqlite_path
from spaces import SweepConfig, is_distribution

log = logging.getLogger(__name__)

SWEEP_RUN_TAG = "sweep_run"
ROLE_TAG = "role"
TRIAL_ID_TAG = "trial_id"
STATUS_TAG = "status"
PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MAX_BATCH = 1000


@dataclass(frozen=True)
class TrackingTarget:
    """Where one sweep run is tracked: store, experiment, and the run's name."""

    tracking_uri: str
    experiment: str
    run_name: str
    artifact_location: str | None = None


def target_for(config: SweepConfig, run_name: str, tracking_uri: str, local_root: Path) -> TrackingTarget:
    """Where a run is tracked; a SQLite store keeps its artifacts in `mlartifacts/` beside the results."""
    artifacts = (local_root / "mlartifacts").as_uri() if uri_scheme(tracking_uri) == "sqlite" else None
    return TrackingTarget(tracking_uri, config.mlflow.experiment or config.name, run_name, artifacts)


def ensure_sqlite_store(tracking_uri: str) -> None:
    """Create a new SQLite store atomically: a fully migrated database, or none at all.

    MLflow creates the file and then migrates it table by table; a driver killed in
    between would leave a store no later run can open. So a new store is migrated in a
    temporary file and renamed into place.
    """
    if sqlite_path(tracking_uri) is None:
        return
    path = Path(sqlite_path(tracking_uri))
    if path.exists():
        return
    from mlflow.tracking import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    MlflowClient(f"sqlite:///{partial}").search_experiments(max_results=1)  # runs the migrations
    try:
        os.link(partial, path)  # never replaces a store another driver created meanwhile (and opened)
    except FileExistsError:
        pass
    finally:
        partial.unlink(missing_ok=True)


LAST_SWEEP_TAG = "last_sweep_run"


def check_tracking_access(tracking_uri: str, experiment: str, run_name: str) -> None:
    """Before Ray starts, a tracking server must accept the credentials (`MLFLOW_TRACKING_USERNAME` /
    `MLFLOW_TRACKING_PASSWORD`, or `MLFLOW_TRACKING_TOKEN`) and, when the sweep's experiment exists,
    let this user write to it: the check writes the experiment's `last_sweep_run` tag, which needs
    the permission logging runs does. A server that does not answer is left to the writer, which
    keeps every record until it is back."""
    if sqlite_path(tracking_uri) is not None:
        _check_store_folder(Path(sqlite_path(tracking_uri)))
    if not is_http(tracking_uri):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    where = f"MLflow at {redact_uri(tracking_uri)}"
    client = MlflowClient(tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            client.set_experiment_tag(found.experiment_id, LAST_SWEEP_TAG, run_name)
    except MlflowException as err:
        if err.error_code == "UNAUTHENTICATED":
            raise UserError(f"{where} refused the credentials (HTTP 401); set MLFLOW_TRACKING_USERNAME and "
                            "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN") from None
        if err.error_code == "PERMISSION_DENIED":
            raise UserError(f"{where}: this user may not write to experiment '{experiment}' (HTTP 403); ask its "
                            "owner for EDIT permission, or name another with mlflow.experiment") from None
        log.warning("warning: %s did not answer the access check (%s); the sweep goes on and its records wait "
                    "for the server", where, str(err).splitlines()[0][:200])


def _check_store_folder(path: Path) -> None:
    """An SQLite store's file can be created: the nearest existing folder above it is a writable folder."""
    if path.exists():
        if not path.is_file():
            raise UserError(f"MLflow store {path}: exists but is not a file (a folder?)")
        return
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise UserError(f"MLflow store {path}: {above} is a file, so the store's folder cannot be made there")
    if not os.access(above, os.W_OK | os.X_OK):
        raise UserError(f"MLflow store {path}: {above} is not writable")


UI_ADDRESS = "http://127.0.0.1:5000"


def ui_command(tracking_uri: str) -> str:
    """The exact command that opens the MLflow UI on this store (bound to loopback), safe to paste."""
    if is_http(tracking_uri):
        return f"open {shlex.quote(tracking_uri)}"
    return shlex.join(["mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1", "--port", "5000"])


def runs_url(tracking_uri: str, experiment_id: str | None) -> str | None:
    """The UI page that lists a sweep's runs (MLflow 3 otherwise opens on its GenAI overview)."""
    if experiment_id is None:
        return None
    base = tracking_uri.rstrip("/") if is_http(tracking_uri) else UI_ADDRESS
    return f"{base}/#/experiments/{experiment_id}/runs"


class MlflowRecorder:
    """Idempotent MLflow writes for one sweep run; safe to repeat after any crash."""

    def __init__(self, target: TrackingTarget, experiment_dir: ExperimentDir) -> None:
        from mlflow.tracking import MlflowClient

        self.target = target
        self.client = MlflowClient(tracking_uri=target.tracking_uri)
        self._experiment_dir = experiment_dir
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self.children: dict[str, str] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        self._started_ms: dict[str, int] = {}
        self._logged: dict[str, set[int]] = {}  # the epochs each trial's run holds
        self._ids: dict[str, Any] | None = None  # the ids file as read once, then kept in memory

    # --- ids kept beside the Tune experiment (for the next process) -----------

    def _recorded(self) -> dict[str, Any]:
        if self._ids is None:
            self._ids = self._experiment_dir.read_json(MLFLOW_IDS_FILE) or {"stores": {}}
        return self._ids["stores"].get(self.target.tracking_uri, {})

    def _save_ids(self) -> None:
        self._recorded()
        self._ids["stores"][self.target.tracking_uri] = {
            "experiment_id": self.experiment_id, "parent_run_id": self.parent_id,
            "children": self.children,
        }
        self._experiment_dir.write_json(MLFLOW_IDS_FILE, self._ids)

    # --- parent ---------------------------------------------------------------

    def ensure_experiment(self) -> str:
        experiment = self.client.get_experiment_by_name(self.target.experiment)
        if experiment is None:
            # The UI opens a "custom model development" experiment on its training runs.
            self.experiment_id = self.client.create_experiment(
                self.target.experiment, artifact_location=self.target.artifact_location,
                tags={EXPERIMENT_KIND_TAG: "custom_model_development"})
        elif experiment.lifecycle_stage != "active":
            self.client.restore_experiment(experiment.experiment_id)
            self.experiment_id = experiment.experiment_id
        else:
            self.experiment_id = experiment.experiment_id
        return self.experiment_id

    def attach_parent(self, tags: Mapping[str, str], params: Mapping[str, Any],
                      artifacts: Iterable[tuple[str, str]] = ()) -> str:
        """Find this sweep run's parent run (recorded id, then tag) or create it; mark it RUNNING."""
        self.ensure_experiment()
        recorded = self._recorded()
        self.children.update(recorded.get("children", {}))
        parent = (self._active_run(recorded.get("parent_run_id"), {SWEEP_RUN_TAG: self.target.run_name,
                                                                    ROLE_TAG: "sweep"})
                  or self._find_parent())
        if parent is None:
            run = self.client.create_run(
                self.experiment_id, run_name=self.target.run_name,
                tags={**tags, SWEEP_RUN_TAG: self.target.run_name, ROLE_TAG: "sweep"})
            self.parent_id = run.info.run_id
            self._log_params(self.parent_id, params)
            for local_path, artifact_path in artifacts:
                self.client.log_artifact(self.parent_id, local_path, artifact_path)
        else:
            self.parent_id = parent
            self.client.update_run(self.parent_id, status="RUNNING")
        self._save_ids()
        return self.parent_id

    def _active_run(self, run_id: str | None, tags: Mapping[str, str]) -> str | None:
        """`run_id` when it is an active run of this experiment carrying `tags`: an id read back from a run
        folder (`mlflow_runs.json`) is data, and never makes this tool take over a run it did not create."""
        from mlflow.exceptions import MlflowException

        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException as err:
            if err.get_http_status_code() == 404 or "not found" in str(err).lower():
                return None
            raise
        ours = run.info.experiment_id == self.experiment_id and all(
            run.data.tags.get(k) == v for k, v in tags.items())
        return run_id if ours and run.info.lifecycle_stage == "active" else None

    def _find_parent(self) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{SWEEP_RUN_TAG} = '{self.target.run_name}' and tags.{ROLE_TAG} = 'sweep'",
            max_results=1)
        return runs[0].info.run_id if runs else None

    def set_parent_status(self, status: str) -> None:
        self.client.set_terminated(self.parent_id, status=status)

    # --- children ---------------------------------------------------------------

    def remember_config(self, trial_id: str, config: Mapping[str, Any],
                        started_ms: int | None = None) -> None:
        """What a child run is created with: the trial's config and when it really started."""
        self._configs[trial_id] = dict(config)
        if started_ms is not None:
            self._started_ms[trial_id] = started_ms

    def ensure_child(self, trial_id: str) -> str:
        """The child run of `trial_id`: recorded, found under the parent, or created with its params."""
        if trial_id in self.children and self._active_run(self.children[trial_id], {
                PARENT_TAG: self.parent_id, TRIAL_ID_TAG: trial_id}):
            self._load_logged(trial_id)
            return self.children[trial_id]
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{TRIAL_ID_TAG} = '{trial_id}' and tags.`{PARENT_TAG}` = '{self.parent_id}'",
            max_results=1)
        if runs:
            self.children[trial_id] = runs[0].info.run_id
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=trial_id, start_time=self._started_ms.get(trial_id),
                tags={PARENT_TAG: self.parent_id, TRIAL_ID_TAG: trial_id, STATUS_TAG: "running",
                      SWEEP_RUN_TAG: self.target.run_name, ROLE_TAG: "trial"})
            self.children[trial_id] = run.info.run_id
            self._log_params(run.info.run_id, self._configs.get(trial_id, {}))
            self._logged[trial_id] = set()
        self._save_ids()
        self._load_logged(trial_id)
        return self.children[trial_id]

    def _load_logged(self, trial_id: str) -> None:
        if trial_id not in self._logged:
            history = self.client.get_metric_history(self.children[trial_id], "epoch")
            self._logged[trial_id] = {int(m.step) for m in history}

    def log_epochs(self, trial_id: str, rows: Iterable[Mapping[str, Any]],
                   tags: Mapping[str, str] | None = None) -> int:
        """Log every metric of the epochs not logged yet (step = epoch); returns how many epochs."""
        from mlflow.entities import Metric, RunTag

        run_id = self.children.get(trial_id) or self.ensure_child(trial_id)
        self._load_logged(trial_id)
        # Every epoch not logged yet, gaps included: an epoch Tune processed only while cleaning up
        # after Ctrl-C reaches MLflow from the history when the run is resumed, after later epochs.
        fresh = list({int(r["epoch"]): r for r in rows if int(r["epoch"]) not in self._logged[trial_id]}.values())
        metrics = [
            Metric(key, float(value), int(float(row.get("timestamp") or 0) * 1000), int(row["epoch"]))
            for row in fresh for key, value in row.items()
            if key != "timestamp" and is_metric(key, value)
        ]
        run_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        if fresh:
            last = max(self._logged[trial_id] | {int(r["epoch"]) for r in fresh})
            run_tags.append(RunTag("last_epoch", str(last)))
        for start in range(0, max(len(metrics), 1), MAX_BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + MAX_BATCH],
                                  tags=run_tags if start == 0 else [])
        if fresh:
            self._logged[trial_id].update(int(r["epoch"]) for r in fresh)
        return len(fresh)

    def finish_child(self, trial_id: str, status: str, error: str | None = None,
                     ended_ms: int | None = None) -> None:
        """Tag the trial's outcome and close its run (FAILED for errored trials)."""
        run_id = self.children.get(trial_id) or self.ensure_child(trial_id)
        self.client.set_tag(run_id, STATUS_TAG, status)
        if error:
            self.client.set_tag(run_id, "error", error[:4000])
        self.client.set_terminated(run_id, status="FAILED" if status == "errored" else "FINISHED",
                                   end_time=ended_ms)

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_text(v)) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])


def now_ms() -> int:
    return int(time.time() * 1000)


def _param_text(value: Any) -> str:
    return str(value)[:6000]


# --- what the parent run records about the sweep ------------------------------


def sweep_params(config: SweepConfig) -> dict[str, Any]:
    """The resolved sweep as flat params: search, scheduler, space, data, resources."""
    params: dict[str, Any] = {"metric": config.metric, "mode": config.mode, "epochs": config.epochs,
                              "model": config.model or "seed"}
    for section in ("search", "scheduler", "resources", "data"):
        for key, value in getattr(config, section).model_dump().items():
            params[f"{section}.{key}"] = value
    if params.get("search.storage"):  # an Optuna database URL may carry a password
        params["search.storage"] = redact_uri(params["search.storage"])
    for key, value in config.space_entries().items():
        params[f"space.{key}"] = value.describe() if is_distribution(value) else repr(value)
    return params


def sweep_tags(config: SweepConfig, dataset: str, dataset_sha256: str) -> dict[str, str]:
    """Provenance: code version, library versions, data identity, host."""
    import mlflow
    import optuna
    import ray
    import torch

    tags = {
        "sweep": config.name,
        "dataset": dataset,
        **({"dataset_sha256": dataset_sha256} if dataset_sha256 else {}),
        "host": socket.gethostname(),
        "ray_version": ray.__version__,
        "torch_version": torch.__version__,
        "optuna_version": optuna.__version__,
        "mlflow_version": mlflow.__version__,
        "mlflow.source.name": "tune run",
    }
    if config.description:
        tags["mlflow.note.content"] = config.description
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    return tags


def git_commit() -> str | None:
    """The commit of the code being run, when it runs from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
