"""Searcher and tracking overhead: Optuna ask+tell milliseconds per trial as the study grows to
500 trials (in memory and in a journal file), and MLflow milliseconds per logged epoch (SQLite
store and HTTP server) as a share of a full-MNIST epoch."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna

from bench.common import mnist_dir, progress, scale_argument, write_result
from search.engine.optuna_bridge import open_storage
from search.engine.storage import ExperimentDir
from search.engine.tuner import tpe_startup_trials
from search.tracking.recorder import MlflowRecorder, TrackingTarget, ensure_sqlite_store
from spaces import load_sweep

CHECKPOINTS = (10, 50, 100, 250, 500)


def ask_tell_ms(storage: str | None, trials: int) -> dict[int, float]:
    """Milliseconds of one ask + tell, averaged around each checkpoint size of the study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {k: d.to_optuna() for k, d in load_sweep("default").searched().items()}
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=tpe_startup_trials(trials), multivariate=True,
                                         constant_liar=True)
    study = optuna.create_study(storage=open_storage(storage), sampler=sampler, study_name="bench")
    rng, durations = random.Random(0), []
    for _ in range(trials):
        started = time.perf_counter()
        trial = study.ask(space)
        study.tell(trial, rng.random())
        durations.append((time.perf_counter() - started) * 1000)
    return {n: statistics.mean(durations[max(0, n - 10):n]) for n in CHECKPOINTS if n <= trials}


def log_epoch_ms(tracking_uri: str, folder: Path, epochs: int) -> float:
    """Milliseconds to log one epoch's metrics (one log_batch) to a child run."""
    ensure_sqlite_store(tracking_uri)
    recorder = MlflowRecorder(TrackingTarget(tracking_uri, "bench-tracking", "bench-run",
                                             (folder / "art").as_uri()), ExperimentDir(str(folder), "run"))
    recorder.attach_parent({}, {})
    recorder.remember_config("t1", {"lr": 0.001})
    recorder.ensure_child("t1")
    durations = []
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch, "train_loss": 0.1, "train_acc": 0.9, "val_loss": 0.1, "val_acc": 0.9,
               "epoch_seconds": 8.0, "timestamp": time.time()}
        started = time.perf_counter()
        recorder.log_epochs("t1", [row], {"node_id": "n"})
        durations.append((time.perf_counter() - started) * 1000)
    return statistics.median(durations)


def http_server(folder: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port",
                             str(port), "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                             "--artifacts-destination", str(folder / "server-art"), "--workers", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("mlflow server did not start")


def reference_epoch_s(subset: int | None) -> float:
    """One epoch (train + validation) on one thread, the unit the shares are of (full MNIST but in smoke)."""
    import torch

    from trainables.data import load_data
    from trainables.train import TrainingRun, TrainParams

    torch.set_num_threads(1)
    run = TrainingRun(TrainParams(epochs=1), load_data("mnist", mnist_dir(), subset=subset))
    started = time.perf_counter()
    run.run_epoch()
    return time.perf_counter() - started


SETTINGS = {"smoke": {"trials": 20, "epochs": 10, "subset": 600}, "quick": {"trials": 250, "epochs": 100,
            "subset": None}, "full": {"trials": 500, "epochs": 100, "subset": None}}


def run(settings: dict[str, Any]) -> dict[str, Any]:
    trials, epochs = settings["trials"], settings["epochs"]
    results: dict[str, Any] = {"study_trials": trials}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, storage in (("memory", None), ("journal", str(folder / "study.journal"))):
            progress(f"optuna ask+tell, {name} storage, {trials} trials")
            results[f"optuna_ask_tell_ms_{name}"] = ask_tell_ms(storage, trials)
        progress("mlflow log_batch per epoch, SQLite")
        results["mlflow_ms_per_epoch_sqlite"] = log_epoch_ms(f"sqlite:///{folder / 'mlflow.db'}", folder / "a", epochs)
        proc, url = http_server(folder)
        try:
            progress(f"mlflow log_batch per epoch, HTTP ({url})")
            results["mlflow_ms_per_epoch_http"] = log_epoch_ms(url, folder / "b", epochs)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    epoch_s = reference_epoch_s(settings["subset"])
    results["reference_epoch_s"] = epoch_s
    for key in ("mlflow_ms_per_epoch_sqlite", "mlflow_ms_per_epoch_http"):
        results[key.replace("ms_per_epoch", "share_of_epoch")] = results[key] / 1000 / epoch_s
    # A trial asks once and tells once; spread over its epochs (12 in the default sweep):
    results["optuna_share_of_trial_at_max"] = (max(results["optuna_ask_tell_ms_journal"].values()) / 1000
                                               / (12 * epoch_s))
    progress(f"mlflow {results['mlflow_share_of_epoch_sqlite']:.2%} (SQLite), "
             f"{results['mlflow_share_of_epoch_http']:.2%} (HTTP) of an epoch; optuna "
             f"{results['optuna_share_of_trial_at_max']:.3%} of a trial at {trials} trials")
    results["goal_share"] = 0.01
    return results


def main() -> None:
    scale = scale_argument(__doc__)
    write_result("tracking_overhead", scale, run(SETTINGS[scale]))


if __name__ == "__main__":
    main()
