"""Sweep efficiency: ideal time (sum of trial busy time ÷ concurrent slots) ÷ measured wall time
for a 16-trial sweep, and where the rest goes: each trial's start-up (from a slot coming free to
the trial's first epoch starting), split by whether the trial ran in a process that had already
run one (Tune reuses trial processes) or in a new one, and the slots left idle at the end."""

from __future__ import annotations

import heapq
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import progress, scale_argument, write_result
from bench.sweeps import sweep, trial_busy_seconds
from search.engine.trials import tune_result_rows
from trainables.trainable import checkpoint_history, latest_trial_checkpoint

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
        spans = trial_spans(Path(storage) / "efficiency")
    busy = [trial_busy_seconds(t) for t in results["trials"]]
    wall = results["fit_seconds"]
    ideal = sum(busy) / SLOTS
    efficiency = ideal / wall
    overhead = (wall * SLOTS - sum(busy)) / trials
    split = startup_split(results, spans)
    progress(f"efficiency {efficiency:.3f} (goal >= 0.9); {overhead:.2f} s per trial not training, of which "
             f"start-up {split['mean_s']:.3f} s (median {_median(split['reused_process_s'])} s in a reused process, "
             f"{_median(split['new_process_s'])} s in a new one) and {split['idle_at_end_s'] / trials:.3f} s idle "
             "slots at the end")
    return {**settings, "slots": SLOTS,
            "sum_busy_s": sum(busy), "wall_s": wall, "ideal_s": ideal, "efficiency": efficiency,
            "startup_s_per_trial": overhead, "startup": split, "goal": 0.9, "startup_goal_s": 0.2}


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}" if values else "—"


def trial_spans(experiment: Path) -> list[tuple[float, float, int]]:
    """(first epoch's start, last epoch's end, process id) of every trial, to the millisecond: from the
    history each trial keeps in its latest checkpoint (results.json and Tune's rows keep whole seconds)."""
    spans = []
    for trial_id, rows in tune_result_rows(experiment).items():
        history = checkpoint_history(latest_trial_checkpoint(str(experiment), trial_id))
        spans.append((history[0]["timestamp"] - history[0]["epoch_seconds"], history[-1]["timestamp"], rows[0]["pid"]))
    return sorted(spans)


def startup_split(results: dict[str, Any], spans: list[tuple[float, float, int]]) -> dict[str, Any]:
    """Each trial's start-up: from the moment a slot came free (the sweep's start for the first
    `SLOTS` trials, else the end of the trial that freed it) to its first epoch's start; and the
    slots' idle time between the last trial's end and the end of `tuner.fit`."""
    fit_start = results["fit_started_at"]
    fit_end = fit_start + results["fit_seconds"]
    free = [fit_start] * SLOTS  # when each slot came free, earliest first
    seen_pids: set[int] = set()
    reused, new = [], []
    for start, end, pid in spans:
        came_free = heapq.heappop(free)
        (reused if pid in seen_pids else new).append(max(0.0, start - came_free))
        seen_pids.add(pid)
        heapq.heappush(free, end)
    startups = reused + new
    return {"reused_process_s": reused, "new_process_s": new,
            "mean_s": sum(startups) / len(startups) if startups else 0.0,
            "idle_at_end_s": sum(max(0.0, fit_end - t) for t in free)}


def main() -> None:
    scale = scale_argument(__doc__)
    write_result("sweep_efficiency", scale, run(SETTINGS[scale]))


if __name__ == "__main__":
    main()
