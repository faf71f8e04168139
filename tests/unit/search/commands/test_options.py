"""Settings resolved once at the command layer: credentials never stay in a tracking URI."""

from __future__ import annotations

import os

from search.settings import Environment, without_credentials


def test_credentials_in_a_tracking_uri_move_to_mlflows_variables(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert without_credentials("https://alice:p%40ss%3Aw0rd@mlflow.example.com:8443/x?y=1") == \
        "https://mlflow.example.com:8443/x?y=1"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("alice", "p@ss:w0rd")
    for plain in ("http://127.0.0.1:5000", "sqlite:////tmp/a@b/mlflow.db", None):
        assert without_credentials(plain) == plain
    env = Environment.read({"MLFLOW_TRACKING_URI": "http://bob:hunter2@host:5000"})
    assert env.tracking_uri == "http://host:5000" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "hunter2"


def test_tunes_own_restore_hint_and_snapshot_warnings_are_silenced(monkeypatch, caplog):
    import logging
    import os

    from search.cli import prepare_tracking

    monkeypatch.delenv("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", raising=False)
    prepare_tracking()
    assert os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] == "0"
    with caplog.at_level(logging.WARNING, logger="ray.tune.tune"):
        logging.getLogger("ray.tune.tune").warning("Experiment has been interrupted.\nResume experiment with: x")
        logging.getLogger("ray.tune.tune").warning("another warning")
    assert [r.getMessage() for r in caplog.records] == ["another warning"]
