"""Read a sweep run back from Ray Tune's storage: every trial, its status and its history."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.report import TrialSummary, history_from_rows, rank_trials, summarize_trial
from spaces import SweepConfig


@dataclass
class TrialsSnapshot:
    """The trials of one sweep run as Tune last saved them, best first."""

    trials: list[TrialSummary]
    unfinished: int


def load_trials(experiment_uri: str, config: SweepConfig, analysis: Any = None) -> TrialsSnapshot:
    """Every trial of a sweep run, summarised, best first.

    `analysis` is the in-memory view `Tuner.fit` ends with; without it the run is read
    back from storage. Prefer the former: Ray 2.60 does not re-save a trial's state when
    it errors for good, so storage can still call such a trial RUNNING.
    """
    from ray.tune import ExperimentAnalysis
    from ray.tune.experiment import Trial

    from trainables.trainable import checkpoint_history

    if analysis is None:
        analysis = ExperimentAnalysis(experiment_uri, default_metric=config.metric, default_mode=config.mode)
    frames = analysis.trial_dataframes
    summaries = []
    for trial in analysis.trials:
        frame = frames.get(trial.trial_id)
        rows = frame.to_dict("records") if frame is not None else []
        if trial.checkpoint is not None:
            # Epochs whose report Tune lost (the process died right after it) are in the
            # checkpoint's own history; Tune's rows go last, so they win where both exist.
            rows = checkpoint_history(trial.checkpoint) + rows
        errored = trial.status == Trial.ERROR
        error = trial.get_error() if errored else None
        last = trial.last_result or {}
        summaries.append(summarize_trial(
            trial_id=trial.trial_id,
            config=dict(trial.config),
            history=history_from_rows(rows),
            errored=errored,
            unfinished=trial.status not in (Trial.TERMINATED, Trial.ERROR),
            max_t=config.scheduler.max_t,
            metric=config.metric,
            mode=config.mode,
            node_id=last.get("node_id"),
            error=_first_line(error),
            checkpoint=checkpoint_uri(trial.checkpoint) if trial.checkpoint else None,
        ))
    unfinished = sum(t.status == "unfinished" for t in summaries)
    return TrialsSnapshot(rank_trials(summaries, config.mode), unfinished)


def checkpoint_uri(checkpoint: Any) -> str:
    """A checkpoint's location as a path (local) or a URI (s3://…) that `tune.Checkpoint` reopens."""
    kind = checkpoint.filesystem.type_name
    return checkpoint.path if kind == "local" else f"{kind}://{checkpoint.path}"


def _first_line(error: object) -> str | None:
    if error is None:
        return None
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else type(error).__name__


def tune_result_rows(experiment_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Ray Tune's own rows, one per report, of every trial in a local experiment folder.

    What Tune saw, before any merging: tests and benchmarks read epochs, pids, nodes and
    `time_this_iter_s` from here.
    """
    rows = {}
    for result in Path(experiment_dir).glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines:
            rows[lines[0]["trial_id"]] = lines
    return rows
