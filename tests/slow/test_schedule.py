"""`tune schedule`: ticks that share one study, a champion that moves only when beaten, no overlap,
one scheduler at a time, an idempotent `--once`, and SIGTERM that the next start resumes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from search.engine.optuna_bridge import RAY_TRIAL_ID_ATTR
from tests.conftest import run_cli, start_cli, stop_process

pytestmark = pytest.mark.slow

# These ticks check the schedule's bookkeeping against the registered numbers (`any_better`); the paired rule,
# the default, has its own test with real checkpoints (tests/integration/test_champion_paired.py).
SMALL = ["--set", "search.num_samples=3", "--set", "epochs=2", "--set", "data.subset=1000",
         "--set", "schedule.promote=any_better"]


@pytest.fixture
def base_env(base_env):
    """Ticks seconds apart: the limit of one a minute lowered, as the README says tests may."""
    return {**base_env, "SWEEP_SCHEDULE_MIN_INTERVAL_S": "1"}


def schedule_args(storage: Path, cron: str, *extra: str) -> list[str]:
    return ["schedule", "smoke", "--cron", cron, "--storage", str(storage), *SMALL, *extra]


def state(storage: Path) -> dict:
    return json.loads((storage / "smoke.schedule" / "state.json").read_text())["ticks"]


def finished_ticks(storage: Path) -> dict:
    return {k: v for k, v in state(storage).items() if v["status"] == "finished"}


def sweep_parents(storage: Path) -> list:
    client = MlflowClient(f"sqlite:///{storage}/mlflow.db")
    experiment = client.get_experiment_by_name("smoke")
    return client.search_runs([experiment.experiment_id], filter_string="tags.role = 'sweep'")


def champion(storage: Path):
    return MlflowClient(f"sqlite:///{storage}/mlflow.db").get_model_version_by_alias("smoke", "champion")


def wait_for_text(path: Path, text: str, timeout_s: float = 180) -> None:
    deadline = time.time() + timeout_s
    while text not in (path.read_text() if path.exists() else ""):
        if time.time() > deadline:
            raise AssertionError(f"'{text}' never appeared in {path}: {path.read_text()[-2000:]}")
        time.sleep(0.3)


def test_two_ticks_share_one_study_and_the_champion_moves_only_on_improvement(base_env, tmp_path):
    result = run_cli(schedule_args(tmp_path, "*/4 * * * * *", "--max-runs", "2"), base_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "next tick at" in result.stderr
    assert "was still running" in result.stderr  # ticks due while a sweep ran were skipped, not queued
    skipped = json.loads((tmp_path / "smoke.schedule" / "state.json").read_text())["skipped"]
    assert skipped and all(r["reason"].startswith("overlapped tick") and r["count"] >= 1 for r in skipped)
    assert len(skipped) <= 2  # one record per sweep that overlapped ticks, not one per tick
    ticks = finished_ticks(tmp_path)
    assert len(ticks) == 2
    journal = optuna.storages.journal.JournalFileBackend(str(tmp_path / "smoke.schedule" / "study.journal"))
    study = optuna.load_study(study_name="smoke", storage=optuna.storages.JournalStorage(journal))
    assert len(study.trials) == 6 and len({t.user_attrs[RAY_TRIAL_ID_ATTR] for t in study.trials}) == 6
    parents = {p.data.tags["tick"]: p for p in sweep_parents(tmp_path)}
    assert len(parents) == 2 and all(p.data.tags["schedule"] == "smoke" for p in parents.values())
    first, second = (parents[t] for t in sorted(parents))
    assert first.data.tags["champion_moved"] == "true"
    better = second.data.metrics["best_val_loss"] < first.data.metrics["best_val_loss"]
    assert second.data.tags["champion_moved"] == str(better).lower()
    expected = second if better else first
    assert str(champion(tmp_path).version) == expected.data.tags["registered_model_version"]


def test_champion_stays_when_a_later_tick_is_worse(base_env, tmp_path):
    cron = "*/2 * * * * *"
    assert run_cli(schedule_args(tmp_path, cron, "--once"), base_env).returncode == 0
    time.sleep(2.5)  # the next --once falls on a later tick
    worse = run_cli(schedule_args(tmp_path, cron, "--once", "--set", "space.lr=1.0e-5"), base_env)
    assert worse.returncode == 0, worse.stderr[-3000:]
    parents = sorted(sweep_parents(tmp_path), key=lambda p: p.data.tags["tick"])
    assert len(parents) == 2
    assert parents[1].data.metrics["best_val_loss"] > parents[0].data.metrics["best_val_loss"]
    assert parents[1].data.tags["champion_moved"] == "false"
    assert parents[1].data.tags["champion_decision"].startswith("kept version 1")
    assert str(champion(tmp_path).version) == "1"
    assert champion(tmp_path).tags["test_acc"]  # the test accuracy is recorded beside the decision


def test_once_twice_for_the_same_tick_runs_once(base_env, tmp_path):
    cron = "0 0 * * *"  # daily: both calls fall on the same tick
    first = run_cli(schedule_args(tmp_path, cron, "--once"), base_env)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli(schedule_args(tmp_path, cron, "--once"), base_env)
    assert second.returncode == 0 and "already ran" in second.stderr
    assert len(finished_ticks(tmp_path)) == 1 and len(sweep_parents(tmp_path)) == 1


def test_a_second_scheduler_is_refused_and_a_crashed_one_leaves_no_lock(base_env, tmp_path):
    yearly = "0 0 1 1 *"
    first = start_cli(schedule_args(tmp_path, yearly), base_env, tmp_path / "first.log")
    third = None
    try:
        wait_for_text(tmp_path / "first.log", "next tick at")
        second = run_cli(schedule_args(tmp_path, yearly), base_env)
        assert second.returncode == 2
        assert f"another scheduler is running this schedule (pid {first.pid}" in second.stderr
        os.kill(first.pid, signal.SIGKILL)  # a crash: no clean-up code runs
        first.wait(timeout=30)
        third = start_cli(schedule_args(tmp_path, yearly), base_env, tmp_path / "third.log")
        wait_for_text(tmp_path / "third.log", "next tick at")
        third.send_signal(signal.SIGTERM)
        assert third.wait(timeout=60) == 130
    finally:
        stop_process(first)
        if third is not None:
            stop_process(third)


def test_sigterm_saves_the_running_tick_and_the_next_start_resumes_it(base_env, tmp_path):
    args = ["schedule", "smoke", "--cron", "0 0 * * *", "--once", "--storage", str(tmp_path),
            "--set", "scheduler.type=fifo", "--set", "epochs=6", "--set", "search.num_samples=6"]
    first = start_cli(args, base_env, tmp_path / "first.log")
    try:
        deadline = time.time() + 180
        while not any(int(json.loads(line)["epoch"]) >= 2 for f in tmp_path.glob("smoke-*/*/result.json")
                      for line in f.read_text().splitlines() if line.strip()):
            assert time.time() < deadline and first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.3)
        first.send_signal(signal.SIGTERM)  # what systemd and Kubernetes send
        assert first.wait(timeout=120) == 130
    finally:
        stop_process(first)
    (tick,) = state(tmp_path).values()
    assert tick["status"] == "interrupted"
    again = run_cli(args, base_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming the unfinished tick" in again.stderr
    (tick,) = state(tmp_path).values()
    assert tick["status"] == "finished"
    results = json.loads((tmp_path / tick["run_name"] / "results.json").read_text())
    assert results["num_trials"] == 6 and results["counts"]["completed"] == 6
    for trial in results["trials"]:
        assert [h["epoch"] for h in trial["history"]] == [1, 2, 3, 4, 5, 6]
    assert len(sweep_parents(tmp_path)) == 1
