"""The `tune` command line in this process: parsing, typed flags, one-line errors with exit 2 (no Ray)."""

from __future__ import annotations

import json

import pytest

from core.errors import UserError
from search.cli import flag_values, main
from search.settings import Environment, load_run_config


def run_main(args, capfd):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capfd.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize("args, expected", [
    (["run", "smoke", "--resume", "--set", "epochs=2"], "--resume continues a sweep as it was started"),
    (["run", "smoke", "--resume", "--dry-run"], "--resume and --dry-run exclude each other"),
    (["run", "smoke", "--num-samples", "3", "--set", "search.num_samples=4"], "--num-samples and --set"),
    (["run", "smoke", "--set", "learning_rate=0.1"], "--set learning_rate: unknown key"),
    (["run", "no-such-sweep"], "no such sweep file (shipped sweeps: default, quick"),
    (["train", "--epochs", "2", "--set", "epochs=3"], "--epochs and --set epochs=3 both set epochs"),
    (["schedule", "smoke", "--cron", "61 * * * *"], "--cron '61 * * * *': not a cron expression"),
    (["schedule", "smoke", "--cron", "0 * * * *", "--once", "--catch-up"], "--once runs one tick"),
    (["schedule", "smoke", "--cron", "*/4 * * * * *"], "ticks 4 s apart, but a schedule ticks at most once every 60 s"),
    (["sync-mlflow", "/nonexistent/run"], "not a sweep run folder"),
    (["run", "smoke", "--name", "../../escape"], "--name '../../escape': not a valid name"),
    (["run", "smoke", "--name", "a/b"], "--name 'a/b': not a valid name"),
    (["run", "smoke", "--dry-run", "--set", "scheduler.reduction_factor=1.000000001"],
     "makes 1.39e+09 ASHA rungs between grace_period 1 and max_t 4, but at most 32 are allowed"),
    (["run", "smoke", "--set", "epochs=" + "[" * 5000 + "]" * 5000],
     "is not valid YAML (nested too deeply to be a sweep)"),
    (["run", "smoke", "--dry-run", "--set", "search.num_samples=100001"], "search.num_samples"),
    (["run", "seed_bn", "--dry-run", "--set", "search.num_samples=50000"],
     "the sweep has 200000 trials (every grid combination × search.num_samples 50000); at most 100000"),
    (["run", "smoke", "--dry-run", "--set", "search.max_concurrent_trials=20000"], "search.max_concurrent_trials"),
    # found late before (a traceback after Ray had started, or a silent acceptance): now before anything starts
    (["run", "smoke", "--dry-run", "--set", "lr={loguniform: [1.0e-4, .inf]}"],
     "space.lr.loguniform.high: Input should be a finite number, found inf"),
    (["train", "--set", "lr=.inf"], "space.lr: Input should be a finite number, found inf"),
    (["train", "--set", "dropout=.nan"], "space.dropout: Input should be a finite number, found nan"),
    (["run", "smoke", "--dry-run", "--set", "mlflow.experiment=" + "e" * 501],
     "mlflow.experiment: String should have at most 500 characters"),
    (["run", "smoke", "--dry-run", "--set", "mlflow.tracking_uri=ftp://host/x"],
     "smoke.yaml: mlflow.tracking_uri: ftp://host/x: unknown scheme 'ftp'"),
    (["run", "smoke", "--dry-run", "--tracking-uri", "http://[::1/x"], "--tracking-uri: http://[::1/x: Invalid IPv6"),
    (["schedule", "smoke", "--cron", "0 0 30 2 *", "--once"], "names no date that exists (e.g. 30 February)"),
    (["run", "smoke", "--dry-run", "--set", "search.storage=postgresql://u:pw@db:port/x"],
     "search.storage: not a database URL (Port could not be cast"),
])
def test_user_errors_are_one_line_and_exit_2(args, expected, capfd):
    code, out, err = run_main(args, capfd)
    assert code == 2 and out == ""
    assert err.startswith("tune: error: ") and expected in err and err.count("\n") == 1


def test_click_usage_errors_exit_2(capfd):
    code, _, err = run_main(["run", "smoke", "--epochs-typo", "3"], capfd)
    assert code == 2 and "No such option" in err


def test_dry_run_json_is_one_document_on_stdout(capfd):
    code, out, err = run_main(["run", "smoke", "--dry-run", "--json", "--num-samples", "3"], capfd)
    assert code == 0
    plan = json.loads(out)
    assert plan["trials"] == 3 and plan["sweep"]["search"]["num_samples"] == 3
    assert "trials: 3" in err  # the human-readable plan went to stderr


def test_shortcut_flags_reach_the_config_typed():
    values = flag_values([], epochs=3, num_samples=5, data_dir="/data", seed=None)
    assert values == {"epochs": 3, "search.num_samples": 5, "data.dir": "/data"}
    config = load_run_config("smoke", ["lr=0.01"], values, Environment())
    assert (config.epochs, config.search.num_samples, config.data.dir, config.space.lr) == (3, 5, "/data", 0.01)


def test_a_flag_and_a_set_for_the_same_key_are_refused():
    with pytest.raises(UserError, match="--epochs and --set epochs=3 both set epochs"):
        flag_values(["epochs=3"], epochs=2)


def test_storage_precedence_is_flag_then_sweep_storage_then_file_then_default(tmp_path):
    env = Environment(storage="/from/env")
    assert load_run_config("smoke", [], {}, env).storage == "/from/env"
    assert load_run_config("smoke", [], {"storage": "/flag"}, env).storage == "/flag"
    assert load_run_config("smoke", ["storage=/set"], {}, env).storage == "/set"
    # A sweep file that spells out the default does not override SWEEP_STORAGE (on a cluster, S3).
    sweep = tmp_path / "mine.yaml"
    sweep.write_text("name: mine\nstorage: runs\nspace:\n  lr: 0.001\n")
    assert load_run_config(str(sweep), [], {}, env).storage == "/from/env"
    assert load_run_config(str(sweep), [], {}, Environment()).storage == "runs"
    sweep.write_text("name: mine\nstorage: /from/file\nspace:\n  lr: 0.001\n")
    assert load_run_config(str(sweep), [], {}, Environment()).storage == "/from/file"


def test_the_environment_is_read_once_into_one_object():
    env = Environment.read({"SWEEP_STORAGE": "s3://b/x", "MLFLOW_TRACKING_URI": "http://m:5000",
                            "RAY_ADDRESS": "", "RAY_AUTH_MODE": "DISABLED"})
    assert env == Environment(storage="s3://b/x", tracking_uri="http://m:5000", ray_address=None,
                              ray_auth_disabled=True)


def test_a_deeply_nested_sweep_file_is_one_line(tmp_path, capfd):
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: deep\nepochs: " + "[" * 5000 + "]" * 5000 + "\n")
    code, _, err = run_main(["run", str(deep)], capfd)
    assert code == 2 and err == f"tune: error: {deep}: nested too deeply to be a sweep\n"


def test_a_dry_run_never_prints_a_database_password(capfd):
    code, out, err = run_main(["run", "smoke", "--dry-run", "--json", "--set",
                               "search.storage=postgresql://optuna:db-secret-661@db.example/studies"], capfd)
    assert code == 0 and "db-secret-661" not in out + err and "postgresql://optuna:***@db.example/studies" in out
    code, out, err = run_main(["run", "smoke", "--dry-run", "--set",
                               "search.storage=postgresql://optuna:db-secret-661@db.example/studies"], capfd)
    assert code == 0 and "db-secret-661" not in out + err


def test_input_that_failed_after_ray_started_is_refused_before(tmp_path, capfd, monkeypatch):
    """A duplicate key, a blank SWEEP_STORAGE, an Optuna journal that is a folder: one line, exit 2, and no
    run folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dup.yaml").write_text("name: dup\nepochs: 1\nepochs: 2\n")
    (tmp_path / "a-folder").mkdir()
    cases = [
        (["run", "dup.yaml", "--dry-run"], {}, "dup.yaml: line 3, column 1: duplicate key 'epochs'"),
        (["run", "smoke", "--dry-run"], {"SWEEP_STORAGE": "   "}, "SWEEP_STORAGE is blank"),
        (["run", "smoke", "--dry-run", "--set", f"search.storage={tmp_path}/a-folder"], {},
         "is a folder, but must be an Optuna journal file"),
    ]
    for args, env, expected in cases:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        code, _, err = run_main(args, capfd)
        assert code == 2 and expected in err and err.count("\n") == 1, err
        for key in env:
            monkeypatch.delenv(key)
    assert not (tmp_path / "runs").exists()


def test_an_mlflow_store_under_a_file_is_refused_before_ray(tmp_path):
    from search.tracking.recorder import check_tracking_access

    (tmp_path / "a-file").write_text("")
    with pytest.raises(UserError, match="a-file is a file, so the store's folder cannot be made there"):
        check_tracking_access(f"sqlite:///{tmp_path}/a-file/sub/m.db", "smoke", "run-1")
    check_tracking_access(f"sqlite:///{tmp_path}/new/m.db", "smoke", "run-1")  # a folder to be made: fine
