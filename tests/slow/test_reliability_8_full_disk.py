"""Reliability 8: a disk that fills up mid-sweep. The storage is a small tmpfs mounted in a mount
namespace of the test's own (`unshare --mount`; nothing outside sees it); the sweep stops with one
line naming the storage and its free space and its state saved; after space is freed, `--resume`
finishes it with nothing lost or duplicated."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, stop_process
from tests.slow.conftest import inside

pytestmark = pytest.mark.slow

EPOCHS = 8
TRIALS = 8


def test_a_disk_that_fills_mid_sweep_stops_it_saved_and_resume_finishes_it(small_disk, base_env, tmp_path, mnist_dir):
    holder, disk = small_disk
    storage = disk / "runs"
    cli = ["nsenter", "--target", str(holder.pid), "--mount", sys.executable, "-m", "search", "run", "smoke",
           "--name", "full", "--storage", str(storage)]
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen([*cli, "--set", "scheduler.type=fifo", "--set", f"epochs={EPOCHS}"], env=base_env,
                             cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while "checkpoint_000001" not in inside(holder, ["find", str(storage / "full")]).stdout:
            assert first.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.5)
        free = int(inside(holder, [sys.executable, "-c", f"import shutil; print(shutil.disk_usage('{disk}').free)"])
                   .stdout)
        filler = inside(holder, ["fallocate", "-l", str(free - 60 * 2**20), str(disk / "filler")])
        assert filler.returncode == 0, filler.stderr
        assert first.wait(timeout=240) == 130, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        stop_process(first)
    text = (tmp_path / "first.log").read_text()
    stop_line = next(line for line in text.splitlines() if line.startswith(f"storage {storage}: only "))
    assert "MiB free, below the 100 MiB a running sweep keeps" in stop_line
    assert f"resume with: tune run smoke --name full --storage {storage} --resume" in text

    assert inside(holder, ["rm", str(disk / "filler")]).returncode == 0
    second = inside(holder, [*cli[4:], "--resume"], env=base_env, cwd=REPO, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    copy = tmp_path / "copy"
    assert inside(holder, ["cp", "-r", str(storage), str(copy)]).returncode == 0  # out of the namespace
    results = json.loads((copy / "full" / "results.json").read_text())
    assert results["status"] == "finished" and results["num_trials"] == TRIALS
    for trial in results["trials"]:  # every epoch on record, once
        assert [h["epoch"] for h in trial["history"]] == list(range(1, EPOCHS + 1)), trial
    client = MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert sorted(r.data.tags.get("role") for r in runs) == ["sweep"] + ["trial"] * TRIALS
    for child in (r for r in runs if r.data.tags.get("role") == "trial"):
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == list(range(1, EPOCHS + 1)), (child.data.tags["trial_id"], steps)
