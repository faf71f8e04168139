"""One vocabulary: the sweep schema, the training parameters and the data loader use the same names."""

from __future__ import annotations

import dataclasses

from core.names import DATASET_NAMES, LOOP_KEYS, METRIC_MODES, MODEL_SWITCHES, SPACE_KEYS, trial_status
from spaces import SweepConfig
from spaces._schema import Space
from trainables.data import DATASETS
from trainables.train import TrainParams


def test_space_keys_are_the_schemas_and_the_training_parameters():
    assert tuple(Space.model_fields) == SPACE_KEYS
    assert {f.name for f in dataclasses.fields(TrainParams)} == {*SPACE_KEYS, "epochs", "model", "model_args"}
    assert {*MODEL_SWITCHES, *LOOP_KEYS} == set(SPACE_KEYS)


def test_dataset_names_are_the_loaders():
    assert tuple(DATASETS) == DATASET_NAMES
    assert SweepConfig.model_fields["data"].annotation.model_fields["dataset"].default in DATASET_NAMES


def test_the_optimisable_metrics_say_which_way_is_better():
    assert set(METRIC_MODES.values()) == {"min", "max"}
    assert all(METRIC_MODES[m] == ("min" if m.endswith("loss") else "max") for m in METRIC_MODES)


def test_completed_means_the_full_budget():
    assert trial_status(False, 3, 3) == "completed"
    assert trial_status(False, 2, 3) == "early_stopped"
    assert trial_status(True, 3, 3) == "errored"
    assert trial_status(False, 1, 3, unfinished=True) == "unfinished"
