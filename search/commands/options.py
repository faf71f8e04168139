"""Every setting of one invocation, resolved once: flags over the environment over defaults.

`search/cli.py` reads the environment (`Environment.read`) and the flags into these typed
objects; nothing below the command layer reads `os.environ`. What a run needs to be
continued (`RunSettings`) is saved with it, in `run.json`, and `--resume` uses it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.errors import UserError
from search.engine.storage import DEFAULT_DASHBOARD_HOST, RunSettings
from search.settings import without_credentials
from search.tracking.recorder import default_tracking_uri

STORAGE_ENV = "SWEEP_STORAGE"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
RAY_ADDRESS_ENV = "RAY_ADDRESS"
MIN_TICK_INTERVAL_ENV = "SWEEP_SCHEDULE_MIN_INTERVAL_S"  # tests and demos lower it below a minute
RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"


@dataclass(frozen=True)
class Environment:
    """The environment variables this tool reads, each once, at the command layer."""

    storage: str | None = None  # SWEEP_STORAGE
    tracking_uri: str | None = None  # MLFLOW_TRACKING_URI
    ray_address: str | None = None  # RAY_ADDRESS
    ray_auth_disabled: bool = False  # RAY_AUTH_MODE=disabled
    min_tick_interval_s: float = 60.0  # SWEEP_SCHEDULE_MIN_INTERVAL_S: the closest two schedule ticks may be

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> Environment:
        env = os.environ if environ is None else environ
        storage = env.get(STORAGE_ENV)
        if storage is not None and storage and not storage.strip():
            raise UserError(f"{STORAGE_ENV} is blank (only spaces); unset it, or name a folder or bucket")
        return cls(storage=storage.strip() if storage else None,
                   tracking_uri=without_credentials(env.get(TRACKING_URI_ENV) or None, TRACKING_URI_ENV),
                   ray_address=env.get(RAY_ADDRESS_ENV) or None,
                   ray_auth_disabled=env.get(RAY_AUTH_MODE_ENV, "").lower() == "disabled",
                   min_tick_interval_s=_seconds(env, MIN_TICK_INTERVAL_ENV, 60.0))


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name) or ""
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e9:
        raise UserError(f"{name}={text}: must be a number of seconds above 0")
    return value


def quiet_mlflow_http_retries() -> None:
    """Let the tool's MLflow writer own retries: MLflow's own (7 tries, minutes of backoff) would block."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per logged model


def drop_tensorboard_logger() -> None:
    """Tune adds a TensorBoard logger (and prints a hint for it) unless told not to; this tool
    keeps Tune's JSON and CSV loggers (the tuner adds them) and tracks in MLflow instead."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"


@dataclass(frozen=True)
class RunOptions:
    """How this invocation runs the sweep (not what the sweep is: that is SweepConfig).

    `address`, `tracking_uri` and `tags` are what the flags said (None: not given); `env`
    is the environment as read by the CLI. `new_settings` and `resumed_settings` turn them into
    the run's `RunSettings`.
    """

    address: str | None = None
    run_name: str | None = None
    resume: bool = False
    dry_run: bool = False
    as_json: bool = False
    dashboard_host: str | None = None
    tracking_uri: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    reuse_dir: bool = False  # a folder without Tune state may be taken over (a tick restarted early)
    evaluate_all: bool = False  # every trial's model on the test split, not only the chosen ones (ablations)
    warm_start: str | None = None  # an earlier run whose trials seed the Optuna study (--warm-start)
    env: Environment = field(default_factory=Environment)


def new_settings(options: RunOptions, sweep_tracking_uri: str | None, local_root: Path) -> RunSettings:
    """A new run's settings: each flag, else the sweep file, else the environment, else the default."""
    return RunSettings(
        tracking_uri=(options.tracking_uri or sweep_tracking_uri or options.env.tracking_uri
                      or default_tracking_uri(local_root)),
        address=options.address or options.env.ray_address,
        dashboard_host=options.dashboard_host or DEFAULT_DASHBOARD_HOST,
        tags=dict(options.tags),
    )


def resumed_settings(saved: RunSettings, options: RunOptions, where: str) -> RunSettings:
    """A resumed run keeps its saved settings; a flag may change the cluster, never the store.

    The store is never switched silently: a `--tracking-uri` or, without one, an
    `MLFLOW_TRACKING_URI` that names another store than the saved one is refused.
    """
    if options.tracking_uri and options.tracking_uri != saved.tracking_uri:
        raise UserError(f"--tracking-uri {options.tracking_uri} differs from {saved.tracking_uri}, the store "
                        f"{where} was started with; resume it without --tracking-uri (or with that one)")
    if not options.tracking_uri:
        saved.refuse_another_store(options.env.tracking_uri, where,
                                   f"unset it, or pass --tracking-uri {saved.tracking_uri}")
    return replace(saved, address=options.address or options.env.ray_address or saved.address,
                   dashboard_host=options.dashboard_host or saved.dashboard_host,
                   tags={**saved.tags, **options.tags})
