"""The process-wide settings of the libraries a sweep uses (MLflow's retries, Tune's loggers).

The run's own settings (storage, tracking URI, Ray address, their precedence, `RunOptions`) live
in `search/settings.py`.
"""

from __future__ import annotations

import logging
import os


def quiet_mlflow_http_retries() -> None:
    """Let the tool's MLflow writer own retries: MLflow's own (7 tries, minutes of backoff) would block."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per logged model


def drop_tensorboard_logger() -> None:
    """Tune adds a TensorBoard logger (and prints a hint for it) unless told not to; this tool
    keeps Tune's JSON and CSV loggers (the tuner adds them) and tracks in MLflow instead."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"


class _DropTuneResumeHint(logging.Filter):
    """Tune's "Resume experiment with: Tuner.restore(…)": the tool prints its own resume command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Resume experiment with" not in record.getMessage()


def quiet_tune_duplicates() -> None:
    """Tune's lines that the tool says better itself: its restore hint (the tool's `--resume` command is
    the one that works) and its experiment-snapshot warnings (several per short sweep; the tool keeps
    two checkpoints a trial on purpose)."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    tune_logger = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _DropTuneResumeHint) for f in tune_logger.filters):
        tune_logger.addFilter(_DropTuneResumeHint())
