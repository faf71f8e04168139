"""Running sweeps from benchmarks through the product's own path (`run_sweep`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import mnist_dir, progress
from search.cli import prepare_tracking
from search.commands.run import run_sweep
from search.settings import RunOptions
from spaces import validate_sweep


def sweep(document: dict[str, Any], storage: Path, run_name: str, optuna_class: type | None = None
          ) -> dict[str, Any]:
    """Run a sweep given as a sweep-file mapping (with another Optuna searcher, if given); return its
    results.json payload."""
    document = {**document, "storage": str(storage)}
    if "trainable" not in document:  # a trainable of one's own loads its own data
        document.setdefault("data", {})
        if mnist_dir() and document["data"].get("dataset", "mnist") == "mnist":
            document["data"] = {**document["data"], "dir": mnist_dir()}
    config = validate_sweep(document)
    if config.code_folders():
        import ray

        # Ray takes a job's runtime environment (here: the folder of the sweep's own code) when it
        # starts, and a later sweep in this process would reuse the earlier one's: start afresh.
        ray.shutdown()
    progress(f"sweep {run_name}: {config.trial_count()} trials × {config.epochs} epochs")
    prepare_tracking()  # what `tune run` sets up before a sweep
    outcome = run_sweep(config, RunOptions(run_name=run_name, as_json=True), optuna_class)
    if outcome.exit_code != 0:
        raise RuntimeError(f"sweep {run_name} exited {outcome.exit_code}")
    return outcome.payload


def test_accuracy_of_every_trial(results: dict[str, Any], document: dict[str, Any]) -> dict[str, float]:
    """Each trial's best-validation checkpoint evaluated on the test split, by trial id.

    A sweep evaluates only the models it chooses; the seed's table has no choosing (every
    configuration is the experiment), so the benchmark measures each one itself.
    """
    from ray import tune

    from trainables.data import load_data
    from trainables.train import evaluate_on_test
    from trainables.trainable import load_checkpoint_model

    data = document.get("data", {})
    test = load_data(data.get("dataset", "mnist"), mnist_dir(), subset=data.get("subset"),
                     split_seed=data.get("split_seed", 0)).test
    accuracies = {}
    for trial in results["trials"]:
        with tune.Checkpoint(trial["checkpoint"]).as_directory() as directory:
            model = load_checkpoint_model(directory, trial["config"])
        accuracies[trial["trial_id"]] = evaluate_on_test(model, test)["test_acc"]
    return accuracies


def trial_busy_seconds(trial: dict[str, Any]) -> float:
    """From the start of a trial's first epoch to the end of its last, from its history."""
    history = trial["history"]
    return history[-1]["timestamp"] - (history[0]["timestamp"] - history[0]["epoch_seconds"])
