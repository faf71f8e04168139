"""A tracking server behind MLflow's basic authentication: a sweep lands with its usual hierarchy and
registered model; wrong credentials and a user without write permission are one line, exit 2,
before Ray starts."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli
from tests.slow.conftest import MlflowServer

pytestmark = pytest.mark.slow

ADMIN = ("admin", "admin-pass-4821")


@pytest.fixture
def auth_server(tmp_path, monkeypatch):
    config = tmp_path / "auth.ini"
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{tmp_path / 'users.db'}\n"
                      f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                      "grant_default_workspace_access = false\n")
    server = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts", tmp_path / "server.log",
                          auth_config=config)
    server.start()
    try:
        from mlflow.server.auth.client import AuthServiceClient

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
        users = AuthServiceClient(server.url)
        users.create_user("alice", "alice-pass-7734")
        users.create_user("bob", "bob-pass-1290")
        yield server
    finally:
        server.stop()


def as_user(env: dict[str, str], user: str, password: str) -> dict[str, str]:
    return {**env, "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


def last_line_before_ray(result) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Ray local" not in result.stderr and "Ray at" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_a_sweep_with_credentials_and_the_ones_refused(auth_server, base_env, tmp_path, mnist_dir, monkeypatch):
    url = auth_server.url
    args = ["run", "smoke", "--tracking-uri", url, "--storage", str(tmp_path / "runs")]
    alice = as_user(base_env, "alice", "alice-pass-7734")
    result = run_cli([*args, "--name", "by-alice"], alice)
    assert result.returncode == 0, result.stderr[-3000:]

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "alice-pass-7734")
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags.get("role") for r in runs) == ["sweep"] + ["trial"] * 8
    parent = next(r for r in runs if r.data.tags.get("role") == "sweep")
    assert parent.info.status == "FINISHED"
    assert client.get_model_version_by_alias("smoke", "best").run_id

    wrong = last_line_before_ray(run_cli([*args, "--name", "wrong"], as_user(base_env, "alice", "not-it")))
    assert wrong == (f"tune: error: MLflow at {url} refused the credentials (HTTP 401); set "
                     "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN")
    denied = last_line_before_ray(run_cli([*args, "--name", "by-bob"], as_user(base_env, "bob", "bob-pass-1290")))
    assert denied == (f"tune: error: MLflow at {url}: this user may not write to experiment 'smoke' (HTTP 403); "
                      "ask its owner for EDIT permission, or name another with mlflow.experiment")
    assert "not-it" not in wrong and "bob-pass-1290" not in denied
    assert not (tmp_path / "runs" / "wrong").exists() and not (tmp_path / "runs" / "by-bob").exists()
