"""BENCHMARKS.md's rows and section for the simulated search benchmark (`bench/simulated.py`)."""

from __future__ import annotations

import statistics
from typing import Any

DEFAULT_ARM = "bridge_asha"  # what spaces/default.yaml runs (searcher + scheduler): ASHA (3, 9)
DEFAULT_FIFO_ARM = "bridge_fifo"  # the default searcher where a benchmark has no learning curves
NAMES = {
    "random_fifo": "random + FIFO", "random_asha": "random + ASHA (3, 9)",
    "stock_optuna_asha": "Ray's OptunaSearch + ASHA (defaults)", "bridge_asha": "bridge + ASHA (3, 9)",
    "bridge_patient_asha": "bridge + ASHA (3, 9), min_peers 6",
    "bridge_patient_asha_grace1": "bridge + ASHA (1, 3, 9), min_peers 6",
    "stock_optuna_fifo": "Ray's OptunaSearch + FIFO", "bridge_fifo": "bridge + FIFO",
}


def _interval(values: list[float] | None, digits: int = 2, unit: str = "") -> str:
    if not values or values[0] is None:
        return "—"
    point, low, high = (v if v is not None else float("inf") for v in values)
    text = "∞" if point == float("inf") else f"{point:.{digits}f}{unit}"
    high_text = "∞" if high == float("inf") else f"{high:.{digits}f}"
    return f"{text} [{low:.{digits}f}, {high_text}]"


def _finite(value: float | None) -> float:
    """A ratio as JSON holds it: null (no interval: neither arm reached the target) counts as 0, not met."""
    return 0.0 if value is None or value != value else float(value)


def default_arm(benchmark: dict[str, Any]) -> str:
    return DEFAULT_ARM if DEFAULT_ARM in benchmark["arms"] else DEFAULT_FIFO_ARM


def goal_rows(s: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The issue's two goals, per worker count: ≥ 3× random + FIFO (median over the problems with learning
    curves), and never below the stock arm (its ratio's interval not below 1.0 on any problem)."""
    rows = []
    workers = sorted({w for b in s["benchmarks"].values() for w in b["by_workers"]}, key=int)
    for w in workers:
        curves = {n: b for n, b in s["benchmarks"].items() if DEFAULT_ARM in b["arms"] and w in b["by_workers"]}
        ratios = [_finite(b["by_workers"][w]["arms"][DEFAULT_ARM]["speedup_vs_random_fifo"][0])
                  for b in curves.values() if "arms" in b["by_workers"][w]]
        if ratios:
            median = statistics.median(ratios)
            rows.append((f"6. Simulated: the default ({NAMES[DEFAULT_ARM]}) vs random + FIFO, time to target, median "
                         f"over {len(ratios)} problems with learning curves, {w} workers ({s['date'][:10]})",
                         f"{median:.2f}×", "≥ 3×", "met" if median >= 3 else "**not met**"))
        lows = {n: _finite(b["by_workers"][w]["arms"][default_arm(b)]["speedup_vs_stock"][1])
                for n, b in s["benchmarks"].items() if "arms" in b["by_workers"].get(w, {})}
        if lows:
            worst = min(lows, key=lambda n: lows[n])
            rows.append((f"6b. Simulated: the default vs Ray's stock OptunaSearch, lowest 95% bound of the time ratio "
                         f"over {len(lows)} problems, {w} workers", f"{lows[worst]:.2f} ({worst})", "≥ 1.0",
                         "met" if lows[worst] >= 1.0 else "**not met**"))
    return rows


def simulated_section(s: dict[str, Any]) -> list[str]:
    settings = s["settings"]
    out = ["", "## Search in simulated time", "",
           f"`python -m bench {s['scale']} simulated` ({s['date']}): each arm is the sweep file a user would write, "
           "its searcher and scheduler built by `build_searcher`/`build_scheduler` and driven by "
           "`search/engine/simulate.py` through Tune's interfaces, over learning curves read from a benchmark "
           f"instead of training. {settings['seeds']} seeds per arm; every arm gets the simulated time random "
           "search without early stopping needs for "
           f"{', '.join(f'{r} full trials per worker at {w} workers' for w, r in settings['rounds'].items())}. "
           "The target is the upper quartile of random + FIFO's final regrets (random search reaches it in three "
           "seeds of four); times are in full trials' worth of work per worker (the tabular problems: their "
           "recorded seconds). Medians over seeds with 95% bootstrap intervals; a ratio > 1: the arm "
           "reaches the target sooner. ∞: not reached within the time (in half the seeds or more).", ""]
    for name, b in s["benchmarks"].items():
        out += [f"### {name}", "", b["note"] + ".", ""]
        if "surrogate" in b:
            g = b["surrogate"]
            out += [f"Surrogate held-out error (5 folds by configuration): {g['mae']:.4f} val_loss over all epochs, "
                    f"{g['mae_last_epoch']:.4f} at the last, against a spread of {g['val_loss_spread_last_epoch']:.4f} "
                    f"between configurations; the noise measured on {g['noise_pairs']} retrained configurations: "
                    f"{g['noise_trial']:.4f} per trial, {g['noise_epoch']:.4f} per epoch.", ""]
        for w, c in b["by_workers"].items():
            if "error" in c:
                out += [f"{w} workers: the run failed ({c['error']}).", ""]
                continue
            out += [f"{w} workers; target regret {c['target_regret']:.4g}; time {c['horizon']:.3g}.", "",
                    "| arm | trials | full | time to target | × random + FIFO | × stock | regret at the end |",
                    "| --- | --- | --- | --- | --- | --- | --- |"]
            for arm, a in c["arms"].items():
                out.append(f"| {NAMES.get(arm, arm)} | {a['trials']:.0f} | {a['full_trials']:.0f} | "
                           f"{_interval(a['time_to_target'], 3)} | {_interval(a['speedup_vs_random_fifo'])} | "
                           f"{_interval(a['speedup_vs_stock'])} | {_interval(a['regret_at_end'], 4)} |")
            out += ["", f"![{name}, {w} workers](bench/results/{c['plot']})", ""]
    if s.get("cluster_planning"):
        out += planning_section(s["cluster_planning"])
    return out


def planning_section(p: dict[str, Any]) -> list[str]:
    """The cluster-planning table: the default sweep on the seed network's curves at more workers."""
    out = ["", "### Cluster planning", "",
           f"The default sweep's budget with {NAMES.get(p['arm'], p['arm'])} (the candidate default when it "
           f"ran), {p['budget_trials']} trials of 15 epochs on the "
           f"seed network's Fashion-MNIST curves, one epoch ≈ {p['epoch_seconds']:.1f} s of one core) on more "
           f"workers: the time until its best fully trained model is as good as random search's median with the "
           f"same trial count (regret {p['target_regret']:.4f}), the whole sweep's time, and the parallel "
           "efficiency (one worker's time to target ÷ (workers × this one's)); median over seeds.", "",
           "| workers | time to target (epochs of one worker) | whole sweep | efficiency | regret at the end |",
           "| --- | --- | --- | --- | --- |"]
    epoch = p["epoch_seconds"]
    for w, row in p["by_workers"].items():
        t = row["time_to_target"]
        out.append(f"| {w} | {'∞' if t == float('inf') or t is None else f'{t / epoch:.0f}'} | "
                   f"{row['sweep_time'] / epoch:.0f} | {row['efficiency']:.2f} | {row['regret_at_end']:.4f} |")
    return out
