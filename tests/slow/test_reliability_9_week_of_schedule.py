"""Reliability 9: a week of schedule in a few minutes. `tune schedule` runs the smoke sweep on a
fast cron, six ticks in a row, each with one fault: a worker node killed, an MLflow outage, the
scheduler SIGTERMed and started again, a trial process killed, a full disk then freed, and none.
Afterwards every tick's run is in MLflow exactly once and complete, the schedule's study holds every
trial of every tick, and the `champion` history (each version it was given and every parent run's
`champion_decision`) follows the validation metric.

Everything runs inside a mount namespace whose storage is a small tmpfs (the full disk): the
scheduler and both Ray nodes (trials write their checkpoints there); the MLflow server is outside.
The test reads the namespace's files through `/proc/<holder>/root`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from search.engine.optuna_bridge import RAY_TRIAL_ID_ATTR
from search.engine.trials import tune_result_rows
from tests.conftest import REPO, free_port, start_ray_node, stop_process, wait_for_nodes
from tests.slow.conftest import MlflowServer, inside

pytestmark = pytest.mark.slow

TICKS = 6
TRIALS = 3  # on two one-CPU nodes: ticks of two rounds, long enough to fault mid-sweep
EPOCHS = 6
OUTAGE_S = 12
# any_better: the champion's history is checked against each tick's registered val_loss (the paired rule,
# the default, has its own test with real checkpoints: tests/integration/test_champion_paired.py)
SWEEP = ["--set", "scheduler.type=fifo", "--set", f"epochs={EPOCHS}", "--set", f"search.num_samples={TRIALS}",
         "--set", "data.subset=6000", "--set", "schedule.promote=any_better"]

NODE_ID_ON_PORT = """
import ray, sys
ray.init(address=sys.argv[1], logging_level="ERROR")
print("node:", next((n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerPort"] == int(sys.argv[2])), ""))
"""


class Week:
    """The test's view of one schedule: its processes, its files (seen from outside the namespace)."""

    def __init__(self, holder: subprocess.Popen, disk: Path, tmp_path: Path, env: dict[str, str]) -> None:
        self.holder, self.disk, self.tmp_path, self.env = holder, disk, tmp_path, env
        self.storage = disk / "runs"
        self.enter = ("nsenter", "--target", str(holder.pid), "--mount")
        self.head = start_ray_node(env, num_cpus=1, prefix=self.enter)
        self.worker, self.worker_id = None, ""
        self.temp_dirs: list[str] = []
        self.mlflow = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts",
                                   tmp_path / "mlflow-server.log")
        self.scheduler: subprocess.Popen | None = None
        self.logs: list[Path] = []

    def outside(self, path: Path) -> Path:
        """`path` inside the namespace, as this process can read it."""
        return Path(f"/proc/{self.holder.pid}/root") / path.relative_to("/")

    # --- processes --------------------------------------------------------------------

    def start_worker(self) -> None:
        """A one-CPU worker node joins; `worker_id` is its node id once the head lists it."""
        port = free_port()
        # Nodes on one machine need temp dirs of their own (their sockets live there; short paths).
        self.temp_dirs.append(tempfile.mkdtemp(prefix="ray-worker-", dir="/tmp"))
        self.worker = start_ray_node(self.env, num_cpus=1, head_address=self.head.address, prefix=self.enter,
                                     extra=(f"--node-manager-port={port}", f"--temp-dir={self.temp_dirs[-1]}"))
        deadline = time.time() + 120
        while True:
            found = subprocess.run([sys.executable, "-c", NODE_ID_ON_PORT, self.head.address, str(port)],
                                   env=self.env, capture_output=True, text=True, timeout=60).stdout
            node = next((line.split()[1:] for line in found.splitlines() if line.startswith("node:")), [])
            if node:
                self.worker_id = node[0]
                return
            assert time.time() < deadline and self.worker.proc.poll() is None, "the worker node never joined"
            time.sleep(1)

    def start_scheduler(self, max_runs: int) -> None:
        log = self.tmp_path / f"scheduler-{len(self.logs) + 1}.log"
        self.logs.append(log)
        command = [*self.enter, sys.executable, "-m", "search", "schedule", "smoke", "--cron", "*/3 * * * * *",
                   "--max-runs", str(max_runs), "--address", self.head.address, "--storage", str(self.storage),
                   "--tracking-uri", self.mlflow.url, *SWEEP]
        self.scheduler = subprocess.Popen(command, env=self.env, cwd=REPO, stdout=log.open("w"),
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.logs[-1].read_text()

    def wait_scheduler(self, timeout_s: float = 600) -> int:
        assert self.scheduler is not None
        return self.scheduler.wait(timeout=timeout_s)

    def stop(self) -> None:
        for proc in (self.scheduler, self.worker and self.worker.proc, self.head.proc):
            if proc is not None:
                stop_process(proc)
        self.mlflow.stop()
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)

    # --- what the schedule wrote --------------------------------------------------------

    def state(self) -> dict:
        path = self.outside(self.storage / "smoke.schedule" / "state.json")
        return json.loads(path.read_text()) if path.exists() else {"ticks": {}}

    def tick(self, number: int, timeout_s: float = 240) -> Path:
        """The run folder of the `number`th tick (from 1), once it has started."""
        deadline = time.time() + timeout_s
        while len(ticks := sorted(self.state()["ticks"].items())) < number:
            assert time.time() < deadline and self.scheduler.poll() is None, self.log()[-3000:]
            time.sleep(0.2)
        return self.outside(self.storage / ticks[number - 1][1]["run_name"])

    def wait_for_rows(self, run: Path, ready, timeout_s: float = 240):  # type: ignore[no-untyped-def]
        """Tune's rows of `run` once `ready(rows)` returns something; that something."""
        deadline = time.time() + timeout_s
        while not (found := ready(tune_result_rows(run))):
            assert time.time() < deadline and self.scheduler.poll() is None, self.log()[-3000:]
            time.sleep(0.1)
        return found


def running_on(node_id: str, last_epoch: int):  # type: ignore[no-untyped-def]
    """A trial whose latest report came from `node_id` (any node when empty) at epoch 1..`last_epoch`."""
    def ready(rows):  # type: ignore[no-untyped-def]
        return next((trial[-1] for trial in rows.values()
                     if (not node_id or trial[-1]["node_id"] == node_id) and 1 <= trial[-1]["epoch"] <= last_epoch),
                    None)
    return ready


@pytest.fixture
def week(small_disk, base_env, tmp_path, mnist_dir):  # type: ignore[no-untyped-def]
    holder, disk = small_disk
    env = {**base_env, "SWEEP_SCHEDULE_MIN_INTERVAL_S": "1"}  # ticks seconds apart, as the README allows tests
    week = Week(holder, disk, tmp_path, env)
    try:
        wait_for_nodes(week.head.address, env, 1)
        week.start_worker()
        week.mlflow.start()
        yield week
    finally:
        week.stop()


def test_six_ticks_with_a_fault_each_lose_nothing_and_the_champion_follows_val_loss(week):
    faults: dict[int, str] = {}
    week.start_scheduler(max_runs=3)

    # Tick 1: the worker node dies under a trial (it resumes elsewhere from its checkpoint).
    run = week.tick(1)
    on_worker = week.wait_for_rows(run, running_on(week.worker_id, EPOCHS - 3))
    killed_node = week.worker_id
    os.killpg(week.worker.proc.pid, signal.SIGKILL)  # the whole node at once
    faults[1] = "worker node killed"
    week.start_worker()  # a replacement joins, as an autoscaler would bring one

    # Tick 2: MLflow is down for a while mid-sweep.
    run = week.tick(2)
    week.wait_for_rows(run, running_on("", EPOCHS - 2))
    week.mlflow.stop()
    outage = time.time()
    time.sleep(OUTAGE_S)
    week.mlflow.start()
    faults[2] = "MLflow outage"

    # Tick 3: the scheduler is SIGTERMed mid-sweep; a new one resumes the tick.
    run = week.tick(3)
    week.wait_for_rows(run, running_on("", EPOCHS - 3))
    week.scheduler.send_signal(signal.SIGTERM)
    assert week.wait_scheduler(timeout_s=120) == 130, week.log()[-3000:]
    assert week.state()["ticks"][sorted(week.state()["ticks"])[2]]["status"] == "interrupted"
    faults[3] = "scheduler SIGTERM"
    week.start_scheduler(max_runs=3)  # tick 3 again, then 4 and 5

    # Tick 4: a trial's process is killed (Tune retries it from its checkpoint).
    run = week.tick(4)
    victim = week.wait_for_rows(run, running_on("", EPOCHS - 3))
    os.kill(victim["pid"], signal.SIGKILL)
    faults[4] = "trial process killed"

    # Tick 5: the disk fills; the sweep stops saved, the scheduler exits; space is freed, it starts again.
    run = week.tick(5)
    week.wait_for_rows(run, running_on("", 2))  # seconds of training left: the disk check runs every 2 s
    free = int(inside(week.holder, [sys.executable, "-c",
                                    f"import shutil; print(shutil.disk_usage('{week.disk}').free)"]).stdout)
    filler = inside(week.holder, ["fallocate", "-l", str(free - 60 * 2**20), str(week.disk / "filler")])
    assert filler.returncode == 0, filler.stderr
    assert week.wait_scheduler(timeout_s=240) == 130, week.log()[-3000:]
    assert f"storage {week.storage}: only " in week.log()
    assert inside(week.holder, ["rm", str(week.disk / "filler")]).returncode == 0
    faults[5] = "full disk, then freed"
    week.start_scheduler(max_runs=2)  # tick 5 again, then 6

    # Tick 6: nothing goes wrong.
    faults[6] = "none"
    assert week.wait_scheduler() == 0, week.log()[-3000:]

    # Every tick finished, and its run folder holds every trial's every epoch once.
    ticks = sorted(week.state()["ticks"].items())
    assert len(ticks) == TICKS and all(t["status"] == "finished" and t["exit_code"] == 0 for _, t in ticks), ticks
    trial_ids: dict[str, set[str]] = {}
    for number, (key, tick) in enumerate(ticks, 1):
        results = json.loads((week.outside(week.storage / tick["run_name"]) / "results.json").read_text())
        assert results["counts"]["completed"] == TRIALS, (faults[number], results["counts"])
        for trial in results["trials"]:
            assert [h["epoch"] for h in trial["history"]] == list(range(1, EPOCHS + 1)), (faults[number], trial)
        trial_ids[key] = {t["trial_id"] for t in results["trials"]}
    moved = tune_result_rows(week.outside(week.storage / ticks[0][1]["run_name"]))[on_worker["trial_id"]]
    assert moved[-1]["node_id"] != killed_node and [r["epoch"] for r in moved].count(1) == 1, moved
    two = json.loads((week.outside(week.storage / ticks[1][1]["run_name"]) / "results.json").read_text())
    assert max(h["timestamp"] for t in two["trials"] for h in t["history"]) > outage, "tick 2 ended before the outage"
    rows = tune_result_rows(week.outside(week.storage / ticks[3][1]["run_name"]))
    assert any(r["iterations_since_restore"] < r["epoch"] for t in rows.values() for r in t), "tick 4: no restore"

    # MLflow: one parent per tick, its trials as children, every epoch once.
    client = MlflowClient(week.mlflow.url)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    parents = {r.data.tags["tick"]: r for r in runs if r.data.tags.get("role") == "sweep"}
    children = [r for r in runs if r.data.tags.get("role") == "trial"]
    assert len(parents) == TICKS and len(children) == TICKS * TRIALS, (len(parents), len(children))
    by_parent: dict[str, set[str]] = {}
    for child in children:
        by_parent.setdefault(child.data.tags["mlflow.parentRunId"], set()).add(child.data.tags["trial_id"])
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == list(range(1, EPOCHS + 1)), (child.data.tags["trial_id"], steps)
        assert child.data.tags["status"] == "completed"
    for number, (key, _) in enumerate(ticks, 1):
        parent = next(p for p in parents.values() if p.data.tags["mlflow.runName"].endswith(key))
        assert parent.data.tags["finalized"] == "true", faults[number]
        assert by_parent[parent.info.run_id] == trial_ids[key], faults[number]

    # The study: every trial of every tick, once.
    journal = optuna.storages.journal.JournalFileBackend(str(week.outside(week.storage / "smoke.schedule" /
                                                                          "study.journal")))
    study = optuna.load_study(study_name="smoke", storage=optuna.storages.JournalStorage(journal))
    in_study = [t.user_attrs[RAY_TRIAL_ID_ATTR] for t in study.trials]
    assert sorted(in_study) == sorted(set().union(*trial_ids.values()))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    # The champion: each tick's version moves it exactly when its val_loss beats every earlier one.
    champion, best = None, float("inf")
    for number, (key, _) in enumerate(ticks, 1):
        parent = next(p for p in parents.values() if p.data.tags["mlflow.runName"].endswith(key))
        version = parent.data.tags["registered_model_version"]
        score = float(client.get_model_version("smoke", version).tags["val_loss"])
        moved = score < best
        assert parent.data.tags["champion_moved"] == str(moved).lower(), (faults[number], score, best)
        decision = parent.data.tags["champion_decision"]
        if moved:
            champion, best = version, score
            assert decision.startswith(f"version {version} "), decision
        else:
            assert decision.startswith(f"kept version {champion}:"), decision
    assert len({p.data.tags["registered_model_version"] for p in parents.values()}) == TICKS
    assert str(client.get_model_version_by_alias("smoke", "champion").version) == champion
