"""The Ray Tune trainable under a real Tune run on a real local Ray, including a restore."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import ray
import ray.cloudpickle
from ray import tune

from trainables.trainable import train_trial

pytestmark = pytest.mark.integration
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/


def crash_once_after_epoch_1(config, data):
    """The real trainable, but the first attempt of each trial dies right after epoch 1's report."""
    marker = Path(config.pop("marker_dir")) / tune.get_context().get_trial_id()
    real_report = ray.tune.report

    def report(metrics, checkpoint=None):
        real_report(metrics, checkpoint=checkpoint)
        if metrics["epoch"] == 1 and not marker.exists():
            marker.touch()
            raise RuntimeError("injected crash after epoch 1")

    ray.tune.report = report
    try:
        train_trial(config, data)
    finally:
        ray.tune.report = real_report


@pytest.fixture(scope="module")
def connected(ray_head):
    ray.init(address=ray_head.address, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def test_two_trials_report_every_epoch_and_restore_at_the_next_epoch(connected, small_data, tmp_path):
    (tmp_path / "markers").mkdir()
    tuner = tune.Tuner(
        tune.with_parameters(crash_once_after_epoch_1, data=small_data),
        param_space={"epochs": 2, "lr": tune.grid_search([1e-3, 3e-3]), "batch_size": 64,
                     "marker_dir": str(tmp_path / "markers")},
        tune_config=tune.TuneConfig(metric="val_loss", mode="min"),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "results"), name="restore", verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
    )
    results = tuner.fit()
    assert len(results) == 2 and not results.errors
    assert len(list((tmp_path / "markers").iterdir())) == 2  # both trials really crashed once
    for result in results:
        frame = result.metrics_dataframe
        assert list(frame["epoch"]) == [1, 2]  # epoch 2 ran after the restore; epoch 1 never again
        assert int(frame["iterations_since_restore"].iloc[-1]) == 1
        last = result.metrics
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds", "node_id"):
            assert key in last
        # Trials never evaluate on the test split: only the driver does, once, for the chosen model.
        assert "test_acc" not in frame.columns and "test_loss" not in last
        assert result.checkpoint is not None
