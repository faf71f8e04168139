"""What an ablation found: each factor's effect between its levels, paired by seed, with a 95%
confidence interval and a p-value (pure functions: numpy and scipy).

A factor's effect at one seed is the difference of a metric between two of its levels, averaged
over the combinations of the other factors' levels (each trained with that seed); the effect is
the mean of those differences over seeds. With 5 or more seeds the interval and p-value are a
paired t-test's; with 2 to 4 the interval is a bootstrap of the per-seed differences
(percentile, 10,000 resamples) and the p-value the exact sign-flip test's (with 3 seeds it
cannot go below 0.25): rough, and the table says so. One seed gives no interval. For two
two-level factors the interaction, (a1b1 - a0b1) - (a1b0 - a0b0), is tested the same way.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

CONFIDENCE = 0.95
T_TEST_MIN_SEEDS = 5
BOOTSTRAP_RESAMPLES = 10_000
EFFECT_METRICS = ("test_acc", "val_acc", "test_loss", "val_loss")


def paired_effect(diffs: Sequence[float]) -> dict[str, Any]:
    """Mean of per-seed differences with a 95% interval and a two-sided p-value (see the module)."""
    import numpy as np
    from scipy import stats

    values = np.asarray([d for d in diffs if d is not None and math.isfinite(d)], dtype=float)
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "ci_low": None, "ci_high": None, "p_value": None, "method": "no pairs"}
    mean = float(values.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "ci_low": None, "ci_high": None, "p_value": None,
                "method": "one seed: no interval"}
    if np.ptp(values) == 0:  # every seed moved by exactly the same amount
        return {"n": n, "mean": mean, "ci_low": mean, "ci_high": mean, "p_value": 0.0 if mean else 1.0,
                "method": "identical differences"}
    if n >= T_TEST_MIN_SEEDS:
        sem = float(values.std(ddof=1) / math.sqrt(n))
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df=n - 1)) * sem
        p_value = float(stats.ttest_1samp(values, 0.0).pvalue)
        return {"n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half, "p_value": p_value,
                "method": "paired t-test"}
    result = stats.bootstrap((values,), np.mean, confidence_level=CONFIDENCE, method="percentile",
                             n_resamples=BOOTSTRAP_RESAMPLES, rng=np.random.default_rng(0))
    # The p-value of so few pairs is the exact sign-flip test's (every one of the 2^n sign patterns):
    # a bootstrap's would claim p = 0 whenever every seed agrees.
    flips = stats.permutation_test((values,), np.mean, permutation_type="samples", alternative="two-sided")
    return {"n": n, "mean": mean, "ci_low": float(result.confidence_interval.low),
            "ci_high": float(result.confidence_interval.high), "p_value": float(flips.pvalue),
            "method": f"bootstrap CI, sign-flip p ({n} seeds: rough)"}


def ablation_effects(trials: Sequence[Mapping[str, Any]], factors: Mapping[str, Sequence[Any]],
                     metrics: Sequence[str] = EFFECT_METRICS, seed_key: str = "seed") -> list[dict[str, Any]]:
    """One row per contrast (each level of a factor against its first level, and the interaction of
    two two-level factors) and metric. `trials` are results.json trials (`config` plus metrics);
    errored trials and missing metrics leave their seed out of that contrast's pairs."""
    cells: dict[tuple, dict[str, float]] = {}
    for trial in trials:
        if trial.get("status") == "errored":
            continue
        config = trial["config"]
        key = (*(config.get(f) for f in factors), config.get(seed_key))
        cells[key] = {m: trial.get(m) for m in metrics}
    seeds = sorted({key[-1] for key in cells}, key=str)
    names = list(factors)
    rows = []
    for index, factor in enumerate(names):
        levels = list(factors[factor])
        others = [list(factors[f]) for f in names if f != factor]
        for level in levels[1:]:
            for metric in metrics:
                diffs = [_mean([_diff(cells, names, index, level, levels[0], combo, seed, metric)
                                for combo in itertools.product(*others)]) for seed in seeds]
                rows.append({"contrast": f"{factor}: {level} − {levels[0]}", "factor": factor,
                             "metric": metric, **paired_effect([d for d in diffs if d is not None])})
    if len(names) == 2 and all(len(factors[f]) == 2 for f in names):
        (a0, a1), (b0, b1) = (list(factors[f]) for f in names)
        for metric in metrics:
            diffs = []
            for seed in seeds:
                m = {(a, b): cells.get((a, b, seed), {}).get(metric) for a in (a0, a1) for b in (b0, b1)}
                if all(v is not None for v in m.values()):
                    diffs.append((m[a1, b1] - m[a0, b1]) - (m[a1, b0] - m[a0, b0]))
            rows.append({"contrast": f"{names[0]} × {names[1]} (interaction)", "factor": f"{names[0]}×{names[1]}",
                         "metric": metric, **paired_effect(diffs)})
    return [r for r in rows if r["n"]]


def _diff(cells: Mapping[tuple, Mapping[str, Any]], names: Sequence[str], index: int, level: Any, base: Any,
          combo: Sequence[Any], seed: Any, metric: str) -> float | None:
    def value(at: Any) -> Any:
        key = list(combo)
        key.insert(index, at)
        return cells.get((*key, seed), {}).get(metric)

    high, low = value(level), value(base)
    return None if high is None or low is None else float(high) - float(low)


def _mean(values: Sequence[float | None]) -> float | None:
    """The mean over the other factors' combinations; None unless every combination has its pair."""
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def effects_table(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("test_acc", "val_acc")) -> str:
    """The effects as a person reads them: contrast, metric, mean [95% CI], p, seeds, method."""
    from search.report import format_table

    shown = [{"contrast": r["contrast"], "metric": r["metric"], "effect": _pct(r, "mean"),
              "95% CI": f"[{_pct(r, 'ci_low')}, {_pct(r, 'ci_high')}]" if r["ci_low"] is not None else "-",
              "p": f"{r['p_value']:.3g}" if r["p_value"] is not None else "-", "seeds": r["n"],
              "method": r["method"]} for r in rows if r["metric"] in metrics]
    return format_table(shown, ["contrast", "metric", "effect", "95% CI", "p", "seeds", "method"])


def _pct(row: Mapping[str, Any], key: str) -> str:
    value = row[key]
    if value is None:
        return "-"
    return f"{value * 100:+.2f} pp" if row["metric"].endswith("_acc") else f"{value:+.4f}"


def forest_plot(rows: Sequence[Mapping[str, Any]], path: str, metric: str = "test_acc") -> bool:
    """Effect ± 95% CI per contrast for `metric`, as a PNG; False when there is nothing to draw."""
    chosen = [r for r in rows if r["metric"] == metric and r["mean"] is not None]
    if not chosen:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 100 if metric.endswith("_acc") else 1
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.6 * len(chosen)))
    for y, row in enumerate(reversed(chosen)):
        mean = row["mean"] * scale
        low = (row["ci_low"] if row["ci_low"] is not None else row["mean"]) * scale
        high = (row["ci_high"] if row["ci_high"] is not None else row["mean"]) * scale
        ax.errorbar(mean, y, xerr=[[mean - low], [high - mean]], fmt="o", capsize=4, color="black")
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(chosen)), [r["contrast"] for r in reversed(chosen)])
    unit = " (percentage points)" if scale == 100 else ""
    ax.set_xlabel(f"effect on {metric}{unit}, 95% CI ({chosen[0]['method']}, {chosen[0]['n']} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
