"""Where a sweep's files live: a local folder or a cloud URI, read and written through pyarrow."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.urls import uri_scheme

MAX_JSON_BYTES = 256 * 2**20  # results.json of 100,000 trials is well under this
MIN_FREE_BYTES = 200 * 1024 * 1024
DEFAULT_DASHBOARD_HOST = "127.0.0.1"
SWEEP_FILE = "sweep.json"
RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
MLFLOW_IDS_FILE = "mlflow_runs.json"
STUDY_FILE = "optuna.journal"


def is_uri(storage: str) -> bool:
    return "://" in storage and uri_scheme(storage) != "file"


def resolve_storage(storage: str) -> str:
    """An absolute path or a URI, as Ray Tune wants it."""
    if is_uri(storage):
        return storage.rstrip("/")
    return str(Path(storage.removeprefix("file://")).expanduser().resolve())


@dataclass(frozen=True)
class ExperimentDir:
    """One sweep run's folder in Tune storage, plus the files this tool keeps beside Tune's."""

    storage: str
    run_name: str

    @property
    def uri(self) -> str:
        return f"{self.storage}/{self.run_name}"

    @property
    def is_remote(self) -> bool:
        return is_uri(self.storage)

    def _fs(self):  # type: ignore[no-untyped-def]
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(self.uri)

    def exists(self) -> bool:
        import pyarrow.fs

        fs, path = self._fs()
        return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound

    def read_json(self, name: str) -> Any | None:
        """A JSON file of this folder, or None when it does not exist; a file too large, or not JSON, is a
        `UserError` naming it (a run folder is data, and may have been damaged or tampered with)."""
        fs, path = self._fs()
        try:
            with fs.open_input_stream(f"{path}/{name}") as f:
                raw = f.read(MAX_JSON_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise UserError(f"{self.uri}/{name}: cannot read: {' '.join(str(err).split())[:200]}") from None
        if len(raw) > MAX_JSON_BYTES:
            raise UserError(f"{self.uri}/{name}: over {MAX_JSON_BYTES >> 20} MiB, not a file this tool wrote")
        try:
            return json.loads(raw.decode())
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            raise UserError(f"{self.uri}/{name}: not valid JSON ({' '.join(str(err).split())[:200]})") from None

    def sweep_name(self) -> str | None:
        """The `name` in this run's `sweep.json` (None when missing or unreadable)."""
        try:
            document = self.read_json(SWEEP_FILE)
        except (OSError, ValueError):
            return None
        return document.get("name") if isinstance(document, dict) else None

    def study_journal(self) -> Path:
        """Where the driver keeps this run's Optuna journal (`optuna.journal`).

        Local storage: in the run folder itself. Cloud storage: a working copy at
        `runs/.studies/<run>-<hash of the URI>/`, a path relative to the driver's folder, because
        Tune's saved searcher state names it: a driver restarted anywhere (another folder, a new
        head node) downloads the run's copy to the same relative path and continues the study.
        Every Tune snapshot uploads a copy to the run folder.
        """
        if not self.is_remote:
            return Path(self.uri) / STUDY_FILE
        key = hashlib.sha256(self.uri.encode()).hexdigest()[:12]
        return Path("runs") / ".studies" / f"{self.run_name}-{key}" / STUDY_FILE

    def download(self, name: str, destination: Path) -> bool:
        """Copy a file of this folder to `destination` (replaced whole); False when it has none."""
        fs, path = self._fs()
        try:
            with fs.open_input_stream(f"{path}/{name}") as f:
                data = f.read()
        except FileNotFoundError:
            return False
        destination.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(destination, data)
        return True

    def upload(self, name: str, source: Path) -> None:
        """Copy a local file into this folder under `name`."""
        self.write_bytes(name, source.read_bytes())

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write atomically where the file system allows (local: temp file + rename)."""
        if not self.is_remote:
            folder = Path(self.uri)
            folder.mkdir(parents=True, exist_ok=True)
            write_atomically(folder / name, data)
            return
        fs, path = self._fs()
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(f"{path}/{name}") as f:
            f.write(data)

    def write_json(self, name: str, payload: Any) -> None:
        self.write_bytes(name, json.dumps(payload, indent=2, default=str).encode())


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` whole: a new temporary file beside it (created exclusively, so a
    planted symlink is never followed), then a rename over the old one."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class RunSettings:
    """What a run was started with, beyond its sweep file; saved in `run.json`, reused by `--resume`."""

    tracking_uri: str
    address: str | None = None
    dashboard_host: str = DEFAULT_DASHBOARD_HOST
    tags: dict[str, str] = field(default_factory=dict)  # extra parent-run tags (scheduled ticks)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> RunSettings | None:
        """The settings saved by this version, or None for a run saved before they were."""
        saved = document.get("settings") if isinstance(document, Mapping) else None
        if not isinstance(saved, Mapping) or not isinstance(saved.get("tracking_uri"), str):
            return None
        strings = {k: saved.get(k) for k in ("address", "dashboard_host")}
        tags = saved.get("tags") or {}
        if not all(v is None or (isinstance(v, str) and len(v) < 1000) for v in strings.values()) or not (
                isinstance(tags, Mapping) and all(isinstance(k, str) and isinstance(v, str) and len(k) + len(v) < 5000
                                                  for k, v in tags.items())):
            raise UserError("run.json: its settings are not the strings this tool writes (damaged or tampered with)")
        return cls(tracking_uri=saved["tracking_uri"], address=strings["address"],
                   dashboard_host=strings["dashboard_host"] or DEFAULT_DASHBOARD_HOST, tags=dict(tags))

    def refuse_another_store(self, env_tracking_uri: str | None, where: str, remedy: str) -> None:
        """An `MLFLOW_TRACKING_URI` naming another store than this run's is refused: never switch silently."""
        if env_tracking_uri and env_tracking_uri != self.tracking_uri:
            raise UserError(f"MLFLOW_TRACKING_URI {env_tracking_uri} differs from {self.tracking_uri}, the "
                            f"store {where} was started with; {remedy}")



def check_writable(storage: str) -> None:
    """Fail before anything starts when storage cannot be written (a missing bucket, refused
    credentials, an endpoint that does not answer) or, locally, is nearly full."""
    if is_uri(storage):
        _check_cloud_writable(storage)
        return
    root = Path(storage)
    try:
        # A folder this tool creates is private (run folders hold checkpoints and pickles); one that
        # exists (the user's own, or another sweep's just now) keeps its permissions.
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle, probe = tempfile.mkstemp(prefix=".write-probe-", dir=root)  # a new file: no planted link
        os.write(handle, b"ok")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"storage {root}: cannot write there ({err.strerror})") from None
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        raise UserError(
            f"storage {root}: only {free // 2**20} MiB free, but a sweep needs at least "
            f"{MIN_FREE_BYTES // 2**20} MiB for checkpoints and results"
        )


CLOUD_PROBE_TIMEOUT_S = 60.0  # pyarrow's GCS client retries for many minutes without a network


def _check_cloud_writable(storage: str) -> None:
    """Write and delete a probe object, through pyarrow as Tune will write; one that does not answer in
    `CLOUD_PROBE_TIMEOUT_S` is named (the probe's thread is left behind: it holds nothing)."""
    outcome: list[BaseException | None] = []

    def probe() -> None:
        import pyarrow.fs

        try:
            fs, root = pyarrow.fs.FileSystem.from_uri(storage)
            path = f"{root}/.write-probe-{uuid.uuid4().hex}"
            with fs.open_output_stream(path) as f:
                f.write(b"ok")
            fs.delete_file(path)
            outcome.append(None)
        except (OSError, ValueError) as err:
            outcome.append(err)

    thread = threading.Thread(target=probe, name="storage-probe", daemon=True)
    thread.start()
    thread.join(CLOUD_PROBE_TIMEOUT_S)
    if not outcome:
        raise UserError(f"storage {storage}: did not answer within {CLOUD_PROBE_TIMEOUT_S:g} s (no network, or "
                        "no route to its endpoint?)")
    if outcome[0] is not None:
        raise UserError(f"storage {storage}: cannot write there ({cloud_error(outcome[0])})") from None


def cloud_error(err: BaseException) -> str:
    """pyarrow's S3 error in one line: `AWS Error NO_SUCH_BUCKET: The specified bucket does not exist`."""
    text = " ".join(str(err).split())
    aws = re.search(r"AWS Error (\w+) during \w+ operation: (.*?)(?: \(Request ID: [^)]*\))?$", text)
    return f"AWS Error {aws.group(1)}: {aws.group(2).rstrip('.')}" if aws else text


def latest_run(storage: str, sweep_name: str) -> str | None:
    """The most recently started run of `sweep_name` in `storage` (a folder or a cloud URI), if any.

    Listed through pyarrow's file system, as Tune reads storage: the run folders whose name starts
    with the sweep's and whose `sweep.json` names it; the newest `sweep.json` wins.
    """
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(storage if is_uri(storage) else str(Path(storage).resolve()))
    try:
        folders = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except OSError as err:
        raise UserError(f"storage {storage}: cannot list it ({err})") from None
    candidates = [f.base_name for f in folders
                  if f.type == pyarrow.fs.FileType.Directory and f.base_name.startswith(sweep_name)]
    if not candidates:
        return None
    sweep_files = fs.get_file_info([f"{root}/{name}/{SWEEP_FILE}" for name in candidates])
    started = {}
    for name, info in zip(candidates, sweep_files, strict=True):
        if info.type == pyarrow.fs.FileType.File and ExperimentDir(storage, name).sweep_name() == sweep_name:
            started[name] = info.mtime_ns or 0
    return max(started, key=lambda name: (started[name], name)) if started else None


SCHEDULE_LOCK_FILE = "scheduler.lock"
SCHEDULER_PID_FILE = "scheduler.pid"


def schedule_folder(storage: str, sweep_name: str) -> Path:
    """Where a schedule keeps its lock and tick state: beside its runs (`<storage>/<sweep>.schedule`)
    for local storage; for a cloud URI, which cannot hold a lock, in this user's state directory
    (`$XDG_STATE_HOME/mnist-sweeps/schedules/`, default `~/.local/state/…`), keyed by the URI, so
    that schedulers started from any folder share it."""
    if not is_uri(storage):
        return Path(storage) / f"{sweep_name}.schedule"
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    key = hashlib.sha256(storage.encode()).hexdigest()[:12]
    return state / "mnist-sweeps" / "schedules" / f"{sweep_name}-{key}.schedule"


def scheduler_holding(folder: Path) -> str | None:
    """The pid of the scheduler that holds the schedule's lock in `folder` now, or None."""
    from filelock import FileLock, Timeout

    if not (folder / SCHEDULE_LOCK_FILE).exists():
        return None
    lock = FileLock(str(folder / SCHEDULE_LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = folder / SCHEDULER_PID_FILE
        return owner.read_text().strip() if owner.exists() else "unknown"
    lock.release()
    return None


def default_run_name(sweep_name: str) -> str:
    """`<sweep>-<UTC time>`: unique per invocation, sortable."""
    return f"{sweep_name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def local_root(experiment: ExperimentDir) -> Path:
    """The local folder for the default MLflow store: the storage folder, or ./runs for a URI."""
    return Path("runs").resolve() if experiment.is_remote else Path(experiment.storage)


def find_run(source: str, storage: str) -> ExperimentDir | None:
    """The run `source` names: a URI, a folder, or a run's name in `storage`; None when it names
    none of these (it may be a sweep file)."""
    if is_uri(source):
        root, _, name = source.rstrip("/").rpartition("/")
        return ExperimentDir(root, name)
    if Path(source).is_dir():
        folder = Path(source).resolve()
        return ExperimentDir(str(folder.parent), folder.name)
    if "/" not in source and not source.endswith((".yaml", ".yml")) and \
            Path(resolve_storage(storage), source, SWEEP_FILE).is_file():
        return ExperimentDir(resolve_storage(storage), source)
    return None
