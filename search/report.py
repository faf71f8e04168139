"""What a finished sweep found: per-trial summaries, the best trial, the ablation table, results.json."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from core.names import (
    EPOCH_METRICS,
    EPOCHS,
    ERRORED,
    REPORTED_EPOCH,
    SPACE_KEYS,
    STATUSES,
    TUNE_RESULT_KEYS,
    trial_status,
)
from spaces import Choice, Grid, SweepConfig

CONFIG_KEYS = SPACE_KEYS  # the seed's; a `model:` callable's own keys follow them (config_keys)
HISTORY_KEYS = (EPOCHS, *EPOCH_METRICS, "timestamp")


@dataclass
class TrialSummary:
    """One trial as a person reads it: its config, how far it got, its best epoch."""

    trial_id: str
    status: str
    config: dict[str, Any]
    epochs: int
    best_epoch: int | None
    score: float | None  # the sweep metric at the best epoch
    val_loss: float | None
    val_acc: float | None
    test_loss: float | None = None  # set by the driver for the trials it evaluates on test (chosen_trials)
    test_acc: float | None = None
    node_id: str | None = None
    error: str | None = None
    checkpoint: str | None = None
    history: list[dict[str, float]] = field(default_factory=list, repr=False)


def history_from_rows(rows: Iterable[dict[str, Any]], step_key: str = EPOCHS) -> list[dict[str, float]]:
    """Per-epoch metrics, one row per epoch; a re-run epoch (after a restore) keeps its last report.

    The seed's trainable reports `epoch` and its known metrics; a trainable of the user's is
    counted by `step_key` (Tune's `training_iteration`) and keeps every numeric metric it reports.
    """
    by_epoch: dict[int, dict[str, float]] = {}
    for row in rows:
        row = epoch_row(row, step_key)
        epoch = row.get("epoch")
        if epoch is None or (isinstance(epoch, float) and math.isnan(epoch)):
            continue
        keys = HISTORY_KEYS if step_key == EPOCHS else [k for k in row if is_metric(k, row[k]) or k == "timestamp"]
        by_epoch[int(epoch)] = {k: float(row[k]) for k in keys
                                if k in row and row[k] is not None and not _is_nan(row[k])}
    return [by_epoch[e] for e in sorted(by_epoch)]


def epoch_row(row: dict[str, Any], step_key: str = EPOCHS) -> dict[str, Any]:
    """A report with the tool's step as `epoch` (a user trainable's own `epoch` kept as `reported_epoch`)."""
    if step_key == EPOCHS:
        return row
    out = {k: v for k, v in row.items() if k != EPOCHS}
    if EPOCHS in row:
        out[REPORTED_EPOCH] = row[EPOCHS]
    out[EPOCHS] = row.get(step_key)
    return out


def is_metric(key: str, value: Any) -> bool:
    """A number a trainable reported (not one of Tune's own keys): logged to MLflow per step."""
    return (key not in TUNE_RESULT_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool)
            and not _is_nan(value))


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def summarize_trial(
    trial_id: str, config: dict[str, Any], history: list[dict[str, float]], *,
    errored: bool, max_t: int, metric: str, mode: str, unfinished: bool = False,
    node_id: str | None = None,
    error: str | None = None, checkpoint: str | None = None,
) -> TrialSummary:
    """Fold a trial's per-epoch history into its summary; the best epoch is by the sweep metric."""
    epochs = int(history[-1]["epoch"]) if history else 0
    scored = [h for h in history if metric in h and math.isfinite(h[metric])]
    pick = min if mode == "min" else max
    best = pick(scored, key=lambda h: h[metric]) if scored else None
    return TrialSummary(
        trial_id=trial_id,
        status=trial_status(errored, epochs, max_t, unfinished),
        config={k: v for k, v in config.items() if k != "epochs"},
        epochs=epochs,
        best_epoch=int(best["epoch"]) if best else None,
        score=best[metric] if best else None,
        val_loss=best.get("val_loss") if best else None,
        val_acc=best.get("val_acc") if best else None,
        node_id=node_id,
        error=error,
        checkpoint=checkpoint,
        history=history,
    )


def asha_rungs(config: SweepConfig) -> list[int]:
    """The epochs at which ASHA compares trials: grace_period × reduction_factor^k < max_t, each at
    the first whole epoch that reaches it (the schema bounds how many there are)."""
    rungs, rung = [], float(config.scheduler.grace_period)
    while rung < config.scheduler.max_t:
        if math.ceil(rung) not in rungs:
            rungs.append(math.ceil(rung))
        rung *= config.scheduler.reduction_factor
    return rungs


MIN_TRIALS_AT_BUDGET = 8  # importances and the batch-norm × skip table need this many trials at one budget


def common_budget(trials: Sequence[TrialSummary], config: SweepConfig) -> tuple[int, int]:
    """(epoch, trials): the largest budget — an ASHA rung or the full budget — that at least
    `MIN_TRIALS_AT_BUDGET` trials reached (early-stopped ones included, if stopped after it), so
    that trials are compared at equal training; when no budget has that many, the one most trials
    reached (the larger on a tie)."""
    budgets = sorted({*(asha_rungs(config) if config.scheduler.type == "asha" else []),
                      config.scheduler.max_t}, reverse=True)
    counts = [(b, sum(value_at(t, b, config.metric) is not None for t in trials)) for b in budgets]
    enough = [(b, n) for b, n in counts if n >= MIN_TRIALS_AT_BUDGET]
    return enough[0] if enough else max(counts, key=lambda bn: (bn[1], bn[0]))


def value_at(trial: TrialSummary, epoch: int, metric: str) -> float | None:
    """`metric` at `epoch` of a trial that reached it (None for errored trials or ones stopped before)."""
    if trial.status == ERRORED:
        return None
    for row in trial.history:
        if int(row.get(EPOCHS, -1)) == epoch and metric in row and not _is_nan(row[metric]):
            return float(row[metric])
    return None


def rank_trials(trials: Sequence[TrialSummary], mode: str) -> list[TrialSummary]:
    """Trials best first by their best epoch's score; trials without one go last."""
    sign = 1 if mode == "min" else -1
    return sorted(trials, key=lambda t: (t.score is None, sign * (t.score or 0.0)))


def group_of(trial: TrialSummary) -> tuple[Any, Any]:
    return trial.config.get("batch_norm"), trial.config.get("skip")


def chosen_trials(trials: Sequence[TrialSummary]) -> list[TrialSummary]:
    """The trials whose model is evaluated on the test split: the best by validation of each
    batch_norm × skip group (the overall best among them). `trials` are ranked best first."""
    chosen: dict[tuple[Any, Any], TrialSummary] = {}
    for trial in trials:
        if trial.status != ERRORED and trial.checkpoint and trial.score is not None:
            chosen.setdefault(group_of(trial), trial)
    return list(chosen.values())


def ablation_rows(trials: Sequence[TrialSummary], budget: int | None = None) -> list[dict[str, Any]]:
    """The seed's question for every sweep: per batch_norm × skip, how good did trials get on
    validation, and the test accuracy of the group's best trial by validation (never the best
    test accuracy over trials, which would choose by test). `trials` are ranked best first.

    With a `budget` (an epoch: `common_budget`), each cell also counts the trials that reached it
    and their best and mean val_acc there: trials compared at equal training."""
    rows = []
    for bn in (True, False):
        for skip in (True, False):
            group = [t for t in trials if group_of(t) == (bn, skip) and t.status != ERRORED]
            val = [t.val_acc for t in group if t.val_acc is not None]
            best = next((t for t in group if t.score is not None), None)
            at = [v for t in group if (v := value_at(t, budget, "val_acc")) is not None] if budget else []
            rows.append({
                "batch_norm": bn, "skip": skip, "trials": len(group),
                **({"budget_epoch": budget, "trials_at_budget": len(at),
                    "best_val_acc_at_budget": max(at) if at else None,
                    "mean_val_acc_at_budget": sum(at) / len(at) if at else None} if budget else {}),
                "best_val_acc": max(val) if val else None,
                "mean_val_acc": sum(val) / len(val) if val else None,
                "best_trial": best.trial_id if best else None,
                "best_trial_val_acc": best.val_acc if best else None,
                "best_trial_test_acc": best.test_acc if best else None,
            })
    return rows


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table (pandas does the layout)."""
    import pandas as pd

    if not rows:
        return "(none)"
    frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows])
    return frame.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")


def config_keys(trials: Sequence[TrialSummary]) -> list[str]:
    """The config keys of these trials: the seed's first, in their order, then any others."""
    seen = {k: None for t in trials for k in t.config}
    return [k for k in CONFIG_KEYS if k in seen] + sorted(k for k in seen if k not in CONFIG_KEYS)


def top_trials_table(trials: Sequence[TrialSummary], metric: str = "val_loss", limit: int = 10) -> str:
    """The best trials: config, validation loss and accuracy at the best epoch (and the sweep's metric
    when it is another one), epochs run, status."""
    scores = [] if metric in ("val_loss", "val_acc") else [metric]
    rows = [{"trial": t.trial_id, **t.config, **dict.fromkeys(scores, t.score), "val_loss": t.val_loss,
             "val_acc": t.val_acc, "epochs": t.epochs, "status": t.status} for t in trials[:limit]]
    columns = ["trial", *config_keys(trials), *scores, "val_loss", "val_acc", "epochs", "status"]
    return format_table(rows, [c for c in columns if any(r.get(c) is not None for r in rows) or c == "trial"])


def level_keys(config: SweepConfig) -> list[str]:
    """The searched keys with listed values (choice or grid): booleans and categories (not `seed`,
    whose levels are repeats, not choices)."""
    return [k for k, v in config.searched().items() if isinstance(v, (Choice, Grid)) and k != "seed"]


def level_rows(trials: Sequence[TrialSummary], key: str, max_t: int, metric: str, mode: str
               ) -> list[dict[str, Any]]:
    """Per value of `key`: how many trials ran it and ran the full budget (`max_t` epochs), and the best
    and mean of the sweep metric over those that ran the full budget (a trial stopped early is not
    compared with one that was not). `trials` are ranked best first."""
    pick = min if mode == "min" else max
    levels = list(dict.fromkeys(t.config.get(key) for t in trials if key in t.config))
    rows = []
    for level in levels:
        group = [t for t in trials if t.config.get(key) == level and t.status != ERRORED]
        full = [t.score for t in group if t.epochs >= max_t and t.score is not None]
        rows.append({key: level, "trials": len(group), "full_budget": len(full),
                     f"best_{metric}": pick(full) if full else None,
                     f"mean_{metric}": sum(full) / len(full) if full else None})
    return rows


def level_tables(trials: Sequence[TrialSummary], config: SweepConfig) -> dict[str, list[dict[str, Any]]]:
    """`level_rows` for every searched boolean or categorical key, by key."""
    return {key: level_rows(trials, key, config.scheduler.max_t, config.metric, config.mode)
            for key in level_keys(config)}


def ablation_table(trials: Sequence[TrialSummary], budget: int | None = None) -> str:
    at_budget = ["trials_at_budget", "mean_val_acc_at_budget"] if budget else []
    return format_table(ablation_rows(trials, budget), ["batch_norm", "skip", "trials", *at_budget, "best_val_acc",
                                                        "mean_val_acc", "best_trial", "best_trial_test_acc"])


def results_payload(
    config: SweepConfig, run_name: str, trials: Sequence[TrialSummary], best: dict[str, Any] | None,
    *, status: str, wall_seconds: float, extra: dict[str, Any],
) -> dict[str, Any]:
    """The machine-readable record of a sweep run, written as results.json."""
    counts = {s: sum(t.status == s for t in trials) for s in STATUSES}
    return {
        "sweep": config.name,
        "run_name": run_name,
        "status": status,
        "metric": config.metric,
        "mode": config.mode,
        "num_trials": len(trials),
        "counts": counts,
        "wall_seconds": round(wall_seconds, 2),
        "best": best,
        "trials": [{k: v for k, v in asdict(t).items() if k != "history"} | {"history": t.history}
                   for t in trials],
        "ablation": ablation_rows(trials, common_budget(trials, config)[0] if trials else None),
        "common_budget": dict(zip(("epoch", "trials"), common_budget(trials, config), strict=True)) if trials else None,
        "levels": level_tables(trials, config),
        **extra,
    }
