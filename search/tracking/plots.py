"""Figures for the parent run: optimisation history, parameter importances, parallel coordinates.

Optuna's matplotlib visualisations draw them. The study is rebuilt from this sweep
run's trials, whatever the search algorithm, so random and grid sweeps get the same
figures. Every non-errored trial enters with the best score it reached (an early-
stopped trial's score is from fewer epochs: the figures show what each config got to).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search.report import TrialSummary
from spaces import SweepConfig

log = logging.getLogger(__name__)

PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")


def study_from_trials(trials: Sequence[TrialSummary], config: SweepConfig) -> Any:
    """An in-memory Optuna study holding this sweep run's scored trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {k: d.to_optuna() for k, d in config.searched().items()}
    study = optuna.create_study(direction="minimize" if config.mode == "min" else "maximize",
                                study_name=config.name)
    for trial in trials:
        if trial.score is None or trial.status == "errored":
            continue
        study.add_trial(optuna.trial.create_trial(
            params={k: trial.config[k] for k in distributions},
            distributions=distributions,
            value=trial.score,
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

    study = study_from_trials(trials, config)
    written = []
    for name in PLOTS:
        if name != "optimization_history" and (len(study.trials) < 2 or not config.searched()):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks these plots experimental
                axes = getattr(optuna_plots, f"plot_{name}")(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            log.info("plot %s skipped: %s", name, err)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(10, 6)
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written
