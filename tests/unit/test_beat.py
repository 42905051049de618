"""Beat's decisions, driven by a fake clock: due, missed once, restarts, the leader lease."""

from __future__ import annotations

import json
import logging
import math
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from celeriac import Celery
from celeriac.beat import (
    CLAIM_CONFLICT,
    CLAIM_NOT_LEADER,
    BeatLazyFunc,
    BeatStore,
    DatabaseScheduler,
    EmbeddedBeat,
    FileStore,
    MemoryStore,
    PersistentScheduler,
    RedisStore,
    RunState,
    ScheduleEntry,
    ScheduleFile,
    Scheduler,
    ScheduleTable,
    SQLiteStore,
    from_micros,
    resolve_scheduler,
    schedule_from_json,
    schedule_to_json,
    store_for_app,
    to_micros,
)
from celeriac.beat_cli import beat as beat_command
from celeriac.exceptions import ImproperlyConfigured
from celeriac.schedules import crontab, schedule, solar

START = datetime(2030, 1, 7, 12, 0, 0, tzinfo=UTC)  # a Monday


class Clock:
    """A settable clock for both the app (`app.now`) and the stores (seconds)."""

    def __init__(self, start: datetime = START) -> None:
        self.t = start.timestamp()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_app(clock: Clock, beat_schedule: dict[str, Any] | None = None, **settings: Any) -> tuple[Celery, list]:
    """An app on the fake clock whose send_task records (name, args, kwargs, options)."""
    app = Celery("beattest", broker="memory://", backend="memory://", set_as_current=False,
                 **settings)
    app.now = clock.now  # type: ignore[method-assign]
    if beat_schedule is not None:
        app.conf.beat_schedule = beat_schedule
    sent: list[tuple[str, list, dict, dict]] = []

    def send_task(name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        sent.append((name, list(args or ()), dict(kwargs or {}), options))
        return None

    app.send_task = send_task  # type: ignore[method-assign]
    return app, sent


def names(sent: list) -> list[str]:
    return [item[0] for item in sent]


EVERY_10 = {"ten": {"task": "t.ten", "schedule": 10.0}}


# --- deciding what is due -------------------------------------------------------------------


def test_interval_entry_runs_one_interval_after_start_then_every_interval() -> None:
    clock = Clock()
    app, sent = make_app(clock, EVERY_10)
    sched = Scheduler(app, store=MemoryStore(clock))
    sched.tick()
    assert sent == []
    clock.advance(9.9)
    sched.tick()
    assert sent == []
    clock.advance(0.1)
    sched.tick()
    sched.tick()
    assert names(sent) == ["t.ten"]
    clock.advance(10)
    sched.tick()
    assert names(sent) == ["t.ten", "t.ten"]
    assert sched.schedule["ten"].total_run_count == 2


def test_tick_sleeps_until_next_due_or_max_interval() -> None:
    clock = Clock()
    app, _ = make_app(clock, EVERY_10)
    assert Scheduler(app, store=MemoryStore(clock)).tick() == pytest.approx(10)
    assert Scheduler(app, store=MemoryStore(clock), max_interval=3).tick() == pytest.approx(3)
    # A shared store: wake up to renew the lease.
    shared = Scheduler(app, store=MemoryStore(clock, shared=True))
    assert shared.tick() == pytest.approx(shared.lease_renew_interval)


def test_schedule_forms_number_timedelta_crontab_solar() -> None:
    clock = Clock()
    app, _ = make_app(clock, {
        "number": {"task": "t", "schedule": 30},
        "delta": {"task": "t", "schedule": timedelta(minutes=1)},
        "cron": {"task": "t", "schedule": crontab(minute="*/15")},
        "sun": {"task": "t", "schedule": solar("sunset", 48.85, 2.35)},
        "relative": {"task": "t", "schedule": 3600, "relative": True},
    })
    entries = Scheduler(app, store=MemoryStore(clock)).schedule
    assert entries["number"].schedule == schedule(30)
    assert entries["delta"].schedule == schedule(60)
    assert isinstance(entries["cron"].schedule, crontab)
    assert isinstance(entries["sun"].schedule, solar)
    assert entries["relative"].schedule.relative is True
    assert all(entry.schedule.app is app for entry in entries.values())


def test_crontab_entry_fires_on_its_minutes() -> None:
    clock = Clock(START + timedelta(minutes=1))  # 12:01
    app, sent = make_app(clock, {"q": {"task": "t.q", "schedule": crontab(minute="*/15")}})
    sched = Scheduler(app, store=MemoryStore(clock), max_interval=3600)
    wait = sched.tick()
    assert sent == []
    assert wait == pytest.approx(14 * 60)
    clock.advance(wait)  # 12:15
    sched.tick()
    assert names(sent) == ["t.q"]


def test_args_kwargs_and_options_are_forwarded() -> None:
    clock = Clock()
    app, sent = make_app(clock, {"e": {
        "task": "t.add", "schedule": 1, "args": (2, 3), "kwargs": {"z": 1},
        "options": {"queue": "periodic", "expires": 10, "priority": 5},
    }})
    sched = Scheduler(app, store=MemoryStore(clock))
    sched.tick()
    clock.advance(1)
    sched.tick()
    (name, args, kwargs, options), = sent
    assert (name, args, kwargs) == ("t.add", [2, 3], {"z": 1})
    assert options["queue"] == "periodic"
    assert options["expires"] == 10
    assert options["priority"] == 5
    assert options["headers"] == {"celery_beat_task": True}


def test_registered_task_is_sent_with_its_apply_async() -> None:
    clock = Clock()
    app, sent = make_app(clock)

    @app.task(name="t.mine")
    def mine(x: int) -> int:
        return x

    calls = []
    mine.apply_async = lambda args, kwargs, **options: calls.append((args, kwargs, options))  # type: ignore[method-assign]
    app.conf.beat_schedule = {"m": {"task": "t.mine", "schedule": 1, "args": [7]}}
    sched = Scheduler(app, store=MemoryStore(clock))
    sched.tick()
    clock.advance(1)
    sched.tick()
    assert sent == []
    assert calls[0][0] == [7]


def test_lazy_arguments_are_computed_at_send_time() -> None:
    clock = Clock()
    app, sent = make_app(clock, {"e": {"task": "t", "schedule": 1,
                                       "args": [BeatLazyFunc(lambda: clock.t)],
                                       "kwargs": {"k": BeatLazyFunc(str, 5)}}})
    sched = Scheduler(app, store=MemoryStore(clock))
    sched.tick()
    clock.advance(1)
    sched.tick()
    assert sent[0][1] == [clock.t]
    assert sent[0][2] == {"k": "5"}


def test_send_error_is_logged_and_the_tick_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    app, _ = make_app(clock, {"e": {"task": "t", "schedule": 1}})

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    app.send_task = broken  # type: ignore[method-assign]
    sched = Scheduler(app, store=MemoryStore(clock))
    sched.tick()
    clock.advance(1)
    with caplog.at_level(logging.ERROR, "celeriac.beat"):
        sched.tick()
    assert "Message Error" in caplog.text
    assert sched.schedule["e"].total_run_count == 1


def test_an_entry_that_raises_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    app, sent = make_app(clock, {"bad": {"task": "t.bad", "schedule": 1},
                                 "good": {"task": "t.good", "schedule": 1}})
    sched = Scheduler(app, store=MemoryStore(clock))

    def explode(last_run_at: datetime) -> Any:
        raise RuntimeError("boom")

    sched.schedule["bad"].schedule.is_due = explode  # type: ignore[method-assign]
    sched.tick()
    clock.advance(1)
    with caplog.at_level(logging.ERROR, "celeriac.beat"):
        sched.tick()
    assert names(sent) == ["t.good"]
    assert "Cannot calculate the next run of 'bad'" in caplog.text


def test_logs_like_celery(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    app, _ = make_app(clock, {"e": {"task": "t.e", "schedule": 1}})
    sched = Scheduler(app, store=MemoryStore(clock))
    sched.tick()
    clock.advance(1)
    with caplog.at_level(logging.INFO, "celeriac.beat"):
        sched.tick()
    assert "Scheduler: Sending due task e (t.e)" in caplog.text


def test_bad_definitions_are_refused() -> None:
    clock = Clock()
    app, _ = make_app(clock, {"e": {"schedule": 1}})
    with pytest.raises(ImproperlyConfigured, match="has no 'task'"):
        Scheduler(app, store=MemoryStore(clock))
    app.conf.beat_schedule = {"e": {"task": "t"}}
    with pytest.raises(ImproperlyConfigured, match="has no 'schedule'"):
        Scheduler(app, store=MemoryStore(clock))


def test_merge_keeps_run_record_and_applies_changes() -> None:
    clock = Clock()
    app, _ = make_app(clock, {"a": {"task": "t.a", "schedule": 10}, "b": {"task": "t.b", "schedule": 5}})
    sched = Scheduler(app, store=MemoryStore(clock))
    sched.schedule["a"].total_run_count = 4
    changed = sched.merge_inplace({"a": {"task": "t.a2", "schedule": 20, "args": [1]}})
    assert changed
    assert list(sched.schedule) == ["a"]
    entry = sched.schedule["a"]
    assert (entry.task, entry.schedule, entry.args, entry.total_run_count) == ("t.a2", schedule(20), [1], 4)
    assert sched.merge_inplace({"a": {"task": "t.a2", "schedule": 20, "args": [1]}}) is False


# --- missed runs and restarts ---------------------------------------------------------------


def test_missed_job_runs_once_not_once_per_missed_tick(tmp_path: Any) -> None:
    clock = Clock()
    path = str(tmp_path / "schedule")
    ScheduleFile(path).write({"min": RunState(to_micros(clock.now() - timedelta(hours=1)), 3)})
    app, sent = make_app(clock, {"min": {"task": "t.min", "schedule": 60}})
    sched = PersistentScheduler(app, schedule_filename=path)
    assert isinstance(sched.store, FileStore)
    sched.tick()
    sched.tick()
    assert names(sent) == ["t.min"]
    assert sched.schedule["min"].total_run_count == 4
    clock.advance(59)
    sched.tick()
    assert len(sent) == 1
    clock.advance(1)
    sched.tick()
    assert len(sent) == 2


@pytest.mark.parametrize("graceful", [True, False], ids=["close", "killed"])
def test_restart_does_not_double_fire_with_the_schedule_file(tmp_path: Any, graceful: bool) -> None:
    clock = Clock()
    path = str(tmp_path / "celerybeat-schedule")
    app, sent = make_app(clock, EVERY_10)
    first = PersistentScheduler(app, schedule_filename=path)
    first.tick()
    clock.advance(10)
    first.tick()
    assert len(sent) == 1
    if graceful:
        first.close()
    # A second process: fresh scheduler, same file (the FileStore writes at every send).
    clock.advance(0.5)
    second = PersistentScheduler(app, schedule_filename=path)
    second.tick()
    assert len(sent) == 1
    clock.advance(9.5)
    second.tick()
    assert len(sent) == 2
    assert second.schedule["ten"].total_run_count == 2


def test_restart_does_not_double_fire_with_a_shared_store(tmp_path: Any) -> None:
    clock = Clock()
    db = str(tmp_path / "broker.db")
    app, sent = make_app(clock, EVERY_10)
    first = PersistentScheduler(app, store=SQLiteStore(db, "beattest", clock),
                                schedule_filename=str(tmp_path / "s1"))
    first.tick()
    clock.advance(10)
    first.tick()
    assert len(sent) == 1
    # Killed: no close(), the lease stays until it runs out; the restart waits for it.
    clock.advance(0.5)
    second = PersistentScheduler(app, store=SQLiteStore(db, "beattest", clock),
                                 schedule_filename=str(tmp_path / "s2"))
    second.tick()
    assert not second.is_leader
    clock.advance(first.lease_ttl)
    second.tick()
    assert second.is_leader
    assert len(sent) == 1
    clock.advance(10 - 0.5 - first.lease_ttl)
    second.tick()
    assert len(sent) == 2


def test_schedule_file_is_a_copy_of_a_shared_store_and_seeds_it(tmp_path: Any) -> None:
    clock = Clock()
    path = str(tmp_path / "celerybeat-schedule")
    app, sent = make_app(clock, EVERY_10)
    sched = PersistentScheduler(app, store=MemoryStore(clock, shared=True), schedule_filename=path)
    sched.tick()
    clock.advance(10)
    sched.tick()
    sched.close()
    saved = ScheduleFile(path).read()
    assert saved["ten"] == RunState(to_micros(clock.now()), 1)
    # A new, empty shared store (say Redis was flushed): seeded from the file, no re-send.
    clock.advance(5)
    again = PersistentScheduler(app, store=MemoryStore(clock, shared=True), schedule_filename=path)
    again.tick()
    assert len(sent) == 1
    clock.advance(5)
    again.tick()
    assert len(sent) == 2


def test_unreadable_schedule_file_starts_afresh(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "celerybeat-schedule"
    path.write_bytes(b"\x00\x01 a shelve file from Celery")
    with caplog.at_level(logging.WARNING, "celeriac.beat"):
        assert ScheduleFile(str(path)).read() == {}
    assert "Cannot read the schedule file" in caplog.text
    store = FileStore(str(path))
    store.add_missing({"a": RunState(5, 0)})
    assert json.loads(path.read_text())["entries"]["a"]["total_run_count"] == 0


def test_micros_round_trip_exactly() -> None:
    moment = datetime(2030, 5, 6, 7, 8, 9, 123457, tzinfo=UTC)
    assert from_micros(to_micros(moment)) == moment
    assert to_micros(moment.replace(tzinfo=None)) == to_micros(moment)


# --- the lease and the claims -----------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def store_pair(request: pytest.FixtureRequest, tmp_path: Any) -> tuple[BeatStore, BeatStore, Clock]:
    """Two handles on one store, as two beat processes have."""
    clock = Clock()
    if request.param == "memory":
        store = MemoryStore(clock, shared=True)
        return store, store, clock
    db = str(tmp_path / "broker.db")
    return SQLiteStore(db, "app", clock), SQLiteStore(db, "app", clock), clock


def test_lease_acquire_renew_expire_release(store_pair: tuple[BeatStore, BeatStore, Clock]) -> None:
    one, two, clock = store_pair
    assert one.acquire("a", 4)
    assert not two.acquire("b", 4)
    clock.advance(3)
    assert one.acquire("a", 4)  # renewed: now runs to t=7
    clock.advance(3)
    assert not two.acquire("b", 4)
    clock.advance(1)  # t=7: expired
    assert two.acquire("b", 4)
    assert not one.acquire("a", 4)
    two.release("b")
    assert one.acquire("a", 4)
    two.release("b")  # not the holder: no effect
    assert not two.acquire("b", 4)


def test_claims_check_the_lease_and_the_last_run(store_pair: tuple[BeatStore, BeatStore, Clock]) -> None:
    one, two, clock = store_pair
    one.add_missing({"e": RunState(100, 0)})
    two.add_missing({"e": RunState(999, 0)})  # already recorded: left alone
    assert one.load() == {"e": RunState(100, 0)}
    assert one.claim("a", "e", 100, 200) == CLAIM_NOT_LEADER
    assert one.acquire("a", 4)
    assert two.claim("b", "e", 100, 200) == CLAIM_NOT_LEADER
    assert one.claim("a", "e", 100, 200) == 1
    assert one.claim("a", "e", 100, 300) == CLAIM_CONFLICT
    assert two.load() == {"e": RunState(200, 1)}
    clock.advance(5)
    assert one.claim("a", "e", 200, 300) == CLAIM_NOT_LEADER  # the lease ran out


def run_beats(beats: list[Scheduler], clock: Clock, seconds: float, step: float = 0.25) -> None:
    """Tick every beat every `step` seconds of fake time."""
    for _ in range(int(seconds / step)):
        for one in beats:
            one.tick()
        clock.advance(step)


def test_two_beats_send_each_tick_once(tmp_path: Any) -> None:
    clock = Clock()
    db = str(tmp_path / "broker.db")
    app, sent = make_app(clock, {"sec": {"task": "t.sec", "schedule": 1.0}})
    beats = [Scheduler(app, store=SQLiteStore(db, "beattest", clock)) for _ in range(3)]
    run_beats(beats, clock, 20)
    assert sum(b.is_leader for b in beats) == 1
    assert 19 <= len(sent) <= 20
    counts = [b.schedule["sec"].total_run_count for b in beats if b.is_leader]
    assert counts == [len(sent)]


def test_leader_death_hands_over_without_double_or_lost_ticks() -> None:
    clock = Clock()
    store = MemoryStore(clock, shared=True)
    app, sent = make_app(clock, {"sec": {"task": "t.sec", "schedule": 1.0}})
    sent_at: list[float] = []
    app.send_task = lambda *a, **k: sent_at.append(clock.t)  # type: ignore[method-assign]
    a = Scheduler(app, store=store)
    a.tick()
    b = Scheduler(app, store=store)
    run_beats([a, b], clock, 5)
    assert a.is_leader and not b.is_leader
    died = clock.t
    last_sent = sent_at[-1]
    run_beats([b], clock, 10)  # `a` is gone (SIGKILL: no release)
    assert b.is_leader
    after = [t for t in sent_at if t > died]
    # Taken over within the lease TTL plus one standby retry; the overdue tick goes out once.
    assert after[0] - died <= a.lease_ttl + a.standby_interval
    assert after[0] - last_sent > 1.0
    assert all(later - earlier >= 1.0 for earlier, later in zip(sent_at, sent_at[1:], strict=False))


def test_graceful_stop_hands_over_at_once() -> None:
    clock = Clock()
    store = MemoryStore(clock, shared=True)
    app, _ = make_app(clock, EVERY_10)
    a, b = Scheduler(app, store=store), Scheduler(app, store=store)
    a.tick()
    b.tick()
    a.close()
    clock.advance(b.standby_interval)
    b.tick()
    assert b.is_leader


def test_stale_leader_is_fenced_by_the_claim() -> None:
    clock = Clock()
    store = MemoryStore(clock, shared=True)
    app, sent = make_app(clock, EVERY_10)
    a = Scheduler(app, store=store)
    a.tick()
    # `a` freezes (GC pause, SIGSTOP) past its lease; `b` takes over and sends the tick.
    clock.advance(10)
    b = Scheduler(app, store=store)
    b.tick()
    assert b.is_leader and names(sent) == ["t.ten"]
    # `a` wakes believing it still leads (it hasn't renewed yet): its claim is refused.
    a._next_renew = math.inf
    a.tick()
    assert names(sent) == ["t.ten"]
    assert not a.is_leader


def test_conflicting_claim_adopts_the_other_beats_record() -> None:
    clock = Clock()
    store = MemoryStore(clock, shared=True)
    app, sent = make_app(clock, EVERY_10)
    a = Scheduler(app, store=store)
    a.tick()
    clock.advance(10)
    # Another beat recorded this tick (e.g. it led a moment ago).
    store.states["ten"] = RunState(to_micros(clock.now()), 1)
    a.tick()
    assert sent == []
    assert a.schedule["ten"].total_run_count == 1
    clock.advance(10)
    a.tick()
    assert names(sent) == ["t.ten"]


def test_store_failure_stands_by_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()

    class Flaky(MemoryStore):
        down = False

        def acquire(self, holder: str, ttl: float) -> bool:
            if self.down:
                raise ConnectionError("store down")
            return super().acquire(holder, ttl)

    store = Flaky(clock, shared=True)
    app, sent = make_app(clock, EVERY_10)
    sched = Scheduler(app, store=store)
    sched.tick()
    store.down = True
    clock.advance(1)
    with caplog.at_level(logging.ERROR, "celeriac.beat"):
        assert sched.tick() == sched.standby_interval
    assert not sched.is_leader and "store down" in caplog.text
    store.down = False
    clock.advance(9)
    sched.tick()
    assert sched.is_leader and names(sent) == ["t.ten"]


# --- add_periodic_task ------------------------------------------------------------------------


def test_add_periodic_task_in_on_after_configure() -> None:
    clock = Clock()
    app, sent = make_app(clock)

    @app.task(name="t.hello")
    def hello(arg: str) -> None:
        pass

    @app.on_after_configure.connect
    def setup_periodic_tasks(sender: Celery, **kwargs: Any) -> None:
        sender.add_periodic_task(10.0, hello.s("hello"), name="add every 10")
        sender.add_periodic_task(30.0, hello.s("world"), expires=10)
        sender.add_periodic_task(crontab(hour=7, minute=30, day_of_week=1), hello.s("Happy Mondays!"))

    app.finalize()
    entries = Scheduler(app, store=MemoryStore(clock)).schedule
    assert set(entries) == {"add every 10", "t.hello('world')", "t.hello('Happy Mondays!')"}
    assert entries["add every 10"].args == ("hello",)
    assert entries["t.hello('world')"].options == {"expires": 10}
    assert isinstance(entries["t.hello('Happy Mondays!')"].schedule, crontab)


# --- DatabaseScheduler ------------------------------------------------------------------------


def test_schedule_json_forms() -> None:
    assert schedule_from_json('{"every": 30}') == schedule(30)
    assert schedule_from_json({"every": 3600, "relative": True}).relative
    cron = schedule_from_json({"crontab": "*/15 9-17 * * mon-fri"})
    assert cron == crontab(minute="*/15", hour="9-17", day_of_week="mon-fri")
    assert schedule_from_json({"crontab": {"minute": 0, "hour": 4}}) == crontab(minute=0, hour=4)
    zoned = schedule_from_json({"crontab": "0 2 * * *", "tz": "Europe/Paris"})
    assert str(zoned.tz) == "Europe/Paris"
    assert schedule_from_json({"solar": "sunset", "lat": 1, "lon": 2}) == solar("sunset", 1, 2)
    for bad in ('{"every": 0}', '{"cron": "* * * * *"}', "[1]", '{"crontab": "* *"}',
                '{"crontab": {"minutes": 1}}'):
        with pytest.raises(ValueError):
            schedule_from_json(bad)
    assert schedule_to_json(30) == {"every": 30.0}
    assert schedule_to_json(schedule(60, relative=True)) == {"every": 60.0, "relative": True}
    assert schedule_to_json(crontab(minute="*/15", day_of_week="mon-fri")) == {
        "crontab": "0,15,30,45 * * * 1,2,3,4,5"}
    assert schedule_to_json(crontab()) == {"crontab": "* * * * *"}
    assert schedule_to_json(solar("dawn_civil", 3, 4)) == {"solar": "dawn_civil", "lat": 3, "lon": 4}


def test_database_scheduler_picks_up_changes_without_restart(tmp_path: Any,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    url = f"sqlite:///{tmp_path}/beat.db"
    app, sent = make_app(clock, {"conf": {"task": "t.conf", "schedule": 10}}, beat_dburi=url)
    table = ScheduleTable(url)
    table.add("db", "t.db", {"every": 10}, args=[1], kwargs={"k": 2}, options={"queue": "q"})
    sched = resolve_scheduler("celeriac.beat:DatabaseScheduler")(app, store=MemoryStore(clock))
    assert isinstance(sched, DatabaseScheduler)
    assert sched.max_interval == 5.0
    assert set(sched.schedule) == {"conf", "db"}
    sched.tick()
    clock.advance(10)
    sched.tick()
    assert sorted(names(sent)) == ["t.conf", "t.db"]
    assert ("t.db", [1], {"k": 2}) == next(item[:3] for item in sent if item[0] == "t.db")
    row = {r.name: r for r in table.rows()}["db"]
    assert (row.total_run_count, datetime.fromisoformat(row.last_run_at)) == (1, clock.now())

    # Edited while beat runs: a new row, a disabled one, a bad one.
    table.add("new", "t.new", crontab(minute="*"))
    table.enable("db", False)
    table._conn.execute("INSERT INTO celeriac_periodic_tasks (name, task, schedule)"
                        " VALUES ('bad', 't.bad', '{\"every\": \"x\"}')")
    with caplog.at_level(logging.INFO, "celeriac.beat"):
        clock.advance(sched.max_interval)
        sched.tick()
    assert set(sched.schedule) == {"conf", "new"}
    assert "Skipping periodic task 'bad'" in caplog.text
    assert "Schedule changed" in caplog.text
    sent.clear()
    clock.advance(60)
    sched.tick()
    assert sorted(names(sent)) == ["t.conf", "t.new"]
    assert table.remove("new") and not table.remove("new")
    sched.close()


def test_database_scheduler_row_overrides_config_and_seeds_last_run(tmp_path: Any) -> None:
    clock = Clock()
    url = f"sqlite:///{tmp_path}/beat.db"
    app, sent = make_app(clock, {"same": {"task": "t.conf", "schedule": 10}})
    table = ScheduleTable(url)
    table.add("same", "t.row", 60)
    table.record_run("same", clock.now() - timedelta(seconds=59), 9)
    sched = DatabaseScheduler(app, dburi=url, store=MemoryStore(clock))
    assert sched.schedule["same"].task == "t.row"
    sched.tick()
    assert sent == []
    clock.advance(1)
    sched.tick()
    assert names(sent) == ["t.row"]
    assert sched.schedule["same"].total_run_count == 10


# --- wiring -----------------------------------------------------------------------------------


def test_resolve_scheduler_names() -> None:
    assert resolve_scheduler("celery.beat:PersistentScheduler") is PersistentScheduler
    assert resolve_scheduler("celeriac.beat.PersistentScheduler") is PersistentScheduler
    assert resolve_scheduler("database") is DatabaseScheduler
    assert resolve_scheduler(Scheduler) is Scheduler
    with pytest.raises(ImproperlyConfigured):
        resolve_scheduler("celeriac.beat:Nope")
    with pytest.raises(ImproperlyConfigured):
        resolve_scheduler("celeriac.beat:ScheduleEntry")


def test_store_for_app_follows_the_broker_then_the_backend(tmp_path: Any,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    db = f"sqlite:///{tmp_path}/b.db"
    store = store_for_app(Celery("x", broker=db, set_as_current=False))
    assert isinstance(store, SQLiteStore) and store.name == "x"
    store.close()
    redis_app = Celery("x", broker="amqp://localhost//", backend="redis://localhost:6379/3",
                       set_as_current=False,
                       result_backend_transport_options={"global_keyprefix": "p:"})
    store = store_for_app(redis_app)
    assert isinstance(store, RedisStore)
    assert store.lease_key == "p:_celeriac.beat.x.lease"
    named = Celery("x", broker="redis://localhost:6379/3", beat_lease_name="fleet", set_as_current=False)
    assert isinstance(store_for_app(named), RedisStore)
    assert store_for_app(named).lease_key == "_celeriac.beat.fleet.lease"
    with caplog.at_level(logging.WARNING, "celeriac.beat"):
        store = store_for_app(Celery("x", broker="amqp://localhost//", backend="rpc://",
                                     set_as_current=False),
                              schedule_filename=str(tmp_path / "s"))
    assert isinstance(store, FileStore) and "run only one beat" in caplog.text
    assert isinstance(store_for_app(Celery("x", broker="memory://", set_as_current=False),
                                    persistent=False), MemoryStore)


def test_embedded_beat_starts_and_stops(tmp_path: Any) -> None:
    ticked = threading.Event()

    class Recording(PersistentScheduler):
        def tick(self) -> float:
            wait = super().tick()
            ticked.set()
            return wait

    app = Celery("emb", broker="memory://", backend="memory://", set_as_current=False,
                 beat_schedule={"e": {"task": "t.e", "schedule": 3600}})
    thread = EmbeddedBeat(app, schedule_filename=str(tmp_path / "s"), scheduler_cls=Recording)
    thread.start()
    assert ticked.wait(10)
    thread.stop(timeout=10)
    assert not thread.is_alive()
    assert thread.service._stopped.is_set()
    assert "e" in ScheduleFile(str(tmp_path / "s")).read()


def test_entry_repr_and_equality() -> None:
    clock = Clock()
    app, _ = make_app(clock)
    one = ScheduleEntry("n", "t.add", schedule=10, args=(1,), kwargs={"b": 2}, app=app)
    two = ScheduleEntry("n", "t.add", schedule=10, args=(1,), kwargs={"b": 2}, app=app)
    assert one == two
    assert repr(one) == "<ScheduleEntry: n t.add(1, b=2) <freq: 10.00 seconds>>"
    assert one.last_run_at == clock.now()


def test_beat_command_options() -> None:
    result = CliRunner().invoke(beat_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--schedule", "--scheduler", "--max-interval", "--loglevel", "--pidfile"):
        assert option in result.output
