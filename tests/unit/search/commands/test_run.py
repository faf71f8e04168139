"""`tune run`'s plan, where a run is continued from, and the command that continues it (no Ray)."""

from __future__ import annotations

import json
import shlex

import pytest

from core.errors import UserError
from search.commands.run import plan_payload, plan_text, prepare_run, resume_command
from search.engine.storage import RUN_FILE, SWEEP_FILE, RunSettings
from search.report import asha_rungs
from search.settings import Environment, RunOptions
from spaces import load_sweep


def test_plan_counts_grid_trials_and_epochs():
    text = plan_text(load_sweep("seed_bn"))
    assert "trials: 4" in text and "epoch budget: 120 (4 trials × 30 epochs, no early stopping)" in text


def test_plan_names_the_asha_rungs():
    config = load_sweep("default")
    assert asha_rungs(config) == [3, 9]
    assert "ASHA stops weak trials at epochs 3, 9" in plan_text(config)
    assert plan_payload(config)["asha_rungs"] == [3, 9]


def started_run(tmp_path, settings: RunSettings | None):
    """A run folder as `tune run` leaves it when interrupted: sweep.json and run.json."""
    config = load_sweep("smoke", values={"storage": str(tmp_path), "epochs": 3})
    folder = tmp_path / "r1"
    folder.mkdir()
    (folder / SWEEP_FILE).write_text(json.dumps(config.document()))
    (folder / RUN_FILE).write_text(json.dumps({"settings": settings.as_json()} if settings else {"tags": {}}))
    return load_sweep("smoke", values={"storage": str(tmp_path)})


def test_resume_uses_the_saved_settings_and_the_saved_sweep(tmp_path):
    saved = RunSettings(tracking_uri="sqlite:////elsewhere/other.db", address="10.0.0.1:6379",
                        tags={"schedule": "smoke"})
    config = started_run(tmp_path, saved)
    options = RunOptions(run_name="r1", resume=True)
    resumed, experiment, settings = prepare_run(config, options)
    assert resumed.epochs == 3 and experiment.uri == f"{tmp_path}/r1"
    assert settings == saved  # the defaults do not replace what the run started with
    # MLFLOW_TRACKING_URI naming another store is refused, unless the flag names the saved one.
    elsewhere = Environment(tracking_uri="http://env:5000")
    with pytest.raises(UserError, match="MLFLOW_TRACKING_URI http://env:5000 differs from sqlite:////elsewhere"):
        prepare_run(config, RunOptions(run_name="r1", resume=True, env=elsewhere))
    flagged = RunOptions(run_name="r1", resume=True, tracking_uri=saved.tracking_uri, env=elsewhere)
    assert prepare_run(config, flagged)[2] == saved


def test_resume_with_another_tracking_uri_is_refused_naming_both(tmp_path):
    config = started_run(tmp_path, RunSettings(tracking_uri="sqlite:////elsewhere/other.db"))
    options = RunOptions(run_name="r1", resume=True, tracking_uri="sqlite:////x/third.db")
    with pytest.raises(UserError, match=r"third\.db.*other\.db"):
        prepare_run(config, options)


def test_a_flag_may_move_a_resumed_run_to_another_cluster(tmp_path):
    config = started_run(tmp_path, RunSettings(tracking_uri="sqlite:////a.db", address="old:6379"))
    _, _, settings = prepare_run(config, RunOptions(run_name="r1", resume=True, address="new:6379"))
    assert settings.address == "new:6379" and settings.tracking_uri == "sqlite:////a.db"


def test_a_run_saved_before_settings_were_kept_resumes_with_the_defaults(tmp_path):
    config = started_run(tmp_path, None)
    _, _, settings = prepare_run(config, RunOptions(run_name="r1", resume=True))
    assert settings.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"


def test_a_new_run_takes_flag_then_environment_then_sweep_file(tmp_path):
    config = load_sweep("smoke", values={"storage": str(tmp_path)})
    env = Environment(tracking_uri="http://env:5000", ray_address="env:6379")
    settings = prepare_run(config, RunOptions(run_name="n", env=env))[2]
    assert (settings.tracking_uri, settings.address) == ("http://env:5000", "env:6379")
    in_file = load_sweep("smoke", ["mlflow.tracking_uri=http://file:5000"], values={"storage": str(tmp_path)})
    assert prepare_run(in_file, RunOptions(run_name="n", env=env))[2].tracking_uri == "http://env:5000"
    assert prepare_run(in_file, RunOptions(run_name="n"))[2].tracking_uri == "http://file:5000"
    flagged = RunOptions(run_name="n", tracking_uri="http://flag:5000", env=env)
    assert prepare_run(in_file, flagged)[2].tracking_uri == "http://flag:5000"
    assert prepare_run(config, RunOptions(run_name="n"))[2].tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"


def test_an_existing_folder_is_not_overwritten(tmp_path):
    config = started_run(tmp_path, None)
    with pytest.raises(UserError, match="exists already: continue it with --resume --name r1"):
        prepare_run(config, RunOptions(run_name="r1"))


def test_the_resume_command_names_everything_that_is_not_a_default(tmp_path):
    config = load_sweep("smoke", values={"storage": str(tmp_path / "my runs")})
    _, experiment, settings = prepare_run(config, RunOptions(run_name="r1", tracking_uri="sqlite:////s/o.db",
                                                             address="head:6379", dashboard_host="0.0.0.0"))
    args = shlex.split(resume_command(config, experiment, settings))
    assert args[:3] == ["tune", "run", "smoke"] and args[-1] == "--resume"
    pairs = dict(zip(args[3:-1:2], args[4:-1:2], strict=True))
    assert pairs == {"--name": "r1", "--storage": str(tmp_path / "my runs"), "--tracking-uri": "sqlite:////s/o.db",
                     "--address": "head:6379", "--dashboard-host": "0.0.0.0"}
    _, experiment, settings = prepare_run(config, RunOptions(run_name="r2"))
    assert resume_command(config, experiment, settings) == (
        f"tune run smoke --name r2 --storage '{tmp_path / 'my runs'}' --resume")


def test_printed_commands_are_safe_to_paste(tmp_path):
    from search.tracking.recorder import ui_command

    odd = f"sqlite:///{tmp_path}/my runs; rm -rf x/mlflow.db"
    assert shlex.split(ui_command(odd))[3] == odd
    config = load_sweep("smoke", values={"storage": str(tmp_path / "a $(b)")})
    _, experiment, settings = prepare_run(config, RunOptions(run_name="r1"))
    assert shlex.split(resume_command(config, experiment, settings))[6] == str(tmp_path / "a $(b)")


def test_a_tick_is_not_resumed_by_hand_while_its_scheduler_runs(tmp_path):
    from filelock import FileLock

    from search.engine.storage import SCHEDULE_LOCK_FILE, SCHEDULER_PID_FILE, schedule_folder

    saved = RunSettings(tracking_uri="sqlite:////elsewhere/other.db", tags={"schedule": "smoke", "tick": "t"})
    config = started_run(tmp_path, saved)
    folder = schedule_folder(str(tmp_path), "smoke")
    folder.mkdir()
    (folder / SCHEDULER_PID_FILE).write_text("4242")
    lock = FileLock(str(folder / SCHEDULE_LOCK_FILE))
    with lock:
        with pytest.raises(UserError, match=r"a tick of schedule 'smoke', whose scheduler \(pid 4242\) is running"):
            prepare_run(config, RunOptions(run_name="r1", resume=True))
        # The scheduler itself resumes its ticks.
        ticked = RunOptions(run_name="r1", resume=True, tags={"schedule": "smoke", "tick": "t"})
        assert prepare_run(config, ticked)[2].tags["schedule"] == "smoke"
    assert prepare_run(config, RunOptions(run_name="r1", resume=True))[2] == saved  # no scheduler: allowed


def test_the_results_summary_goes_to_stdout(tmp_path, capsys):
    """`tune run smoke > log` keeps the summary (with --json, stdout is redirected and holds only JSON)."""
    from search.commands.run import _print_summary
    from search.engine.storage import ExperimentDir

    payload = {"counts": {"completed": 0, "early_stopped": 0, "errored": 0}, "metric": "val_loss", "levels": {},
               "mlflow": {"tracking_uri": "sqlite:///x.db", "experiment": "smoke", "ui_command": "mlflow ui"}}
    _print_summary([], None, payload, ExperimentDir(str(tmp_path), "r1"))
    out, err = capsys.readouterr()
    assert "results: " in out and "open the MLflow UI: mlflow ui" in out and err == ""
