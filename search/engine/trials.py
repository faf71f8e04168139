"""Read a sweep run back from Ray Tune's storage: every trial, its status and its history."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.names import STATUSES, UNFINISHED
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
            history=history_from_rows(rows, config.step_key),
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


def read_trials(experiment_uri: str, config: SweepConfig) -> TrialsSnapshot:
    """Every trial of a sweep run read back from its files as plain JSON, nothing unpickled: for
    `tune sync-mlflow`, which must not run code that a run folder carries (Tune's own reader,
    `ExperimentAnalysis`, unpickles the trials in its experiment state).

    From Tune's newest experiment state only the JSON fields are read (trial id, status, folder
    name, error file name); from each trial's folder its config (`params.json`), its reports
    (`result.json`), its error (the text file) and its latest checkpoint's history (`meta.json`).
    """
    import pyarrow.fs

    from trainables.trainable import checkpoint_history, latest_checkpoint_in

    fs, root = pyarrow.fs.FileSystem.from_uri(experiment_uri)
    states = [info for info in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
              if info.base_name.startswith("experiment_state-") and info.base_name.endswith(".json")]
    if not states:
        return TrialsSnapshot([], 0)
    # As Tune chooses (`_find_newest_experiment_checkpoint`): the newest driver session by the time in
    # the name. A modification time can tie or lie on object stores that keep whole seconds.
    newest = max(states, key=lambda info: info.base_name)
    summaries = []
    for state_json, metadata_json in _read_json(fs, newest.path)["trial_data"]:
        state, metadata = json.loads(state_json), json.loads(metadata_json)
        trial_id, folder_name = str(state["trial_id"]), str(state.get("relative_logdir") or "")
        if not folder_name or "/" in folder_name or folder_name in (".", ".."):
            raise UserError(f"{experiment_uri}: trial {trial_id} names the folder {folder_name!r}, "
                            "which is not a folder of this run")
        folder = f"{root}/{folder_name}"
        params = _read_json(fs, f"{folder}/params.json", default=None)
        trial_config = params if isinstance(params, dict) else state.get("config") or {}
        rows = _read_json_lines(fs, f"{folder}/result.json")
        checkpoint = latest_checkpoint_in(fs, [folder])  # its own folder: no listing of the whole run
        if checkpoint is not None:
            rows = checkpoint_history(checkpoint) + rows  # as in load_trials: Tune's rows win
        error_file = metadata.get("error_filename")
        # Tune may still call a trial that failed for good RUNNING (it does not re-save it then).
        errored = state.get("status") == "ERROR" or (state.get("status") != "TERMINATED" and bool(error_file))
        error = _read_text(fs, f"{folder}/{Path(error_file).name}") if errored and error_file else None
        summaries.append(summarize_trial(
            trial_id=trial_id,
            config=dict(trial_config),
            history=history_from_rows(rows, config.step_key),
            errored=errored,
            unfinished=not errored and state.get("status") != "TERMINATED",
            max_t=config.scheduler.max_t,
            metric=config.metric,
            mode=config.mode,
            node_id=rows[-1].get("node_id") if rows else None,
            error=_first_line(error),
            checkpoint=checkpoint_uri(checkpoint) if checkpoint else None,
        ))
    unfinished = sum(t.status == "unfinished" for t in summaries)
    return TrialsSnapshot(rank_trials(summaries, config.mode), unfinished)


def recorded_trials(experiment_uri: str, results: Any) -> TrialsSnapshot | None:
    """The trials of a finished run as the tool itself recorded them at its end (`results.json`):
    config, status, history, error, test metrics. None for a run that did not finish (Tune's state is
    then the record) or a file that does not hold trials.

    Validated as data, nothing in it is run; a checkpoint it names is looked for in this run's own
    folder only (the folder may have moved, and is not trusted to point elsewhere).
    """
    from pydantic import TypeAdapter, ValidationError

    if not isinstance(results, dict) or results.get("status") != "finished" or not results.get("trials"):
        return None
    try:
        trials = TypeAdapter(list[TrialSummary]).validate_python(results["trials"])
    except ValidationError as err:
        first = err.errors()[0]
        raise UserError(f"{experiment_uri}/results.json: trials.{'.'.join(map(str, first['loc']))}: "
                        f"{first['msg']}") from None
    for trial in trials:
        if trial.status not in STATUSES:
            raise UserError(f"{experiment_uri}/results.json: trial {trial.trial_id} has the status "
                            f"{trial.status!r}, not one of {', '.join(STATUSES)}")
        check_trial_data(trial, f"{experiment_uri}/results.json")
        trial.checkpoint = checkpoint_in_run(experiment_uri, trial.checkpoint)
    return TrialsSnapshot(trials, sum(t.status == UNFINISHED for t in trials))


MAX_ID_CHARS = 200
MAX_ERROR_CHARS = 20_000
MAX_HISTORY = 100_000
MAX_ABS_NUMBER = 1e15  # no metric, epoch or hyperparameter this tool records comes near it


def check_trial_data(trial: TrialSummary, where: str) -> None:
    """A trial read back from a run folder holds bounded strings and numbers a run can produce (finite
    and not absurd, or NaN for a diverged metric): nothing larger reaches MLflow or the registry."""
    if len(trial.trial_id) > MAX_ID_CHARS or len(trial.history) > MAX_HISTORY:
        raise UserError(f"{where}: trial {trial.trial_id[:40]}…: its id or history is longer than a run writes")
    if trial.error is not None and len(trial.error) > MAX_ERROR_CHARS:
        trial.error = trial.error[:MAX_ERROR_CHARS] + " …"
    numbers = [("score", trial.score), ("val_loss", trial.val_loss), ("val_acc", trial.val_acc),
               ("test_loss", trial.test_loss), ("test_acc", trial.test_acc)]
    numbers += [(f"history.{i}.{k}", v) for i, row in enumerate(trial.history) for k, v in row.items()]
    numbers += [(f"config.{k}", v) for k, v in trial.config.items() if isinstance(v, float)]
    for key, value in numbers:
        if isinstance(value, (int, float)) and not (math.isnan(value) or abs(value) <= MAX_ABS_NUMBER):
            raise UserError(f"{where}: trial {trial.trial_id}: {key} is {value}, not a value a run records")
    for key, value in trial.config.items():
        if len(str(key)) > MAX_ID_CHARS or (isinstance(value, str) and len(value) > MAX_ERROR_CHARS):
            raise UserError(f"{where}: trial {trial.trial_id}: config.{str(key)[:40]} is longer than a run writes")


def checkpoint_in_run(experiment_uri: str, recorded: Any) -> str | None:
    """A checkpoint a run's files name (`…/<trial folder>/checkpoint_<n>`), found in the run folder at
    `experiment_uri`, wherever it was when recorded; None when its name is not of that form."""
    if not isinstance(recorded, str):
        return None
    trial_folder, _, name = recorded.rstrip("/").rpartition("/")
    trial_folder = trial_folder.rpartition("/")[2]
    if not _CHECKPOINT_NAME.fullmatch(name) or trial_folder in ("", ".", ".."):
        return None
    return f"{experiment_uri}/{trial_folder}/{name}"


_CHECKPOINT_NAME = re.compile(r"checkpoint_\d+")
_MISSING = object()


def _read_json(fs: Any, path: str, default: Any = _MISSING) -> Any:
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        if default is _MISSING:
            raise
        return default


def _read_json_lines(fs: Any, path: str) -> list[dict[str, Any]]:
    text = _read_text(fs, path) or ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _read_text(fs: Any, path: str) -> str | None:
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return None


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
