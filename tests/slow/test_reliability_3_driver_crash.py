"""Reliability 3: `tune run` SIGKILLed at random points three times, `--resume` after each.

The sweep still ends with exactly `num_samples` trials, MLflow holds exactly one parent and
one child per trial with every epoch once, and no trial that had a checkpoint starts over.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from search.engine.trials import tune_result_rows
from tests.conftest import run_cli, start_cli, stop_process

pytestmark = pytest.mark.slow

TRIALS = 8
EPOCHS = 6
KILLS = 3


def trial_epochs(experiment: Path) -> dict[str, list[int]]:
    """Every epoch each trial reported, in order, from Tune's own result files."""
    return {trial: [int(row["epoch"]) for row in rows] for trial, rows in tune_result_rows(experiment).items()}


def test_driver_killed_three_times_then_resumed(ray_head, base_env, tmp_path):
    storage, name = tmp_path / "runs", "crashy"
    experiment = storage / name
    common = ["run", "smoke", "--address", ray_head.address, "--name", name, "--storage", str(storage)]
    first = [*common, "--set", "scheduler.type=fifo", "--set", f"epochs={EPOCHS}"]
    rng = random.Random(20261128)
    delays = []
    for attempt in range(KILLS):
        args = first if attempt == 0 else [*common, "--resume"]
        driver = start_cli(args, base_env, tmp_path / f"attempt{attempt}.log")
        try:
            # A random point after the run folder exists: mid-setup, mid-trials or mid-finalisation.
            while not (experiment / "sweep.json").exists():
                assert driver.poll() is None, (tmp_path / f"attempt{attempt}.log").read_text()[-3000:]
                time.sleep(0.1)
            delay = rng.uniform(2.0, 9.0)
            delays.append(round(delay, 2))
            time.sleep(delay)
            assert driver.poll() is None, f"the sweep ended before kill {attempt + 1} (delays {delays})"
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        finally:
            stop_process(driver)
    final = run_cli([*common, "--resume"], base_env)
    assert final.returncode == 0, f"delays {delays}: {final.stderr[-3000:]}"

    results = json.loads((experiment / "results.json").read_text())
    assert results["status"] == "finished" and results["num_trials"] == TRIALS
    epochs = trial_epochs(experiment)
    assert len(epochs) == TRIALS
    for trial_id, seen in epochs.items():  # what Tune saw trained, from its own result files
        # A kill between a checkpoint and Tune's next snapshot leaves Tune's file without the
        # epochs before it; the trial continues from its checkpoint (never from epoch 1 again).
        assert seen.count(1) <= 1, f"{trial_id} started over although it had a checkpoint: {seen}"
    for trial in results["trials"]:  # every epoch on record, once
        assert [h["epoch"] for h in trial["history"]] == list(range(1, EPOCHS + 1)), (trial, delays)

    client = MlflowClient(f"sqlite:///{storage}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("role") == "trial"]
    assert len(parents) == 1 and len(runs) == 1 + TRIALS
    assert sorted(c.data.tags["trial_id"] for c in children) == sorted(epochs)
    for child in children:
        for key in ("val_loss", "train_acc", "epoch"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert steps == list(range(1, EPOCHS + 1)), (child.data.tags["trial_id"], key, steps)


DOCS_STYLE_TRAINABLE = '''
import json
import os
import tempfile
import time

from ray import tune


def train_func(config):
    # As Ray Tune's documentation writes a function trainable: resume from the checkpoint Tune hands
    # over, report every step with a checkpoint.
    start = 1
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as checkpoint_dir:
            with open(os.path.join(checkpoint_dir, "state.json")) as f:
                start = json.load(f)["step"] + 1
    for step in range(start, config["epochs"] + 1):
        time.sleep(0.4)
        score = config["x"] * step
        with tempfile.TemporaryDirectory() as checkpoint_dir:
            with open(os.path.join(checkpoint_dir, "state.json"), "w") as f:
                json.dump({"step": step}, f)
            tune.report({"score": score, "step": step}, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))
'''


def test_a_users_own_trainable_survives_a_killed_driver(ray_head, base_env, tmp_path):
    """A trainable written as Ray's docs write one, under `tune run`: the driver SIGKILLed mid-sweep,
    `--resume` finishes it, and MLflow holds every step of every trial once."""
    (tmp_path / "docs_style.py").write_text(DOCS_STYLE_TRAINABLE)
    (tmp_path / "sweep.yaml").write_text(
        f"name: docs-style\ntrainable: docs_style:train_func\nmetric: score\nmode: max\nepochs: {EPOCHS * 2}\n"
        "space:\n  x: {uniform: [0.1, 1.0]}\nsearch: {num_samples: 4}\nscheduler: {type: fifo}\n")
    storage, name = tmp_path / "runs", "docs"
    experiment = storage / name
    common = ["run", str(tmp_path / "sweep.yaml"), "--address", ray_head.address, "--name", name,
              "--storage", str(storage)]
    driver = start_cli(common, base_env, tmp_path / "first.log", cwd=tmp_path)
    try:
        deadline = time.time() + 180
        while sum(len(rows) for rows in tune_result_rows(experiment).values()) < 6:  # mid-trials
            assert time.time() < deadline and driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.2)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        stop_process(driver)
    final = run_cli([*common, "--resume"], base_env, cwd=tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]

    steps = list(range(1, EPOCHS * 2 + 1))
    results = json.loads((experiment / "results.json").read_text())
    assert results["status"] == "finished" and results["counts"]["completed"] == 4
    for trial in results["trials"]:  # every step on record, once, and the trainable's own count agrees
        assert [h["epoch"] for h in trial["history"]] == steps, trial["trial_id"]
        assert [h["step"] for h in trial["history"]] == steps, trial["trial_id"]
    client = MlflowClient(f"sqlite:///{storage}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("docs-style").experiment_id])
    children = [r for r in runs if r.data.tags.get("role") == "trial"]
    assert len(runs) == 5 and len(children) == 4
    for child in children:
        for key in ("score", "step"):
            history = client.get_metric_history(child.info.run_id, key)
            assert [m.step for m in history] == steps, (child.data.tags["trial_id"], key)
        # the value logged at each step is the one the trainable computed for that step
        assert all(m.value == m.step for m in client.get_metric_history(child.info.run_id, "step"))
