"""Sweep files: the shipped ones, defaults, overrides, and validation errors that name the key."""

from __future__ import annotations

import pytest

from core.errors import UserError
from spaces import available_sweeps, load_sweep, validate_sweep
from spaces._distributions import LogUniform


def write(tmp_path, text: str, name: str = "s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_sweeps_are_valid():
    assert {"default", "quick", "smoke", "seed_bn", "seed_skip"} <= set(available_sweeps())
    for name in available_sweeps():
        config = load_sweep(name)
        assert config.name == name


@pytest.mark.parametrize("name, trials", [("seed_bn", 4), ("seed_skip", 4), ("smoke", 8), ("default", 48)])
def test_trial_counts(name, trials):
    assert load_sweep(name).trial_count() == trials


def test_seed_experiments_match_the_seed():
    bn, skip = load_sweep("seed_bn"), load_sweep("seed_skip")
    assert (bn.space.lr, bn.space.batch_size, bn.epochs, bn.scheduler.type) == (1e-3, 128, 30, "fifo")
    assert bn.space.batch_norm.grid == [True, False] and bn.space.seed.grid == [0, 1]
    assert (skip.space.lr, skip.epochs) == (5e-3, 10) and skip.space.skip.grid == [True, False]


def test_default_sweep_searches_everything_the_seed_asks_about():
    space = load_sweep("default").space
    assert set(space.searched()) == {"batch_norm", "skip", "lr", "l2", "dropout", "optimizer", "lr_schedule"}
    assert (space.lr.low, space.lr.high) == (1e-3, 1e-2) and isinstance(space.lr, LogUniform)
    assert (space.augment, space.batch_size) == ("shift", 128)


def test_every_field_has_a_default(tmp_path):
    config = load_sweep(write(tmp_path, "epochs: 3\n"))
    assert config.name == "s" and config.metric == "val_loss" and config.mode == "min"
    assert config.scheduler.type == "asha" and config.scheduler.max_t == 3
    assert config.search.algorithm == "optuna" and config.resources.cpu == 1
    assert config.data.dataset == "mnist" and config.storage == "runs"


def test_mode_follows_the_metric(tmp_path):
    assert load_sweep(write(tmp_path, "metric: val_acc\n")).mode == "max"


def test_overrides_reach_sections_and_space_keys(tmp_path):
    path = write(tmp_path, "epochs: 3\n")
    config = load_sweep(path, ["lr=0.01", "search.num_samples=4", "space.dropout={uniform: [0, 0.3]}",
                               "data.subset=500"])
    assert config.space.lr == 0.01 and config.search.num_samples == 4
    assert config.space.dropout.high == 0.3 and config.data.subset == 500


def test_name_is_the_file_stem_unless_given(tmp_path):
    assert load_sweep(write(tmp_path, "epochs: 2\n", "my-sweep.yaml")).name == "my-sweep"
    assert load_sweep(write(tmp_path, "name: other\n")).name == "other"


def test_int_range_includes_both_ends_and_accepts_randint(tmp_path):
    config = load_sweep(write(tmp_path, "space: {batch_size: {randint: [32, 64]}}\n"))
    assert (config.space.batch_size.low, config.space.batch_size.high) == (32, 64)


@pytest.mark.parametrize("text, expected", [
    ("space: {lr: {loguniform: [0, 1.0e-2]}}", "space.lr.loguniform.low: Input should be greater than 0, found 0"),
    ("space: {l2: {loguniform: [0, 1.0e-2]}}", "space.l2.loguniform: low is 0.0, but must be > 0 on a log scale"),
    ("space: {lr: {uniform: [0.1, 0.01]}}", "space.lr.uniform: low is 0.1, but must be <= high (0.01)"),
    ("space: {batch_norm: {choice: []}}", "space.batch_norm.choice: List should have at least 1 item"),
    ("space: {batch_norm: maybe}", "space.batch_norm: Input should be a valid boolean"),
    ("space: {lr: {uniforn: [1, 2]}}", "space.lr: expected a fixed value or one of: choice, grid, uniform"),
    ("space: {learning_rate: 0.1}", "space.learning_rate: unknown key; expected one of: batch_norm, skip, lr"),
    ("searhc: {}", "searhc: unknown key; expected one of: name"),
    ("epochs: three", "epochs: Input should be a valid integer"),
    ("epochs: 3\nscheduler: {grace_period: 5}", "scheduler.grace_period is 5, but must be <= max_t (3)"),
    ("epochs: 3\nscheduler: {max_t: 5}", "scheduler.max_t is 5, but must be <= epochs (3)"),
    ("search: {num_samples: 0}", "search.num_samples: Input should be greater than or equal to 1, found 0"),
    ("search: {num_samples: -3}", "search.num_samples: Input should be greater than or equal to 1, found -3"),
    ("resources: {gpu: 1.5}", "gpu is 1.5, but a fraction of a GPU must be <= 1"),
    ("data: {dataset: cifar10}", "data.dataset: 'cifar10' is neither a built-in dataset (mnist, fashion-mnist)"),
    ("metric: test_acc", "metric: 'test_acc' is not one of val_loss, val_acc, train_loss, train_acc"),
    ("mode: max", "mode is max, but val_loss must be minimised"),
    ("space: {lr: {grid: [0.1, 0.01]}}", "space.lr is a grid, but search.algorithm is optuna"),
    ("search: {algorithm: grid}\nspace: {lr: {choice: [0.1]}}", "space.lr is choice, but search.algorithm is grid"),
    ("space: {dropout: 1.0}", "space.dropout: Input should be less than 1, found 1.0"),
    ("space: {batch_size: {int: [1, 8]}}", "space.batch_size.int.low: Input should be greater than or equal to 2"),
    ("name: 'bad name!'", "name: String should match pattern"),
])
def test_validation_error_names_file_key_and_value(tmp_path, text, expected):
    path = write(tmp_path, text + "\n")
    with pytest.raises(UserError) as err:
        load_sweep(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


@pytest.mark.parametrize("override, expected", [
    ("lr", "--set lr: must be KEY=VALUE"),
    ("learning_rate=0.1", "--set learning_rate: unknown key; expected a top-level key"),
    ("search.nums=3", "--set search.nums: unknown key 'nums' in search"),
    ("epochs=[1,", "--set epochs: value '[1,' is not valid YAML"),
    ("lr.low=1", "--set lr.low: unknown key 'lr' in the top level"),
])
def test_bad_override_is_one_line(tmp_path, override, expected):
    with pytest.raises(UserError) as err:
        load_sweep(write(tmp_path, "epochs: 2\n"), [override])
    assert expected in str(err.value)


def test_validation_without_a_file_names_the_overrides():
    with pytest.raises(UserError, match=r"^--set: space.lr"):
        validate_sweep({"name": "train", "space": {"lr": -1}})


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    import os

    fifo = tmp_path / "sweep.yaml"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="is not a regular file"):
        load_sweep(str(fifo))


def test_a_file_that_grows_while_read_stays_bounded(tmp_path, monkeypatch):
    import os
    from pathlib import Path

    from spaces import _loader

    grown = tmp_path / "grown.yaml"
    grown.write_text("epochs: 2\n" + "#" * (_loader.MAX_FILE_BYTES + 10))
    real_stat = Path.stat

    def stat_before_it_grew(self, *args, **kwargs):  # what stat said a moment before the read
        info = real_stat(self, *args, **kwargs)
        return os.stat_result((info.st_mode, *info[1:6], 100, *info[7:])) if self == grown else info

    monkeypatch.setattr(Path, "stat", stat_before_it_grew)
    with pytest.raises(UserError, match="grew past"):
        load_sweep(str(grown))


def test_a_password_in_a_url_is_never_in_the_saved_sweep_and_a_resume_takes_it_from_the_file_given():
    url = "postgresql://optuna:db-secret-661@db.example:5432/studies"
    config = load_sweep("smoke", [f"search.storage={url}"])
    saved = config.document()
    assert "db-secret-661" not in str(saved) and "db-secret-661" not in str(config.dump())
    assert saved["search"]["storage"] == "postgresql://optuna:***@db.example:5432/studies"
    resumed = validate_sweep({k: v for k, v in saved.items() if k != "source"})
    assert resumed.with_secrets_of(config).search.storage == url
    for given in (load_sweep("smoke"), load_sweep("smoke", ["search.storage=postgresql://optuna:x@elsewhere/s"])):
        with pytest.raises(UserError, match=r"search.storage of this run is postgresql://optuna:\*\*\*@db.example"
                                            r":5432/studies: its password is not saved with the run; resume with"):
            resumed.with_secrets_of(given)
