"""The training loop: determinism, exact resumption, best weights, L2 as coupled weight decay."""

from __future__ import annotations

import copy

import pytest
import torch

from trainables.train import (
    TrainingRun,
    TrainParams,
    as_tensors,
    build_model,
    build_optimizer,
    evaluate,
    evaluate_on_test,
    steps_per_epoch,
)

PARAMS = TrainParams(batch_norm=True, skip=True, lr=2e-3, batch_size=64, epochs=2, dropout=0.2, seed=3)


def run_epochs(data, params, epochs):
    run = TrainingRun(params, data)
    return run, [run.run_epoch() for _ in range(epochs)]


def without_time(metrics):
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in metrics]


def test_same_seed_gives_identical_metrics(small_data):
    _, first = run_epochs(small_data, PARAMS, 2)
    _, second = run_epochs(small_data, PARAMS, 2)
    assert without_time(first) == without_time(second)


def test_another_seed_gives_other_metrics(small_data):
    _, first = run_epochs(small_data, PARAMS, 1)
    _, other = run_epochs(small_data, TrainParams(**{**PARAMS.as_dict(), "seed": 4}), 1)
    assert without_time(first) != without_time(other)


def test_resuming_from_a_state_dict_continues_exactly(small_data):
    _, straight = run_epochs(small_data, PARAMS, 2)
    interrupted, _ = run_epochs(small_data, PARAMS, 1)
    state = copy.deepcopy(interrupted.state_dict())
    torch.manual_seed(999)  # whatever happened in between must not matter
    resumed = TrainingRun(PARAMS, small_data)
    resumed.load_state_dict(state)
    assert resumed.epoch == 1
    assert without_time([resumed.run_epoch()]) == without_time(straight[1:])


def test_test_metrics_come_from_the_best_validation_weights(small_data):
    run, history = run_epochs(small_data, PARAMS, 3)
    best = min(history, key=lambda m: m["val_loss"])
    assert run.best_score == best["val_loss"]
    model = run.best_model()
    for key, value in run.best_weights.items():
        assert torch.equal(model.state_dict()[key], value)
    reported = evaluate_on_test(model, small_data.test)
    # The checkpoint's best-validation weights, loaded into a fresh network, give the same numbers.
    checkpointed = build_model(PARAMS)
    checkpointed.load_state_dict(run.state_dict()["best_weights"])
    loss, accuracy = evaluate(checkpointed, as_tensors(small_data.test))
    assert reported == {"test_loss": loss, "test_acc": accuracy}


@pytest.mark.parametrize("keep, kept_epoch", [(("val_loss", "min"), 2), (("val_acc", "max"), 3)])
def test_the_kept_weights_follow_the_sweep_s_metric(small_data, monkeypatch, keep, kept_epoch):
    """With `metric: val_acc` the checkpoint holds the epoch of the best val_acc, not of the lowest val_loss."""
    import trainables.train as train

    scores = iter([(0.5, 0.80), (0.4, 0.85), (0.45, 0.90)])  # val_loss is best at 2, val_acc at 3
    monkeypatch.setattr(train, "evaluate", lambda model, split: next(scores))
    run = TrainingRun(PARAMS, small_data, keep=keep)
    weights = []
    for _ in range(3):
        run.run_epoch()
        weights.append(copy.deepcopy(run.model.state_dict()))
    assert all(torch.equal(run.best_weights[k], v) for k, v in weights[kept_epoch - 1].items())
    assert run.best_score == {"val_loss": 0.4, "val_acc": 0.90}[keep[0]]
    resumed = TrainingRun(PARAMS, small_data, keep=keep)
    resumed.load_state_dict(copy.deepcopy(run.state_dict()))
    assert resumed.best_score == run.best_score


def test_a_checkpoint_from_before_the_kept_metric_was_saved_still_resumes(small_data):
    run, _ = run_epochs(small_data, PARAMS, 1)
    state = copy.deepcopy(run.state_dict())
    state["best_val_loss"] = state.pop("best_score")
    del state["keep_metric"]
    resumed = TrainingRun(PARAMS, small_data)
    resumed.load_state_dict(state)
    assert resumed.best_score == run.best_score and resumed.epoch == 1


def test_a_training_run_never_holds_the_test_split(small_data):
    run = TrainingRun(PARAMS, small_data.without_test())
    assert run.run_epoch()["epoch"] == 1
    assert not any("test" in name for name in vars(run))


def test_l2_is_adam_weight_decay():
    params = TrainParams(l2=1e-4, lr=3e-3)
    optimizer = build_optimizer(build_model(params), params)
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4
    assert optimizer.param_groups[0]["lr"] == 3e-3


def test_params_from_a_tune_config_are_typed_and_checked():
    params = TrainParams.from_config({"lr": "0.01", "batch_size": 64.0, "batch_norm": 0})
    assert (params.lr, params.batch_size, params.batch_norm) == (0.01, 64, False)
    with pytest.raises(TypeError, match="unknown config keys"):
        TrainParams.from_config({"learning_rate": 0.1})


def test_shift_moves_each_image_by_at_most_two_pixels_with_the_border_repeated():
    from trainables.train import shift_batch

    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    images = (rows * 100 + cols).expand(64, 1, 28, 28).contiguous()  # each pixel names its position
    shifted = shift_batch(images, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    offsets = set()
    for image in shifted[:, 0]:
        dy, dx = int(image[14, 14] // 100) - 14, int(image[14, 14] % 100) - 14
        assert abs(dy) <= 2 and abs(dx) <= 2
        expected = images[0, 0, (torch.arange(28) + dy).clamp(0, 27)][:, (torch.arange(28) + dx).clamp(0, 27)]
        assert torch.equal(image, expected)  # moved whole, the edge row/column repeated
        offsets.add((dy, dx))
    assert len(offsets) > 10  # each image its own offset, not one for the batch


@pytest.mark.parametrize("optimizer, kind, decoupled", [("adam", torch.optim.Adam, False),
                                                         ("adamw", torch.optim.AdamW, True),
                                                         ("sgd", torch.optim.SGD, False)])
def test_the_optimizer_key_builds_that_optimizer_with_l2_as_its_weight_decay(optimizer, kind, decoupled):
    params = TrainParams(optimizer=optimizer, l2=1e-4, lr=0.01)
    built = build_optimizer(build_model(params), params)
    assert type(built) is kind and built.defaults["weight_decay"] == 1e-4
    assert built.defaults.get("momentum", 0.9) == 0.9
    assert (type(built) is torch.optim.AdamW) == decoupled


def test_a_learning_rate_schedule_steps_every_batch_and_resumes_on_the_same_curve(small_data):
    params = TrainParams(**{**PARAMS.as_dict(), "epochs": 2, "optimizer": "adamw", "lr_schedule": "onecycle",
                            "augment": "shift"})
    straight, metrics = run_epochs(small_data, params, 2)
    interrupted, _ = run_epochs(small_data, params, 1)
    steps = steps_per_epoch(len(small_data.train), params.batch_size)
    assert interrupted.schedule.last_epoch == steps  # one step per batch
    assert interrupted.optimizer.param_groups[0]["lr"] > params.lr / 25  # warmed up from max_lr / 25
    state = copy.deepcopy(interrupted.state_dict())
    resumed = TrainingRun(params, small_data)
    resumed.load_state_dict(state)
    assert without_time([resumed.run_epoch()]) == without_time(metrics[1:])
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]


def test_unknown_loop_values_are_refused():
    with pytest.raises(ValueError, match="optimizer is 'rmsprop', not one of adam, adamw, sgd"):
        TrainParams(optimizer="rmsprop")
