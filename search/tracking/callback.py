"""The Ray Tune callback that streams trial events to MLflow from the driver."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from ray import tune

from core.names import trial_status
from search.engine.storage import ExperimentDir
from search.report import epoch_row, is_metric
from search.tracking.recorder import MlflowRecorder, TrackingTarget, now_ms
from search.tracking.writer import BufferedWriter

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 60.0


class MlflowCallback(tune.Callback):
    """Turns Tune's trial events into queued MLflow writes, delivered by a background thread.

    It is pickled into the Tuner's state, so `Tuner.restore` brings it back; only
    settings are pickled, and `setup` reattaches to the recorded runs.
    """

    def __init__(self, target: TrackingTarget, experiment_dir: ExperimentDir, max_t: int,
                 parent_tags: Mapping[str, str], parent_params: Mapping[str, Any],
                 parent_artifacts: Iterable[tuple[str, str]] = (), step_key: str = "epoch") -> None:
        self.target = target
        self.step_key = step_key  # what counts epochs: `epoch`, or a user trainable's reports
        self.experiment_dir = experiment_dir
        self.max_t = max_t
        self.parent_tags = dict(parent_tags)
        self.parent_params = dict(parent_params)
        self.parent_artifacts = list(parent_artifacts)
        self._writer: BufferedWriter | None = None
        self._recorder: MlflowRecorder | None = None
        self._delivered = False

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_writer", "_recorder", "_delivered")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._writer = self._recorder = None
        self._delivered = False

    def setup(self, **info: Any) -> None:
        self._writer = BufferedWriter()
        self._recorder = MlflowRecorder(self.target, self.experiment_dir)
        self._submit("open the sweep's parent run", self._recorder.attach_parent,
                     self.parent_tags, self.parent_params, self.parent_artifacts)

    @property
    def recorder(self) -> MlflowRecorder | None:
        """The recorder of this process's run (its parent and child run ids), once every queued
        write was delivered; None while its writer thread may still be using it."""
        return self._recorder if self._delivered else None

    def _submit(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        self._writer.submit(what, partial(fn, *args, **kwargs))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._recorder.remember_config(trial.trial_id, trial.config, now_ms())
        self._submit(f"open the run of trial {trial.trial_id}", self._recorder.ensure_child, trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        step_key = getattr(self, "step_key", "epoch")  # a callback pickled by an older version has none
        if step_key not in result:
            return
        result = epoch_row(result, step_key)
        row = {k: v for k, v in result.items() if is_metric(k, v) or k == "timestamp"}
        tags = {key: str(result[key]) for key in ("node_id", "device") if result.get(key)}
        self._submit(f"log epoch {result['epoch']} of trial {trial.trial_id}",
                     self._recorder.log_epochs, trial.trial_id, [row], tags)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epochs = (trial.last_result or {}).get(getattr(self, "step_key", "epoch"), 0)
        status = trial_status(False, epochs, self.max_t)
        self._submit(f"close the run of trial {trial.trial_id}", self._recorder.finish_child,
                     trial.trial_id, status, None, now_ms())

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = trial.get_error()
        message = str(error).strip().splitlines()[-1] if error else "trial failed"
        self._submit(f"close the run of trial {trial.trial_id}", self._recorder.finish_child,
                     trial.trial_id, "errored", message, now_ms())

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        retries = str(trial.run_metadata.num_failures)
        self._submit(f"note a retry of trial {trial.trial_id}",
                     lambda: self._recorder.client.set_tag(self._recorder.ensure_child(trial.trial_id),
                                                           "retries", retries))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._writer is None:
            return
        pending = self._writer.pending
        self._delivered = self._writer.close(FLUSH_TIMEOUT_S)
        if not self._delivered:
            log.warning(
                "mlflow: %s of the sweep's writes did not reach %s; the results are safe in %s and "
                "`tune sync-mlflow %s` replays them", pending or self._writer.dropped,
                self.target.tracking_uri, self.experiment_dir.uri, shlex.quote(self.experiment_dir.uri))
