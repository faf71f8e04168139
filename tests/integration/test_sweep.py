"""`tune run smoke` end to end on a real local Ray: ASHA, the Optuna study, results.json, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from search.engine.optuna_bridge import RAY_TRIAL_ID_ATTR
from search.engine.storage import STUDY_FILE
from search.engine.trials import tune_result_rows
from search.tracking.registry import load_model
from tests.conftest import run_cli
from trainables.data import load_data
from trainables.model import SeedNet
from trainables.train import as_tensors, evaluate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, mnist_dir):
    """One `tune run smoke` (local Ray started by the CLI) shared by the assertions below."""
    import os

    storage = tmp_path_factory.mktemp("smoke")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    result = run_cli(["run", "smoke", "--name", "smoke-test", "--set", f"storage={storage}", "--json"], env)
    experiment = storage / "smoke-test"
    payload = json.loads((experiment / "results.json").read_text()) if result.returncode == 0 else None
    return result, storage, experiment, payload


def test_smoke_exits_0_with_a_summary(smoke):
    result, storage, _, _ = smoke
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batch norm × skip" in result.stderr and "best trial" in result.stderr
    assert f"mlflow ui --backend-store-uri sqlite:///{storage}/mlflow.db" in result.stderr


def test_json_flag_prints_exactly_one_json_document_on_stdout(smoke):
    result, _, _, payload = smoke
    assert json.loads(result.stdout) == payload  # Ray's tables and hints went to stderr
    assert "Configuration for experiment" in result.stderr
    assert "TensorBoard" not in result.stdout + result.stderr


def test_the_end_of_a_run_names_the_runs_page_of_the_ui(smoke):
    result, storage, _, payload = smoke
    experiment_id = MlflowClient(f"sqlite:///{storage}/mlflow.db").get_experiment_by_name("smoke").experiment_id
    url = f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"
    assert f"compare the trials: {url}" in result.stderr
    assert payload["mlflow"]["runs_url"] == url


def test_the_ablation_reports_validation_and_the_test_accuracy_of_each_groups_best_trial(smoke):
    _, _, _, payload = smoke
    by_id = {t["trial_id"]: t for t in payload["trials"]}
    evaluated = {t["trial_id"] for t in payload["trials"] if t["test_acc"] is not None}
    groups = [row for row in payload["ablation"] if row["trials"]]
    assert evaluated == {row["best_trial"] for row in groups}  # nothing else ever saw the test split
    for row in groups:
        members = [t for t in payload["trials"] if (t["config"]["batch_norm"], t["config"]["skip"])
                   == (row["batch_norm"], row["skip"]) and t["status"] != "errored"]
        best = min(members, key=lambda t: t["val_loss"])
        assert row["best_trial"] == best["trial_id"]
        assert row["best_trial_test_acc"] == by_id[best["trial_id"]]["test_acc"]
        assert "best_test_acc" not in row and "mean_test_acc" not in row
    assert all("test_acc" not in h for t in payload["trials"] for h in t["history"])


def test_results_json_holds_every_trial_and_the_best(smoke):
    _, _, experiment, payload = smoke
    assert payload["status"] == "finished" and payload["num_trials"] == 8
    assert sum(payload["counts"].values()) == 8 and payload["counts"]["errored"] == 0
    assert payload["counts"]["early_stopped"] >= 1, "ASHA stopped no trial"
    best = payload["best"]
    assert 0.5 < best["test_acc"] <= 1 and best["val_loss"] == min(
        t["val_loss"] for t in payload["trials"] if t["val_loss"] is not None)
    for trial in payload["trials"]:
        assert [h["epoch"] for h in trial["history"]] == list(range(1, trial["epochs"] + 1))
    assert len(payload["ablation"]) == 4
    assert payload["storage"] == str(experiment)


def test_optuna_study_marks_asha_stopped_trials_pruned(smoke):
    _, _, experiment, payload = smoke
    study = optuna.load_study(study_name="smoke", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(experiment / STUDY_FILE))))
    states = {t.user_attrs[RAY_TRIAL_ID_ATTR]: t.state for t in study.trials}
    expected = {"completed": TrialState.COMPLETE, "early_stopped": TrialState.PRUNED}
    assert states == {t["trial_id"]: expected[t["status"]] for t in payload["trials"]}
    assert TrialState.PRUNED in states.values()


def test_the_study_holds_every_epoch_each_trial_ran_and_the_reported_scores(smoke):
    _, _, experiment, payload = smoke
    study = optuna.load_study(study_name="smoke", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(experiment / STUDY_FILE))))
    by_id = {t.user_attrs[RAY_TRIAL_ID_ATTR]: t for t in study.trials}
    for trial in payload["trials"]:
        told = by_id[trial["trial_id"]]
        assert told.intermediate_values == {h["epoch"]: h["val_loss"] for h in trial["history"]}, trial["trial_id"]
        if trial["status"] == "completed":
            assert told.state == TrialState.COMPLETE and told.value == trial["score"]


def test_mlflow_holds_one_parent_and_a_child_per_trial_with_full_histories(smoke):
    _, storage, _, payload = smoke
    client = MlflowClient(f"sqlite:///{storage}/mlflow.db")
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 8 == len(runs) - 1
    by_trial = {t["trial_id"]: t for t in payload["trials"]}
    for child in children:
        trial = by_trial[child.data.tags["trial_id"]]
        assert child.data.tags["status"] == trial["status"]
        assert child.data.params["lr"] == str(trial["config"]["lr"])
        assert not {"optimizer", "lr_schedule", "augment"} & set(child.data.params)  # not set by smoke.yaml
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == list(range(1, trial["epochs"] + 1))
        assert set(child.data.metrics) >= {"train_loss", "train_acc", "val_loss", "val_acc", "epoch",
                                           "epoch_seconds"}
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_test_acc"] == payload["best"]["test_acc"]
    assert parent.data.params["search.algorithm"] == "optuna"
    for tag in ("ray_version", "torch_version", "optuna_version", "mlflow_version", "dataset_sha256", "host"):
        assert parent.data.tags[tag]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary", "plots", "sweep"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/optimization_history.png" in plots and "plots/param_importances.png" in plots


def test_best_model_is_registered_and_reproduces_the_test_accuracy(smoke, mnist_dir, monkeypatch):
    _, storage, _, payload = smoke
    uri = f"sqlite:///{storage}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    version = MlflowClient().get_model_version_by_alias("smoke", "best")
    assert version.tags["trial_id"] == payload["best"]["trial_id"]
    # MLflow refuses anything pickled when told to: both ways of loading still work.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    model = load_model("models:/smoke@best", tracking_uri=uri)
    assert isinstance(model, SeedNet) and not model.training
    data = load_data("mnist", mnist_dir, subset=2000, split_seed=0)
    _, accuracy = evaluate(model, as_tensors(data.test))
    assert accuracy == pytest.approx(payload["best"]["test_acc"], abs=1e-9)
    exported = mlflow.pytorch.load_model("models:/smoke@best")
    images = torch.from_numpy(np.ascontiguousarray(data.test.images[:300]))
    with torch.no_grad():
        logits = exported(images)
        assert logits.shape == (300, 10)
        assert torch.allclose(logits, model(images), atol=1e-5)
    files = {Path(f.path).name for f in MlflowClient().list_artifacts(version.run_id, "model/data")}
    assert "model.pt2" in files and "model.pth" not in files


def test_ray_tune_ls_reads_the_experiment(smoke, base_env):
    _, _, experiment, _ = smoke
    result = run_cli(["ls", str(experiment), "--columns", "trial_id,training_iteration"], base_env)
    assert result.returncode == 0, result.stderr
    assert "training_iteration" in result.stdout


@pytest.mark.parametrize("sweep, trials", [("seed_bn", 4), ("seed_skip", 4), ("smoke", 8)])
def test_dry_run_counts_trials_and_starts_nothing(base_env, tmp_path: Path, sweep, trials):
    result = run_cli(["run", sweep, "--dry-run", "--set", f"storage={tmp_path / 'out'}"], base_env)
    assert result.returncode == 0
    assert f"trials: {trials}" in result.stdout and "epoch budget" in result.stdout
    assert not (tmp_path / "out").exists()


def test_sync_mlflow_uploads_no_file_the_run_folder_names(smoke, base_env, tmp_path):
    """A run folder is not trusted to name files of this machine: its sweep.json `source` is not uploaded."""
    import shutil

    _, _, experiment, _ = smoke
    copy = tmp_path / "runs" / "smoke-test"
    shutil.copytree(experiment, copy)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    sweep = json.loads((copy / "sweep.json").read_text())
    (copy / "sweep.json").write_text(json.dumps({**sweep, "source": str(secret)}))
    store = f"sqlite:///{tmp_path / 'replayed.db'}"
    result = run_cli(["sync-mlflow", str(copy), "--tracking-uri", store], base_env)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store)
    parent = client.search_runs([client.get_experiment_by_name("smoke").experiment_id],
                                filter_string="tags.role = 'sweep'")[0]
    uploaded = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert uploaded == {"sweep.json"}


def test_sync_mlflow_registers_the_scores_a_checkpoint_measures_not_those_results_json_claims(
        smoke, base_env, tmp_path):
    """results.json is not trusted: the best model is measured again from its checkpoint (found in the
    folder being replayed, wherever the run was) before it is registered with its scores."""
    import shutil

    _, _, experiment, payload = smoke
    copy = tmp_path / "moved" / "smoke-test"
    shutil.copytree(experiment, copy)
    results = json.loads((copy / "results.json").read_text())
    results["best"].update(val_loss=1e-06, val_acc=0.9999, test_acc=0.9999)
    (copy / "results.json").write_text(json.dumps(results))
    store = f"sqlite:///{tmp_path / 'replayed.db'}"
    result = run_cli(["sync-mlflow", str(copy), "--tracking-uri", store], base_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "results.json says val_loss 1e-06, its checkpoint measures" in result.stderr
    client = MlflowClient(store)
    (version,) = client.search_model_versions("name = 'smoke'")
    best = payload["best"]
    assert float(version.tags["val_loss"]) == pytest.approx(best["val_loss"], abs=1e-5)
    assert float(version.tags["test_acc"]) == pytest.approx(best["test_acc"], abs=1e-9)
    parent = client.get_run(version.run_id)
    assert parent.data.tags["best_checkpoint"].startswith(f"{copy}/")


def test_sync_mlflow_refuses_to_switch_stores_silently(smoke, base_env):
    _, _, experiment, _ = smoke
    env = {**base_env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9/elsewhere"}
    result = run_cli(["sync-mlflow", str(experiment)], env)
    assert result.returncode == 2
    assert "MLFLOW_TRACKING_URI http://127.0.0.1:9/elsewhere differs from" in result.stderr
    assert result.stderr.count("\n") == 1


class _Plant:
    """Unpickling this writes a file: what a crafted run folder could make a reader do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code from the run folder ran"))


def test_sync_mlflow_never_unpickles_what_a_run_folder_holds(smoke, base_env, tmp_path):
    """Tune's experiment state embeds pickles; `sync-mlflow` reads only its JSON fields and the
    trials' JSON files, and replays the same trials the run itself reported."""
    import contextlib
    import shutil

    import cloudpickle
    from ray.tune import ExperimentAnalysis

    _, _, experiment, payload = smoke
    copy = tmp_path / "runs" / "smoke-test"
    shutil.copytree(experiment, copy)
    marker = tmp_path / "planted.txt"
    state_file = next(copy.glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        trial["storage"] = {"_type": "CLOUDPICKLE_FALLBACK", "value": cloudpickle.dumps(_Plant(str(marker))).hex()}
        entry[0] = json.dumps(trial)
    state_file.write_text(json.dumps(state))
    with contextlib.suppress(Exception):  # whatever Tune makes of the planted object afterwards
        ExperimentAnalysis(str(copy))
    assert marker.exists(), "the planted pickle is not live: this test would prove nothing"
    marker.unlink()

    store = f"sqlite:///{tmp_path / 'replayed.db'}"
    result = run_cli(["sync-mlflow", str(copy), "--tracking-uri", store], base_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not marker.exists()
    client = MlflowClient(store)
    children = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], "tags.role = 'trial'")
    replayed = {c.data.tags["trial_id"]: c for c in children}
    assert sorted(replayed) == sorted(t["trial_id"] for t in payload["trials"])
    for trial in payload["trials"]:
        child = replayed[trial["trial_id"]]
        assert child.data.tags["status"] == trial["status"]
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == [h["epoch"] for h in trial["history"]]


def test_tune_predict_classifies_image_files_as_the_model_does(smoke, mnist_dir, tmp_path):
    """PNG files of test digits, light on dark as in MNIST and inverted as on paper: `tune predict`
    gives the classes the registered model gives the same digits in memory."""
    from PIL import Image

    from trainables.data import DATASETS

    _, storage, _, _ = smoke
    spec = DATASETS["mnist"]
    data = load_data("mnist", mnist_dir, subset=2000, split_seed=0)
    images = data.test.images[:12]
    paths = []
    for i, image in enumerate(images):
        pixels = np.rint((image[0] * spec.std + spec.mean) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"digit{i}.png")
        Image.fromarray(255 - pixels).resize((56, 56)).save(tmp_path / f"paper{i}.png")  # any size
        paths += [str(tmp_path / f"digit{i}.png"), str(tmp_path / f"paper{i}.png")]
    import os

    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    result = run_cli(["predict", *paths, "--model", "models:/smoke@best", "--storage", str(storage), "--json"],
                     env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = json.loads(result.stdout)
    model = load_model("models:/smoke@best", tracking_uri=f"sqlite:///{storage}/mlflow.db")
    with torch.no_grad():
        expected = model(torch.from_numpy(np.ascontiguousarray(images))).argmax(1).tolist()
    assert [p["class"] for p in predictions[0::2]] == expected  # exactly the model's answers
    agree = sum(p["class"] == e for p, e in zip(predictions[1::2], expected, strict=True))
    assert agree >= 10  # inverted and resized 2×: the same digit, seen through one more resampling
    assert all(abs(sum(t["probability"] for t in p["top"]) - 1) < 1 and len(p["top"]) == 3 for p in predictions)
    text = run_cli(["predict", paths[0], "--model", "models:/smoke@best", "--storage", str(storage)], env,
                   cwd=tmp_path)
    assert text.returncode == 0 and text.stdout.startswith(f"{paths[0]}: {expected[0]} (p ")
    missing = run_cli(["predict", str(tmp_path / "nope.png"), "--model", "models:/smoke@best", "--storage",
                       str(storage)], env, cwd=tmp_path)
    assert missing.returncode == 2 and "nope.png: no such file" in missing.stderr


def test_the_loop_s_optional_keys_reach_the_trials_and_mlflow(base_env, tmp_path, ray_head):
    """A sweep that searches the optimizer and sets a schedule and augmentation: every trial trains with
    them, and they are its params in MLflow."""
    result = run_cli(["run", "smoke", "--name", "loop-keys", "--set", f"storage={tmp_path}", "--json",
                      "--address", ray_head.address, "--set", "search.num_samples=3", "--set", "epochs=2",
                      "--set", "space.optimizer={choice: [adamw, sgd]}", "--set", "lr_schedule=onecycle",
                      "--set", "augment=shift", "--set", "lr=0.01"], base_env)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    configs = [t["config"] for t in payload["trials"]]
    assert len(configs) == 3 and {c["optimizer"] for c in configs} <= {"adamw", "sgd"}
    assert all(c["lr_schedule"] == "onecycle" and c["augment"] == "shift" for c in configs)
    assert payload["counts"]["errored"] == 0 and "optimizer" in payload["levels"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("smoke")
    children = client.search_runs([experiment.experiment_id], "tags.role = 'trial'")
    assert len(children) == 3
    assert all(c.data.params["lr_schedule"] == "onecycle" and c.data.params["optimizer"] in ("adamw", "sgd")
               for c in children)


def test_a_trial_in_a_reused_process_trains_exactly_as_one_in_a_fresh_process(base_env, tmp_path, ray_head):
    """Trial processes are reused between trials (Tune's `reuse_actors`): four trials of one configuration,
    one at a time, with dropout, shifts and OneCycle (RNG and schedule state), give the same numbers in a
    process that already ran a trial as in a fresh one."""
    fixed = {"batch_norm": "true", "skip": "true", "lr": "0.003", "l2": "0.0001", "dropout": "0.2",
             "batch_size": "64", "augment": "shift", "lr_schedule": "onecycle"}
    result = run_cli(["run", "smoke", "--name", "reuse", "--set", f"storage={tmp_path}", "--json",
                      "--address", ray_head.address, "--set", "scheduler.type=fifo", "--set", "search.num_samples=4",
                      "--set", "search.max_concurrent_trials=1", "--set", "epochs=2", "--set", "data.subset=1000",
                      *(a for k, v in fixed.items() for a in ("--set", f"{k}={v}"))], base_env)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = json.loads(result.stdout)["trials"]
    rows = tune_result_rows(tmp_path / "reuse")
    pids = [rows[t["trial_id"]][0]["pid"] for t in sorted(trials, key=lambda t: t["history"][0]["timestamp"])]
    assert len(set(pids)) < len(pids), f"no process ran two trials: {pids}"
    numbers = {(tuple(h["train_loss"] for h in t["history"]), tuple(h["val_loss"] for h in t["history"]))
               for t in trials}
    assert len(numbers) == 1, numbers
