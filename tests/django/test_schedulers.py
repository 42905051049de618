"""Beat reading periodic tasks from the Django models: edits are picked up while it runs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from celeriac import Celery
from celeriac.beat import MemoryStore, resolve_scheduler
from celeriac.contrib.django.models import (
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasksChanged,
)
from celeriac.contrib.django.schedulers import DatabaseScheduler, DatabaseScheduleSource
from celeriac.schedules import crontab, schedule

START = datetime(2030, 1, 7, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = START.timestamp()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_app(clock: Clock, **settings: Any) -> tuple[Celery, list[tuple[str, list, dict, dict]]]:
    app = Celery("djbeat", broker="memory://", backend="memory://", set_as_current=False, **settings)
    app.now = clock.now  # type: ignore[method-assign]
    sent: list[tuple[str, list, dict, dict]] = []

    def send_task(name: str, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        sent.append((name, list(args or ()), dict(kwargs or {}), options))

    app.send_task = send_task  # type: ignore[method-assign]
    return app, sent


def every(seconds: int) -> IntervalSchedule:
    return IntervalSchedule.objects.create(every=seconds, period="seconds")


def test_rows_become_beat_entries(alias: str) -> None:
    PeriodicTask.objects.create(name="a", task="t.a", interval=every(10), args="[1]",
                                kwargs='{"k": 2}', queue="q", priority=5, expire_seconds=30)
    cron = CrontabSchedule.objects.create(minute="*/15", hour="9-17", day_of_week="mon-fri",
                                          timezone="Europe/Paris")
    PeriodicTask.objects.create(name="b", task="t.b", crontab=cron)
    PeriodicTask.objects.create(name="off", task="t.off", interval=every(10), enabled=False)
    source = DatabaseScheduleSource(using=alias)
    assert source.changed()
    entries = source.entries()
    assert set(entries) == {"a", "b"}
    a = entries["a"]
    assert (a["task"], a["args"], a["kwargs"]) == ("t.a", (1,), {"k": 2})
    assert a["options"] == {"queue": "q", "priority": 5, "expires": 30,
                            "headers": {"periodic_task_name": "a"}}
    assert a["schedule"] == schedule(timedelta(seconds=10))
    b = entries["b"]["schedule"]
    assert b == crontab(minute="*/15", hour="9-17", day_of_week="mon-fri", tz=ZoneInfo("Europe/Paris"))
    assert not source.changed()
    PeriodicTask.objects.filter(name="off").update(enabled=True)
    assert not source.changed()  # update() sends no signal ...
    PeriodicTasksChanged.touch(using=alias)
    assert source.changed()  # ... touch() says it


def test_record_run_does_not_mark_a_change_and_disables_one_off_tasks(alias: str) -> None:
    PeriodicTask.objects.create(name="once", task="t.once", interval=every(10), one_off=True)
    source = DatabaseScheduleSource(using=alias)
    source.entries()
    PeriodicTask.objects.create(name="kept", task="t.kept", interval=every(10))
    source.entries()
    when = datetime(2030, 1, 1, tzinfo=UTC)
    source.record_run("kept", when)
    assert not source.changed()
    row = PeriodicTask.objects.get(name="kept")
    assert (row.last_run_at, row.total_run_count) == (when, 1)
    source.record_run("once", when, total_run_count=7)
    assert source.changed()
    once = PeriodicTask.objects.get(name="once")
    assert (once.enabled, once.total_run_count) == (False, 7)


def test_beat_picks_up_admin_edits_without_restart(alias: str, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    app, sent = make_app(clock, beat_schedule={"conf": {"task": "t.conf", "schedule": 10}})
    PeriodicTask.objects.create(name="db", task="t.db", interval=every(10), args="[1]")
    sched = resolve_scheduler("celeriac.contrib.django.schedulers:DatabaseScheduler")(
        app, store=MemoryStore(clock), using=alias)
    assert isinstance(sched, DatabaseScheduler)
    assert set(sched.schedule) == {"conf", "db"}
    sched.tick()
    clock.advance(10)
    sched.tick()
    assert sorted(name for name, *_ in sent) == ["t.conf", "t.db"]
    options = next(options for name, _, _, options in sent if name == "t.db")
    assert options["headers"] == {"periodic_task_name": "db", "celery_beat_task": True}
    row = PeriodicTask.objects.get(name="db")
    assert row.total_run_count == 1 and row.last_run_at == clock.now()

    # Edited in the admin while beat runs: a new task, a disabled one.
    PeriodicTask.objects.create(name="new", task="t.new", interval=every(20))
    row.enabled = False
    row.save()
    with caplog.at_level(logging.INFO, "celeriac.beat"):
        clock.advance(sched.max_interval)
        sched.tick()
    assert set(sched.schedule) == {"conf", "new"}
    assert "Schedule changed" in caplog.text
    sent.clear()
    clock.advance(20)
    sched.tick()
    assert sorted(name for name, *_ in sent) == ["t.conf", "t.new"]
    sched.close()


def test_one_off_and_start_time(alias: str) -> None:
    clock = Clock()
    app, sent = make_app(clock)
    PeriodicTask.objects.create(name="once", task="t.once", interval=every(5), one_off=True)
    PeriodicTask.objects.create(name="later", task="t.later", interval=every(5),
                                start_time=START + timedelta(seconds=12))
    sched = DatabaseScheduler(app, store=MemoryStore(clock), using=alias)
    assert set(sched.schedule) == {"once"}
    clock.advance(5)
    sched.tick()
    assert [name for name, *_ in sent] == ["t.once"]
    assert not PeriodicTask.objects.get(name="once").enabled
    clock.advance(10)  # the start time has passed; the one-off task is gone
    sched.tick()
    assert set(sched.schedule) == {"later"}
    sched.close()


def test_a_row_bypassing_validation_is_skipped(alias: str, caplog: pytest.LogCaptureFixture) -> None:
    PeriodicTask.objects.create(name="bad", task="t.bad", interval=every(5), args="not json")
    PeriodicTask.objects.create(name="good", task="t.good", interval=every(5))
    with caplog.at_level(logging.ERROR):
        entries = DatabaseScheduleSource(using=alias).entries()
    assert set(entries) == {"good"}
    assert "Skipping periodic task 'bad'" in caplog.text
