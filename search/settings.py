"""The one home of a run's settings: storage, tracking URI, Ray address, credentials.

One precedence for every setting: a flag, else the environment, else the sweep file, else the
default (`resolve_tracking_uri`, `load_run_config`, `new_settings`); a resumed run's saved settings
stand in for the sweep file and the environment, and only a flag changes them (`resumed_settings`:
the cluster may move; the MLflow store never switches silently). `search/cli.py` reads the
environment once (`Environment.read`) and hands flags over as given: nothing else strips credentials.

MLflow and `requests` normalise what they are given (a scheme in capitals, a leading space), so a
rule that compares raw strings can be walked around; every rule here compares the normalised form
(`normalize_uri`), and every route a URI takes into the tool (a flag, the environment, a sweep
file, a run folder) passes through it.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from core.urls import uri_scheme
from search.engine.storage import DEFAULT_DASHBOARD_HOST, RunSettings

if TYPE_CHECKING:
    from spaces import SweepConfig

# What MLflow's own stores accept (a scheme-less value is a local path: MLflow's file store).
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
REMOTE_TRACKING_SCHEMES = ("http", "https", "postgresql", "mysql", "mssql", "databricks")
MAX_URI_CHARS = 4096  # longer is not a URI someone typed: refused before it reaches a client

DEFAULT_STORE_FILE = "mlflow.db"
USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"  # noqa: S105 (the variable's name)


def normalize_uri(uri: str, where: str, schemes: tuple[str, ...] = TRACKING_SCHEMES) -> str:
    """`uri` stripped, its scheme lower-cased, checked to be one of `schemes` and to parse
    (host, port); a `UserError` naming `where` otherwise."""
    text = uri.strip()
    if not text:
        raise UserError(f"{where}: is blank; give a URI such as {schemes[0]}:///path or leave it unset")
    if len(text) > MAX_URI_CHARS or any(ord(c) < 32 for c in text):
        raise UserError(f"{where}: not a URI (over {MAX_URI_CHARS} characters, or a control character)")
    try:
        parts = urllib.parse.urlsplit(text)
        _ = parts.port, parts.hostname  # a bad port or IPv6 literal raises here, not in MLflow's client
    except ValueError as err:
        raise UserError(f"{where}: {_shown(text)}: {err}") from None
    scheme = parts.scheme.lower()
    if scheme and scheme not in schemes:
        raise UserError(f"{where}: {_shown(text)}: unknown scheme {parts.scheme!r}; expected one of "
                        f"{', '.join(s + '://' for s in schemes)} or a local path")
    return scheme + text[len(scheme):]  # not urlunsplit: it turns sqlite://// into sqlite:///


def _shown(text: str) -> str:
    """`text` for a message: whatever stands before an `@` in its authority (user, password) as `***`."""
    return re.sub(r"//[^/@]*@", "//***@", text)


def is_http(uri: str) -> bool:
    """Whether a tracking URI names an MLflow server (HTTP or HTTPS)."""
    return uri_scheme(uri) in ("http", "https")


def sqlite_path(uri: str) -> str | None:
    """The file of an SQLite store's URI (`sqlite:///path`), else None."""
    text = uri.strip()
    return text[len("sqlite:///"):] if uri_scheme(text) == "sqlite" and text[6:10] == ":///" else None


def is_remote_store(uri: str) -> bool:
    """Whether a (normalised) tracking URI names a server, which would receive the user's credentials."""
    return uri_scheme(uri) in REMOTE_TRACKING_SCHEMES


def without_credentials(uri: str | None, where: str = "--tracking-uri") -> str | None:
    """A tracking URI, normalised, without its `user:password@`. The credentials move to MLflow's own
    variables (`MLFLOW_TRACKING_USERNAME`, `MLFLOW_TRACKING_PASSWORD`) for this process, so no saved
    file, MLflow record or printed line holds them; `--resume` then needs them again (in the URI or
    those variables)."""
    if uri is None:
        return None
    uri = normalize_uri(uri, where)
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc or parts.username is None:
        return uri
    os.environ[USERNAME_ENV] = urllib.parse.unquote(parts.username)
    if parts.password is not None:
        os.environ[PASSWORD_ENV] = urllib.parse.unquote(parts.password)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def store_from_folder(named: str | None, where: str, own_store: str) -> str:
    """The tracking store a run folder's files name, as data: normalised, and only ever the store
    beside the folder (`own_store`). A folder never chooses a server (it would receive this user's
    credentials) nor a database elsewhere on this machine: those are refused with the flag that
    chooses them."""
    if not named:
        return own_store
    store = normalize_uri(named, where)
    if store != own_store:
        kind = "server" if is_remote_store(store) else "store"
        raise UserError(f"{where} names the tracking {kind} {store}; a run folder never chooses where records go: "
                        f"replay there only by naming it yourself: --tracking-uri {store}")
    return store


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
        if storage and not storage.strip():
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


def default_tracking_uri(local_root: Path) -> str:
    """The embedded SQLite store beside the results (`<storage>/mlflow.db`, or ./runs for a cloud URI)."""
    return f"sqlite:///{local_root / DEFAULT_STORE_FILE}"


def resolve_tracking_uri(flag: str | None, env: Environment, file: str | None, default: str) -> str:
    """The tracking URI: `--tracking-uri`, else MLFLOW_TRACKING_URI, else the sweep file's, else `default`;
    normalised, credentials moved to MLflow's variables."""
    return (without_credentials(flag, "--tracking-uri") or env.tracking_uri
            or without_credentials(file, "mlflow.tracking_uri") or default)


def load_run_config(sweep: str, overrides: Sequence[str], values: Mapping[str, Any], env: Environment
                    ) -> SweepConfig:
    """The sweep with its overrides. Storage: `--storage` (or `--set storage=…`), else SWEEP_STORAGE, else
    the sweep file's `storage`, else `runs`. A tracking URI in the file is normalised and loses its
    credentials here, so no saved file or record holds them."""
    from spaces import load_sweep

    config = load_sweep(sweep, overrides, values=values)
    flagged = "storage" in values or any(o.partition("=")[0].strip() == "storage" for o in overrides)
    if env.storage and not flagged:
        config = config.model_copy(update={"storage": env.storage})
    if config.mlflow.tracking_uri:
        uri = without_credentials(config.mlflow.tracking_uri, f"{config.source or '--set'}: mlflow.tracking_uri")
        config = config.model_copy(update={"mlflow": config.mlflow.model_copy(update={"tracking_uri": uri})})
    return config


@dataclass(frozen=True)
class RunOptions:
    """How this invocation runs the sweep (not what the sweep is: that is SweepConfig).

    `address`, `tracking_uri` and `tags` are what the flags said (None: not given); `env`
    is the environment as read by the CLI. `search.settings.new_settings` and `resumed_settings` turn them into
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

    def __post_init__(self) -> None:  # a bad --tracking-uri is one line before anything starts (--dry-run too)
        object.__setattr__(self, "tracking_uri", without_credentials(self.tracking_uri, "--tracking-uri"))


def new_settings(options: RunOptions, sweep_tracking_uri: str | None, local_root: Path) -> RunSettings:
    """A new run's settings: each flag, else the environment, else the sweep file, else the default."""
    return RunSettings(
        tracking_uri=resolve_tracking_uri(options.tracking_uri, options.env, sweep_tracking_uri,
                                          default_tracking_uri(local_root)),
        address=options.address or options.env.ray_address,
        dashboard_host=options.dashboard_host or DEFAULT_DASHBOARD_HOST,
        tags=dict(options.tags),
    )


def resumed_settings(saved: RunSettings, options: RunOptions, where: str) -> RunSettings:
    """A resumed run keeps its saved settings; a flag may change the cluster, never the store.

    The store is never switched silently: a `--tracking-uri` or, without one, an
    `MLFLOW_TRACKING_URI` that names another store than the saved one is refused.
    """
    flag = without_credentials(options.tracking_uri, "--tracking-uri")
    saved = replace(saved, tracking_uri=normalize_uri(saved.tracking_uri, f"{where}: run.json"))
    if flag and flag != saved.tracking_uri:
        raise UserError(f"--tracking-uri {flag} differs from {saved.tracking_uri}, the store "
                        f"{where} was started with; resume it without --tracking-uri (or with that one)")
    if not flag:
        saved.refuse_another_store(options.env.tracking_uri, where,
                                   f"unset it, or pass --tracking-uri {saved.tracking_uri}")
    return replace(saved, address=options.address or options.env.ray_address or saved.address,
                   dashboard_host=options.dashboard_host or saved.dashboard_host,
                   tags={**saved.tags, **options.tags})
