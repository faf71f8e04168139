"""Search quality per CPU-minute: Optuna + ASHA against random search without early stopping,
same trial count and cores, over seeds; and our PRUNED-aware Optuna bridge against Ray's stock
OptunaSearch on the same budget."""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

import search.tuner
from bench.common import progress, scale_argument, write_result
from bench.sweeps import sweep

SPACE = {"batch_norm": {"choice": [True, False]}, "skip": {"choice": [True, False]},
         "lr": {"loguniform": [1e-4, 1e-2]}, "l2": {"loguniform": [1e-6, 1e-2]},
         "dropout": {"uniform": [0.0, 0.5]}, "batch_size": {"choice": [64, 128, 256]}}
ARMS = {
    "optuna_asha": ({"algorithm": "optuna"}, {"type": "asha", "grace_period": 1, "reduction_factor": 3}),
    "random_fifo": ({"algorithm": "random"}, {"type": "fifo"}),
    "stock_optuna_asha": ({"algorithm": "optuna"}, {"type": "asha", "grace_period": 1, "reduction_factor": 3}),
}


class StockOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch as shipped (an ASHA-stopped trial is COMPLETE), with our constructor."""

    def __init__(self, *args: Any, max_t: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


def time_to_target(results: dict[str, Any], target: float) -> float:
    """Seconds from the start of the sweep until some trial first reported val_acc >= target."""
    hits = [h["timestamp"] - results["fit_started_at"] for t in results["trials"] for h in t["history"]
            if h.get("val_acc", 0) >= target]
    return min(hits) if hits else math.inf


def speedup(ours: float, theirs: float) -> float | None:
    """How many times sooner we reached the target; None when we never did."""
    if math.isinf(ours):
        return None
    return math.inf if math.isinf(theirs) else theirs / ours


def best_by(results: dict[str, Any], seconds: float) -> float:
    """The best val_acc any trial reported within `seconds` of the sweep's start."""
    values = [h["val_acc"] for t in results["trials"] for h in t["history"]
              if h["timestamp"] - results["fit_started_at"] <= seconds]
    return max(values, default=0.0)


def run_arm(arm: str, seed: int, settings: dict[str, Any], storage: Path) -> dict[str, Any]:
    searcher, scheduler = ARMS[arm]
    document = {"name": f"bench-{arm}", "epochs": settings["epochs"], "space": SPACE, "scheduler": scheduler,
                "search": {**searcher, "num_samples": settings["trials"], "seed": seed, "max_concurrent_trials": 2},
                "resources": {"cpu": 1}, "data": {"subset": settings["subset"]}}
    original = search.tuner.BudgetAwareOptunaSearch
    if arm == "stock_optuna_asha":
        search.tuner.BudgetAwareOptunaSearch = StockOptunaSearch
    try:
        return sweep(document, storage, f"{arm}-{seed}")
    finally:
        search.tuner.BudgetAwareOptunaSearch = original


SETTINGS = {
    "smoke": {"epochs": 2, "trials": 3, "subset": 600, "target": 0.5, "also": [0.3], "seeds": [0]},
    "quick": {"epochs": 6, "trials": 12, "subset": 6000, "target": 0.95, "also": [0.93], "seeds": [0]},
    "full": {"epochs": 12, "trials": 16, "subset": None, "target": 0.99, "also": [0.985, 0.98], "seeds": [0, 1, 2]},
}


def run(settings: dict[str, Any]) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as storage:
        for seed in settings["seeds"]:
            for arm in ARMS:
                results = run_arm(arm, seed, settings, Path(storage))
                runs[arm].append({"seed": seed, "wall_s": results["fit_seconds"],
                                  "time_to_target_s": time_to_target(results, settings["target"]),
                                  "time_to_s": {str(t): time_to_target(results, t) for t in settings["also"]},
                                  "best_val_acc": max((t["val_acc"] or 0) for t in results["trials"]),
                                  "best_test_acc": (results["best"] or {}).get("test_acc"),
                                  "counts": results["counts"], "results": results})
                progress(f"{arm} seed {seed}: {runs[arm][-1]['wall_s']:.0f}s, target at "
                         f"{runs[arm][-1]['time_to_target_s']:.0f}s, best val_acc {runs[arm][-1]['best_val_acc']:.4f}")
    comparisons = {}
    for challenger in ("random_fifo", "stock_optuna_asha"):
        speedups, at_equal = [], []
        for ours, theirs in zip(runs["optuna_asha"], runs[challenger], strict=True):
            speedups.append(speedup(ours["time_to_target_s"], theirs["time_to_target_s"]))
            equal = min(ours["wall_s"], theirs["wall_s"])
            at_equal.append((best_by(ours["results"], equal), best_by(theirs["results"], equal)))
        reached = [s for s in speedups if s is not None]
        comparisons[challenger] = {"speedup_to_target": speedups,
                                   "median_speedup": statistics.median(reached) if reached else None,
                                   "median_speedup_at": {},
                                   "best_val_acc_at_equal_wall_ours_theirs": at_equal}
        for target in map(str, settings["also"]):
            values = [speedup(o["time_to_s"][target], t["time_to_s"][target])
                      for o, t in zip(runs["optuna_asha"], runs[challenger], strict=True)]
            values = [v for v in values if v is not None]
            comparisons[challenger]["median_speedup_at"][target] = statistics.median(values) if values else None
        progress(f"optuna_asha vs {challenger}: {comparisons[challenger]['median_speedup']}x faster to "
                 f"val_acc >= {settings['target']}")
    for arm_runs in runs.values():
        for entry in arm_runs:
            entry.pop("results")
    return {**settings, "runs": runs, "comparisons": comparisons, "goal_speedup": 3.0}


def main() -> None:
    scale = scale_argument(__doc__)
    write_result("search_quality", scale, run(SETTINGS[scale]))


if __name__ == "__main__":
    main()
