"""A sweep's own model and data callables: resolved when the file is loaded, tried once before Ray,
and every bad input one line with exit 2 (no Ray is started here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import UserError
from spaces import load_sweep
from tests.unit.search.test_cli import run_main
from trainables.train import TrainingRun, TrainParams, build_model

MODEL = """
from torch import nn

def build(width, depth=1, num_classes=10):
    layers = [nn.Flatten(), nn.Linear(12, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, num_classes))

def wrong_shape(width):
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 7))

def raises(width):
    raise RuntimeError("no GPU kernels for this layer")

def not_a_module(width):
    return "a string"

NOT_CALLABLE = 42


def train_fn(config):
    pass


def two_arguments(config, data):
    pass
"""

DATA = """
import numpy as np

def split(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, 4)).astype("float32")
    return x, (x.sum(axis=(1, 2)) > 0).astype("int64") + 2 * (x[:, 0, 0] > 0)

def load(split_seed=0):
    return {"train": split(64, split_seed), "val": split(32, 1), "test": split(32, 2), "num_classes": 4}

def mismatched():
    x, y = split(64, 0)
    return {"train": (x, y[:60]), "val": split(32, 1), "test": split(32, 2)}

def a_list():
    return [1, 2, 3]

def fails():
    raise OSError("the bucket is gone")
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with a sweep file and modules of unique names (imports are cached per process)."""
    import sys

    monkeypatch.setattr(sys, "path", list(sys.path))
    import uuid

    tag = uuid.uuid4().hex[:12]
    (tmp_path / f"models_{tag}.py").write_text(MODEL)
    (tmp_path / f"data_{tag}.py").write_text(DATA)
    (tmp_path / f"broken_{tag}.py").write_text("import json\nraise ValueError('half-written module')\n")

    def sweep(**keys) -> str:
        document = {"name": "own", "epochs": 2, "model": f"models_{tag}:build",
                    "data": {"dataset": f"data_{tag}:load"}, "space": {"width": {"choice": [4, 8]}},
                    "search": {"num_samples": 2}, "storage": str(tmp_path / "runs")}
        for key, value in keys.items():
            section, _, sub = key.partition("__")
            if sub:
                document.setdefault(section, {})[sub] = value
            elif value is None:
                document.pop(section, None)
            else:
                document[section] = value
        text = json.dumps(document).replace("MODELS", f"models_{tag}").replace("DATA", f"data_{tag}")
        text = text.replace("BROKEN", f"broken_{tag}")
        (tmp_path / "sweep.yaml").write_text(text)  # JSON is YAML
        return str(tmp_path / "sweep.yaml")

    return sweep


@pytest.mark.parametrize("keys, expected", [
    ({"model": "no_such_module:build"}, "model: no_such_module:build: no module named 'no_such_module'"),
    ({"model": "MODELS:nothing"}, "has no attribute 'nothing'"),
    ({"model": "MODELS:NOT_CALLABLE"}, "is a int, not a callable"),
    ({"model": "BROKEN:build"}, "importing BROKEN failed: ValueError: half-written module"),
    ({"model": "MODELS build"}, "is not a callable reference (package.module:callable"),
    ({"space": {"width": 4, "height": 3}}, "space.height: model MODELS:build takes no argument 'height'"),
    ({"space": {"depth": 2}}, "model: MODELS:build needs argument 'width', which the sweep's space does not set"),
    ({"space": {"width": 4, "skip": False}}, "space.skip: model MODELS:build takes no argument 'skip'"),
    ({"model": None}, "space.width: unknown key; expected one of: batch_norm"),
    ({"model": "MODELS:wrong_shape"}, "its output for 2 inputs has shape (2, 7), but must be logits of shape (2, 4)"),
    ({"model": "MODELS:raises"}, "RuntimeError: no GPU kernels for this layer"),
    ({"model": "MODELS:not_a_module"}, "returned a str, not a torch.nn.Module"),
    ({"data__dataset": "DATA:mismatched"}, "train: 64 inputs but 60 labels"),
    ({"data__dataset": "DATA:a_list"}, "returned a list, but must return a mapping with train, val and test"),
    ({"data__dataset": "DATA:fails"}, "raised OSError: the bucket is gone"),
    ({"data__dataset": "DATA:nothing"}, "has no attribute 'nothing'"),
    ({"data__dataset": "cifar10"}, "'cifar10' is neither a built-in dataset"),
    ({"code": "no-such-folder"}, "code: "),
    ({"model": "os:system"}, "model: os:system: module os is not in the sweep's code folder"),
    ({"model": "builtins:exec"}, "model: builtins:exec: module builtins is not in the sweep's code folder"),
    ({"data__dataset": "subprocess:getoutput"}, "data.dataset: subprocess:getoutput: module subprocess is not in"),
    ({"model": None, "data": None, "trainable": "MODELS:two_arguments", "metric": "val_loss"},
     "trainable: MODELS:two_arguments takes (config, data), but a Ray Tune function trainable takes one argument"),
    ({"model": None, "data": None, "trainable": "MODELS:absent", "metric": "val_loss"}, "has no attribute 'absent'"),
    ({"model": None, "data": None, "trainable": "MODELS:train_fn", "metric": "val_f1"},
     "mode: required for metric 'val_f1', which your trainable reports: min or max"),
    ({"model": None, "trainable": "MODELS:train_fn"}, "data.dataset: a sweep with its own `trainable:` loads its own"),
    ({"trainable": "MODELS:train_fn", "data": None}, "model and trainable exclude each other"),
    ({"model": None, "data": None, "metric": "val_f1", "mode": "max", "space": {"lr": 0.01}},
     "metric: 'val_f1' is not one of val_loss"),
])
@pytest.mark.parametrize("command", [["run", "--dry-run"], ["run"]])
def test_each_bad_input_is_one_line_and_exit_2_before_ray(project, capfd, tmp_path, keys, expected, command):
    tag = next(p for p in tmp_path.glob("models_*.py")).stem.removeprefix("models_")
    code, out, err = run_main([command[0], project(**keys), *command[1:]], capfd)
    expected = expected.replace("MODELS", f"models_{tag}").replace("BROKEN", f"broken_{tag}")
    assert code == 2 and out == "", err
    assert err.startswith("tune: error: ") and expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()  # nothing written, Ray never started


def test_dry_run_builds_the_model_once_and_reports_it(project, capfd):
    code, out, err = run_main(["run", project(), "--dry-run", "--json"], capfd)
    check = json.loads(out)["model_check"]
    assert code == 0
    assert check["output_shape"] == [2, 4] and check["input_shape"] == [3, 4] and check["num_classes"] == 4
    assert check["parameters"] == (12 * 4 + 4) + (4 * 4 + 4) and check["built_with"]["width"] == 4
    assert "model models_" in err
    assert f"{check['parameters']:,} parameters" in err


def test_the_set_shorthand_reaches_a_models_own_keys(project):
    config = load_sweep(project(), ["width=16", "space.depth=3"])
    assert config.trial_config()["width"] == 16 and config.trial_config()["depth"] == 3
    with pytest.raises(UserError, match=r"space.height: model .* takes no argument 'height'"):
        load_sweep(project(), ["height=3"])


def test_a_models_trials_get_only_the_keys_the_sweep_sets(project):
    config = load_sweep(project(space={"width": 8}))
    # The seed's switches the file does not set are not passed to (or logged for) someone else's model.
    assert config.trial_config() == {"lr": 1e-3, "l2": 0.0, "batch_size": 128, "seed": 0, "width": 8, "epochs": 2}


def test_the_training_loop_trains_a_custom_model_on_custom_data(project):
    from trainables.data import load_data

    config = load_sweep(project(space={"width": 16, "depth": 2, "lr": 0.01}))
    data = load_data(config.data.dataset)
    assert data.num_classes == 4 and data.train.images.shape == (64, 3, 4)
    params = TrainParams.from_config(config.trial_config(), config.model)
    run = TrainingRun(params, data)
    first = run.run_epoch()
    for _ in range(5):
        last = run.run_epoch()
    assert last["train_loss"] < first["train_loss"]
    state = run.state_dict()
    assert state["num_classes"] == 4 and state["input_shape"] == [3, 4]
    again = build_model(params, 4)  # seeded: the same initial weights every time
    assert all(np.array_equal(a.detach(), b.detach()) for a, b in
               zip(again.parameters(), build_model(params, 4).parameters(), strict=True))


def test_the_seed_sweeps_are_unchanged():
    config = load_sweep("quick")
    assert config.model is None and config.code_folders() == []
    assert set(config.trial_config()) == {"seed", "epochs"}
    assert set(config.searched()) == {"batch_norm", "skip", "lr", "l2", "dropout", "batch_size"}


def test_a_custom_model_is_registered_and_loads_back(project, tmp_path):
    """log_and_register keeps the model's input shape and class count; load_model rebuilds it."""
    import torch

    from search.tracking.registry import load_model, log_and_register

    config = load_sweep(project(space={"width": 8}))
    params = TrainParams.from_config(config.trial_config(), config.model)
    model = build_model(params, 4).eval()
    model.input_shape, model.num_classes = (3, 4), 4
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    import mlflow

    client = mlflow.tracking.MlflowClient(uri)
    run = client.create_run(client.create_experiment("own"))
    log_and_register(uri, run.info.run_id, model, {**config.trial_config(), "model": config.model}, "own", {})
    loaded = load_model("models:/own@best", uri)
    x = torch.randn(5, 3, 4)
    assert torch.allclose(loaded(x), model(x))


def test_a_resumed_sweep_gives_trials_the_same_keys(project):
    """sweep.json keeps which of the seed's keys the file set: a resumed run's trials (and Tune's
    restored search space) get the same config as the first run's."""
    from spaces import validate_sweep

    for config in (load_sweep(project(space={"width": 8, "lr": {"loguniform": [0.001, 0.1]}})),
                   validate_sweep({"name": "t", "trainable": "a.b:c", "metric": "score", "mode": "max",
                                   "space": {"x": {"uniform": [0.1, 1.0]}}})):
        again = validate_sweep(json.loads(json.dumps(config.document())))
        assert again.trial_config() == config.trial_config() and set(again.searched()) == set(config.searched())


def test_tune_train_names_the_way_to_run_a_trainable(project, capfd):
    code, out, err = run_main(["train", project(model=None, data=None, trainable="MODELS:train_fn",
                                                metric="val_loss")], capfd)
    assert code == 2 and out == "" and "runs its own trainable" in err and "use tune run" in err


def test_a_callable_from_an_installed_package_needs_the_package_listed(project, capfd, tmp_path):
    marker = tmp_path / "ran"
    code, _, err = run_main(["run", project(model="os:system", space={"command": f"touch {marker}"}), "--dry-run"],
                            capfd)
    assert code == 2 and "lists (packages: [os])" in err and not marker.exists()
    # listed, it is the user's choice, made in the file: resolved (and then refused for what it is)
    code, _, err = run_main(["run", project(model="os:system", packages=["os"], space={"command": "true"}),
                             "--dry-run"], capfd)
    assert code == 2 and "is not in the sweep's code folder" not in err


def _crafted_run(folder, tag: str, model: str):
    """A finished run folder whose sweep.json names code (planted beside it) and a tracking server."""
    from spaces import load_sweep

    run = folder / "runs" / "crafted"
    run.mkdir(parents=True)
    (run / "evil.py").write_text(f"import pathlib\npathlib.Path({str(folder / 'ran')!r}).write_text('x')\n"
                                 "def build(**kw):\n    raise SystemExit('ran')\n")
    document = load_sweep("smoke").document()
    document.update({"model": model, "source": str(run / "sweep.yaml"), "storage": str(folder / "planted"),
                     "mlflow": {"tracking_uri": "http://127.0.0.1:9/collector"}})
    (run / "sweep.json").write_text(json.dumps(document))
    best = {"trial_id": "t1", "config": {"batch_norm": True, "skip": True, "lr": 0.001, "l2": 1e-5,
                                          "dropout": 0.1, "batch_size": 64, "seed": 0}, "score": 0.1}
    (run / "results.json").write_text(json.dumps({"status": "finished", "best": best}))
    return run


def test_ablate_never_runs_code_a_run_folder_names(tmp_path, capfd):
    run = _crafted_run(tmp_path, "x", "evil:build")
    code, _, err = run_main(["ablate", str(run), "--factors", "batch_norm", "--seeds", "2", "--dry-run"], capfd)
    assert code == 2 and err.count("\n") == 1, err
    assert "its sweep names code (model: evil:build); a run folder never chooses code: name the sweep file" in err
    assert not (tmp_path / "ran").exists() and not (tmp_path / "planted").exists()


def test_ablate_takes_code_from_the_sweep_file_the_user_names(project, tmp_path, monkeypatch):
    from search.commands.ablate import plan_ablation

    tag = next(p for p in tmp_path.glob("models_*.py")).stem.removeprefix("models_")
    run = _crafted_run(tmp_path, tag, "evil:build")
    document = json.loads((run / "sweep.json").read_text())
    document["space"] = {"width": 4, "seed": 0, "lr": 0.001}
    document["data"] = {"dataset": "evil:load"}
    (run / "sweep.json").write_text(json.dumps(document))
    (run / "results.json").write_text(json.dumps({"status": "finished", "best": {
        "trial_id": "t1", "config": {"width": 4, "lr": 0.001, "seed": 0}, "score": 0.1}}))
    mine = project(space={"width": {"choice": [4, 8]}, "lr": 0.001})
    plan = plan_ablation(str(run), ["width"], 2, levels={"width": [4, 8]}, storage=str(tmp_path / "mine"),
                         code_from=mine)
    assert plan.config.model == f"models_{tag}:build" and plan.config.data.dataset == f"data_{tag}:load"
    assert str(plan.config.source) == mine
    assert plan.config.storage == str(tmp_path / "mine") and plan.config.mlflow.tracking_uri is None
    assert not (tmp_path / "ran").exists()
