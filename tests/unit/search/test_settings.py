"""The one home of a run's URIs: normalised once, and a run folder never chooses where records go."""

from __future__ import annotations

import json
import re
import socket
import threading

import pytest

from core.errors import UserError
from search.engine.storage import RUN_FILE, SWEEP_FILE
from search.settings import normalize_uri, store_from_folder, without_credentials
from spaces import load_sweep


@pytest.mark.parametrize("given, expected", [
    ("HTTP://Host:5000/x", "http://Host:5000/x"),
    ("  https://h/  ", "https://h/"),
    ("\thttp://h:1", "http://h:1"),
    ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db"),
    ("SQLite:////tmp/a.db", "sqlite:////tmp/a.db"),
    ("/tmp/mlruns", "/tmp/mlruns"),
])
def test_uris_are_normalised_as_mlflow_would_read_them(given, expected):
    assert normalize_uri(given, "--tracking-uri") == expected


@pytest.mark.parametrize("given, expected", [
    ("gopher://h/x", "--tracking-uri: gopher://h/x: unknown scheme 'gopher'"),
    ("http://[::1/x", "--tracking-uri: http://[::1/x: Invalid IPv6 URL"),
    ("http://h:99999/x", "--tracking-uri: http://h:99999/x: Port out of range"),
    ("   ", "--tracking-uri: is blank"),
    ("http://alice:s3cret@h:port/x", "--tracking-uri: http://***@h:port/x: Port could not be cast"),
])
def test_a_bad_uri_is_one_line_naming_where_it_came_from(given, expected):
    with pytest.raises(UserError, match=re.escape(expected)) as err:
        normalize_uri(given, "--tracking-uri")
    assert "s3cret" not in str(err.value)


def test_credentials_leave_the_uri_whatever_its_spelling(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert without_credentials(" HTTPS://bob:pw@h:5000/") == "https://h:5000/"
    import os

    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "pw"


@pytest.mark.parametrize("named", ["HTTP://127.0.0.1:1", " http://127.0.0.1:1", "sqlite:////elsewhere/m.db",
                                   "postgresql://u@db/x"])
def test_a_folder_names_only_the_store_beside_it(named):
    own = "sqlite:////runs/mlflow.db"
    with pytest.raises(UserError, match="a run folder never chooses where records go"):
        store_from_folder(named, "run.json", own)
    assert store_from_folder(None, "run.json", own) == own
    assert store_from_folder(" SQLITE:////runs/mlflow.db", "run.json", own) == own


class _Listener:
    """A loopback server that records what reaches it: what a crafted run.json would send credentials to."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.received.append(conn.recv(65536))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.mark.parametrize("spelling", ["HTTP://127.0.0.1:{port}", " http://127.0.0.1:{port}",
                                      "http://127.0.0.1:{port}"])
def test_sync_mlflow_sends_no_credentials_to_a_server_a_run_folder_names(tmp_path, monkeypatch, spelling):
    from search.tracking.replay import sync_experiment

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "token-that-must-not-leave")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "alice-password")
    listener = _Listener()
    try:
        folder = tmp_path / "runs" / "crafted"
        folder.mkdir(parents=True)
        (folder / SWEEP_FILE).write_text(json.dumps(load_sweep("smoke").document()))
        uri = spelling.format(port=listener.port)
        (folder / RUN_FILE).write_text(json.dumps({"settings": {"tracking_uri": uri}}))
        with pytest.raises(UserError, match=f"names the tracking server http://127.0.0.1:{listener.port}"):
            sync_experiment(str(folder), None, None, timeout_s=1)
    finally:
        listener.close()
    assert listener.received == []
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_sync_mlflow_creates_no_store_elsewhere_that_a_run_folder_names(tmp_path):
    from search.tracking.replay import sync_experiment

    folder = tmp_path / "runs" / "crafted"
    folder.mkdir(parents=True)
    (folder / SWEEP_FILE).write_text(json.dumps(load_sweep("smoke").document()))
    elsewhere = tmp_path / "elsewhere" / "planted.db"
    (folder / RUN_FILE).write_text(json.dumps({"settings": {"tracking_uri": f"sqlite:///{elsewhere}"}}))
    with pytest.raises(UserError, match="names the tracking store sqlite:///"):
        sync_experiment(str(folder), None, None, timeout_s=1)
    assert not elsewhere.parent.exists()


URI = " HTTP://alice:s3cret@Host:5000/mlflow"
EXPECTED = "http://Host:5000/mlflow"


def test_every_commands_route_gives_the_same_tracking_uri(tmp_path, monkeypatch):
    """run, ablate and schedule (RunOptions -> new_settings or resumed_settings), predict
    (resolve_tracking_uri), sync-mlflow (sync_run), the environment and a sweep file: one result, and the
    credentials in MLflow's variables, never in the URI."""
    from pathlib import Path

    from search.engine.storage import RunSettings
    from search.settings import (
        Environment,
        RunOptions,
        load_run_config,
        new_settings,
        resolve_tracking_uri,
        resumed_settings,
    )

    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    root = Path(tmp_path)
    routes = {
        "flag (run, ablate, schedule)": new_settings(RunOptions(tracking_uri=URI), None, root).tracking_uri,
        "environment": new_settings(RunOptions(env=Environment.read({"MLFLOW_TRACKING_URI": URI})), None,
                                    root).tracking_uri,
        "sweep file": new_settings(RunOptions(), load_run_config(
            "smoke", [f"mlflow.tracking_uri={URI.strip()}"], {}, Environment()).mlflow.tracking_uri, root).tracking_uri,
        "resume": resumed_settings(RunSettings(tracking_uri=EXPECTED), RunOptions(tracking_uri=URI),
                                   "r1").tracking_uri,
        "predict": resolve_tracking_uri(URI, Environment(), None, "sqlite:///x.db"),
    }
    assert set(routes.values()) == {EXPECTED}, routes
    import os

    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret"


def test_sync_mlflow_takes_the_flag_through_the_same_function(tmp_path, monkeypatch):
    from search.commands import sync
    from search.settings import Environment

    seen = {}
    monkeypatch.setattr(sync, "sync_experiment", lambda folder, uri, env_uri, timeout: seen.update(uri=uri))
    sync.sync_run("runs/x", URI, Environment(), 1)
    assert seen["uri"] == EXPECTED


def test_the_cli_strips_no_credentials_itself():
    """One home for the rule: search/cli.py passes flags as given."""
    from pathlib import Path

    import search.cli

    text = Path(search.cli.__file__).read_text()
    assert "without_credentials" not in text and "urlsplit" not in text
