"""Where a sweep's files live: checks before a sweep starts, atomic JSON, finding the latest run."""

from __future__ import annotations

import json
import os
import shutil
from collections import namedtuple

import pytest

from core.errors import UserError
from search.engine import storage
from search.engine.storage import (
    SWEEP_FILE,
    ExperimentDir,
    check_writable,
    is_uri,
    latest_run,
    local_root,
    resolve_storage,
)


def test_paths_are_made_absolute_and_uris_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_storage("runs") == str(tmp_path / "runs")
    assert resolve_storage("file://runs") == str(tmp_path / "runs")
    assert resolve_storage("s3://bucket/sweeps/") == "s3://bucket/sweeps"
    assert is_uri("s3://b") and not is_uri("file:///x") and not is_uri("/x")


def test_local_root_of_a_cloud_run_is_the_local_runs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_root(ExperimentDir("s3://b/sweeps", "r")) == tmp_path / "runs"
    assert local_root(ExperimentDir(str(tmp_path / "x"), "r")) == tmp_path / "x"


def test_a_file_where_the_folder_should_be_is_refused(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(UserError, match=f"storage {tmp_path / 'runs'}: cannot write there"):
        check_writable(str(tmp_path / "runs"))


def test_a_nearly_full_disk_is_refused(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10 * 2**30, 10 * 2**30, 50 * 2**20))
    with pytest.raises(UserError, match="only 50 MiB free, but a sweep needs at least 200 MiB"):
        check_writable(str(tmp_path))
    assert storage.MIN_FREE_BYTES == 200 * 2**20


def test_json_files_are_replaced_whole(tmp_path):
    folder = ExperimentDir(str(tmp_path), "r1")
    assert folder.read_json("results.json") is None and not folder.exists()
    folder.write_json("results.json", {"a": 1})
    folder.write_json("results.json", {"a": 2})
    assert folder.read_json("results.json") == {"a": 2} and folder.exists()
    assert [p.name for p in (tmp_path / "r1").iterdir()] == ["results.json"]  # no temporary file left


def test_latest_run_is_the_newest_of_that_sweep(tmp_path):
    for name, sweep, mtime in (("smoke-1", "smoke", 100), ("smoke-2", "smoke", 200), ("smoke_x-3", "smoke_x", 300)):
        (tmp_path / name).mkdir()
        (tmp_path / name / SWEEP_FILE).write_text(json.dumps({"name": sweep}))
        os.utime(tmp_path / name / SWEEP_FILE, (mtime, mtime))
    assert latest_run(str(tmp_path), "smoke") == "smoke-2"
    assert latest_run(str(tmp_path), "other") is None


def test_writes_never_follow_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    folder = tmp_path / "r1"
    folder.mkdir()
    (folder / "results.json").symlink_to(victim)
    (folder / ".results.json.tmp").symlink_to(victim)  # the old fixed temporary name
    ExperimentDir(str(tmp_path), "r1").write_json("results.json", {"a": 1})
    assert victim.read_text() == "keep me"
    assert not (folder / "results.json").is_symlink()
    assert json.loads((folder / "results.json").read_text()) == {"a": 1}


def test_a_storage_folder_the_tool_creates_is_private(tmp_path):
    check_writable(str(tmp_path / "new" / "runs"))
    assert (tmp_path / "new" / "runs").stat().st_mode & 0o777 == 0o700
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    check_writable(str(mine))
    assert mine.stat().st_mode & 0o777 == 0o755  # a folder the user made keeps its permissions


def test_a_schedule_keeps_its_lock_with_local_runs_or_in_the_state_directory(tmp_path, monkeypatch):
    from search.engine.storage import schedule_folder

    assert schedule_folder(str(tmp_path), "nightly") == tmp_path / "nightly.schedule"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    cloud = schedule_folder("s3://bucket/sweeps", "nightly")
    assert cloud.parent == tmp_path / "state" / "mnist-sweeps" / "schedules" and cloud.name.startswith("nightly-")
    assert cloud != schedule_folder("s3://bucket/other", "nightly")
    monkeypatch.chdir(tmp_path)  # the same from any folder
    assert schedule_folder("s3://bucket/sweeps", "nightly") == cloud


def test_a_bucket_that_never_answers_is_named_not_waited_for(monkeypatch):
    """pyarrow's GCS client retries for many minutes without a network: the probe gives up and says so."""
    import threading
    import types

    from core.errors import UserError
    from search.engine import storage

    release = threading.Event()
    monkeypatch.setattr(storage, "CLOUD_PROBE_TIMEOUT_S", 0.5)
    def never_answers(uri):
        release.wait(30)
        raise OSError("gave up")

    hanging = types.SimpleNamespace(FileSystem=types.SimpleNamespace(from_uri=never_answers))
    monkeypatch.setitem(__import__("sys").modules, "pyarrow.fs", hanging)
    monkeypatch.setattr(__import__("pyarrow"), "fs", hanging)
    try:
        with pytest.raises(UserError, match=r"storage gs://b/runs: did not answer within 0\.5 s"):
            storage.check_writable("gs://b/runs")
    finally:
        release.set()


@pytest.mark.parametrize("document", [[1, 2], {"settings": [1]}, {"settings": {"tracking_uri": 7}}, "text"])
def test_run_json_that_is_not_settings_is_no_settings(document):
    from search.engine.storage import RunSettings

    assert RunSettings.from_json(document) is None


def test_run_json_settings_that_are_not_strings_are_one_line():
    from core.errors import UserError
    from search.engine.storage import RunSettings

    with pytest.raises(UserError, match=r"run\.json: its settings are not the strings this tool writes"):
        RunSettings.from_json({"settings": {"tracking_uri": "sqlite:///x.db", "tags": {"a": ["b"]}}})


def test_a_damaged_schedule_state_says_how_to_start_over(tmp_path):
    from core.errors import UserError
    from search.commands.schedule import _read_state

    for text in ("{not json", "[]", '{"ticks": [1]}'):
        (tmp_path / "state.json").write_text(text)
        with pytest.raises(UserError, match=r"state\.json: damaged .*move it away to start the schedule.s record"):
            _read_state(tmp_path / "state.json")
