"""`tune schedule`: recurring sweeps that keep one Optuna study and a champion model.

A foreground process (for systemd, supervisor or a Kubernetes Deployment) runs the
sweep at each cron tick. Ticks never overlap: one that comes due while a sweep runs is
skipped and logged. One scheduler per schedule: a file lock (released by the OS when the
holder dies) refuses a second. After downtime, `--catch-up` runs only the latest missed
tick. SIGTERM stops like Ctrl-C: the sweep is saved and the next start resumes that tick.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import UserError
from core.files import regular_file
from search.commands.run import EXIT_INTERRUPTED, run_sweep
from search.engine.storage import (
    SCHEDULE_LOCK_FILE,
    SCHEDULER_PID_FILE,
    ExperimentDir,
    is_uri,
    resolve_storage,
    schedule_folder,
    write_atomically,
)
from search.settings import RunOptions
from spaces import SweepConfig

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STUDY_JOURNAL = "study.journal"
TICK_FORMAT = "%Y%m%dT%H%M%SZ"
_EPSILON = timedelta(microseconds=1)


@dataclass(frozen=True)
class ScheduleOptions:
    cron: str
    timezone: str = "UTC"
    max_runs: int | None = None
    catch_up: bool = False
    once: bool = False
    run: RunOptions = field(default_factory=RunOptions)  # every tick's `tune run` options (address, store, env)


def parse_cron(expression: str, tz: str, min_interval_s: float = 60.0) -> tuple[str, bool, ZoneInfo]:
    """Validate a 5-field cron expression, or 6 fields with seconds first; and the time zone. Two
    ticks are at least `min_interval_s` apart (a minute; SWEEP_SCHEDULE_MIN_INTERVAL_S lowers it)."""
    from croniter import croniter

    fields = expression.split()
    with_seconds = len(fields) == 6
    if len(fields) not in (5, 6) or not croniter.is_valid(expression, second_at_beginning=with_seconds):
        raise UserError(f"--cron '{expression}': not a cron expression (5 fields, or 6 with seconds first)")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"--timezone '{tz}': unknown time zone (e.g. UTC, Europe/Berlin)") from None
    from croniter import CroniterBadDateError

    try:  # a date that never comes (30 February) parses, then has no tick: croniter gives up after years
        croniter(expression, datetime(2026, 1, 1, tzinfo=zone), second_at_beginning=with_seconds).get_next(float)
    except CroniterBadDateError:
        raise UserError(f"--cron '{expression}': names no date that exists (e.g. 30 February): it would never "
                        "tick") from None
    if with_seconds or min_interval_s > 60:  # five fields are a minute apart at least
        # Every gap of a cron expression shows within its first 1,000 ticks unless it repeats less
        # often than that, e.g. two seconds of one minute a day: 1,000 days, checked in milliseconds.
        cron = croniter(expression, datetime(2026, 1, 1, tzinfo=zone), second_at_beginning=with_seconds)
        ticks = [cron.get_next(float) for _ in range(1000)]
        gap = min(b - a for a, b in itertools.pairwise(ticks))
        if gap < min_interval_s:
            raise UserError(f"--cron '{expression}': ticks {gap:g} s apart, but a schedule ticks at most once "
                            f"every {min_interval_s:g} s (SWEEP_SCHEDULE_MIN_INTERVAL_S lowers that, for tests)")
    return expression, with_seconds, zone


def _read_state(path: Path) -> dict[str, Any]:
    """A schedule's state file, or a `UserError` that says how to start over when it is damaged."""
    try:
        state = json.loads(regular_file(path, "a schedule's state").read_text())
        if not isinstance(state, dict) or not isinstance(state.get("ticks"), dict) or not all(
                isinstance(k, str) and isinstance(v, dict) for k, v in state["ticks"].items()):
            raise ValueError("it does not hold {\"ticks\": {…}}")
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise UserError(f"{path}: damaged ({' '.join(str(err).split())[:200]}); move it away to start the schedule's "
                        "record afresh (its runs and study stay where they are)") from None
    return state


class Schedule:
    """The cron ticks of one schedule and the state kept between them."""

    def __init__(self, config: SweepConfig, options: ScheduleOptions) -> None:
        self.expression, self._seconds, self.zone = parse_cron(options.cron, options.timezone,
                                                               options.run.env.min_tick_interval_s)
        self.config = config
        self.options = options
        storage = resolve_storage(config.storage)
        # Lock and state need a local file system, even when results go to a cloud URI.
        self.folder = schedule_folder(storage, config.name)
        # The study lives with the runs: on a cloud URI in `<storage>/<sweep>.schedule/`, worked on
        # through a copy beside the lock, fetched when this machine has none and uploaded after
        # every tick.
        self.cloud_folder = ExperimentDir(storage, f"{config.name}.schedule") if is_uri(storage) else None
        self.journal = self.folder / STUDY_JOURNAL
        self._state: dict[str, Any] | None = None

    # --- time -------------------------------------------------------------------

    def _cron(self, start: datetime) -> Any:
        from croniter import croniter

        return croniter(self.expression, start.astimezone(self.zone), second_at_beginning=self._seconds)

    def next_tick(self, after: datetime) -> datetime:
        return self._cron(after).get_next(datetime).astimezone(timezone.utc)

    def previous_tick(self, at: datetime) -> datetime:
        """The latest tick at or before `at`."""
        return self._cron(at + _EPSILON).get_prev(datetime).astimezone(timezone.utc)

    def missed(self, after: datetime, until: datetime) -> TickRange | None:
        """The ticks after `after` and at or before `until`, as a range (counted up to MAX_COUNTED)."""
        first, last = self.next_tick(after), self.previous_tick(until)
        if first > until:
            return None
        count, cron = 1, self._cron(first)
        while count < MAX_COUNTED and cron.get_next(datetime).astimezone(timezone.utc) <= last:
            count += 1
        return TickRange(first, last, count)

    # --- the study -------------------------------------------------------------------

    def fetch_study(self) -> None:
        """On cloud storage, bring the schedule's study to this machine when it has no copy (a new
        head node, another folder)."""
        if self.cloud_folder is not None and not self.journal.exists() \
                and self.cloud_folder.download(STUDY_JOURNAL, self.journal):
            log.info("schedule %s: continuing the study kept at %s/%s", self.config.name,
                     self.cloud_folder.uri, STUDY_JOURNAL)

    def upload_study(self) -> None:
        if self.cloud_folder is not None and self.journal.exists():
            self.cloud_folder.upload(STUDY_JOURNAL, self.journal)

    # --- state --------------------------------------------------------------------

    def read_state(self) -> dict[str, Any]:
        """The ticks so far: read from state.json once (a previous scheduler's), then kept in memory."""
        if self._state is None:
            path = self.folder / STATE_FILE
            self._state = _read_state(path) if path.exists() else {"ticks": {}}
        return self._state

    def write_tick(self, tick: datetime, **fields: Any) -> None:
        state = self.read_state()
        key = tick.strftime(TICK_FORMAT)
        state["ticks"][key] = {**state["ticks"].get(key, {}), **fields}
        write_atomically(self.folder / STATE_FILE, json.dumps(state, indent=2).encode())

    def unfinished_tick(self) -> datetime | None:
        """A tick whose sweep was started and not finished (stopped, or the scheduler crashed)."""
        for key, tick in sorted(self.read_state()["ticks"].items()):
            if tick.get("status") in ("running", "interrupted"):
                return _parse_tick(key)
        return None

    def last_tick(self) -> datetime | None:
        """The latest tick this schedule ran or skipped."""
        state = self.read_state()
        keys = [*state["ticks"], *(r["last"] for r in state.get("skipped", []))]
        return _parse_tick(max(keys)) if keys else None

    def write_skipped(self, ticks: TickRange, reason: str) -> None:
        """Skipped ticks, one record per range (a scheduler down for a year at a tick a minute writes
        one line, not half a million)."""
        state = self.read_state()
        state.setdefault("skipped", []).append({"first": ticks.first.strftime(TICK_FORMAT),
                                                "last": ticks.last.strftime(TICK_FORMAT),
                                                "count": ticks.count, "reason": reason,
                                                **({"count_is_at_least": True} if ticks.count >= MAX_COUNTED else {})})
        write_atomically(self.folder / STATE_FILE, json.dumps(state, indent=2).encode())

    def status_of(self, tick: datetime) -> str | None:
        return self.read_state()["ticks"].get(tick.strftime(TICK_FORMAT), {}).get("status")

    def run_name(self, tick: datetime) -> str:
        return f"{self.config.name}-{tick.strftime(TICK_FORMAT)}"


MAX_COUNTED = 10_000  # skipped ticks counted one by one; more is reported as "at least"


@dataclass(frozen=True)
class TickRange:
    first: datetime
    last: datetime
    count: int  # at most MAX_COUNTED

    def __str__(self) -> str:
        many = f"{'at least ' if self.count >= MAX_COUNTED else ''}{self.count:,} tick(s)"
        return f"{many}, {self.first.isoformat()} … {self.last.isoformat()}"


def _parse_tick(key: str) -> datetime:
    return datetime.strptime(key, TICK_FORMAT).replace(tzinfo=timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class SingleScheduler:
    """Holds the schedule's lock for as long as this process lives."""

    def __init__(self, folder: Path) -> None:
        from filelock import FileLock, Timeout

        folder.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(folder / SCHEDULE_LOCK_FILE))
        self._owner = folder / SCHEDULER_PID_FILE
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = self._owner.read_text().strip() if self._owner.exists() else "unknown"
            raise UserError(f"another scheduler is running this schedule (pid {holder}, lock "
                            f"{folder / SCHEDULE_LOCK_FILE}); stop it first") from None
        write_atomically(self._owner, str(os.getpid()).encode())

    def release(self) -> None:
        self._lock.release()


def run_schedule(config: SweepConfig, options: ScheduleOptions) -> int:
    """The scheduler's main loop; returns the exit code."""
    schedule = Schedule(config, options)
    from search.engine.cluster import stop_gracefully_on_sigterm

    holder = SingleScheduler(schedule.folder)
    stop_gracefully_on_sigterm()
    try:
        return _loop(schedule, options)
    except KeyboardInterrupt:
        log.warning("schedule %s: stopped", config.name)
        return EXIT_INTERRUPTED
    finally:
        holder.release()


def _loop(schedule: Schedule, options: ScheduleOptions) -> int:
    runs = 0
    unfinished = schedule.unfinished_tick()
    if unfinished is not None:
        log.info("schedule %s: resuming the unfinished tick %s", schedule.config.name, unfinished.isoformat())
        code = run_tick(schedule, unfinished, options)
        if code == EXIT_INTERRUPTED or options.once:
            return code
        runs += 1
    elif options.once:
        return _run_once(schedule, options)
    else:
        _handle_missed(schedule, options)
    while options.max_runs is None or runs < options.max_runs:
        tick = schedule.next_tick(_now())
        log.info("schedule %s: next tick at %s", schedule.config.name, tick.isoformat())
        _sleep_until(tick)
        code = run_tick(schedule, tick, options)
        runs += 1
        if code == EXIT_INTERRUPTED:
            return code
        _log_overlapped(schedule, tick)
    log.info("schedule %s: %d run(s) done", schedule.config.name, runs)
    return 0


def _run_once(schedule: Schedule, options: ScheduleOptions) -> int:
    tick = schedule.previous_tick(_now())
    if schedule.status_of(tick) == "finished":
        log.info("schedule %s: tick %s already ran (%s); nothing to do", schedule.config.name,
                 tick.isoformat(), schedule.run_name(tick))
        return 0
    return run_tick(schedule, tick, options)


def _handle_missed(schedule: Schedule, options: ScheduleOptions) -> None:
    last = schedule.last_tick()
    if last is None:
        return
    missed = schedule.missed(last, _now())
    if missed is None:
        return
    if options.catch_up:
        log.info("schedule %s: missed %s while down; catching up the latest only", schedule.config.name, missed)
        if missed.count > 1:
            before = schedule.previous_tick(missed.last - _EPSILON)
            counted = missed.count if missed.count >= MAX_COUNTED else missed.count - 1
            schedule.write_skipped(TickRange(missed.first, before, counted),
                                   "missed while down; caught up a later tick")
        run_tick(schedule, missed.last, options)
    else:
        log.info("schedule %s: skipped %s, missed while down; --catch-up runs the latest",
                 schedule.config.name, missed)
        schedule.write_skipped(missed, "missed while down")


def _log_overlapped(schedule: Schedule, tick: datetime) -> None:
    skipped = schedule.missed(tick, _now())
    if skipped is not None:
        log.info("schedule %s: skipped %s: the sweep of tick %s was still running",
                 schedule.config.name, skipped, tick.isoformat())
        schedule.write_skipped(skipped, f"overlapped tick {tick.isoformat()}")


def _sleep_until(moment: datetime) -> None:
    while (left := (moment - _now()).total_seconds()) > 0:
        time.sleep(min(left, 30.0))


def tick_config(schedule: Schedule) -> SweepConfig:
    """The sweep for a tick: the schedule's persistent study, and a sampler seed of its own
    (the same seed every tick would replay the same random start-up proposals)."""
    config = schedule.config
    finished = sum(t.get("status") == "finished" for t in schedule.read_state()["ticks"].values())
    search = config.search.model_copy(update={
        "storage": config.search.storage or str(schedule.journal),
        "study_name": config.search.study_name or config.name,
        "seed": config.search.seed + finished,
    })
    return config.model_copy(update={"search": search})


def run_tick(schedule: Schedule, tick: datetime, options: ScheduleOptions) -> int:
    """Run (or resume) the sweep of one tick and record how it ended."""
    from ray import tune

    schedule.fetch_study()
    config = tick_config(schedule)
    run_name = schedule.run_name(tick)
    experiment = ExperimentDir(resolve_storage(config.storage), run_name)
    resume = experiment.exists() and tune.Tuner.can_restore(experiment.uri)
    log.info("schedule %s: %s tick %s as %s", config.name, "resuming" if resume else "running",
             tick.isoformat(), run_name)
    schedule.write_tick(tick, status="running", run_name=run_name, started=_now().isoformat())
    try:
        outcome = run_sweep(config, replace(options.run,
            run_name=run_name, resume=resume, reuse_dir=True,
            tags={"schedule": config.name, "tick": tick.isoformat()}))
    finally:
        schedule.upload_study()
        if config.code_folders():
            # Ray packs the sweep's own code (the job's working_dir) when the driver connects, and
            # this process keeps what it imported: the next tick starts both afresh, so it runs the
            # code as it is then, in the trials and here (the model check, the test evaluation).
            import ray

            from core.entrypoints import forget_modules_under

            ray.shutdown()
            forget_modules_under(config.code_folders())
    status = "interrupted" if outcome.exit_code == EXIT_INTERRUPTED else "finished"
    best = (outcome.payload.get("best") or {}) if outcome.payload else {}
    schedule.write_tick(tick, status=status, exit_code=outcome.exit_code, finished=_now().isoformat(),
                        best_trial=best.get("trial_id"), score=best.get("score"),
                        test_acc=best.get("test_acc"))
    return outcome.exit_code
