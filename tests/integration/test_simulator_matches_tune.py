"""The simulator makes the decisions a real `tune run` makes: the same sweep file (Optuna's PRUNED-aware
searcher, ASHA, one seed), run for real on a local Ray and in simulated time, gives the same trials
stopped at the same rungs. One trial at a time (`search.max_concurrent_trials: 1`), so Ray's ordering
is fixed: the tolerance is none. With several at a time, the order in which Ray delivers results can
differ from the simulated clock's, and so can the decisions that depend on it."""

from __future__ import annotations

import json
import os

import pytest

from search.engine.simulate import Curve, quiet_optuna, simulate
from spaces import load_sweep
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

EPOCHS = 9
TRAINABLE = f"""
from ray import tune


def curve(x, epoch):
    return (x - 0.3) ** 2 + 1.0 / epoch * (0.5 + x)


def train(config):
    for epoch in range(1, {EPOCHS} + 1):
        tune.report({{"loss": curve(config["x"], epoch), "epoch": epoch}})
"""
SWEEP = f"""
name: curves
trainable: curves:train
metric: loss
mode: min
epochs: {EPOCHS}
space:
  x: {{uniform: [0.0, 1.0]}}
search: {{algorithm: optuna, num_samples: 14, seed: 3, max_concurrent_trials: 1}}
scheduler: {{type: asha, grace_period: 1, reduction_factor: 3}}
"""


def test_the_simulator_stops_the_trials_a_real_sweep_stops(tmp_path, ray_head, monkeypatch):
    (tmp_path / "curves.py").write_text(TRAINABLE)
    (tmp_path / "curves.yaml").write_text(SWEEP)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    real = run_cli(["run", str(tmp_path / "curves.yaml"), "--name", "real", "--address", ray_head.address, "--json"],
                   env, cwd=tmp_path)
    assert real.returncode == 0, real.stderr[-3000:]
    ran = [(t["config"]["x"], t["epochs"]) for t in json.loads(real.stdout)["trials"]]

    monkeypatch.syspath_prepend(str(tmp_path))
    from curves import curve

    quiet_optuna()
    config = load_sweep(str(tmp_path / "curves.yaml"))
    simulated = simulate(config, lambda c: Curve([curve(c["x"], e) for e in range(1, EPOCHS + 1)], [1.0] * EPOCHS),
                         workers=1)
    expected = [(t.config["x"], t.epochs) for t in simulated.trials.values()]
    assert len(ran) == 14 and sorted(ran) == sorted(expected)
    assert {e for _, e in ran} >= {1, EPOCHS}  # some stopped at the first rung, some ran to the end
