"""The seed's two experiments with statistics: `tune ablate seed_bn --factors batch_norm` and
`tune ablate seed_skip --factors skip`, several seeds each, the seed's settings (batch norm at lr
1e-3, batch 128, 30 epochs; skip at lr 5e-3, 10 epochs): each switch's effect on test and
validation accuracy, paired by seed, with a 95% confidence interval and a p-value."""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

from bench.common import mnist_dir, progress, scale_argument, write_result
from bench.seed_table import SEED_NUMBERS, SWITCH

SETTINGS = {"smoke": {"seeds": 2, "epochs": 1, "subset": 600}, "quick": {"seeds": 3, "epochs": 2, "subset": 6000},
            "full": {"seeds": 5, "epochs": None, "subset": None}}  # full: the files' own epochs, all of MNIST


def run(settings: dict[str, Any]) -> dict[str, Any]:
    from search.cli import prepare_tracking
    from search.commands.ablate import plan_ablation, run_ablation
    from search.settings import RunOptions

    table = {}
    with tempfile.TemporaryDirectory() as storage:
        for name in ("seed_bn", "seed_skip"):
            overrides = [f"storage={storage}"]
            if mnist_dir():
                overrides.append(f"data.dir={mnist_dir()}")
            if settings["subset"]:
                overrides.append(f"data.subset={settings['subset']}")
            plan = plan_ablation(name, [SWITCH[name]], settings["seeds"], epochs=settings["epochs"],
                                 overrides=overrides)
            progress(f"tune ablate {name} --factors {SWITCH[name]} --seeds {settings['seeds']}: "
                     f"{plan.config.trial_count()} runs × {plan.config.epochs} epochs")
            prepare_tracking()
            started = time.time()
            outcome = run_ablation(plan, RunOptions(run_name=f"{name}-ablate", as_json=True))
            if outcome.exit_code != 0:
                raise RuntimeError(f"tune ablate {name} exited {outcome.exit_code}")
            payload = outcome.payload
            levels = {}
            for value in (True, False):
                accs = [t["test_acc"] for t in payload["trials"] if t["config"][SWITCH[name]] == value]
                levels[str(value).lower()] = {"test_acc": accs, "mean": statistics.mean(accs),
                                              "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                                              "seed": SEED_NUMBERS[name][value]}
            effects = [e for e in payload["ablation_effects"]["effects"] if e["metric"] in ("test_acc", "val_acc")]
            for effect in effects:
                progress(f"{name} {effect['contrast']} {effect['metric']}: {effect['mean'] * 100:+.3f} pp "
                         f"[{_pp(effect['ci_low'])}, {_pp(effect['ci_high'])}], p {effect['p_value']}")
            table[name] = {"switch": SWITCH[name], "epochs": plan.config.epochs, "seeds": settings["seeds"],
                           "levels": levels, "effects": effects, "wall_s": round(time.time() - started, 1)}
    return {**settings, "table": table}


def _pp(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.3f} pp"


def main() -> None:
    scale = scale_argument(__doc__)
    write_result("seed_ablation", scale, run(SETTINGS[scale]))


if __name__ == "__main__":
    main()
