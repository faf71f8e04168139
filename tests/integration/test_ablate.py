"""`tune ablate` on a finished run of the quick sweep: batch norm × skip × 3 seeds on a subset, its
effects printed, in results.json and in MLflow (a parent tagged as an ablation, a child per run)."""

from __future__ import annotations

import json
import os

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ablation(tmp_path_factory, mnist_dir, ray_head):
    folder = tmp_path_factory.mktemp("ablate")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    source = run_cli(["run", "quick", "--name", "quick-small", "--num-samples", "4", "--set", "epochs=2",
                      "--set", "data.subset=600", "--set", "search.time_budget_s=null", "--address", ray_head.address],
                    env, cwd=folder)
    assert source.returncode == 0, source.stderr[-3000:]
    result = run_cli(["ablate", "quick-small", "--factors", "batch_norm,skip", "--seeds", "3", "--epochs", "2",
                      "--name", "ab", "--address", ray_head.address, "--json"], env, cwd=folder)
    return result, folder / "runs"


def test_the_ablation_trains_every_combination_and_reports_paired_effects(ablation):
    result, storage = ablation
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    source = json.loads((storage / "quick-small" / "results.json").read_text())["best"]["config"]
    assert payload["num_trials"] == 12 and payload["counts"]["completed"] == 12
    combos = {(t["config"]["batch_norm"], t["config"]["skip"], t["config"]["seed"]) for t in payload["trials"]}
    assert combos == {(bn, skip, seed) for bn in (False, True) for skip in (False, True) for seed in range(3)}
    for trial in payload["trials"]:  # the other keys at the source run's best configuration
        assert trial["config"]["lr"] == source["lr"] and trial["config"]["batch_size"] == source["batch_size"]
        assert trial["test_acc"] is not None and trial["epochs"] == 2  # every run evaluated, full budget
    effects = payload["ablation_effects"]
    assert effects["factors"] == {"batch_norm": [False, True], "skip": [False, True]} and effects["seeds"] == 3
    contrasts = {(e["contrast"], e["metric"]) for e in effects["effects"]}
    for contrast in ("batch_norm: True − False", "skip: True − False", "batch_norm × skip (interaction)"):
        assert {(contrast, m) for m in ("test_acc", "val_acc", "test_loss", "val_loss")} <= contrasts
    assert all(e["n"] == 3 and "bootstrap" in e["method"] for e in effects["effects"])
    assert "effects (3 seeds, paired by seed" in result.stderr and "batch_norm: True − False" in result.stderr
    assert json.loads((storage / "ab" / "results.json").read_text())["ablation_effects"] == effects


def test_the_ablation_lands_in_mlflow_linked_to_its_source(ablation):
    result, storage = ablation
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{storage}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("quick-ablate").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 12 and all("test_acc" in c.data.metrics for c in children)
    assert parent.data.tags["ablation"] == "batch_norm,skip"
    assert parent.data.tags["ablation_source"] == str(storage / "quick-small")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "ablation")}
    assert {"ablation/effects.json", "ablation/effects.txt", "ablation/forest_test_acc.png"} <= artifacts


@pytest.mark.parametrize("args, expected", [
    (["--factors", "bogus"], "--factors bogus: not a key of quick's space"),
    (["--factors", "lr"], "--factors lr: a numeric key has no levels of its own; give them with --levels lr=A,B"),
    (["--factors", "skip", "--levels", "skip=true"], "--factors skip: has one level (True)"),
    (["--factors", "skip", "--seeds", "0"], "--seeds 0: must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(ablation, args, expected):
    _, storage = ablation
    env = dict(os.environ)
    result = run_cli(["ablate", "quick-small", "--dry-run", *args], env, cwd=storage.parent)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr


def test_a_run_that_does_not_exist_is_one_line(tmp_path):
    result = run_cli(["ablate", "no-such-run", "--factors", "skip"], dict(os.environ), cwd=tmp_path)
    assert result.returncode == 2 and "no-such-run: neither a finished run in runs nor a sweep file" in result.stderr
