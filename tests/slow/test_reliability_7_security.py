"""Reliability 7: security defaults. Token auth stays on, nothing listens beyond 127.0.0.1 unless
asked (with a warning), cluster.yaml keeps the dashboard private, YAML and checkpoints are never
unpickled, data files are parsed as bytes."""

from __future__ import annotations

import ast
import logging
import os
import re
import time
from pathlib import Path

import pytest
import torch
import yaml

from core.errors import UserError
from search.tracking.recorder import ui_command
from tests.conftest import REPO, run_cli, start_cli, stop_process

pytestmark = pytest.mark.slow

SOURCES = [p for d in ("search", "spaces", "trainables") for p in (REPO / d).rglob("*.py")]


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on `port` (from /proc/net/tcp)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add("127.0.0.1" if address == "0100007F" else "any" if set(address) == {"0"} else address)
    return found


@pytest.mark.parametrize("token", ["wrong-token", None])
def test_a_client_without_the_token_is_refused(ray_head, base_env, tmp_path, token):
    env = {k: v for k, v in base_env.items() if k != "RAY_AUTH_TOKEN"}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    if token:
        env["RAY_AUTH_TOKEN"] = token
    result = run_cli(["run", "smoke", "--address", ray_head.address, "--storage", str(tmp_path / "runs")], env,
                     timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tune: error: Ray at {ray_head.address} refused the connection"), last


def test_local_ray_dashboard_listens_on_loopback_only(base_env, tmp_path):
    sweep = start_cli(["run", "smoke", "--storage", str(tmp_path / "runs"), "--set", "scheduler.type=fifo",
                       "--set", "epochs=20"], base_env, tmp_path / "sweep.log")
    try:
        deadline = time.time() + 120
        while not (match := re.search(r"dashboard http://([\d.]+):(\d+)", (tmp_path / "sweep.log").read_text())):
            assert time.time() < deadline and sweep.poll() is None, (tmp_path / "sweep.log").read_text()[-2000:]
            time.sleep(0.3)
        host, port = match.group(1), int(match.group(2))
        assert host == "127.0.0.1"
        deadline = time.time() + 60
        while not listening_addresses(port):
            assert time.time() < deadline, "the dashboard never listened"
            time.sleep(0.3)
        assert listening_addresses(port) == {"127.0.0.1"}
    finally:
        stop_process(sweep)


def test_another_dashboard_host_must_be_asked_for_and_warns(monkeypatch, caplog):
    import ray

    from search.engine import cluster

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))  # nothing is started
    monkeypatch.setattr(cluster, "describe_cluster", lambda address: "fake")
    monkeypatch.setattr(cluster, "stop_gracefully_on_sigterm", lambda: None)
    with caplog.at_level(logging.WARNING):
        cluster.connect(None)
        assert calls[-1]["dashboard_host"] == "127.0.0.1" and not caplog.records
        cluster.connect(None, dashboard_host="0.0.0.0")
    assert calls[-1]["dashboard_host"] == "0.0.0.0"
    assert "reachable from other machines" in caplog.text


def test_the_mlflow_ui_command_we_print_binds_loopback():
    assert "--host 127.0.0.1" in ui_command("sqlite:////x/mlflow.db")


def test_cluster_yaml_never_exposes_the_dashboard():
    text = (REPO / "cluster.yaml").read_text()
    assert "0.0.0.0" not in text and "--dashboard-host=127.0.0.1" in text


def test_yaml_is_only_ever_safe_loaded(tmp_path):
    for path in SOURCES:
        code = path.read_text()
        assert "unsafe_load" not in code and "yaml.Loader" not in code and "FullLoader" not in code, path
    from spaces import load_sweep

    evil = tmp_path / "evil.yaml"
    evil.write_text(f"x: !!python/object/apply:os.system ['touch {tmp_path}/pwned']\n")
    with pytest.raises(UserError):
        load_sweep(evil)
    assert not (tmp_path / "pwned").exists()
    assert yaml.safe_load("a: 1") == {"a": 1}


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def torch_load_calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load"]


def test_checkpoints_are_loaded_with_weights_only(tmp_path):
    calls = [(path, call) for path in SOURCES for call in torch_load_calls(path)]
    assert calls, "no torch.load found: the check would pass vacuously"
    for path, call in calls:
        keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert keywords.get("weights_only") == "True", (path, ast.unparse(call))
    from trainables.trainable import STATE_FILE, load_checkpoint_model

    marker = tmp_path / "pwned"
    torch.save({"best_weights": Payload(marker)}, tmp_path / STATE_FILE)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_checkpoint_model(tmp_path, {})
    assert not marker.exists()


def test_no_pickle_is_read_from_data_files(tmp_path):
    import pickle

    from trainables.data import read_idx

    assert "pickle" not in (REPO / "trainables" / "data.py").read_text()
    marker = tmp_path / "pwned"
    evil = tmp_path / "train-images-idx3-ubyte"
    evil.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UserError, match="magic number"):
        read_idx(evil)
    assert not marker.exists()
