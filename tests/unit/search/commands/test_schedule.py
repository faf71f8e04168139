"""The cron arithmetic of `tune schedule`: ticks, time zones, missed ticks (no Ray, no sleeping)."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timezone

import pytest

from core.errors import UserError
from search.commands.schedule import Schedule, ScheduleOptions, parse_cron, tick_config
from spaces import load_sweep

UTC = timezone.utc


def schedule(tmp_path, cron: str, tz: str = "UTC") -> Schedule:
    return Schedule(load_sweep("smoke", values={"storage": str(tmp_path)}), ScheduleOptions(cron=cron, timezone=tz))


def test_next_and_previous_tick(tmp_path):
    daily = schedule(tmp_path, "0 2 * * *")
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert daily.next_tick(now) == datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    assert daily.previous_tick(now) == datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    on_tick = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    assert daily.previous_tick(on_tick) == on_tick  # a tick counts as due at its own time


def test_ticks_follow_the_time_zone_across_daylight_saving(tmp_path):
    berlin = schedule(tmp_path, "0 2 * * *", "Europe/Berlin")
    winter = berlin.next_tick(datetime(2026, 1, 10, 12, 0, tzinfo=UTC))
    summer = berlin.next_tick(datetime(2026, 7, 10, 12, 0, tzinfo=UTC))
    assert (winter.hour, summer.hour) == (1, 0)  # 02:00 in Berlin is 01:00 UTC in winter, 00:00 in summer


def test_six_fields_take_seconds_first(tmp_path):
    every_30s = schedule(tmp_path, "30 * * * * *")  # every minute at :30
    assert every_30s.next_tick(datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)) == datetime(2026, 1, 1, 0, 0, 30,
                                                                                        tzinfo=UTC)


def test_missed_ticks_between_two_moments(tmp_path):
    hourly = schedule(tmp_path, "0 * * * *")
    missed = hourly.missed(datetime(2026, 1, 1, 0, 0, tzinfo=UTC), datetime(2026, 1, 1, 3, 30, tzinfo=UTC))
    assert (missed.first.hour, missed.last.hour, missed.count) == (1, 3, 3)
    assert hourly.missed(datetime(2026, 1, 1, 0, 0, tzinfo=UTC), datetime(2026, 1, 1, 0, 59, tzinfo=UTC)) is None


def test_a_year_of_missed_ticks_is_one_record_and_the_latest_is_caught_up(tmp_path, monkeypatch):
    """A scheduler down for a year at a tick a minute: one line in state.json and in the log, found in
    well under a second, and --catch-up runs only the latest tick."""
    import json
    import time

    from search.commands import schedule as module

    minutely = schedule(tmp_path, "* * * * *")
    minutely.folder.mkdir(parents=True)
    down = datetime(2025, 1, 1, 0, 0, tzinfo=UTC)
    minutely.write_tick(down, status="finished")
    now = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    monkeypatch.setattr(module, "_now", lambda: now)
    ran = []
    monkeypatch.setattr(module, "run_tick", lambda _schedule, tick, _options: ran.append(tick) or 0)
    started = time.monotonic()
    module._handle_missed(minutely, ScheduleOptions(cron="* * * * *", catch_up=True))
    assert time.monotonic() - started < 5
    assert ran == [datetime(2026, 1, 1, 0, 0, tzinfo=UTC)]
    (record,) = json.loads((minutely.folder / "state.json").read_text())["skipped"]
    assert record == {"first": "20250101T000100Z", "last": "20251231T235900Z", "count": 10_000,
                      "reason": "missed while down; caught up a later tick", "count_is_at_least": True}
    assert minutely.last_tick() == datetime(2025, 12, 31, 23, 59, tzinfo=UTC)  # the run tick is not in state here


@pytest.mark.parametrize("cron, limit, expected", [
    ("*/4 * * * * *", 60, "--cron '*/4 * * * * *': ticks 4 s apart, but a schedule ticks at most once every 60 s"),
    ("0,1 0 2 * * *", 60, "ticks 1 s apart"),
    ("*/5 * * * *", 600, "ticks 300 s apart, but a schedule ticks at most once every 600 s"),
])
def test_a_cron_faster_than_the_limit_is_refused(cron, limit, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        parse_cron(cron, "UTC", limit)
    parse_cron("30 0 2 * * *", "UTC", 60)  # seconds, once a day
    parse_cron("*/4 * * * * *", "UTC", 1)  # SWEEP_SCHEDULE_MIN_INTERVAL_S=1, as the tests set it


@pytest.mark.parametrize("cron, tz, expected", [
    ("61 * * * *", "UTC", "not a cron expression"),
    ("* * *", "UTC", "not a cron expression"),
    ("0 * * * *", "Mars/Olympus", "unknown time zone"),
])
def test_bad_cron_or_time_zone_is_a_user_error(cron, tz, expected):
    with pytest.raises(UserError, match=expected):
        parse_cron(cron, tz)


def test_each_tick_continues_one_study_with_a_seed_of_its_own(tmp_path):
    plan = schedule(tmp_path, "0 * * * *")
    first = tick_config(plan)
    assert first.search.storage == str(tmp_path / "smoke.schedule" / "study.journal")
    plan.folder.mkdir(parents=True)
    plan.write_tick(datetime(2026, 1, 1, 1, 0, tzinfo=UTC), status="finished")
    assert tick_config(plan).search.seed == first.search.seed + 1
    assert plan.run_name(datetime(2026, 1, 1, 1, 0, tzinfo=UTC)) == "smoke-20260101T010000Z"


def test_a_tick_runs_with_the_schedules_options_and_its_own_tags(tmp_path, monkeypatch):
    from search.commands import schedule as schedule_module
    from search.commands.run import SweepOutcome
    from search.settings import Environment, RunOptions

    seen = []
    monkeypatch.setattr(schedule_module, "run_sweep", lambda config, options: seen.append(options)
                        or SweepOutcome(0, {"best": {"trial_id": "t1", "score": 0.1, "test_acc": 0.9}}))
    run = RunOptions(address="head:6379", tracking_uri="http://mlflow:5000", env=Environment(storage="/x"))
    plan = Schedule(load_sweep("smoke", values={"storage": str(tmp_path)}),
                    ScheduleOptions(cron="0 * * * *", run=run))
    plan.folder.mkdir(parents=True)
    tick = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    assert schedule_module.run_tick(plan, tick, plan.options) == 0
    (options,) = seen
    assert (options.address, options.tracking_uri, options.env) == (run.address, run.tracking_uri, run.env)
    assert options.run_name == "smoke-20260101T010000Z" and not options.resume and options.reuse_dir
    assert options.tags == {"schedule": "smoke", "tick": tick.isoformat()}
    assert plan.status_of(tick) == "finished"


@pytest.mark.parametrize("own_code", [True, False])
def test_a_sweep_with_its_own_code_starts_afresh_each_tick_so_an_edit_reaches_the_next(tmp_path, monkeypatch,
                                                                                         own_code):
    import importlib

    import ray

    from search.commands import schedule as schedule_module
    from search.commands.run import SweepOutcome

    code = tmp_path / "mymodel_for_ticks.py"
    code.write_text("VERSION = 1\n\ndef build(**kwargs):\n    raise NotImplementedError\n")
    sweep = tmp_path / "mine.yaml"
    sweep.write_text(("model: mymodel_for_ticks:build\n" if own_code else "") + "epochs: 1\n")
    shutdowns, versions = [], []
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(True))
    monkeypatch.setattr(schedule_module, "run_sweep", lambda config, options: versions.append(
        importlib.import_module("mymodel_for_ticks").VERSION) or SweepOutcome(0, {}))
    monkeypatch.syspath_prepend(str(tmp_path))
    plan = Schedule(load_sweep(str(sweep), values={"storage": str(tmp_path / "runs")}),
                    ScheduleOptions(cron="0 * * * *"))
    plan.folder.mkdir(parents=True)
    try:
        for hour, version in ((1, 1), (2, 22)):
            code.write_text(code.read_text().replace("VERSION = 1\n", f"VERSION = {version}\n"))
            assert schedule_module.run_tick(plan, datetime(2026, 1, 1, hour, 0, tzinfo=UTC), plan.options) == 0
    finally:
        sys.modules.pop("mymodel_for_ticks", None)
    # Ray packs a job's working_dir when the driver connects, and the driver keeps what it imported:
    # only a new connection and a new import carry the edited code.
    assert shutdowns == ([True, True] if own_code else [])
    assert versions == ([1, 22] if own_code else [1, 1])
