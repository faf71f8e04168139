"""The champion moves only beyond noise: two real checkpoints of the seed network, measured on the same
validation examples. A clearly better model moves the alias; a near-copy of the champion does not, even
when its registered val_loss is a hair lower (which the `any_better` rule would follow)."""

from __future__ import annotations

import copy

import pytest
import torch
from mlflow.tracking import MlflowClient

from search.tracking.champion import CHAMPION_ALIAS, PairedRule, decide_champion
from search.tracking.registry import load_model, log_and_register
from trainables.train import TrainingRun, TrainParams, as_tensors, evaluate

pytestmark = pytest.mark.integration


def trained(data, lr: float, epochs: int):
    config = {"batch_norm": True, "skip": True, "lr": lr, "epochs": epochs, "seed": 0}
    run = TrainingRun(TrainParams.from_config(config), data)
    for _ in range(epochs):
        run.run_epoch()
    run.model.load_state_dict(run.best_weights)
    run.model.num_classes, run.model.input_shape = data.num_classes, run.input_shape
    return run.model.eval(), config


def test_the_champion_moves_for_a_better_model_and_not_for_a_near_copy(tmp_path, mnist_dir):
    from trainables.data import load_data

    data = load_data("mnist", mnist_dir, subset=6000, split_seed=0)
    validation = as_tensors(data.val)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("paired")).info.run_id

    def register(model, config) -> str:
        val_loss, val_acc = evaluate(model, validation)
        return log_and_register(uri, run_id, model, config, "m", {"val_loss": val_loss, "val_acc": val_acc}).version

    weak, weak_config = trained(data, 1e-4, 1)
    strong, strong_config = trained(data, 3e-3, 3)
    near = copy.deepcopy(strong)
    with torch.no_grad():  # the champion's weights, nudged: the same model up to noise
        for p in near.parameters():
            p.add_(1e-4 * torch.randn_like(p))
    rule = PairedRule(0.95, lambda: validation, lambda version: load_model(f"models:/m/{version}", uri))

    first = register(weak, weak_config)
    assert decide_champion(client, "m", first, "val_loss", "min", rule).moved
    better = register(strong, strong_config)
    moved = decide_champion(client, "m", better, "val_loss", "min", rule)
    assert moved.moved and moved.paired["difference"] < 0 and moved.paired["p_value"] < 0.05, moved.reason
    assert "beyond noise" in moved.reason and "p " in moved.reason
    copy_version = register(near, strong_config)
    client.set_model_version_tag("m", copy_version, "val_loss",  # a hair better on paper
                                 str(float(client.get_model_version("m", better).tags["val_loss"]) - 1e-6))
    kept = decide_champion(client, "m", copy_version, "val_loss", "min", rule)
    assert not kept.moved and kept.paired["p_value"] > 0.05, kept.reason
    assert abs(kept.paired["difference"]) < 1e-3  # the same model, up to noise
    assert str(client.get_model_version_by_alias("m", CHAMPION_ALIAS).version) == better
    assert decide_champion(client, "m", copy_version, "val_loss", "min").moved  # any_better follows noise
