"""The Ray Tune function trainable: one trial is one `TrainingRun`, reported every epoch.

The data arrives through Ray's object store (`tune.with_parameters`), so each node
holds one copy however many trials it runs. Every report carries a checkpoint with
the model, optimizer, epoch and RNG state; a restored trial continues at the next
epoch with the results an uninterrupted run would have had.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from trainables.data import Data
from trainables.train import TrainingRun, TrainParams, build_model

STATE_FILE = "state.pt"


def train_trial(config: dict[str, Any], data: Data) -> None:
    """Train one configuration, reporting metrics and a checkpoint after every epoch."""
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # a line per checkpoint
    params = TrainParams.from_config(config)
    device = _trial_device()
    torch.set_num_threads(_trial_threads())
    run = TrainingRun(params, data, device)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / STATE_FILE, map_location=device, weights_only=True)
        run.load_state_dict(state)
    node_id = ray.get_runtime_context().get_node_id()
    while not run.finished:
        metrics = run.run_epoch()
        if run.finished:
            metrics.update(run.test())
        metrics["node_id"] = node_id
        metrics["device"] = device.type
        with tempfile.TemporaryDirectory() as directory:
            torch.save(run.state_dict(), Path(directory) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def load_checkpoint_model(checkpoint_dir: str | os.PathLike, config: dict[str, Any]) -> torch.nn.Module:
    """The best-validation network stored in a trial checkpoint, in eval mode, on the CPU."""
    params = TrainParams.from_config(config)
    state = torch.load(Path(checkpoint_dir) / STATE_FILE, map_location="cpu", weights_only=True)
    model = build_model(params)
    model.load_state_dict(state["best_weights"])
    return model.eval()


def _trial_threads() -> int:
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    return max(1, round(cpus))


def _trial_device() -> torch.device:
    if ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")

