"""A tracking server behind MLflow's basic authentication: a sweep lands with its usual hierarchy and
registered model; wrong credentials and a user without write permission are one line, exit 2,
before Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TEST_RAY_TOKEN, run_cli
from tests.slow.conftest import MlflowServer

pytestmark = pytest.mark.slow

ADMIN = ("admin", "admin-pass-4821")
URI_SECRET = "uri-secret-50713"  # carol's password, given inside the tracking URI
ENV_SECRET = "env-secret-88204"  # an unrelated secret in the environment


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
        users.create_user("carol", URI_SECRET)
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


def test_no_secret_is_saved_logged_or_printed(auth_server, base_env, tmp_path, mnist_dir, monkeypatch):
    """A password in the tracking URI, a secret in the environment and the Ray token appear in no
    file of the run folder, no MLflow record or artifact, and no line the run printed."""
    secrets = (URI_SECRET, ENV_SECRET, TEST_RAY_TOKEN)
    with_password = auth_server.url.replace("http://", f"http://carol:{URI_SECRET}@")
    env = {**base_env, "AWS_SECRET_ACCESS_KEY": ENV_SECRET}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    storage = tmp_path / "runs"
    result = run_cli(["run", "smoke", "--name", "quiet", "--tracking-uri", with_password, "--storage", str(storage)],
                     env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"mlflow: {auth_server.url} " in result.stdout  # the summary, printed without the credentials

    places = {"stdout": result.stdout, "stderr": result.stderr}
    for path in (p for p in storage.rglob("*") if p.is_file()):
        places[str(path)] = path.read_bytes().decode(errors="replace")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "carol")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", URI_SECRET)
    client = MlflowClient(auth_server.url)
    experiment = client.get_experiment_by_name("smoke")
    places["experiment tags"] = repr(experiment.tags)
    for run in client.search_runs([experiment.experiment_id]):
        places[f"run {run.info.run_id}"] = repr((run.data.params, run.data.tags, run.info.run_name))
        artifacts = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts" / run.info.run_id)))
        for path in (p for p in artifacts.rglob("*") if p.is_file()):
            places[str(path)] = path.read_bytes().decode(errors="replace")
    for version in client.search_model_versions("name = 'smoke'"):
        places[f"model version {version.version}"] = repr((version.tags, version.source, version.description))
    assert len(places) > 20  # the run folder, every run and its artifacts were read
    leaks = [(where, secret) for where, text in places.items() for secret in secrets if secret in text]
    assert not leaks, leaks
