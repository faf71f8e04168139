"""Search quality per CPU-minute: Optuna + ASHA against random search without early stopping,
same trial count and cores, over seeds; and our PRUNED-aware Optuna bridge against Ray's stock
OptunaSearch on the same budget.

On MNIST most configurations reach 0.985 in an epoch, so the arms barely separate there;
`python -m bench full search_quality_fashion` runs the three arms on Fashion-MNIST over 5 seeds,
with the target set by the data: random search's median final best validation accuracy."""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from bench.common import progress, scale_argument, write_result
from bench.sweeps import sweep

SPACE = {"batch_norm": {"choice": [True, False]}, "skip": {"choice": [True, False]},
         "lr": {"loguniform": [1e-4, 1e-2]}, "l2": {"loguniform": [1e-6, 1e-2]},
         "dropout": {"uniform": [0.0, 0.5]}, "batch_size": {"choice": [64, 128, 256]}}
RANDOM_MEDIAN = "random_median"  # a target: random search's median (over seeds) final best val_acc
ARMS = {
    "optuna_asha": ({"algorithm": "optuna"}, {"type": "asha", "grace_period": 1, "reduction_factor": 3}),
    "random_fifo": ({"algorithm": "random"}, {"type": "fifo"}),
    "stock_optuna_asha": ({"algorithm": "optuna"}, {"type": "asha", "grace_period": 1, "reduction_factor": 3}),
}


class StockOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch as shipped (an ASHA-stopped trial is COMPLETE), with our constructor."""

    def __init__(self, *args: Any, max_t: int, step_key: str = "epoch", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


def time_to_target(results: dict[str, Any], target: float) -> float:
    """Seconds from the start of the sweep until some trial first reported val_acc >= target."""
    hits = [h["timestamp"] - results["fit_started_at"] for t in results["trials"] for h in t["history"]
            if h.get("val_acc", 0) >= target]
    return min(hits) if hits else math.inf


def speedup(ours: dict[str, Any], theirs: dict[str, Any], target: str | None = None) -> dict[str, Any]:
    """How many times sooner `ours` first reached the target than `theirs` (two runs of one seed).

    None when ours never reached it. When only ours did, theirs ran its whole sweep without
    reaching it, so the speedup is at least their wall time over our time: a lower bound."""
    def at(run: dict[str, Any]) -> float:
        value = run["time_to_target_s"] if target is None else run["time_to_s"][target]
        return math.inf if value is None else value  # JSON keeps "never" as null

    mine, other = at(ours), at(theirs)
    if math.isinf(mine):
        return {"speedup": None, "lower_bound": False}
    if math.isinf(other):
        return {"speedup": theirs["wall_s"] / mine, "lower_bound": True}
    return {"speedup": other / mine, "lower_bound": False}


def summarize(speedups: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over the seeds where we reached the target (a lower bound if any value in it is)."""
    reached = [s for s in speedups if s["speedup"] is not None]
    return {"median": statistics.median(s["speedup"] for s in reached) if reached else None,
            "lower_bound": any(s["lower_bound"] for s in reached), "seeds_reached": len(reached),
            "seeds": len(speedups)}


def compare(runs: dict[str, list[dict[str, Any]]], targets: list[str]) -> dict[str, Any]:
    """optuna_asha against each other arm: speedup to the main target (None) and to each other target."""
    comparisons = {}
    for challenger in [arm for arm in ("random_fifo", "stock_optuna_asha") if arm in runs]:
        pairs = list(zip(runs["optuna_asha"], runs[challenger], strict=True))
        entry: dict[str, Any] = {}
        for target in [None, *targets]:
            values = [speedup(ours, theirs, target) for ours, theirs in pairs]
            entry["main" if target is None else target] = {"per_seed": values, **summarize(values)}
        entry["wall_ratio"] = [theirs["wall_s"] / ours["wall_s"] for ours, theirs in pairs]
        comparisons[challenger] = entry
    return comparisons


def best_by(results: dict[str, Any], seconds: float) -> float:
    """The best val_acc any trial reported within `seconds` of the sweep's start."""
    values = [h["val_acc"] for t in results["trials"] for h in t["history"]
              if h["timestamp"] - results["fit_started_at"] <= seconds]
    return max(values, default=0.0)


def run_arm(arm: str, seed: int, settings: dict[str, Any], storage: Path) -> dict[str, Any]:
    searcher, scheduler = ARMS[arm]
    document = {"name": f"bench-{arm}", "epochs": settings["epochs"], "space": SPACE, "scheduler": scheduler,
                "search": {**searcher, "num_samples": settings["trials"], "seed": seed, "max_concurrent_trials": 2},
                "resources": {"cpu": 1},
                "data": {"subset": settings["subset"], "dataset": settings.get("dataset", "mnist")}}
    return sweep(document, storage, f"{arm}-{seed}", StockOptunaSearch if arm == "stock_optuna_asha" else None)


SETTINGS = {
    "smoke": {"epochs": 2, "trials": 3, "subset": 600, "target": 0.5, "also": [0.3], "seeds": [0]},
    "quick": {"epochs": 6, "trials": 12, "subset": 6000, "target": 0.95, "also": [0.93], "seeds": [0]},
    "full": {"epochs": 12, "trials": 16, "subset": None, "target": 0.99, "also": [0.985, 0.98], "seeds": [0, 1, 2]},
}
# Fashion-MNIST, where configurations differ: the target is random search's median final best val_acc.
FASHION = {"dataset": "fashion-mnist", "epochs": 6, "trials": 12, "subset": 20000, "target": RANDOM_MEDIAN,
           "also": [], "seeds": [0, 1, 2, 3, 4]}
FASHION_SMOKE = {**FASHION, "epochs": 2, "trials": 3, "subset": 600, "seeds": [0, 1]}


BRIDGE_ARMS = ("optuna_asha", "stock_optuna_asha")  # `python -m bench full bridge_vs_stock`


def run(settings: dict[str, Any], arms: tuple[str, ...] = tuple(ARMS)) -> dict[str, Any]:
    """Every arm (or the given ones, optuna_asha first) over the seeds, in one run, side by side."""
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as storage:
        for seed in settings["seeds"]:
            for arm in arms:
                results = run_arm(arm, seed, settings, Path(storage))
                runs[arm].append({"seed": seed, "wall_s": results["fit_seconds"],
                                  "best_val_acc": max((t["val_acc"] or 0) for t in results["trials"]),
                                  "best_test_acc": (results["best"] or {}).get("test_acc"),
                                  "counts": results["counts"], "results": results})
                progress(f"{arm} seed {seed}: {runs[arm][-1]['wall_s']:.0f}s, "
                         f"best val_acc {runs[arm][-1]['best_val_acc']:.4f}")
    if settings["target"] == RANDOM_MEDIAN:  # set by the data, once every arm has run
        settings = {**settings, "target": statistics.median(r["best_val_acc"] for r in runs["random_fifo"])}
        progress(f"target: random search's median final best val_acc, {settings['target']:.4f}")
    for arm_runs in runs.values():
        for entry in arm_runs:
            entry["time_to_target_s"] = time_to_target(entry["results"], settings["target"])
            entry["time_to_s"] = {str(t): time_to_target(entry["results"], t) for t in settings["also"]}
    comparisons = compare(runs, [str(t) for t in settings["also"]])
    for challenger, entry in comparisons.items():
        pairs = zip(runs["optuna_asha"], runs[challenger], strict=True)
        entry["best_val_acc_at_equal_wall_ours_theirs"] = [
            (best_by(ours["results"], equal), best_by(theirs["results"], equal))
            for ours, theirs in pairs for equal in [min(ours["wall_s"], theirs["wall_s"])]]
        gaps = sorted(a - b for a, b in entry["best_val_acc_at_equal_wall_ours_theirs"])
        entry["val_acc_gain_at_equal_wall"] = {"median": statistics.median(gaps), "min": gaps[0], "max": gaps[-1]}
        main = entry["main"]
        progress(f"optuna_asha vs {challenger}: {'≥ ' if main['lower_bound'] else ''}{main['median']}x faster to "
                 f"val_acc >= {settings['target']} ({main['seeds_reached']} of {main['seeds']} seeds reached it)")
    for arm_runs in runs.values():
        for entry in arm_runs:
            entry.pop("results")
    return {**settings, "runs": runs, "comparisons": comparisons, "goal_speedup": 3.0}


def main() -> None:
    scale = scale_argument(__doc__)
    write_result("search_quality", scale, run(SETTINGS[scale]))


if __name__ == "__main__":
    main()
