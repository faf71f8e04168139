"""Cloud storage as a full home, against a loopback S3 server (moto's): the latest run is found
there, a resume reads everything back from it, and the Optuna study lives with the run."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import optuna
import pyarrow.fs
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileBackend

from search.engine.storage import STUDY_FILE, SWEEP_FILE, ExperimentDir, latest_run
from tests.conftest import free_port, run_cli, running_s3_server, start_cli, stop_process

pytestmark = pytest.mark.slow

EPOCHS = 4
TRIALS = 8


def test_latest_run_and_downloads_work_on_s3(s3_server, tmp_path):
    storage = s3_server.uri("sweeps")
    assert latest_run(storage, "smoke") is None  # nothing there yet: not an error
    for name, sweep in (("smoke-1", "smoke"), ("smoke_x-2", "smoke_x"), ("smoke-3", "smoke")):
        ExperimentDir(storage, name).write_json(SWEEP_FILE, {"name": sweep})
        time.sleep(1.1)  # S3 keeps modification times to the second
    ExperimentDir(storage, "smoke-4").write_json("results.json", {})  # no sweep.json: not a run
    assert latest_run(storage, "smoke") == "smoke-3"
    assert latest_run(storage, "smoke_x") == "smoke_x-2"

    run = ExperimentDir(storage, "smoke-3")
    assert run.download(SWEEP_FILE, tmp_path / "copy" / SWEEP_FILE)
    assert json.loads((tmp_path / "copy" / SWEEP_FILE).read_text()) == {"name": "smoke"}
    assert not run.download(STUDY_FILE, tmp_path / "copy" / STUDY_FILE)
    # The working copy of a cloud run's study: relative, so any driver folder finds its own copy.
    journal = run.study_journal()
    assert not journal.is_absolute() and journal.name == STUDY_FILE
    assert journal != ExperimentDir(s3_server.uri("other"), "smoke-3").study_journal()


def s3_files(storage: str, run_name: str) -> list[str]:
    fs, root = pyarrow.fs.FileSystem.from_uri(f"{storage}/{run_name}")
    selector = pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True)
    return [info.path.removeprefix(root + "/") for info in fs.get_file_info(selector)]


def read_s3(uri: str) -> bytes:
    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def snapshot_with_checkpoints(storage: str) -> bool:
    name = latest_run(storage, "smoke")
    if name is None:
        return False
    files = s3_files(storage, name)
    return (any(f.startswith("experiment_state") for f in files)
            and sum("/checkpoint_" in f and f.endswith("/meta.json") for f in files) >= 2)


def test_a_run_on_s3_resumes_without_its_name_and_keeps_its_study_there(s3_server, base_env, tmp_path, mnist_dir):
    env = {**base_env, **s3_server.env}
    storage = s3_server.uri("sweeps")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first_dir, second_dir = tmp_path / "laptop", tmp_path / "new-head"
    first_dir.mkdir()
    second_dir.mkdir()
    first = start_cli(["run", "smoke", "--storage", storage, "--tracking-uri", store, "--set", "scheduler.type=fifo",
                       "--set", f"epochs={EPOCHS}"], env, tmp_path / "first.log", cwd=first_dir)
    try:
        # Interrupt once Tune has uploaded a snapshot and trials have checkpointed to S3.
        deadline = time.time() + 240
        while not snapshot_with_checkpoints(storage):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no snapshot on S3 within 240 s"
            time.sleep(1)
        os.kill(first.pid, signal.SIGINT)
        assert first.wait(timeout=180) == 130, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        stop_process(first)
    run_name = latest_run(storage, "smoke")
    log = (tmp_path / "first.log").read_text()
    assert f"resume with: tune run smoke --name {run_name} --storage {storage} --tracking-uri {store}" in log
    assert not (first_dir / "runs" / "mlflow.db").exists()  # the store named by --tracking-uri, saved

    # Another folder (a new head node): no local state at all, everything comes back from S3.
    second = run_cli(["run", "smoke", "--storage", storage, "--resume"], env, cwd=second_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming {storage}/{run_name}" in second.stderr
    results = json.loads(read_s3(f"{storage}/{run_name}/results.json"))
    assert results["status"] == "finished" and results["num_trials"] == TRIALS
    for trial in results["trials"]:
        assert [h["epoch"] for h in trial["history"]] == list(range(1, EPOCHS + 1)), trial

    # The study lives with the run: download it and read it with plain Optuna.
    journal = tmp_path / STUDY_FILE
    journal.write_bytes(read_s3(f"{storage}/{run_name}/{STUDY_FILE}"))
    study = optuna.load_study(study_name="smoke",
                              storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
    assert len(study.trials) == TRIALS
    assert all(t.state.is_finished() for t in study.trials), [t.state for t in study.trials]
    ray_ids = sorted(t.user_attrs["ray_trial_id"] for t in study.trials)
    assert ray_ids == sorted(t["trial_id"] for t in results["trials"])

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert sum(r.data.tags.get("role") == "sweep" for r in runs) == 1
    assert sum(r.data.tags.get("role") == "trial" for r in runs) == TRIALS
    assert not (second_dir / "runs" / "mlflow.db").exists()
    assert (second_dir / Path(ExperimentDir(storage, run_name).study_journal())).exists()

    # The MLflow store stays where the driver ran; the bucket alone rebuilds it anywhere.
    laptop = f"sqlite:///{tmp_path / 'laptop.db'}"
    replay = run_cli(["sync-mlflow", f"{storage}/{run_name}", "--tracking-uri", laptop], env, cwd=second_dir)
    assert replay.returncode == 0, replay.stderr[-3000:]
    client = MlflowClient(laptop)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert sum(r.data.tags.get("role") == "sweep" for r in runs) == 1
    assert sum(r.data.tags.get("role") == "trial" for r in runs) == TRIALS


def test_a_schedule_on_s3_keeps_one_study_across_a_new_driver(s3_server, base_env, tmp_path, mnist_dir):
    env = {**base_env, **s3_server.env, "SWEEP_SCHEDULE_MIN_INTERVAL_S": "1"}  # ticks 2 s apart
    storage = s3_server.uri("nightly")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["schedule", "smoke", "--cron", "*/2 * * * * *", "--once", "--storage", storage, "--tracking-uri", store,
            "--set", "search.num_samples=3", "--set", "epochs=2", "--set", "data.subset=1000"]
    for folder in ("head-1", "head-2"):  # the second driver starts on a machine with no local copy
        (tmp_path / folder).mkdir()
        machine = {**env, "XDG_STATE_HOME": str(tmp_path / folder / "state")}
        result = run_cli(args, machine, cwd=tmp_path / folder)
        assert result.returncode == 0, result.stderr[-3000:]
        time.sleep(2.5)  # the next --once falls on a later tick
    assert "continuing the study kept at" in result.stderr

    journal = tmp_path / "study.journal"
    journal.write_bytes(read_s3(f"{storage}/smoke.schedule/study.journal"))
    study = optuna.load_study(study_name="smoke",
                              storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
    assert len(study.trials) == 6 and all(t.state.is_finished() for t in study.trials)
    client = MlflowClient(store)
    parents = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], "tags.role = 'sweep'")
    assert len({p.data.tags["tick"] for p in parents}) == 2


def refused(result) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Ray local" not in result.stderr and "Ray at" not in result.stderr  # before Ray starts
    return result.stderr.strip().splitlines()[-1]


def test_a_bucket_that_is_missing_or_refuses_the_credentials_is_one_line_before_ray_starts(
        s3_server, base_env, tmp_path, mnist_dir):
    env = {**base_env, **s3_server.env}
    missing = refused(run_cli(["run", "smoke", "--storage", "s3://no-such-bucket/sweeps"], env, cwd=tmp_path))
    assert missing == ("tune: error: storage s3://no-such-bucket/sweeps: cannot write there "
                       "(AWS Error NO_SUCH_BUCKET: The specified bucket does not exist)")

    nobody = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    unreachable = refused(run_cli(["run", "smoke", "--storage", s3_server.uri("sweeps")], nobody, cwd=tmp_path))
    assert unreachable.startswith(f"tune: error: storage {s3_server.uri('sweeps')}: cannot write there "
                                  "(AWS Error NETWORK_CONNECTION: ")

    with running_s3_server(tmp_path / "strict.log", check_credentials=True) as strict:
        wrong = {**env, **strict.env, "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG1"}
        denied = refused(run_cli(["run", "smoke", "--storage", strict.uri("sweeps")], wrong, cwd=tmp_path))
    assert denied == (f"tune: error: storage {strict.uri('sweeps')}: cannot write there (AWS Error "
                      "INVALID_ACCESS_KEY_ID: The AWS Access Key Id you provided does not exist in our records)")
    assert "AKIAWRONGWRONGWRONG1" not in denied


def running_trial(store: str, epochs: int) -> tuple[str, str] | None:
    """(trial id, node id) of a trial mid-way through its epochs, from the driver's MLflow store."""
    try:
        client = MlflowClient(store)
        experiment = client.get_experiment_by_name("smoke")
        children = client.search_runs([experiment.experiment_id], "tags.role = 'trial'") if experiment else []
    except Exception:  # the store is being created or written: look again
        return None
    for child in children:
        if 2 <= child.data.metrics.get("epoch", 0) <= epochs - 4 and child.data.tags.get("node_id"):
            return child.data.tags["trial_id"], child.data.tags["node_id"]
    return None


def test_on_a_cluster_with_s3_storage_a_lost_node_and_a_killed_driver_lose_nothing(
        s3_server, autoscaling_cluster, base_env, tmp_path, mnist_dir):
    """Trials checkpoint to S3; a worker node dies mid-trial and its trial continues on another node
    from the S3 checkpoint; the driver is SIGKILLed and `--resume`, from a folder with no local
    state, reads everything back from S3; `sync-mlflow` replays the run from the bucket."""
    cluster = autoscaling_cluster
    env = {**base_env, **s3_server.env, "HOME": str(cluster.home)}
    storage, store = s3_server.uri("sweeps"), f"sqlite:///{tmp_path / 'mlflow.db'}"
    epochs, trials = 10, 4
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    common = ["run", "smoke", "--address", cluster.address, "--storage", storage]
    driver = start_cli([*common, "--tracking-uri", store, "--set", "scheduler.type=fifo", "--set", f"epochs={epochs}",
                        "--set", "data.subset=12000", "--set", f"search.num_samples={trials}"],
                       env, tmp_path / "first.log", cwd=first_dir)
    try:
        deadline = time.time() + 240
        while (victim := running_trial(store, epochs)) is None:
            assert time.time() < deadline and driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.5)
        victim_trial, victim_node = victim
        cluster.kill_node(victim_node)
        time.sleep(5)
        assert driver.poll() is None, "the sweep ended before the driver was killed"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        stop_process(driver)

    second = run_cli([*common, "--resume"], env, cwd=second_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    run_name = latest_run(storage, "smoke")
    results = json.loads(read_s3(f"{storage}/{run_name}/results.json"))
    assert results["status"] == "finished" and results["num_trials"] == trials
    for trial in results["trials"]:  # every epoch on record, once
        assert [h["epoch"] for h in trial["history"]] == list(range(1, epochs + 1)), trial
    assert next(t for t in results["trials"] if t["trial_id"] == victim_trial)["node_id"] != victim_node
    client = MlflowClient(store)
    children = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], "tags.role = 'trial'")
    assert len(children) == trials
    for child in children:  # never started over: each epoch logged once
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == list(range(1, epochs + 1)), (child.data.tags["trial_id"], steps)

    replayed = f"sqlite:///{tmp_path / 'replayed.db'}"
    replay = run_cli(["sync-mlflow", f"{storage}/{run_name}", "--tracking-uri", replayed], env, cwd=second_dir)
    assert replay.returncode == 0, replay.stderr[-3000:]
    client = MlflowClient(replayed)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert sorted(r.data.tags.get("role") for r in runs) == ["sweep"] + ["trial"] * trials
