"""The Ray Tune function trainable: one trial is one `TrainingRun`, reported every epoch.

The data arrives through Ray's object store (`tune.with_parameters`), so each node
holds one copy however many trials it runs. Every report carries a checkpoint with
the model, optimizer, epoch and RNG state; a restored trial continues at the next
epoch with the results an uninterrupted run would have had.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from core.files import regular_file
from trainables.data import Data
from trainables.train import TrainingRun, TrainParams, build_model

STATE_FILE = "state.pt"
META_FILE = "meta.json"


def train_trial(config: dict[str, Any], data: Data, experiment_uri: str | None = None,
                model: str | None = None, keep: tuple[str, str] = ("val_loss", "min")) -> None:
    """Train one configuration, reporting metrics and a checkpoint after every epoch; the weights
    kept are those of the best epoch by `keep` (the sweep's metric and mode).

    A restored trial continues from the checkpoint Tune hands over. When Tune has none
    although the trial wrote some (the driver died between a checkpoint and its next
    snapshot of the experiment state), the latest one in `experiment_uri` is used, so a
    trial that had a checkpoint never starts over. Every checkpoint's `meta.json` holds
    the trial's whole per-epoch history: an epoch whose report Tune never processed
    (the process died right after it) is still on record.
    """
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # a line per checkpoint
    params = TrainParams.from_config(config, model)
    device = _trial_device()
    torch.set_num_threads(_trial_threads())
    run = TrainingRun(params, data, device, keep)
    history: list[dict[str, float]] = []
    restored = _restored_checkpoint(device, experiment_uri)
    if restored is not None:
        state, history = restored
        run.load_state_dict(state)
    node_id = ray.get_runtime_context().get_node_id()
    while not run.finished:
        metrics = run.run_epoch()
        history.append({**metrics, "timestamp": time.time()})
        with tempfile.TemporaryDirectory() as directory:
            torch.save(run.state_dict(), Path(directory) / STATE_FILE)
            (Path(directory) / META_FILE).write_text(json.dumps({"epoch": run.epoch, "history": history}))
            tune.report({**metrics, "node_id": node_id, "device": device.type},
                        checkpoint=tune.Checkpoint.from_directory(directory))


def _restored_checkpoint(device: torch.device, experiment_uri: str | None
                         ) -> tuple[dict[str, Any], list[dict[str, float]]] | None:
    """The state and history to continue from, if this trial has a checkpoint."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and experiment_uri:
        checkpoint = latest_trial_checkpoint(experiment_uri, tune.get_context().get_trial_id())
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        state = torch.load(regular_file(Path(directory) / STATE_FILE, "a checkpoint's state"), map_location=device,
                           weights_only=True)
        meta = Path(directory) / META_FILE
        history = json.loads(meta.read_text()).get("history", []) if meta.exists() else []
    return state, history


def checkpoint_history(checkpoint: tune.Checkpoint) -> list[dict[str, float]]:
    """The per-epoch history stored with a checkpoint (empty if it has none)."""
    try:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{META_FILE}") as f:
            return json.loads(f.read()).get("history", [])
    except (FileNotFoundError, ValueError):
        return []


def latest_trial_checkpoint(experiment_uri: str, trial_id: str) -> tune.Checkpoint | None:
    """The checkpoint with the highest epoch among those a trial wrote under `experiment_uri`."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(experiment_uri)
    trial_dirs = [info.path for info in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
                  if info.type == pyarrow.fs.FileType.Directory and f"_{trial_id}_" in info.base_name]
    return latest_checkpoint_in(fs, trial_dirs)


def latest_checkpoint_in(fs: Any, trial_dirs: list[str]) -> tune.Checkpoint | None:
    """The complete checkpoint with the highest epoch in these trial folders (of file system `fs`)."""
    import pyarrow.fs

    best: tuple[int, str] | None = None
    for trial_dir in trial_dirs:
        for info in fs.get_file_info(pyarrow.fs.FileSelector(trial_dir, allow_not_found=True)):
            if not info.base_name.startswith("checkpoint_"):
                continue
            try:
                with fs.open_input_stream(f"{info.path}/{META_FILE}") as f:
                    epoch = int(json.loads(f.read())["epoch"])
            except (FileNotFoundError, ValueError, KeyError):
                continue  # an incomplete checkpoint
            if best is None or epoch > best[0]:
                best = (epoch, info.path)
    return tune.Checkpoint(best[1], filesystem=fs) if best else None


def load_checkpoint_model(checkpoint_dir: str | os.PathLike, config: dict[str, Any],
                          model_ref: str | None = None) -> torch.nn.Module:
    """The best-validation network stored in a trial checkpoint, in eval mode, on the CPU, with the
    shape of the inputs it was trained on (`input_shape`)."""
    params = TrainParams.from_config(config, model_ref)
    state = torch.load(regular_file(Path(checkpoint_dir) / STATE_FILE, "a checkpoint's state"), map_location="cpu",
                       weights_only=True)
    model = build_model(params, int(state.get("num_classes", 10)))
    model.num_classes = int(state.get("num_classes", 10))
    model.input_shape = tuple(state.get("input_shape", (1, 28, 28)))
    model.load_state_dict(state["best_weights"])
    return model.eval()


def _trial_threads() -> int:
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    return max(1, round(cpus))


def _trial_device() -> torch.device:
    if ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")

