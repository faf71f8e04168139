"""The end of a sweep, in one place: what happens once its trials are done, idempotently.

Given the sweep's outcome in memory (`SweepEnd`: results, tags, the best model when this process
trained it) and its trials, `finish_sweep` records on the parent run the final test and summary
metrics, the summary files and plots, the best model measured (again, for a replayed run) and
registered, the champion decision for a scheduled tick, and its status: FINISHED, also for a run
that had ended already and was resumed or replayed (attaching to it reopened it). `tune run` calls
it at its end, `tune sync-mlflow` through `replay.sync_sweep`; running it twice changes nothing the
second time but the status, which it sets back to FINISHED.
"""

from __future__ import annotations

import csv
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.engine.storage import RESULTS_FILE
from search.report import TrialSummary, ablation_rows, config_keys
from search.tracking.recorder import MlflowRecorder
from spaces import SweepConfig

log = logging.getLogger(__name__)

FINALIZED_TAG = "finalized"
VERSION_TAG = "registered_model_version"


@dataclass
class SweepEnd:
    """How a sweep run ended: results.json's payload, the run's tags and, in the process that ran
    it, the best model and the recorder that tracked it (a replay finds both again)."""

    results: dict[str, Any] | None
    tags: dict[str, str] = field(default_factory=dict)
    best_model: Any = None
    recorder: MlflowRecorder | None = None
    # False when `results` was read back from a run folder (`tune sync-mlflow`): its scores are claims,
    # so the best model is measured again before it is registered or challenges `champion`.
    measured: bool = True


def finish_sweep(recorder: MlflowRecorder, config: SweepConfig, trials: Sequence[TrialSummary],
                 end: SweepEnd) -> str | None:
    """Test metrics of the evaluated trials, best metrics, summary artifacts and the registered best
    model, once per parent run. A scheduled tick (tag `schedule`) also lets its model challenge the
    `champion`.
    """
    client, parent = recorder.client, recorder.parent_id
    existing = client.get_run(parent).data.tags
    if existing.get(FINALIZED_TAG) == "true":  # a resumed or replayed run: it ended already, and ends FINISHED
        client.set_terminated(parent, status="FINISHED")
        return existing.get(VERSION_TAG)
    results, tags = end.results, end.tags
    best = results.get("best")
    _log_test_metrics(recorder, trials)
    _log_summary_metrics(recorder, results)
    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging)
        _write_summary_files(folder, trials, results)
        client.log_artifacts(parent, str(folder), "summary")
        from search.tracking.plots import write_plots

        plots = folder / "plots"
        plots.mkdir()
        if write_plots(trials, config, plots):
            client.log_artifacts(parent, str(plots), "plots")
    version = existing.get(VERSION_TAG)
    model_name = config.mlflow.registered_model or config.name
    if best and best.get("checkpoint"):
        client.set_tag(parent, "best_checkpoint", best["checkpoint"])
    if best and best.get("checkpoint") and version is None:
        registered = _register_best(recorder, config, best, end.best_model, end.measured)
        version = registered.version if registered else None
    if version is not None:
        client.set_tag(parent, "registered_model", model_name)
        client.set_tag(parent, VERSION_TAG, version)
    if version is not None and tags.get("schedule"):
        from search.tracking.champion import decide_champion

        decision = decide_champion(client, model_name, version, config.metric, config.mode,
                                   _paired_rule(config, recorder.target.tracking_uri, model_name))
        client.set_tag(parent, "champion_moved", str(decision.moved).lower())
        client.set_tag(parent, "champion_version", decision.champion_version)
        client.set_tag(parent, "champion_decision", decision.reason)
        for key, value in decision.paired.items():
            client.set_tag(parent, f"champion_{key}", f"{value:.6g}")
        log.info("champion: %s", decision.reason)
    if best:
        client.set_tag(parent, "best_trial_id", best["trial_id"])
    if results.get("stop_reason"):  # search.stop ended the sweep before its trial budget
        client.set_tag(parent, "stop_reason", results["stop_reason"])
    client.set_tag(parent, FINALIZED_TAG, "true")
    client.set_terminated(parent, status="FINISHED")
    return version


def _paired_rule(config: SweepConfig, tracking_uri: str, model_name: str):  # type: ignore[no-untyped-def]
    """The paired rule for this sweep's models (None: compare the registered numbers): the seed network or a
    `model:` network on a built-in dataset, whose validation split this process can load."""
    import functools

    from search.tracking.champion import PairedRule

    if config.schedule.promote != "paired" or config.trainable or config.data.is_custom:
        return None

    @functools.cache
    def validation() -> tuple[Any, Any]:
        from trainables.data import load_data
        from trainables.train import as_tensors

        data = load_data(config.data.dataset, config.data.dir, subset=config.data.subset,
                         split_seed=config.data.split_seed)
        return as_tensors(data.val)

    def load(version: str) -> Any:
        from search.tracking.registry import load_model

        return load_model(f"models:/{model_name}/{version}", tracking_uri)

    return PairedRule(config.schedule.confidence, validation, load)


def _log_test_metrics(recorder: MlflowRecorder, trials: Sequence[TrialSummary]) -> None:
    """The test metrics the driver measured, on the child runs of the trials it evaluated."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    for trial in trials:
        if trial.test_acc is None or trial.trial_id not in recorder.children:
            continue
        step = trial.best_epoch or trial.epochs
        metrics = [Metric(key, float(value), now, step) for key, value in
                   (("test_loss", trial.test_loss), ("test_acc", trial.test_acc)) if value is not None]
        recorder.client.log_batch(recorder.children[trial.trial_id], metrics=metrics)


def _log_summary_metrics(recorder: MlflowRecorder, results: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    best = results.get("best") or {}
    values = {f"best_{k}": best.get(k) for k in ("val_loss", "val_acc", "test_loss", "test_acc")}
    values |= {f"trials_{k}": v for k, v in results["counts"].items()}
    values["wall_seconds"] = results.get("wall_seconds")
    metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None]
    recorder.client.log_batch(recorder.parent_id, metrics=metrics)


def _write_summary_files(folder: Path, trials: Sequence[TrialSummary], results: dict[str, Any]) -> None:
    (folder / RESULTS_FILE).write_text(_json(results))
    keys = config_keys(trials)
    columns = ["trial_id", "status", *keys, "epochs", "best_epoch", "val_loss", "val_acc",
               "test_loss", "test_acc", "node_id"]
    _write_csv(folder / "results.csv", [{c: getattr(t, c, None) if c not in keys
                                         else t.config.get(c) for c in columns} for t in trials], columns)
    rows = ablation_rows(trials)
    _write_csv(folder / "ablation_batch_norm_x_skip.csv", rows, list(rows[0]))
    for key, rows in (results.get("levels") or {}).items():
        if rows:
            _write_csv(folder / f"levels_{key}.csv", rows, list(rows[0]))


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _register_best(recorder: MlflowRecorder, config: SweepConfig, best: dict[str, Any],
                   model: Any = None, measured: bool = True):  # type: ignore[no-untyped-def]
    """Register the best trial's model: the one in memory, else the one in its checkpoint. A trainable
    of the user's is registered when its checkpoint holds an MLflow model (`mlflow_model/`); else None.

    Not `measured` (a replay of a run folder): the seed network's scores are measured again from its
    checkpoint on the validation and test splits, and those are what the version carries; a user
    trainable's version carries no scores, so it never challenges `champion`.
    """
    from search.tracking.registry import log_and_register, register_saved_model

    tags = {"sweep_run": recorder.target.run_name, "trial_id": best["trial_id"],
            config.metric: best.get("score"), "val_acc": best.get("val_acc"),
            "test_acc": best.get("test_acc"), "test_loss": best.get("test_loss")}
    if (config.model or config.data.is_custom) and model is None:
        log.warning("not registering the best model: rebuilding a `model:` network or loading a `data.dataset:` "
                    "callable means importing the code its run folder names, which tune sync-mlflow never does "
                    "(tune run registers it at its end)")
        return None
    if config.trainable:
        if not measured:  # a user's own model: nothing here can measure it again
            tags = {"sweep_run": tags["sweep_run"], "trial_id": tags["trial_id"],
                    "scores": "not measured (replayed from a run folder)"}
        return register_saved_model(recorder.target.tracking_uri, recorder.parent_id, best["checkpoint"],
                                    config.mlflow.registered_model or config.name,
                                    {k: v for k, v in tags.items() if v is not None})

    trial_config = {**best["config"], "epochs": config.epochs}
    if model is None:
        from ray import tune

        from trainables.trainable import load_checkpoint_model

        with tune.Checkpoint(best["checkpoint"]).as_directory() as directory:
            model = load_checkpoint_model(directory, trial_config, config.model)
    if not measured:
        measured_tags = _measure_again(config, model, best)
        if measured_tags is None:
            return None
        tags.update(measured_tags)
    saved_config = {**trial_config, "model": config.model} if config.model else trial_config
    return log_and_register(recorder.target.tracking_uri, recorder.parent_id, model, saved_config,
                            config.mlflow.registered_model or config.name,
                            {k: v for k, v in tags.items() if v is not None}, dataset=config.data.dataset)


def _measure_again(config: SweepConfig, model: Any, best: dict[str, Any]) -> dict[str, float] | None:
    """The best model's validation and test scores as its checkpoint gives them (not as results.json
    says); None, with a warning, when the data cannot be loaded here."""
    from core.errors import UserError
    from trainables.data import load_data
    from trainables.train import as_tensors, evaluate

    try:
        data = load_data(config.data.dataset, config.data.dir, subset=config.data.subset,
                         split_seed=config.data.split_seed)
    except (UserError, OSError) as err:
        log.warning("not registering the best model: its checkpoint must be measured again on %s, which is "
                    "not available here (%s)", config.data.dataset, err)
        return None
    val_loss, val_acc = evaluate(model, as_tensors(data.val))
    test_loss, test_acc = evaluate(model, as_tensors(data.test))
    measured = {"val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc}
    for key, recorded in (("val_loss", best.get("val_loss")), ("val_acc", best.get("val_acc")),
                          ("test_acc", best.get("test_acc"))):
        if not isinstance(recorded, (int, float)) or abs(recorded - measured[key]) > 1e-4 * max(1.0, abs(recorded)):
            log.warning("best trial %s: results.json says %s %s, its checkpoint measures %.6g; the registered "
                        "version carries what was measured", best.get("trial_id"), key, recorded, measured[key])
    tags: dict[str, float] = dict(measured)
    if config.metric not in measured:  # a training score is not measured again: no champion challenge
        tags[config.metric] = None  # type: ignore[assignment]
    return tags


def _json(payload: Any) -> str:
    import json

    return json.dumps(payload, indent=2, default=str)
