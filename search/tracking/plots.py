"""Figures for the parent run: optimisation history, parameter importances, parallel coordinates.

Optuna's matplotlib visualisations draw them. The study is rebuilt from this sweep
run's trials, whatever the search algorithm, so random and grid sweeps get the same
figures. The optimisation history shows each trial's best score; the importances and the
parallel coordinates compare trials at one budget (`report.common_budget`: the largest ASHA
rung or the full budget that at least 8 trials reached, early-stopped ones included), and
say which on the figure.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search.report import TrialSummary, common_budget, value_at
from spaces import SweepConfig

log = logging.getLogger(__name__)

PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")


def study_from_trials(trials: Sequence[TrialSummary], config: SweepConfig, budget: int | None = None) -> Any:
    """An in-memory Optuna study holding this sweep run's scored trials: each with its best score,
    or (`budget`, an epoch) with its score at that epoch, for the trials that reached it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {k: d.to_optuna() for k, d in config.searched().items()}
    study = optuna.create_study(direction="minimize" if config.mode == "min" else "maximize",
                                study_name=config.name)
    for trial in trials:
        score = trial.score if budget is None else value_at(trial, budget, config.metric)
        if score is None or trial.status == "errored":
            continue
        study.add_trial(optuna.trial.create_trial(
            params={k: trial.config[k] for k in distributions},
            distributions=distributions,
            value=score,
            intermediate_values={int(h["epoch"]): h[config.metric] for h in trial.history
                                 if config.metric in h},
            user_attrs={"trial_id": trial.trial_id, "status": trial.status},
        ))
    return study


def write_plots(trials: Sequence[TrialSummary], config: SweepConfig, folder: Path) -> list[Path]:
    """Save each figure as PNG in `folder`; a figure that cannot be drawn is skipped with a note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    budget, reached = common_budget(trials, config)
    studies = {None: study_from_trials(trials, config), budget: study_from_trials(trials, config, budget)}
    written = []
    for name in PLOTS:
        at = None if name == "optimization_history" else budget  # the others compare trials: at one budget
        study = studies[at]
        if at is not None and (len(study.trials) < 2 or not config.searched()):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks these plots experimental
                extra = {"evaluator": _evaluator()} if name == "param_importances" else {}
                axes = getattr(optuna_plots, f"plot_{name}")(study, **extra)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            log.info("plot %s skipped: %s", name, err)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        if at is not None:
            figure.suptitle(f"{config.metric} at epoch {at} ({reached} trials reached it)", y=1.02)
        figure.set_size_inches(10, 6)
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    if len(studies[budget].trials) >= 2 and config.searched():
        written.append(_importance_table(studies[budget], budget, reached, folder))
    return written


def _evaluator() -> Any:
    """Optuna's default importance evaluator (fANOVA), seeded: the plot and the table agree."""
    import optuna

    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def _importance_table(study: Any, budget: int, reached: int, folder: Path) -> Path:
    """The parameter importances behind the plot, as CSV: each key's importance at the budget."""
    import csv

    import optuna

    path = folder / "param_importances.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        importances = optuna.importance.get_param_importances(study, evaluator=_evaluator())
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["param", "importance", "budget_epoch", "trials"])
        for param, importance in importances.items():
            writer.writerow([param, f"{importance:.6g}", budget, reached])
    return path
