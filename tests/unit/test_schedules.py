"""Periodic schedule math, driven by a fake clock (no sleeps)."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from celeriac.schedules import (
    BaseSchedule,
    ParseException,
    crontab,
    crontab_parser,
    maybe_schedule,
    schedstate,
    schedule,
    solar,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


class FakeClock:
    """A settable clock to pass as ``nowfun``; it keeps time in UTC."""

    def __init__(self, now: datetime) -> None:
        self.now = now.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def beat(sched: BaseSchedule, start: datetime, end: datetime) -> list[datetime]:
    """Run the schedule as beat would, from ``start`` to ``end``; return the run times.

    The clock jumps by the ``next`` that ``is_due`` returns, so this also checks that ``next``
    lands exactly on the following run.
    """
    clock = FakeClock(start)
    sched.nowfun = clock
    last_run_at = clock.now
    runs: list[datetime] = []
    for _ in range(10_000):
        if clock.now >= end.astimezone(UTC):
            return runs
        state = sched.is_due(last_run_at)
        if state.is_due:
            runs.append(clock.now)
            last_run_at = clock.now
        assert state.next > 0
        clock.advance(state.next)
    raise AssertionError("beat loop did not finish")


def local(runs: list[datetime], tz: ZoneInfo) -> list[str]:
    return [run.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z") for run in runs]


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --- crontab_parser -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "max_", "min_", "expected"),
    [
        ("*/15", 60, 0, {0, 15, 30, 45}),
        ("*", 24, 0, set(range(24))),
        ("1-5", 60, 0, {1, 2, 3, 4, 5}),
        ("1,3,5", 60, 0, {1, 3, 5}),
        ("0-30/10", 60, 0, {0, 10, 20, 30}),
        ("1,13,30-45/5,50-59/4", 60, 0, {1, 13, 30, 35, 40, 45, 50, 54, 58}),
        ("50-5", 60, 0, {50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 0, 1, 2, 3, 4, 5}),
        ("*/3", 31, 1, {1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31}),
        ("2-12/2", 12, 1, {2, 4, 6, 8, 10, 12}),
        ("mon-fri", 7, 0, {1, 2, 3, 4, 5}),
        ("fri-mon", 7, 0, {5, 6, 0, 1}),
        ("sun", 7, 0, {0}),
        ("7", 7, 0, {0}),
        ("5-7", 7, 0, {5, 6, 0}),
        ("Fri,SAT", 7, 0, {5, 6}),
        ("monday,wednesday", 7, 0, {1, 3}),
        ("jan-mar,dec", 12, 1, {1, 2, 3, 12}),
        (" 5 , 10 ", 60, 0, {5, 10}),
    ],
)
def test_parser(spec: str, max_: int, min_: int, expected: set[int]) -> None:
    assert crontab_parser(max_, min_).parse(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("*/0", "step must be at least 1"),
        ("61", "out of range 0-59"),
        ("60", "out of range 0-59"),
        ("foo", "invalid value 'foo'"),
        ("mon", "invalid value 'mon'"),  # day names only for day_of_week
        ("", "empty part"),
        ("1,,2", "empty part"),
        ("5-", "incomplete range '5-'"),
        ("*/", "invalid step ''"),
        ("1-5/x", "invalid step 'x'"),
        ("3/5", r"needs '\*' or a range"),
        ("-1", "negative numbers are not allowed"),
        ("1-x", "invalid value 'x'"),
    ],
)
def test_parser_errors(spec: str, message: str) -> None:
    with pytest.raises(ParseException, match=message):
        crontab_parser(60).parse(spec)


def test_parse_errors_are_value_errors_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"invalid crontab minute='\*/0': step must be"):
        crontab(minute="*/0")
    with pytest.raises(ParseException, match=r"hour=24: value 24 out of range 0-23"):
        crontab(hour=24)
    with pytest.raises(ParseException, match=r"day_of_week='foo'"):
        crontab(day_of_week="foo")
    with pytest.raises(ParseException, match="day_of_month=\\[0, 1\\]"):
        crontab(day_of_month=[0, 1])
    with pytest.raises(ParseException, match="month_of_year='13'"):
        crontab(month_of_year="13")
    with pytest.raises(TypeError, match="must be an int, a str or an iterable"):
        crontab(hour=1.5)  # type: ignore[arg-type]


def test_day_that_never_occurs_is_rejected() -> None:
    with pytest.raises(ValueError, match="day_of_month 30 never occurs in month_of_year 2"):
        crontab(day_of_month=30, month_of_year=2)
    crontab(day_of_month=29, month_of_year=2)  # leap years only, but it exists


def test_fields_accept_ints_and_iterables() -> None:
    cron = crontab(minute=[0, 30], hour={9, 17}, day_of_week=7)
    assert cron.minute == {0, 30}
    assert cron.hour == {9, 17}
    assert cron.day_of_week == {0}
    assert cron.day_of_month == set(range(1, 32))
    assert cron.month_of_year == set(range(1, 13))
    assert crontab(None, None) == crontab()
    with pytest.raises(ParseException, match="empty part"):
        crontab(minute="")
    generated = crontab(minute=(m for m in (45, 15)))
    assert repr(generated) == "<crontab: 15,45 * * * * (m/h/dM/MY/d)>"
    assert pickle.loads(pickle.dumps(generated)) == generated


# --- crontab: when it runs (UTC) ----------------------------------------------------------


def test_every_quarter_hour() -> None:
    runs = beat(crontab(minute="*/15"), utc(2024, 5, 1, 10, 7, 30), utc(2024, 5, 1, 11, 1))
    assert runs == [utc(2024, 5, 1, 10, 15), utc(2024, 5, 1, 10, 30), utc(2024, 5, 1, 10, 45),
                    utc(2024, 5, 1, 11, 0)]  # fmt: skip


def test_office_hours_on_weekdays_skip_the_weekend() -> None:
    cron = crontab(minute=0, hour="9-17/4", day_of_week="mon-fri")
    # 2024-05-03 is a Friday.
    runs = beat(cron, utc(2024, 5, 3, 12), utc(2024, 5, 7))
    assert runs == [utc(2024, 5, 3, 13), utc(2024, 5, 3, 17), utc(2024, 5, 6, 9),
                    utc(2024, 5, 6, 13), utc(2024, 5, 6, 17)]  # fmt: skip


@pytest.mark.parametrize("sunday", [0, 7, "0", "7", "sun", "sunday", "Sun"])
def test_sunday_is_0_or_7(sunday: object) -> None:
    cron = crontab(minute=0, hour=0, day_of_week=sunday)  # type: ignore[arg-type]
    assert cron == crontab(minute=0, hour=0, day_of_week=0)
    runs = beat(cron, utc(2024, 5, 1), utc(2024, 5, 20))
    assert runs == [utc(2024, 5, 5), utc(2024, 5, 12), utc(2024, 5, 19)]


def test_weekend_by_names() -> None:
    runs = beat(crontab(30, 8, day_of_week="fri,sat"), utc(2024, 5, 1), utc(2024, 5, 12))
    assert runs == [utc(2024, 5, 3, 8, 30), utc(2024, 5, 4, 8, 30), utc(2024, 5, 10, 8, 30),
                    utc(2024, 5, 11, 8, 30)]  # fmt: skip


def test_day_31_skips_short_months() -> None:
    runs = beat(crontab(0, 0, day_of_month=31), utc(2024, 1, 15), utc(2024, 9, 1))
    assert [run.date() for run in runs] == [
        date(2024, 1, 31), date(2024, 3, 31), date(2024, 5, 31), date(2024, 7, 31),
        date(2024, 8, 31),
    ]  # fmt: skip


def test_february_29_only_in_leap_years() -> None:
    cron = crontab(0, 12, day_of_month=29, month_of_year=2)
    runs = beat(cron, utc(2023, 1, 1), utc(2033, 1, 1))
    assert runs == [utc(2024, 2, 29, 12), utc(2028, 2, 29, 12), utc(2032, 2, 29, 12)]


def test_month_ends_and_year_rollover() -> None:
    cron = crontab(59, 23, day_of_month="28-31")
    runs = beat(cron, utc(2023, 12, 30), utc(2024, 3, 1))
    assert [run.day for run in runs] == [30, 31, 28, 29, 30, 31, 28, 29]
    assert runs[2] == utc(2024, 1, 28, 23, 59)
    new_year = crontab(0, 0, day_of_month=1, month_of_year=1)
    assert beat(new_year, utc(2024, 12, 31, 23, 59, 59), utc(2026, 6, 1)) == [
        utc(2025, 1, 1),
        utc(2026, 1, 1),
    ]


def test_day_of_week_and_day_of_month_must_both_match() -> None:
    # Celery ANDs the day fields (Vixie cron would OR them): Friday the 13th.
    cron = crontab(0, 0, day_of_week="fri", day_of_month=13)
    runs = beat(cron, utc(2024, 1, 1), utc(2025, 12, 31))
    assert [run.date() for run in runs] == [
        date(2024, 9, 13), date(2024, 12, 13), date(2025, 6, 13),
    ]  # fmt: skip
    # First Monday of every quarter's first month.
    first_monday = crontab(0, 6, day_of_week=1, day_of_month="1-7", month_of_year="*/3")
    runs = beat(first_monday, utc(2024, 1, 1), utc(2025, 1, 1))
    assert [run.date() for run in runs] == [
        date(2024, 1, 1), date(2024, 4, 1), date(2024, 7, 1), date(2024, 10, 7),
    ]  # fmt: skip


def test_remaining_estimate() -> None:
    clock = FakeClock(utc(2024, 5, 1, 10, 7))
    cron = crontab(minute="*/15", nowfun=clock)
    assert cron.remaining_estimate(utc(2024, 5, 1, 10, 0)) == timedelta(minutes=8)
    assert cron.remaining_estimate(utc(2024, 5, 1, 10, 7)) == timedelta(minutes=8)
    assert cron.remaining_estimate(utc(2024, 5, 1, 9, 40)) == timedelta(minutes=-22)  # 09:45
    daily = crontab(0, 4, nowfun=clock)
    assert daily.remaining_estimate(utc(2024, 5, 1, 4)) == timedelta(hours=17, minutes=53)
    # A naive last_run_at is taken as UTC, like Celery.
    assert cron.remaining_estimate(datetime(2024, 5, 1, 10, 0)) == timedelta(minutes=8)


def test_is_due_and_next() -> None:
    clock = FakeClock(utc(2024, 5, 1, 10, 15))
    cron = crontab(minute="*/15", nowfun=clock)
    assert cron.is_due(utc(2024, 5, 1, 10, 0)) == schedstate(True, 900.0)
    assert cron.is_due(utc(2024, 5, 1, 10, 15)) == schedstate(False, 900.0)
    clock.now = utc(2024, 5, 1, 10, 20, 30)
    assert cron.is_due(utc(2024, 5, 1, 10, 15)) == schedstate(False, 570.0)
    assert isinstance(cron.is_due(utc(2024, 5, 1, 10, 15)), tuple)


def test_missed_runs_run_once() -> None:
    # Beat was down for three days: the job is due once, then waits for the next slot.
    clock = FakeClock(utc(2024, 5, 4, 10, 7))
    cron = crontab(minute="*/15", nowfun=clock)
    state = cron.is_due(utc(2024, 5, 1, 10, 0))
    assert state == schedstate(True, 8 * 60.0)
    assert cron.is_due(clock.now) == schedstate(False, 8 * 60.0)


def test_cron_starting_deadline_skips_stale_runs() -> None:
    app = SimpleNamespace(conf={"beat_cron_starting_deadline": 120})
    clock = FakeClock(utc(2024, 5, 1, 10, 1))
    cron = crontab(minute=0, nowfun=clock, app=app)
    assert cron.is_due(utc(2024, 5, 1, 9, 0)) == schedstate(True, 3540.0)  # 60 s late: run
    clock.now = utc(2024, 5, 1, 10, 5)
    assert cron.is_due(utc(2024, 5, 1, 9, 0)) == schedstate(False, 3300.0)  # 5 min: too late


def test_from_string() -> None:
    cron = crontab.from_string("*/5 9-17 1,15 * mon-fri")
    assert cron == crontab(minute="*/5", hour="9-17", day_of_week="mon-fri", day_of_month="1,15")
    assert repr(cron) == "<crontab: */5 9-17 1,15 * mon-fri (m/h/dM/MY/d)>"
    assert crontab.from_string("0 3 * * *", tz=BERLIN).tz is BERLIN
    with pytest.raises(ParseException, match="5 fields"):
        crontab.from_string("* * * *")


def test_crontab_repr_equality_and_pickle() -> None:
    cron = crontab(minute=[30, 0], hour=2, day_of_week="mon-fri", tz=BERLIN)
    assert repr(cron) == "<crontab: 0,30 2 * * mon-fri (m/h/dM/MY/d)>"
    assert repr(crontab()) == "<crontab: * * * * * (m/h/dM/MY/d)>"
    assert cron == crontab(minute="0,30", hour="2", day_of_week="1-5", tz=BERLIN)
    assert cron != crontab(minute="0,30", hour="2", day_of_week="1-5")  # other zone
    assert cron != crontab(minute="0,30", hour="3", day_of_week="1-5", tz=BERLIN)
    assert cron != schedule(60)
    copy = pickle.loads(pickle.dumps(cron))
    assert copy == cron
    assert copy.tz == BERLIN
    assert repr(copy) == repr(cron)


def test_matches_celery_in_utc() -> None:
    """Differential check against Celery's crontab (a test dependency) on random specs."""
    celery_schedules = pytest.importorskip("celery.schedules")
    celery_app = pytest.importorskip("celery").Celery(set_as_current=False)
    celery_app.conf.timezone = "UTC"
    rnd = random.Random(5)

    def spec(size: int, first: int) -> str:
        kind = rnd.random()
        if kind < 0.4:
            return "*"
        if kind < 0.6:
            return str(rnd.randrange(first, first + size))
        if kind < 0.75:
            return f"*/{rnd.randint(2, max(size // 2, 2))}"
        start = rnd.randrange(first, first + size)
        if kind < 0.9:
            return f"{start}-{rnd.randrange(start, first + size)}"
        return ",".join(str(v) for v in sorted(rnd.sample(range(first, first + size), 3)))

    checked = 0
    while checked < 300:
        fields = {
            "minute": spec(60, 0),
            "hour": spec(24, 0),
            "day_of_week": spec(7, 0),
            "day_of_month": spec(31, 1),
            "month_of_year": spec(12, 1),
        }
        try:
            theirs = celery_schedules.crontab(app=celery_app, **fields)
        except ValueError:
            continue
        last = utc(2020, 1, 1) + timedelta(seconds=rnd.randrange(8 * 365 * 86400))
        now = last + timedelta(seconds=rnd.randrange(3 * 86400))
        clock = FakeClock(now)
        theirs.nowfun = clock
        ours = crontab(
            fields["minute"],
            fields["hour"],
            fields["day_of_week"],
            fields["day_of_month"],
            fields["month_of_year"],
            nowfun=clock,
        )
        assert ours.remaining_estimate(last) == theirs.remaining_estimate(last), fields
        checked += 1


# --- crontab: time zones and DST ----------------------------------------------------------


def test_zone_from_app_settings() -> None:
    app = SimpleNamespace(conf=SimpleNamespace(timezone="Europe/Berlin", enable_utc=True))
    assert crontab(app=app).tz == BERLIN
    assert crontab(app=SimpleNamespace(conf={"timezone": None})).tz == UTC
    assert crontab(app=SimpleNamespace(timezone=NEW_YORK, conf={})).tz == NEW_YORK
    assert crontab().tz == UTC
    assert crontab(app=app, tz=NEW_YORK).tz == NEW_YORK  # tz= wins
    # The scheduler attaches its app later; the zone follows.
    cron = crontab(0, 9)
    cron.app = app
    assert cron.tz == BERLIN


def test_zone_and_deadline_from_a_celeriac_app() -> None:
    from celeriac import Celery

    app = Celery("schedules-test", broker="memory://")
    app.conf.timezone = "America/New_York"
    app.conf.beat_cron_starting_deadline = 60
    cron = maybe_schedule(crontab(0, 9), app=app)
    assert cron is not None and cron.tz == NEW_YORK
    cron.nowfun = FakeClock(datetime(2024, 7, 1, 9, 5, tzinfo=NEW_YORK))
    assert cron.is_due(datetime(2024, 6, 30, 9, tzinfo=NEW_YORK)).is_due is False  # 5 min late


def test_wall_clock_in_the_schedule_zone() -> None:
    app = SimpleNamespace(conf={"timezone": "Europe/Berlin"})
    cron = crontab(0, 9, app=app)
    # 09:00 Berlin is 07:00 UTC in summer, 08:00 UTC in winter.
    assert beat(cron, utc(2024, 7, 1), utc(2024, 7, 3)) == [utc(2024, 7, 1, 7), utc(2024, 7, 2, 7)]
    assert beat(cron, utc(2024, 1, 1), utc(2024, 1, 2)) == [utc(2024, 1, 1, 8)]
    # The app's clock is used when there is no nowfun.
    app.now = lambda: utc(2024, 7, 1, 6, 30)
    assert crontab(0, 9, app=app).is_due(utc(2024, 7, 1, 6)) == schedstate(False, 1800.0)


@pytest.mark.parametrize(
    ("tz", "start", "expected"),
    [
        # Berlin springs forward at 02:00 -> 03:00 on 2024-03-31: 02:30 runs at 03:00.
        (BERLIN, datetime(2024, 3, 30, tzinfo=BERLIN), [
            "2024-03-30 02:30 CET", "2024-03-31 03:00 CEST", "2024-04-01 02:30 CEST"]),
        # Berlin falls back at 03:00 -> 02:00 on 2024-10-27: 02:30 happens twice, runs once.
        (BERLIN, datetime(2024, 10, 26, tzinfo=BERLIN), [
            "2024-10-26 02:30 CEST", "2024-10-27 02:30 CEST", "2024-10-28 02:30 CET"]),
        (NEW_YORK, datetime(2024, 3, 9, tzinfo=NEW_YORK), [
            "2024-03-09 02:30 EST", "2024-03-10 03:00 EDT", "2024-03-11 02:30 EDT"]),
        (NEW_YORK, datetime(2024, 11, 2, tzinfo=NEW_YORK), [
            "2024-11-02 02:30 EDT", "2024-11-03 02:30 EST", "2024-11-04 02:30 EST"]),
    ],
)  # fmt: skip
def test_daily_job_runs_once_on_dst_days(
    tz: ZoneInfo, start: datetime, expected: list[str]
) -> None:
    runs = beat(crontab(30, 2, tz=tz), start, start + timedelta(days=3))
    assert local(runs, tz) == expected


def test_daily_job_in_new_york_repeated_hour_runs_first_occurrence() -> None:
    # New York falls back at 02:00 -> 01:00 on 2024-11-03: 01:30 happens twice.
    runs = beat(crontab(30, 1, tz=NEW_YORK), utc(2024, 11, 2, 12), utc(2024, 11, 5))
    assert local(runs, NEW_YORK) == [
        "2024-11-03 01:30 EDT", "2024-11-04 01:30 EST",
    ]  # fmt: skip


def test_hourly_job_runs_once_per_real_hour_across_dst() -> None:
    hourly = crontab(minute=30, tz=BERLIN)
    spring = beat(hourly, utc(2024, 3, 30, 22), utc(2024, 3, 31, 3))
    # 02:30 doesn't exist on this day; real time between runs stays one hour.
    assert local(spring, BERLIN) == [
        "2024-03-30 23:30 CET", "2024-03-31 00:30 CET", "2024-03-31 01:30 CET",
        "2024-03-31 03:30 CEST", "2024-03-31 04:30 CEST",
    ]  # fmt: skip
    fall = beat(hourly, utc(2024, 10, 26, 22), utc(2024, 10, 27, 3))
    # 02:30 happens twice and runs twice: once per real hour, none doubled or skipped.
    assert local(fall, BERLIN) == [
        "2024-10-27 00:30 CEST", "2024-10-27 01:30 CEST", "2024-10-27 02:30 CEST",
        "2024-10-27 02:30 CET", "2024-10-27 03:30 CET",
    ]  # fmt: skip
    for runs in (spring, fall):
        assert {b - a for a, b in zip(runs, runs[1:], strict=False)} == {timedelta(hours=1)}


def test_every_minute_in_the_gap_hour_runs_once_at_its_end() -> None:
    cron = crontab(minute="*/20", hour=2, tz=BERLIN)
    runs = beat(cron, utc(2024, 3, 29, 12), utc(2024, 4, 1, 12))
    assert local(runs, BERLIN) == [
        "2024-03-30 02:00 CET", "2024-03-30 02:20 CET", "2024-03-30 02:40 CET",
        "2024-03-31 03:00 CEST",
        "2024-04-01 02:00 CEST", "2024-04-01 02:20 CEST", "2024-04-01 02:40 CEST",
    ]  # fmt: skip


def _matches(cron: crontab, wall: datetime) -> bool:
    return (
        wall.minute in cron.minute
        and wall.hour in cron.hour
        and wall.day in cron.day_of_month
        and wall.month in cron.month_of_year
        and wall.isoweekday() % 7 in cron.day_of_week
    )


def _brute_force_runs(cron: crontab, start: datetime, end: datetime) -> list[datetime]:
    """The documented DST rules, checked minute by minute in real time."""
    tz = cron.tz
    every_hour = len(cron.hour) == 24
    runs = []
    moment = start + timedelta(minutes=1)
    previous_offset = start.astimezone(tz).utcoffset()
    while moment < end:
        wall = moment.astimezone(tz)
        offset = wall.utcoffset()
        assert offset is not None and previous_offset is not None
        runs_now = _matches(cron, wall.replace(tzinfo=None)) and (every_hour or wall.fold == 0)
        if offset > previous_offset and not every_hour:
            # The clock jumped: wall times it skipped run now.
            skipped = (moment + previous_offset).replace(tzinfo=None)
            while skipped < (moment + offset).replace(tzinfo=None):
                runs_now = runs_now or _matches(cron, skipped)
                skipped += timedelta(minutes=1)
        if runs_now:
            runs.append(moment)
        previous_offset = offset
        moment += timedelta(minutes=1)
    return runs


@pytest.mark.parametrize(
    ("zone", "transition"),
    [
        ("Europe/Berlin", utc(2025, 3, 30, 1)),
        ("Europe/Berlin", utc(2025, 10, 26, 1)),
        ("America/Santiago", utc(2024, 9, 8, 4)),  # at midnight: 00:00 -> 01:00
        ("America/Santiago", utc(2024, 4, 7, 3)),  # at midnight: 00:00 -> 23:00 the day before
        ("Australia/Lord_Howe", utc(2024, 10, 5, 15, 30)),  # a 30-minute shift
        ("Australia/Lord_Howe", utc(2024, 4, 6, 15)),
    ],
)
@pytest.mark.parametrize(
    "fields",
    [("*/20", "*", "*"), ("30", "*", "*"), ("0", "0", "*"), ("15,45", "0-3", "*"),
     ("*/10", "2", "*"), ("0", "23", "sat,sun"), ("5", "*/2", "*")],
)  # fmt: skip
def test_dst_rules_against_brute_force(
    zone: str, transition: datetime, fields: tuple[str, str, str]
) -> None:
    minute, hour, day_of_week = fields
    cron = crontab(minute, hour, day_of_week, tz=ZoneInfo(zone))
    start, end = transition - timedelta(hours=30), transition + timedelta(hours=30)
    assert beat(cron, start, end) == _brute_force_runs(cron, start, end)


def test_aware_last_run_in_another_zone() -> None:
    clock = FakeClock(utc(2024, 7, 1, 6, 0))
    cron = crontab(0, 9, tz=BERLIN, nowfun=clock)
    last = datetime(2024, 6, 30, 3, 0, tzinfo=NEW_YORK)  # 09:00 Berlin
    assert cron.remaining_estimate(last) == timedelta(hours=1)


# --- schedule -----------------------------------------------------------------------------


def test_interval_due_and_next() -> None:
    clock = FakeClock(utc(2024, 5, 1, 12, 0, 10))
    every = schedule(timedelta(seconds=30), nowfun=clock)
    assert every.is_due(utc(2024, 5, 1, 12, 0, 0)) == schedstate(False, 20.0)
    assert every.remaining_estimate(utc(2024, 5, 1, 12, 0, 0)) == timedelta(seconds=20)
    clock.advance(20)
    assert every.is_due(utc(2024, 5, 1, 12, 0, 0)) == schedstate(True, 30.0)
    # Long downtime: due once, then every 30 s from the run.
    assert every.is_due(utc(2024, 4, 1)) == schedstate(True, 30.0)
    assert every.is_due(clock.now) == schedstate(False, 30.0)
    assert schedule(2.5).seconds == 2.5


def test_interval_beat_loop() -> None:
    runs = beat(schedule(600), utc(2024, 5, 1), utc(2024, 5, 1, 0, 35))
    assert runs == [utc(2024, 5, 1, 0, 10), utc(2024, 5, 1, 0, 20), utc(2024, 5, 1, 0, 30)]


def test_relative_interval_aligns_to_the_clock() -> None:
    hourly = schedule(timedelta(hours=1), relative=True)
    runs = beat(hourly, utc(2024, 5, 1, 10, 17), utc(2024, 5, 1, 13, 30))
    assert runs == [utc(2024, 5, 1, 11), utc(2024, 5, 1, 12), utc(2024, 5, 1, 13)]
    daily = schedule(timedelta(days=1), relative=True, tz=BERLIN)
    runs = beat(daily, datetime(2024, 3, 29, 10, tzinfo=BERLIN), utc(2024, 4, 1, 12))
    assert local(runs, BERLIN) == [
        "2024-03-30 00:00 CET", "2024-03-31 00:00 CET", "2024-04-01 00:00 CEST",
    ]  # fmt: skip


def test_interval_repr_equality_pickle() -> None:
    assert repr(schedule(30)) == "<freq: 30.00 seconds>"
    assert schedule(3600).human_seconds == "1.00 hour"
    assert schedule(90).human_seconds == "1.50 minutes"
    assert schedule(2 * 86400).human_seconds == "2.00 days"
    assert schedule(0).human_seconds == "now"
    assert schedule(10) == schedule(timedelta(seconds=10))
    assert schedule(10) == timedelta(seconds=10)
    assert schedule(10) != schedule(11)
    relative = schedule(60, relative=True, tz=BERLIN)
    copy = pickle.loads(pickle.dumps(relative))
    assert copy == relative
    assert copy.relative is True
    assert copy.tz == BERLIN


def test_maybe_schedule() -> None:
    assert maybe_schedule(30) == schedule(30)
    assert maybe_schedule(timedelta(minutes=1)) == schedule(60)
    assert maybe_schedule(None) is None
    assert maybe_schedule(10, relative=True).relative is True  # type: ignore[union-attr]
    cron = crontab()
    app = SimpleNamespace(conf={})
    assert maybe_schedule(cron, app=app) is cron
    assert cron.app is app
    assert maybe_schedule(cron) is cron
    assert cron.app is app  # no app given: the schedule keeps its own


# --- solar --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon", "day", "zone", "expected"),
    [
        # Published sunrise / solar noon / sunset tables (NOAA solar calculator).
        (51.5072, -0.1276, date(2024, 6, 20), "Europe/London", ("04:43", "13:02", "21:21")),
        (40.7128, -74.0060, date(2024, 12, 21), "America/New_York", ("07:17", "11:54", "16:32")),
        (-33.8688, 151.2093, date(2024, 12, 21), "Australia/Sydney", ("05:41", "12:53", "20:05")),
    ],
)
def test_solar_matches_published_times(
    lat: float, lon: float, day: date, zone: str, expected: tuple[str, str, str]
) -> None:
    tz = ZoneInfo(zone)
    for event, wanted in zip(("sunrise", "solar_noon", "sunset"), expected, strict=True):
        found = solar(event, lat, lon).event_on(day)
        assert found is not None
        hour, minute = map(int, wanted.split(":"))
        published = datetime.combine(day, datetime.min.time(), tz).replace(hour=hour, minute=minute)
        assert abs(found - published) <= timedelta(minutes=2), (event, found.astimezone(tz))


def test_solar_twilight_order() -> None:
    events = ["dawn_astronomical", "dawn_nautical", "dawn_civil", "sunrise", "solar_noon",
              "sunset", "dusk_civil", "dusk_nautical", "dusk_astronomical"]  # fmt: skip
    times = [solar(event, 40.7128, -74.0060).event_on(date(2024, 12, 21)) for event in events]
    assert times == sorted(times)  # type: ignore[type-var]
    # Civil twilight is about half an hour at New York in December.
    assert timedelta(minutes=25) < times[3] - times[2] < timedelta(minutes=35)  # type: ignore[operator]


def test_solar_is_due_and_next() -> None:
    sunrise = solar("sunrise", 51.5072, -0.1276)
    first = sunrise.event_on(date(2024, 6, 20))
    second = sunrise.event_on(date(2024, 6, 21))
    assert first is not None and second is not None
    clock = FakeClock(first - timedelta(hours=2))
    sunrise.nowfun = clock
    assert sunrise.is_due(first - timedelta(hours=12)) == schedstate(False, 7200.0)
    assert sunrise.remaining_estimate(first - timedelta(hours=12)) == timedelta(hours=2)
    clock.now = first + timedelta(minutes=1)
    state = sunrise.is_due(first - timedelta(hours=12))
    assert state == schedstate(True, (second - clock.now).total_seconds())
    assert beat(sunrise, first - timedelta(hours=1), second + timedelta(minutes=1)) == [
        first,
        second,
    ]


def test_solar_skips_polar_night() -> None:
    # Tromsø has no sunrise from late November to mid January.
    tromso = solar("sunrise", 69.6492, 18.9553)
    assert tromso.event_on(date(2024, 12, 21)) is None
    after = tromso._next_after(utc(2024, 12, 1))
    assert date(2025, 1, 13) <= after.date() <= date(2025, 1, 18)
    # And the sun doesn't set in midsummer.
    assert solar("sunset", 69.6492, 18.9553).event_on(date(2024, 6, 21)) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("moonrise", 0, 0), "invalid solar event 'moonrise', must be one of dawn_astronomical"),
        (("sunrise", 91, 0), "invalid latitude 91, must be between -90 and 90"),
        (("sunrise", -90.5, 0), "invalid latitude"),
        (("sunrise", 0, 180.1), "invalid longitude 180.1, must be between -180 and 180"),
    ],
)
def test_solar_validation(args: tuple[str, float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        solar(*args)


def test_solar_repr_equality_pickle() -> None:
    sunset = solar("sunset", 48.85, 2.35)
    assert repr(sunset) == "<solar: sunset at latitude 48.85, longitude: 2.35>"
    assert sunset == solar("sunset", 48.85, 2.35)
    assert sunset != solar("sunrise", 48.85, 2.35)
    assert pickle.loads(pickle.dumps(sunset)) == sunset
    solar("solar_noon", 90, -180)  # the edges of the valid ranges are accepted
