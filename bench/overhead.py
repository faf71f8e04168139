"""Wrapper overhead: epoch time inside a Ray Tune trial ÷ epoch time of the bare loop, same data,
threads (1), seed and configuration, measured in interleaved rounds (bare, Tune, bare, Tune, …) a
minute or so apart, so the machine's drift falls on both sides alike; the median of the rounds'
ratios and their spread."""

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
from trainables.data import Data, load_data
from trainables.train import TrainingRun, TrainParams

CONFIG = {"batch_norm": True, "skip": True, "lr": 1e-3, "l2": 0.0, "dropout": 0.0, "batch_size": 128, "seed": 0}


def bare_epochs(data: Data, epochs: int) -> list[float]:
    """Wall seconds of each epoch (train + validation) of the plain loop on one thread."""
    torch.set_num_threads(1)
    run = TrainingRun(TrainParams(**CONFIG, epochs=epochs), data)
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


# Each round runs `epochs` epochs on each side; the first of each pays start-up and is not compared.
SETTINGS = {"smoke": {"subset": 600, "epochs": 2, "rounds": 2, "goal": 1.05},
            "quick": {"subset": 12000, "epochs": 3, "rounds": 5, "goal": 1.05},
            "full": {"subset": None, "epochs": 3, "rounds": 5, "goal": 1.02}}


def run(settings: dict[str, Any]) -> dict[str, Any]:
    subset, epochs, rounds = settings["subset"], settings["epochs"], settings["rounds"]
    data = load_data("mnist", mnist_dir(), subset=subset)
    bare, tuned, ratios = [], [], []
    for number in range(1, rounds + 1):
        progress(f"round {number} of {rounds}: {epochs} epochs on {subset or 60000} images, bare loop then a Tune "
                 "trial (1 thread each)")
        bare.append(bare_epochs(data, epochs))
        with tempfile.TemporaryDirectory() as storage:
            tuned.append(tune_epochs(subset, epochs, Path(storage)))
        ratios.append(statistics.median(tuned[-1][1:]) / statistics.median(bare[-1][1:]))
        progress(f"round {number}: ratio {ratios[-1]:.3f}")
    ratio = statistics.median(ratios)
    progress(f"overhead ratio {ratio:.3f}, rounds {min(ratios):.3f}–{max(ratios):.3f} (goal <= {settings['goal']})")
    return {"images": subset or 60000, "epochs": epochs, "rounds": rounds,
            "bare_epoch_s": [s for r in bare for s in r[1:]], "tune_epoch_s": [s for r in tuned for s in r[1:]],
            "bare_rounds_s": bare, "tune_rounds_s": tuned, "round_ratios": ratios,
            "ratio": ratio, "ratio_spread": [min(ratios), max(ratios)], "goal": settings["goal"]}


def main() -> None:
    scale = scale_argument(__doc__)
    write_result("overhead", scale, run(SETTINGS[scale]))


if __name__ == "__main__":
    main()
