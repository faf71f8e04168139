"""Reliability 6: a 200-trial sweep (1 epoch on a small subset, 4 trials at once) ends with all
200 child runs and every metric in MLflow, and the driver's memory stays flat."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, start_cli, stop_process

pytestmark = pytest.mark.slow

TRIALS = 200


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def test_two_hundred_trials_all_reach_mlflow_with_flat_driver_memory(ray_head, base_env, tmp_path):
    storage = tmp_path / "runs"
    experiment = storage / "load"
    sweep = start_cli(["run", "smoke", "--address", ray_head.address, "--name", "load", "--storage", str(storage),
                       "--set", f"search.num_samples={TRIALS}", "--set", "epochs=1", "--set", "data.subset=300",
                       "--set", "resources.cpu=0.5", "--set", "scheduler.type=fifo"],
                      base_env, tmp_path / "sweep.log")
    samples = []  # (trials with results, driver RSS in MiB)
    try:
        while sweep.poll() is None:
            rss = rss_mib(sweep.pid)
            if rss is not None:
                samples.append((len(list(experiment.glob("*/result.json"))), rss))
            time.sleep(0.5)
    finally:
        stop_process(sweep)
    assert sweep.returncode == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    running = [rss for done, rss in samples if 0 < done < TRIALS]
    early, late = running[: len(running) // 3], running[-len(running) // 3:]
    report = {"trials": TRIALS, "peak_rss_mib": max(rss for _, rss in samples),
              "early_mean_rss_mib": sum(early) / len(early), "late_mean_rss_mib": sum(late) / len(late),
              "samples": samples}
    (REPO / "test-artifacts").mkdir(exist_ok=True)
    (REPO / "test-artifacts" / "load_200_trials_memory.json").write_text(json.dumps(report, indent=1))
    print(f"driver peak RSS {report['peak_rss_mib']:.0f} MiB; early {report['early_mean_rss_mib']:.0f} MiB, "
          f"late {report['late_mean_rss_mib']:.0f} MiB")
    assert report["late_mean_rss_mib"] < 1.25 * report["early_mean_rss_mib"], "driver memory grows with trials"

    results = json.loads((experiment / "results.json").read_text())
    assert results["num_trials"] == TRIALS and results["counts"]["completed"] == TRIALS
    client = MlflowClient(f"sqlite:///{storage}/mlflow.db")
    experiment_id = client.get_experiment_by_name("smoke").experiment_id
    children = client.search_runs([experiment_id], filter_string="tags.role = 'trial'", max_results=1000)
    assert len(children) == TRIALS
    assert len({c.data.tags["trial_id"] for c in children}) == TRIALS
    evaluated = {t["trial_id"] for t in results["trials"] if t["test_acc"] is not None}
    assert 1 <= len(evaluated) <= 4  # the best trial of each batch_norm × skip group, evaluated by the driver
    for child in children:
        assert {"train_loss", "train_acc", "val_loss", "val_acc", "epoch",
                "epoch_seconds"} <= set(child.data.metrics), child.data.tags["trial_id"]
        assert ("test_acc" in child.data.metrics) == (child.data.tags["trial_id"] in evaluated)
        assert child.data.tags["status"] == "completed"
