"""Wrapper overhead: epoch time inside a Ray Tune trial ÷ epoch time of the bare loop (`tune train`),
same data, threads (1), seed and configuration."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import mnist_dir, progress, scale_argument, write_result
from bench.sweeps import sweep
from search.engine.trials import tune_result_rows
from trainables.data import load_data
from trainables.train import TrainingRun, TrainParams

CONFIG = {"batch_norm": True, "skip": True, "lr": 1e-3, "l2": 0.0, "dropout": 0.0, "batch_size": 128, "seed": 0}


def bare_epochs(subset: int | None, epochs: int) -> list[float]:
    """Wall seconds of each epoch (train + validation) of the plain loop on one thread."""
    torch.set_num_threads(1)
    run = TrainingRun(TrainParams(**CONFIG, epochs=epochs), load_data("mnist", mnist_dir(), subset=subset))
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        run.run_epoch()
        seconds.append(time.perf_counter() - started)
    return seconds


def tune_epochs(subset: int | None, epochs: int, storage: Path) -> list[float]:
    """Seconds between a trial's reports (`time_this_iter_s`: epoch + report + checkpoint)."""
    document = {"name": "bench-overhead", "epochs": epochs, "space": CONFIG, "scheduler": {"type": "fifo"},
                "search": {"algorithm": "random", "num_samples": 1}, "resources": {"cpu": 1},
                "data": {"subset": subset}}
    sweep(document, storage, "overhead")
    (rows,) = tune_result_rows(storage / "overhead").values()
    return [row["time_this_iter_s"] for row in rows]


SETTINGS = {"smoke": {"subset": 600, "epochs": 2}, "quick": {"subset": 12000, "epochs": 4},
            "full": {"subset": None, "epochs": 4}}


def run(settings: dict[str, Any]) -> dict[str, Any]:
    subset, epochs = settings["subset"], settings["epochs"]
    progress(f"bare loop: {epochs} epochs on {subset or 60000} images, 1 thread")
    bare = bare_epochs(subset, epochs)
    with tempfile.TemporaryDirectory() as storage:
        progress("the same in a Ray Tune trial (1 CPU)")
        tuned = tune_epochs(subset, epochs, Path(storage))
    # The first epoch of each pays start-up costs; the rest is the steady state that matters.
    ratio = statistics.median(tuned[1:]) / statistics.median(bare[1:])
    progress(f"overhead ratio {ratio:.3f} (goal <= 1.05)")
    return {"images": subset or 60000, "epochs": epochs, "bare_epoch_s": bare, "tune_epoch_s": tuned,
            "ratio": ratio, "goal": 1.05}


def main() -> None:
    scale = scale_argument(__doc__)
    write_result("overhead", scale, run(SETTINGS[scale]))


if __name__ == "__main__":
    main()
