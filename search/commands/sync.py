"""`tune sync-mlflow`: replay a sweep run from its folder into MLflow, adding only what is missing.

The store is the one the user names (`--tracking-uri`, else MLFLOW_TRACKING_URI, refused when it
differs from the run's own), else the SQLite store beside the run folder: a folder never chooses a
server, a database elsewhere, or code (`search.tracking.replay.sync_experiment`).
"""

from __future__ import annotations

from search.settings import Environment, without_credentials
from search.tracking.replay import SyncReport, sync_experiment


def sync_run(experiment_dir: str, tracking_uri: str | None, env: Environment, timeout_s: float) -> SyncReport:
    """Replay the run in `experiment_dir` into the store the flag or the environment names (or its own)."""
    return sync_experiment(experiment_dir, without_credentials(tracking_uri, "--tracking-uri"), env.tracking_uri,
                           timeout_s)


def report_line(report: SyncReport) -> str:
    return (f"parent run {report.parent_run_id}: {report.children} trial runs, {report.epochs_added} epochs added"
            + (f", model version {report.registered}" if report.registered else ""))
