"""`tune train`: one configuration end to end in one process, as a user runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def train_json(env, *extra):
    result = run_cli(["train", "--epochs", "2", "--subset", "1000", "--json", *extra], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_train_prints_epochs_and_test_accuracy_and_one_json_object(base_env):
    payload, stderr = train_json(base_env, "--set", "lr=0.003")
    assert payload["config"]["lr"] == 0.003 and payload["config"]["epochs"] == 2
    metrics = payload["metrics"]
    expected = {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "epoch"}
    assert expected <= set(metrics)
    assert metrics["epoch"] == 2 and 0.5 < metrics["test_acc"] <= 1
    assert [h["epoch"] for h in payload["history"]] == [1, 2]
    assert "epoch   1/2" in stderr and "test_acc" in stderr


def test_the_same_command_twice_gives_identical_metrics(base_env):
    first, _ = train_json(base_env, "--seed", "7")
    second, _ = train_json(base_env, "--seed", "7")
    strip = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in first["history"]]
    assert strip == [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in second["history"]]
    assert first["metrics"]["test_acc"] == second["metrics"]["test_acc"]


def test_train_takes_fixed_values_from_a_sweep_and_notes_searched_keys(base_env):
    payload, stderr = train_json(base_env, "smoke")
    assert payload["config"]["lr"] == 1e-3  # searched in smoke.yaml: the default is used
    assert "note: lr is searched by smoke" in stderr


def test_corrupted_file_is_one_line_exit_2(base_env, mnist_dir, tmp_path):
    bad = tmp_path / "mnist"
    shutil.copytree(mnist_dir, bad)
    labels = bad / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:1000])
    result = run_cli(["train", "--epochs", "1", "--data-dir", str(bad)], base_env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2
    assert lines[-1].startswith(f"tune: error: {labels}: damaged or truncated gzip data")
    assert "Traceback" not in result.stderr


def test_python_dash_m_search_is_the_same_cli(base_env):
    result = run_cli(["--help"], base_env)
    assert result.returncode == 0
    for command in ("train", "run", "ls", "lsx", "list-trials", "list-experiments", "add-note"):
        assert command in result.stdout


def test_ray_tune_commands_are_kept(base_env, tmp_path: Path):
    (tmp_path / "exp").mkdir()
    result = run_cli(["add-note", "--help"], base_env)
    assert result.returncode == 0 and "Adds user notes" in result.stdout
