"""The tuner's construction from a sweep: search space, searcher, ASHA, loggers (Ray is not started)."""

from __future__ import annotations

import numpy as np
import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from search.engine.optuna_bridge import BudgetAwareOptunaSearch
from search.engine.tuner import build_param_space, build_scheduler, build_searcher, build_tuner
from spaces import load_sweep
from trainables.data import Data, Split


def tiny_data() -> Data:
    split = Split(np.zeros((4, 1, 28, 28), np.float32), np.arange(4) % 2)
    return Data("mnist", split, split, None, "memory")


def test_param_space_has_a_domain_per_searched_key_and_the_fixed_values():
    config = load_sweep("default")
    space = build_param_space(config)
    assert isinstance(space["lr"], tune.search.sample.Float) and space["lr"].lower == 1e-3
    assert isinstance(space["optimizer"], tune.search.sample.Categorical)
    assert (space["batch_size"], space["augment"]) == (128, "shift")
    assert space["epochs"] == config.epochs
    grid = build_param_space(load_sweep("seed_bn"))
    assert grid["batch_norm"] == {"grid_search": [True, False]}


def test_int_ranges_include_their_upper_end():
    config = load_sweep("smoke", ["space.batch_size={int: [16, 32]}"])
    domain = build_param_space(config)["batch_size"]
    assert (domain.lower, domain.upper) == (16, 33)  # Tune's randint excludes its upper bound


def test_searcher_is_the_pruned_aware_bridge_unless_another_class_is_given(tmp_path):
    config = load_sweep("smoke")
    bridge = build_searcher(config, str(tmp_path / "study.journal"))
    assert type(bridge) is BudgetAwareOptunaSearch and (tmp_path / "study.journal").exists()

    class Stock(OptunaSearch):
        def __init__(self, *args, max_t, step_key, **kwargs):
            super().__init__(*args, **kwargs)

    assert type(build_searcher(config, None, Stock)) is Stock
    assert isinstance(build_searcher(load_sweep("smoke", ["search.algorithm=random"])), BasicVariantGenerator)


def test_asha_counts_epochs_with_the_sweeps_rungs():
    asha = build_scheduler(load_sweep("default"))
    assert isinstance(asha, ASHAScheduler)
    assert (asha._time_attr, asha._max_t, asha._reduction_factor) == ("epoch", 27, 3)
    assert isinstance(build_scheduler(load_sweep("seed_bn")), FIFOScheduler)


def test_tuner_takes_the_searcher_it_is_given_and_keeps_tunes_json_logger(tmp_path):
    config = load_sweep("smoke")
    searcher = build_searcher(config)
    tuner = build_tuner(config, tiny_data(), searcher, storage=str(tmp_path), run_name="r",
                        max_concurrent_trials=3)
    assert not ray.is_initialized()
    internal = tuner._local_tuner
    assert internal._tune_config.search_alg is searcher
    assert internal._tune_config.max_concurrent_trials == 3
    callbacks = internal._run_config.callbacks
    assert any(isinstance(c, JsonLoggerCallback) for c in callbacks)
    assert any(isinstance(c, CSVLoggerCallback) for c in callbacks)


def test_the_sweep_stopper_stops_on_a_plateau_of_trials():
    from types import SimpleNamespace

    from search.engine.tuner import SweepStopper

    stopper = SweepStopper("plateau-run", "val_loss", "min", patience=2, min_delta=0.01)
    for trial_id, losses in [("a", [0.5, 0.3]), ("b", [0.295]), ("c", [0.4]), ("d", [0.1])]:
        for loss in losses:
            assert stopper(trial_id, {"val_loss": loss}) is False
        stopper.on_trial_complete(0, [], SimpleNamespace(trial_id=trial_id))
        if trial_id == "b":
            assert not stopper.stop_all()  # one trial without an improvement > 0.01 (0.3 -> 0.295)
    assert stopper.stop_all()  # b and c ended without improving by more than 0.01
    assert SweepStopper.reasons.pop("plateau-run").startswith("plateau: 2 trials ended without improving")


def test_the_sweep_stopper_stops_at_a_target():
    from search.engine.tuner import SweepStopper, build_stopper

    assert build_stopper(load_sweep("smoke"), "x") is None
    stopper = build_stopper(load_sweep("smoke", ["search.stop.target=0.95", "metric=val_acc"]), "target-run")
    stopper("t1", {"val_acc": 0.9})
    assert not stopper.stop_all()
    stopper("t2", {"val_acc": 0.951})
    assert stopper.stop_all() and "trial t2 reached val_acc 0.951" in SweepStopper.reasons.pop("target-run")
