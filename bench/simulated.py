"""Searchers and schedulers compared in simulated time (`search.engine.simulate`), many seeds each.

`python -m bench quick simulated` (or smoke, full). The benchmarks are not this project's:
multi-fidelity Branin and Hartmann from `mfhpo-benchmark-api` (the `bench` extra), with their
fidelity bias from "low fidelity agrees" to "misleads"; an epoch is one step of fidelity, and its
cost the benchmark's runtime at that fidelity less the runtime at the one before (a full trial
costs about 1 unit of simulated time). The known optimum makes regret exact.

Every arm gets the same simulated time: what random search without early stopping needs for
`trials` full trials on the given workers. Each arm is the `SweepConfig` a user would write (the
searcher and scheduler are built by `build_searcher`/`build_scheduler`), and `stock_optuna_asha`
is Ray's `OptunaSearch` with its default TPE on `ASHAScheduler`'s defaults (grace period 1,
reduction factor 4), as Ray's documentation wires them.

Per benchmark and worker count: the target is the median over seeds of random + FIFO's final
regret; each arm's time to reach it and its regret at the common end time, median over seeds with
a 95% bootstrap interval, and the ratio of medians to random + FIFO and to the stock arm (bootstrap
of the seeds; a ratio > 1 means the arm is faster).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.common import RESULTS, progress, write_result
from search.engine.simulate import Curve, SimulatedSweep, quiet_optuna, simulate
from spaces import SweepConfig, validate_sweep

MAX_T = 27  # epochs of a full trial, as in spaces/default.yaml
BOOTSTRAP = 2000


@dataclass(frozen=True)
class Benchmark:
    name: str
    dim: int
    optimum: float
    make: Callable[..., Any]  # (seed, deterministic) -> a benchmark_apis function
    note: str


def _branin(seed: int | None, deterministic: bool) -> Any:
    from benchmark_apis import MFBranin

    return MFBranin(min_fidel=1, max_fidel=MAX_T, seed=seed, deterministic=deterministic, runtime_factor=1.0)


def _hartmann(dim: int, bias: float) -> Callable[..., Any]:
    def make(seed: int | None, deterministic: bool) -> Any:
        from benchmark_apis import MFHartmann

        return MFHartmann(dim=dim, bias=bias, min_fidel=1, max_fidel=MAX_T, seed=seed, deterministic=deterministic,
                          runtime_factor=1.0)

    return make


BENCHMARKS = {
    "branin": Benchmark("branin", 2, 0.397887, _branin, "MFBranin, low fidelity agrees (the Dragonfly deltas)"),
    "hartmann3": Benchmark("hartmann3", 3, -3.86278, _hartmann(3, 0.1), "MFHartmann 3-d, bias 0.1"),
    "hartmann6": Benchmark("hartmann6", 6, -3.32237, _hartmann(6, 0.1), "MFHartmann 6-d, bias 0.1"),
    "hartmann6_misleading": Benchmark("hartmann6_misleading", 6, -3.32237, _hartmann(6, 1.0),
                                      "MFHartmann 6-d, bias 1.0: low fidelity misleads"),
}

ASHA_OURS = {"type": "asha", "grace_period": 3, "reduction_factor": 3}  # spaces/default.yaml's rungs: 3, 9
ASHA_RAY = {"type": "asha", "grace_period": 1, "reduction_factor": 4}  # ASHAScheduler's defaults
ARMS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "random_fifo": ({"algorithm": "random"}, {"type": "fifo"}),
    "random_asha": ({"algorithm": "random"}, ASHA_OURS),
    "stock_optuna_asha": ({"algorithm": "optuna"}, ASHA_RAY),
    "bridge_asha": ({"algorithm": "optuna"}, ASHA_OURS),  # today's default: the PRUNED-aware bridge
    # candidates: each kept only if it wins by the numbers
    "bridge_patient_asha": ({"algorithm": "optuna"}, {**ASHA_OURS, "min_peers": 3}),
    "bridge_patient6_asha": ({"algorithm": "optuna"}, {**ASHA_OURS, "min_peers": 6}),
    "bridge_asha_grace1": ({"algorithm": "optuna"}, {**ASHA_OURS, "grace_period": 1}),  # rungs 1, 3, 9
}

SETTINGS = {
    "smoke": {"benchmarks": ["branin"], "workers": [4], "seeds": 3, "trials": 24},
    "quick": {"benchmarks": list(BENCHMARKS), "workers": [4, 32], "seeds": 20, "trials": 64},
    "full": {"benchmarks": list(BENCHMARKS), "workers": [4, 32], "seeds": 30, "trials": 128},
}


def stock_optuna_class(seed: int) -> type:
    """Ray's `OptunaSearch` as its documentation uses it: Optuna's default TPE (seeded), nothing else."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class StockOptunaSearch(OptunaSearch):
        def __init__(self, *args: Any, max_t: int, step_key: str = "epoch", sampler: Any = None,
                     **kwargs: Any) -> None:
            super().__init__(*args, sampler=optuna.samplers.TPESampler(seed=seed), **kwargs)

    return StockOptunaSearch


def arm_config(bench: Benchmark, arm: str, seed: int, num_samples: int) -> SweepConfig:
    """The sweep a user would write for this benchmark and arm."""
    search, scheduler = ARMS[arm]
    return validate_sweep({
        "name": f"{bench.name}-{arm}", "trainable": "bench.simulated:not_called", "metric": "loss", "mode": "min",
        "epochs": MAX_T, "space": {f"x{d}": {"uniform": [0.0, 1.0]} for d in range(bench.dim)},
        "search": {**search, "num_samples": num_samples, "seed": seed}, "scheduler": scheduler})


def objective(bench: Benchmark, seed: int) -> tuple[Callable[[dict[str, Any]], Curve], Callable[[dict], float]]:
    """The noisy learning curve a trial sees, and the noise-free full-fidelity value regret is measured on."""
    noisy, exact = bench.make(seed, False), bench.make(None, True)
    keys = [f"x{d}" for d in range(bench.dim)]
    runtimes = [0.0] + [exact({k: 0.5 for k in keys}, fidels={"z0": e})["runtime"] for e in range(1, MAX_T + 1)]

    def curve(config: dict[str, Any]) -> Curve:
        x = {k: float(config[k]) for k in keys}
        values = [noisy(x, fidels={"z0": e})["loss"] for e in range(1, MAX_T + 1)]
        return Curve(values, [runtimes[e] - runtimes[e - 1] for e in range(1, MAX_T + 1)])

    def final(config: dict[str, Any]) -> float:
        return exact({k: float(config[k]) for k in keys}, fidels={"z0": MAX_T})["loss"]

    return curve, final


def regret_trace(sweep: SimulatedSweep, final: Callable[[dict], float], optimum: float) -> list[tuple[float, float]]:
    """(time, regret) each time the incumbent changes: the fully trained trial with the best reported value
    (what a user would deploy), its regret measured noise-free at full fidelity."""
    trace, best = [], math.inf
    for report in sweep.reports:
        if report.epoch == MAX_T and report.value < best:
            best = report.value
            trace.append((report.time_s, final(sweep.trials[report.trial_id].config) - optimum))
    return trace


def regret_at(trace: list[tuple[float, float]], when: float) -> float:
    value = math.inf
    for t, regret in trace:
        if t > when:
            break
        value = regret
    return value


def time_to(trace: list[tuple[float, float]], target: float) -> float:
    return next((t for t, regret in trace if regret <= target), math.inf)


def run_one(bench: Benchmark, arm: str, seed: int, workers: int, trials: int) -> dict[str, Any]:
    horizon = trials * 1.0 / workers * _full_trial_cost(bench)  # random + FIFO's `trials` full trials
    config = arm_config(bench, arm, seed, num_samples=trials * 8)  # the clock, not the count, ends it
    curve, final = objective(bench, seed)
    started = time.perf_counter()
    sweep = simulate(config, curve, workers, time_budget_s=horizon,
                     optuna_class=stock_optuna_class(seed) if arm.startswith("stock") else None)
    trace = regret_trace(sweep, final, bench.optimum)
    return {"trace": trace, "trials": len(sweep.trials), "epochs": sweep.epochs, "horizon": horizon,
            "full_trials": sum(t.epochs == MAX_T for t in sweep.trials.values()),
            "wall_s": time.perf_counter() - started}


def _full_trial_cost(bench: Benchmark) -> float:
    exact = bench.make(None, True)
    return exact({f"x{d}": 0.5 for d in range(bench.dim)}, fidels={"z0": MAX_T})["runtime"]


def _median_ci(values: list[float], rng: np.random.Generator) -> list[float]:
    data = np.asarray(values, dtype=float)
    boots = np.median(rng.choice(data, size=(BOOTSTRAP, data.size)), axis=1)
    return [float(np.median(data)), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]


def _ratio_ci(theirs: list[float], ours: list[float], rng: np.random.Generator) -> list[float]:
    """Median of `theirs` ÷ median of `ours` (> 1: ours is faster), with a 95% bootstrap interval over seeds."""
    a, b = np.asarray(theirs, dtype=float), np.asarray(ours, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = float(np.median(a) / np.median(b))
        boots = (np.median(rng.choice(a, size=(BOOTSTRAP, a.size)), axis=1)
                 / np.median(rng.choice(b, size=(BOOTSTRAP, b.size)), axis=1))
    boots = boots[~np.isnan(boots)]  # neither reached the target in that resample: no ratio
    return [point, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]


def compare(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Target, time to target and regret at the end, per arm, with the ratios to the two baselines."""
    rng = np.random.default_rng(0)
    horizon = runs["random_fifo"][0]["horizon"]
    target = float(np.median([regret_at(r["trace"], horizon) for r in runs["random_fifo"]]))
    times = {arm: [time_to(r["trace"], target) for r in rs] for arm, rs in runs.items()}
    arms = {}
    for arm, rs in runs.items():
        arms[arm] = {
            "time_to_target": _median_ci(times[arm], rng),
            "reached": sum(math.isfinite(t) for t in times[arm]),
            "regret_at_end": _median_ci([regret_at(r["trace"], horizon) for r in rs], rng),
            "regret_at_quarter": _median_ci([regret_at(r["trace"], horizon / 4) for r in rs], rng),
            "speedup_vs_random_fifo": _ratio_ci(times["random_fifo"], times[arm], rng),
            "speedup_vs_stock_optuna_asha": _ratio_ci(times["stock_optuna_asha"], times[arm], rng),
            "trials": float(np.median([r["trials"] for r in rs])),
            "full_trials": float(np.median([r["full_trials"] for r in rs])),
        }
    return {"target_regret": target, "horizon": horizon, "seeds": len(runs["random_fifo"]), "arms": arms}


def plot(name: str, runs: dict[str, list[dict[str, Any]]], path: str) -> None:
    """Anytime regret per arm: the median over seeds and the interquartile band, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    horizon = runs["random_fifo"][0]["horizon"]
    grid = np.linspace(horizon / 100, horizon, 100)
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, rs in runs.items():
        values = np.array([[regret_at(r["trace"], t) for t in grid] for r in rs])
        values = np.where(np.isfinite(values), values, np.nan)
        with np.errstate(all="ignore"):
            median, low, high = (np.nanquantile(values, q, axis=0) for q in (0.5, 0.25, 0.75))
        ax.plot(grid, median, label=arm)
        ax.fill_between(grid, low, high, alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("simulated time (full trials' worth of work per worker)")
    ax.set_ylabel("regret of the best fully trained trial")
    ax.set_title(name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(settings: dict[str, Any], scale: str = "quick", arms: tuple[str, ...] = tuple(ARMS)) -> dict[str, Any]:
    quiet_optuna()
    results: dict[str, Any] = {"settings": settings, "arms": list(arms), "max_t": MAX_T, "benchmarks": {}}
    folder = RESULTS / scale
    folder.mkdir(parents=True, exist_ok=True)
    for name in settings["benchmarks"]:
        bench = BENCHMARKS[name]
        results["benchmarks"][name] = {"note": bench.note, "by_workers": {}}
        for workers in settings["workers"]:
            runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
            for arm in arms:
                for seed in range(settings["seeds"]):
                    runs[arm].append(run_one(bench, arm, seed, workers, settings["trials"]))
                wall = sum(r["wall_s"] for r in runs[arm])
                progress(f"{name}, {workers} workers, {arm}: {settings['seeds']} seeds in {wall:.0f} s, "
                         f"{np.median([r['trials'] for r in runs[arm]]):.0f} trials each")
            summary = compare(runs)
            summary["wall_s"] = {arm: sum(r["wall_s"] for r in rs) for arm, rs in runs.items()}
            picture = folder / f"simulated_{name}_w{workers}.png"
            plot(f"{name}, {workers} workers, {settings['seeds']} seeds", runs, str(picture))
            summary["plot"] = str(picture.relative_to(RESULTS.parent.parent))
            results["benchmarks"][name]["by_workers"][str(workers)] = summary
    return results


def not_called(config: dict[str, Any]) -> None:
    """The sweep files' `trainable:`: a simulated sweep trains nothing."""
    raise RuntimeError("a simulated sweep runs no trainable")


def main() -> None:
    import sys

    scale = sys.argv[1] if len(sys.argv) > 1 else "quick"
    write_result("simulated", scale, run(SETTINGS[scale], scale))


if __name__ == "__main__":
    main()
