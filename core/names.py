"""The one spelling of every metric, config key and dataset name (DESIGN.md: "one naming scheme").

Tune results, MLflow, reports and the sweep schema import these; a unit test keeps the
schema, the training parameters and the data loader in step with them.
"""

from __future__ import annotations

# Keys of a trial's configuration that a sweep file's `space` may set (the seed's switches first).
SPACE_KEYS = ("batch_norm", "skip", "lr", "l2", "dropout", "batch_size", "seed", "optimizer", "lr_schedule",
              "augment")
MODEL_SWITCHES = ("batch_norm", "skip", "dropout")  # the seed network's; a `model:` callable may take them
# the training loop's, whatever the model
LOOP_KEYS = ("lr", "l2", "batch_size", "seed", "optimizer", "lr_schedule", "augment")
# Shown in a trial's config (MLflow params, reports) only where a sweep sets them: at their defaults
# (adam, constant, none) a sweep trains as the seed did, and its records look as they did.
OPTIONAL_LOOP_KEYS = ("optimizer", "lr_schedule", "augment")
OPTIMIZERS = ("adam", "adamw", "sgd")  # adam: L2 coupled (the seed's); adamw: decoupled decay; sgd: momentum 0.9
LR_SCHEDULES = ("constant", "cosine", "onecycle")  # cosine and onecycle step every batch
AUGMENTS = ("none", "shift")  # shift: each training image moved by up to 2 pixels each way
EPOCHS = "epoch"  # the time attribute of every report (ASHA's rungs, MLflow's step)
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds")
TEST_METRICS = ("test_loss", "test_acc")
# The metrics a sweep may optimise, with the direction each must go.
METRIC_MODES = {"val_loss": "min", "val_acc": "max", "train_loss": "min", "train_acc": "max"}
DATASET_NAMES = ("mnist", "fashion-mnist")
# What Tune adds to every report (ray.tune.result.AUTO_RESULT_KEYS and its bookkeeping): never a
# trainable's own metric. A unit test keeps it in step with Ray's.
TUNE_RESULT_KEYS = frozenset({
    "training_iteration", "time_total_s", "episodes_total", "timesteps_total", "node_ip", "hostname", "pid",
    "time_this_iter_s", "timestamp", "date", "time_since_restore", "timesteps_since_restore",
    "iterations_since_restore", "config", "checkpoint_dir_name", "done", "trial_id", "experiment_tag",
    "should_checkpoint", "experiment_id",
})
REPORTED_EPOCH = "reported_epoch"  # a user trainable's own `epoch` metric, kept beside the tool's step

# How a trial ended (the `status` tag of its MLflow run, results.json, reports).
COMPLETED, EARLY_STOPPED, ERRORED, UNFINISHED = "completed", "early_stopped", "errored", "unfinished"
STATUSES = (COMPLETED, EARLY_STOPPED, ERRORED, UNFINISHED)


def trial_status(errored: bool, epochs: int, max_t: int, unfinished: bool = False) -> str:
    """`completed` (reached max_t), `early_stopped` (ASHA or the time budget), `errored`, or
    `unfinished` (still to run when the sweep was interrupted): the one rule, used everywhere."""
    if errored:
        return ERRORED
    if unfinished:
        return UNFINISHED
    return COMPLETED if epochs >= max_t else EARLY_STOPPED
