"""Sweep efficiency: ideal time (sum of trial busy time ÷ concurrent slots) ÷ measured wall time
for a 16-trial sweep, and the start-up overhead per trial."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.common import progress, scale_argument, write_result
from bench.sweeps import sweep, trial_busy_seconds

SLOTS = 2
SETTINGS = {"smoke": {"trials": 4, "epochs": 1, "subset": 600}, "quick": {"trials": 16, "epochs": 3, "subset": 6000},
            "full": {"trials": 16, "epochs": 3, "subset": None}}


def run(settings: dict[str, Any]) -> dict[str, Any]:
    trials = settings["trials"]
    document = {"name": "bench-efficiency", "epochs": settings["epochs"], "scheduler": {"type": "fifo"},
                "search": {"algorithm": "optuna", "num_samples": trials, "max_concurrent_trials": SLOTS},
                "space": {"lr": {"loguniform": [5e-4, 5e-3]}, "batch_norm": {"choice": [True, False]}},
                "resources": {"cpu": 1}, "data": {"subset": settings["subset"]}}
    with tempfile.TemporaryDirectory() as storage:
        results = sweep(document, Path(storage), "efficiency")
    busy = [trial_busy_seconds(t) for t in results["trials"]]
    wall = results["fit_seconds"]
    ideal = sum(busy) / SLOTS
    efficiency = ideal / wall
    startup = (wall * SLOTS - sum(busy)) / trials
    progress(f"efficiency {efficiency:.3f} (goal >= 0.9); {startup:.2f} s of start-up per trial")
    return {**settings, "slots": SLOTS,
            "sum_busy_s": sum(busy), "wall_s": wall, "ideal_s": ideal, "efficiency": efficiency,
            "startup_s_per_trial": startup, "goal": 0.9}


def main() -> None:
    scale = scale_argument(__doc__)
    write_result("sweep_efficiency", scale, run(SETTINGS[scale]))


if __name__ == "__main__":
    main()
