"""Periodic schedules: when a periodic task is next due (pure time math).

The API matches ``celery.schedules``: ``schedule`` (a fixed interval), ``crontab`` (cron
syntax), ``solar`` (sunrise, sunset and twilight; defined in `celeriac.solar`) and
``maybe_schedule``.  A scheduler (beat) asks ``is_due(last_run_at)`` and gets
``schedstate(is_due, next)``, where ``next`` is the number of seconds until it should ask again.

A job whose run was missed (beat was down) is due once, not once per missed tick: the next run
is always computed from ``last_run_at``, and after running, from now.

Time zones.  A crontab's fields are wall-clock times in the schedule's zone: ``tz=`` if given
(a celeriac extension), else the app's (``app.timezone``, or the ``timezone`` setting, or UTC
when ``enable_utc`` is on), else UTC.  Daylight-saving time is handled as Vixie cron does:

* A crontab with specific hours (``hour=2``, ``hour='*/6'``...) runs wall times that fall in
  the spring-forward gap at the first instant after the gap (02:30 -> 03:00), and wall times
  that happen twice on the fall-back day only at their first occurrence.  So a daily job runs
  exactly once on both days.
* A crontab that runs every hour (its hour set is all of 0-23) follows real time instead: wall
  times in the gap are skipped and the repeated hour runs twice, so an hourly job runs once per
  real hour, with no hour missed or doubled.
"""

from __future__ import annotations

import calendar
import math
import os
from bisect import bisect_left, bisect_right
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cache
from typing import TYPE_CHECKING, Any, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celeriac.exceptions import CeleriacError

if TYPE_CHECKING:
    from .solar import solar

__all__ = (
    "ParseException",
    "schedstate",
    "BaseSchedule",
    "schedule",
    "crontab",
    "crontab_parser",
    "maybe_schedule",
    "solar",
)

schedstate = namedtuple("schedstate", ("is_due", "next"))

Cronspec = Union[int, str, Iterable[int]]  # noqa: UP007 - a runtime alias, kept readable

_MINUTE = timedelta(minutes=1)
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)

_WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
# Longest month lengths (2000 is a leap year), to reject a crontab that can never run.
_LONGEST_MONTH = {month: calendar.monthrange(2000, month)[1] for month in range(1, 13)}
# The Gregorian calendar repeats every 400 years: a date pattern not met in that span never is.
_CALENDAR_CYCLE_YEARS = 400


class ParseException(CeleriacError, ValueError):
    """A crontab field could not be parsed (also a ``ValueError``)."""


# --- time helpers -------------------------------------------------------------------------


def _aware(dt: datetime) -> datetime:
    """Return ``dt`` as an aware datetime; naive datetimes are taken as UTC, like Celery."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None or dt.utcoffset() is None else dt


def _utc(dt: datetime) -> datetime:
    # All comparisons and subtractions happen in UTC: Python compares two datetimes that share
    # a tzinfo by wall clock, ignoring fold, which is wrong around DST changes.
    return _aware(dt).astimezone(UTC)


def _wall_instants(wall: datetime, tz: tzinfo) -> list[datetime]:
    """Return the UTC instants a naive wall-clock time denotes in ``tz``.

    One instant normally, two (earliest first) in a fall-back repeated hour, none in a
    spring-forward gap.
    """
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if second > first:
        return [first, second]
    return []


def _gap_end(wall: datetime, tz: tzinfo) -> datetime:
    """Return the first real instant after ``wall``, a wall time inside a spring-forward gap."""
    # Per PEP 495, inside a gap fold=1 reads the wall time with the offset after the change
    # (an instant before it) and fold=0 with the offset before (an instant after it).
    lo = int(wall.replace(tzinfo=tz, fold=1).timestamp())
    hi = math.ceil(wall.replace(tzinfo=tz, fold=0).timestamp())
    after = datetime.fromtimestamp(hi, UTC).astimezone(tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _fixed_offset(day: date, tz: tzinfo) -> timedelta | None:
    """Return the zone's UTC offset on ``day`` if it is the same all day, else None."""
    start = datetime.combine(day, time())
    offsets = {
        (start + extra).replace(tzinfo=tz, fold=fold).utcoffset()
        for extra in (timedelta(0), _DAY)
        for fold in (0, 1)
    }
    # Zones change offset at most a few times a year, so equal offsets at both midnights (under
    # either fold) mean no change within the day.
    return offsets.pop() if len(offsets) == 1 else None


@cache
def _local_timezone() -> tzinfo:
    """The machine's zone, for an app with ``enable_utc=False`` and no ``timezone``."""
    key = os.environ.get("TZ", "").lstrip(":")
    if key:
        try:
            return ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    except (OSError, ValueError):
        return datetime.now().astimezone().tzinfo or UTC


def _setting(app: Any, name: str, default: Any) -> Any:
    conf = getattr(app, "conf", None)
    if isinstance(conf, Mapping):
        return conf.get(name, default)
    return getattr(conf, name, default)


def _app_timezone(app: Any) -> tzinfo:
    """The app's zone: ``app.timezone`` if it has one, else from its settings, as Celery."""
    zone = getattr(app, "timezone", None)
    if isinstance(zone, tzinfo):
        return zone
    name = _setting(app, "timezone", None)
    if isinstance(name, tzinfo):
        return name
    if name:
        return ZoneInfo(name)
    return UTC if _setting(app, "enable_utc", True) else _local_timezone()


def humanize_seconds(secs: float) -> str:
    """Format seconds as Celery does: ``1.00 hour``, ``30.00 seconds``, ``now``."""
    secs = float(format(float(secs), ".2f"))
    for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0), ("second", 1.0)):
        if secs >= size:
            amount = secs / size
            return f"{amount:.2f} {unit}{'' if amount == 1 else 's'}"
    return "now"


# --- schedules ----------------------------------------------------------------------------


class BaseSchedule:
    """Common base of the schedules: the clock, the time zone and the app.

    Args:
        nowfun: Returns the current time; defaults to ``app.now()`` or the system clock.
        app: The app whose ``timezone`` / ``enable_utc`` settings apply.
        tz: The schedule's time zone, overriding the app's (a celeriac extension).
    """

    def __init__(
        self,
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
        *,
        tz: tzinfo | None = None,
    ) -> None:
        self.nowfun = nowfun
        self._app = app
        self._tz = tz

    @property
    def app(self) -> Any:
        """The app, or None; a scheduler sets it on the schedules it runs."""
        return self._app

    @app.setter
    def app(self, app: Any) -> None:
        self._app = app

    @property
    def tz(self) -> tzinfo:
        """The zone whose wall clock the schedule follows."""
        if self._tz is not None:
            return self._tz
        if self._app is not None:
            return _app_timezone(self._app)
        return UTC

    def now(self) -> datetime:
        """Return the current time, aware, in the schedule's zone."""
        if self.nowfun is not None:
            current = self.nowfun()
        elif self._app is not None and callable(getattr(self._app, "now", None)):
            current = self._app.now()
        else:
            current = datetime.now(UTC)
        return _aware(current).astimezone(self.tz)

    def maybe_make_aware(self, dt: datetime) -> datetime:
        """Return ``dt`` aware, in the schedule's zone; a naive ``dt`` is taken as UTC."""
        return _aware(dt).astimezone(self.tz)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Return the time from now until the next run (negative when overdue)."""
        raise NotImplementedError

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Return ``schedstate(is_due, next)``: run now?, and seconds until the next check."""
        raise NotImplementedError

    def _state(self, next_run: datetime) -> schedstate:
        """Due when ``next_run`` has passed; then the wait is measured to the run after now."""
        now = _utc(self.now())
        remaining = (next_run - now).total_seconds()
        if remaining > 0:
            return schedstate(is_due=False, next=remaining)
        return schedstate(is_due=True, next=(self._next_after(now) - now).total_seconds())

    def _next_after(self, moment: datetime) -> datetime:
        """Return the first run strictly after ``moment`` (UTC)."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BaseSchedule):
            return self.nowfun == other.nowfun
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable (app can be set), as in Celery

    def _pickle_state(self) -> dict[str, Any]:
        # The app is left out: apps don't pickle, and the scheduler sets it again on load.
        return {"nowfun": self.nowfun, "tz": self._tz}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.nowfun = state.get("nowfun")
        self._tz = state.get("tz")


class schedule(BaseSchedule):  # noqa: N801 - Celery's name
    """Run every ``run_every``.

    Args:
        run_every: The interval, in seconds or as a timedelta.
        relative: Align runs to the interval's resolution on the wall clock: an hourly schedule
            runs on the hour, a daily one at midnight, a minutely one on the minute.
        nowfun: Returns the current time (for tests); defaults to the app's or system clock.
        app: The app whose time zone applies (only matters when ``relative``).
        tz: The time zone, overriding the app's.
    """

    def __init__(
        self,
        run_every: float | timedelta,
        relative: bool = False,
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
        *,
        tz: tzinfo | None = None,
    ) -> None:
        if not isinstance(run_every, timedelta):
            run_every = timedelta(seconds=run_every)
        self.run_every = run_every
        self.relative = relative
        super().__init__(nowfun=nowfun, app=app, tz=tz)

    @property
    def seconds(self) -> float:
        """The interval in seconds (never negative)."""
        return max(self.run_every.total_seconds(), 0)

    @property
    def human_seconds(self) -> str:
        """The interval for people, e.g. ``'30.00 seconds'``."""
        return humanize_seconds(self.seconds)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Return the time from now until the next run (negative when overdue)."""
        return self._due_at(_utc(last_run_at)) - _utc(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Return ``schedstate(is_due, next)``; see :meth:`BaseSchedule.is_due`.

        When due, ``next`` is the interval (or, if ``relative``, the time to the next aligned
        boundary), since the scheduler records the run as happening now.
        """
        now = _utc(self.now())
        remaining = (self._due_at(_utc(last_run_at)) - now).total_seconds()
        if remaining > 0:
            return schedstate(is_due=False, next=remaining)
        next_check = self.seconds
        if self.relative:
            next_check = (self._due_at(now) - now).total_seconds() or self.seconds
        return schedstate(is_due=True, next=next_check)

    def _due_at(self, last: datetime) -> datetime:
        """Return when a run after ``last`` (UTC) is due."""
        if not self.relative or self.run_every < _MINUTE:
            return last + self.run_every
        tz = self.tz
        local = last.astimezone(tz)
        if self.run_every >= _DAY:
            # Whole days are calendar days: across a DST change a day is 23 or 25 hours.
            target = datetime.combine((local.replace(tzinfo=None) + self.run_every).date(), time())
            due = _resolve_wall(target, tz, fold=0)
            unit = _DAY
        else:
            unit = _HOUR if self.run_every >= _HOUR else _MINUTE
            end = (last + self.run_every).astimezone(tz)
            due = _resolve_wall(_floor(end.replace(tzinfo=None), unit), tz, fold=end.fold)
        if due <= last:
            # Rounding down went back to (or before) the last run: use the next boundary.
            due = _resolve_wall(_floor(local.replace(tzinfo=None), unit) + unit, tz, fold=0)
        return due

    def _next_after(self, moment: datetime) -> datetime:
        return self._due_at(moment)

    def __repr__(self) -> str:
        return f"<freq: {self.human_seconds}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, schedule):
            return self.run_every == other.run_every
        if isinstance(other, timedelta):
            return self.run_every == other
        return NotImplemented

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.run_every, self.relative, self.nowfun), self._pickle_state())


def _floor(wall: datetime, unit: timedelta) -> datetime:
    if unit == _DAY:
        return wall.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == _HOUR:
        return wall.replace(minute=0, second=0, microsecond=0)
    return wall.replace(second=0, microsecond=0)


def _resolve_wall(wall: datetime, tz: tzinfo, fold: int) -> datetime:
    """Return the UTC instant of a wall time: gap -> its end; repeated -> the given ``fold``."""
    instants = _wall_instants(wall, tz)
    if not instants:
        return _gap_end(wall, tz)
    return instants[min(fold, len(instants) - 1)]


# --- crontab ------------------------------------------------------------------------------


class crontab_parser:  # noqa: N801 - Celery's name
    """Parse one crontab field into the set of values it matches.

    Accepts ``*``, ``*/step``, numbers, ranges ``a-b`` (wrapping past the maximum when
    ``b < a``, as Celery), ``a-b/step`` and comma-separated lists of these.  Day names
    (``mon``, ``sunday``) are accepted for days of the week, where 7 also means Sunday, and
    month names (``jan``) for months.

    Args:
        max_: How many values the field has (60 for minutes, 24 hours, 7 days of week,
            31 days of month, 12 months).
        min_: The first value (0, or 1 for days of month and months).

    Example:
        >>> sorted(crontab_parser(60).parse('*/15'))
        [0, 15, 30, 45]
    """

    ParseException = ParseException

    def __init__(self, max_: int = 60, min_: int = 0) -> None:
        self.max_ = max_
        self.min_ = min_
        self._names: Mapping[str, int] = {}
        if (max_, min_) == (7, 0):
            self._names = _WEEKDAYS
        elif (max_, min_) == (12, 1):
            self._names = _MONTHS

    @property
    def _last(self) -> int:
        return self.min_ + self.max_ - 1

    def parse(self, spec: str) -> set[int]:
        """Return the set of values ``spec`` matches.

        Raises:
            ParseException: The spec is malformed or a value is out of range.
        """
        values: set[int] = set()
        for part in spec.split(","):
            part = part.strip()
            if not part:
                raise ParseException(f"empty part in {spec!r}")
            values.update(self._parse_part(part))
        return values

    def _parse_part(self, part: str) -> list[int]:
        body, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.strip().isdigit():
                raise ParseException(f"invalid step {step_text!r} in {part!r}")
            step = int(step_text)
            if step == 0:
                raise ParseException(f"step must be at least 1 in {part!r}")
        body = body.strip()
        if body.startswith("-"):
            raise ParseException(f"negative numbers are not allowed, got {part!r}")
        if body == "*":
            values = list(range(self.min_, self._last + 1))
        elif "-" in body:
            start_text, _, end_text = body.partition("-")
            if not end_text.strip():
                raise ParseException(f"incomplete range {part!r}")
            start, end = self._value(start_text), self._value(end_text)
            if end < start:
                values = list(range(start, self._last + 1)) + list(range(self.min_, end + 1))
            else:
                values = list(range(start, end + 1))
        elif slash:
            raise ParseException(f"a step needs '*' or a range before it, got {part!r}")
        else:
            values = [self._value(body)]
        return [self._sunday_as_zero(value) for value in values[::step]]

    def _value(self, text: str) -> int:
        text = text.strip()
        if text.isdigit():
            return self._checked(int(text))
        if text[:3].lower() in self._names:
            return self._names[text[:3].lower()]
        raise ParseException(f"invalid value {text!r}")

    def _checked(self, number: int) -> int:
        last = self._last + 1 if self._names is _WEEKDAYS else self._last  # 7 = Sunday
        if not self.min_ <= number <= last:
            raise ParseException(f"value {number} out of range {self.min_}-{self._last}")
        return number

    def _sunday_as_zero(self, value: int) -> int:
        return 0 if self._names is _WEEKDAYS and value == 7 else value


def _expand_cronspec(field: str, spec: Cronspec | None, max_: int, min_: int = 0) -> set[int]:
    """Return the values a crontab field matches, from a str, an int or an iterable of ints."""
    parser = crontab_parser(max_, min_)
    try:
        if spec is None or isinstance(spec, str):
            return parser.parse("*" if spec is None else spec)
        if isinstance(spec, int) and not isinstance(spec, bool):
            values = [spec]
        elif isinstance(spec, Iterable):
            values = list(spec)
        else:
            raise TypeError(
                f"crontab {field} must be an int, a str or an iterable of ints, "
                f"not {type(spec).__name__}"
            )
        for value in values:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ParseException(f"{value!r} is not an int")
        return {parser._sunday_as_zero(parser._checked(value)) for value in values}
    except ParseException as exc:
        raise ParseException(f"invalid crontab {field}={spec!r}: {exc}") from None


class crontab(BaseSchedule):  # noqa: N801 - Celery's name
    """Run at times matching a cron expression, in the schedule's time zone.

    Each field takes an int, a set/list of ints, or a cron string (``'*/15'``, ``'0-30/10'``,
    ``'1,3,5'``, ``'mon-fri'``).  A day must match all of ``day_of_week``, ``day_of_month`` and
    ``month_of_year`` (Celery ANDs them, unlike Vixie cron, which ORs the two day fields).
    Sunday is 0 (7 is accepted too).

    Args:
        minute: Minutes 0-59 (None means ``'*'`` in every field).
        hour: Hours 0-23.
        day_of_week: Days 0-6, Sunday = 0, or names.
        day_of_month: Days 1-31; a day missing in a month (31 in April) is skipped there.
        month_of_year: Months 1-12, or names.
        nowfun: Returns the current time (for tests).
        app: The app whose time zone applies.
        tz: The time zone, overriding the app's (a celeriac extension).

    Raises:
        ParseException: A field is malformed or out of range.
        ValueError: ``day_of_month`` never occurs in ``month_of_year`` (e.g. 30 February).
    """

    def __init__(
        self,
        minute: Cronspec | None = "*",
        hour: Cronspec | None = "*",
        day_of_week: Cronspec | None = "*",
        day_of_month: Cronspec | None = "*",
        month_of_year: Cronspec | None = "*",
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
        *,
        tz: tzinfo | None = None,
    ) -> None:
        self.minute = _expand_cronspec("minute", minute, 60)
        self.hour = _expand_cronspec("hour", hour, 24)
        self.day_of_week = _expand_cronspec("day_of_week", day_of_week, 7)
        self.day_of_month = _expand_cronspec("day_of_month", day_of_month, 31, 1)
        self.month_of_year = _expand_cronspec("month_of_year", month_of_year, 12, 1)
        # The fields as given, for repr and pickle (an iterable may be a one-shot generator).
        self._orig_minute = _as_given(minute, self.minute)
        self._orig_hour = _as_given(hour, self.hour)
        self._orig_day_of_week = _as_given(day_of_week, self.day_of_week)
        self._orig_day_of_month = _as_given(day_of_month, self.day_of_month)
        self._orig_month_of_year = _as_given(month_of_year, self.month_of_year)
        if not any(
            day <= _LONGEST_MONTH[month]
            for month in self.month_of_year
            for day in self.day_of_month
        ):
            raise ValueError(
                f"invalid crontab: day_of_month {self._orig_day_of_month!r} never occurs in "
                f"month_of_year {self._orig_month_of_year!r}"
            )
        self._minutes = sorted(self.minute)
        self._hours = sorted(self.hour)
        self._days = sorted(self.day_of_month)
        self._months = sorted(self.month_of_year)
        # See the module docstring: hourly jobs follow real time across DST changes.
        self._every_hour = len(self.hour) == 24
        super().__init__(nowfun=nowfun, app=app, tz=tz)

    @classmethod
    def from_string(
        cls,
        expression: str,
        *,
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
        tz: tzinfo | None = None,
    ) -> crontab:
        """Build a crontab from ``'minute hour day_of_month month_of_year day_of_week'``.

        Example:
            >>> crontab.from_string('*/5 * * * mon-fri')
            <crontab: */5 * * * mon-fri (m/h/dM/MY/d)>
        """
        fields = expression.split()
        if len(fields) != 5:
            raise ParseException(
                f"a cron expression has 5 fields (minute hour day_of_month month_of_year "
                f"day_of_week), got {len(fields)} in {expression!r}"
            )
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(
            minute, hour, day_of_week, day_of_month, month_of_year, nowfun=nowfun, app=app, tz=tz
        )

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Return the time from now until the first run after ``last_run_at``.

        Negative when that run is overdue.
        """
        return self._next_after(_utc(last_run_at)) - _utc(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Return ``schedstate(is_due, next)``.

        Due when the first scheduled time after ``last_run_at`` has passed; ``next`` is then the
        seconds to the first scheduled time after now, so missed runs are run once.  If the app
        sets ``beat_cron_starting_deadline`` (seconds), a missed run older than that is skipped.
        """
        last = _utc(last_run_at)
        state = self._state(self._next_after(last))
        deadline = _setting(self._app, "beat_cron_starting_deadline", None)
        if state.is_due and deadline is not None:
            now = _utc(self.now())
            if self._next_after(now - timedelta(seconds=deadline, microseconds=1)) > now:
                # No scheduled time in the last `deadline` seconds: the missed run is stale.
                return schedstate(is_due=False, next=state.next)
        return state

    def _next_after(self, moment: datetime) -> datetime:
        tz = self.tz
        # Start a local day early: near a DST change at midnight, a wall time of the previous
        # day can land after `moment`.  The extra day costs one offset check.
        start = moment.astimezone(tz).date() - _DAY
        for day in self._matching_days(start):
            found = self._first_on_day(day, moment, tz)
            if found is not None:
                return found
        raise RuntimeError(f"{self!r} never runs")  # unreachable: __init__ checked the days

    def _matching_days(self, start: date) -> Iterator[date]:
        """Yield the days on or after ``start`` that match the three day fields."""
        for year in range(start.year, start.year + _CALENDAR_CYCLE_YEARS + 1):
            for month in self._months:
                if (year, month) < (start.year, start.month):
                    continue
                month_length = calendar.monthrange(year, month)[1]
                for day_of_month in self._days:
                    if day_of_month > month_length:
                        break
                    day = date(year, month, day_of_month)
                    if day >= start and day.isoweekday() % 7 in self.day_of_week:
                        yield day

    def _first_on_day(self, day: date, moment: datetime, tz: tzinfo) -> datetime | None:
        """Return the first run on ``day`` strictly after ``moment`` (UTC), or None."""
        midnight = datetime.combine(day, time())
        offset = _fixed_offset(day, tz)
        if offset is None:
            return self._first_on_dst_day(midnight, moment, tz)
        # No DST change today: wall time maps to UTC by one offset, so a bisect finds the run.
        after = (moment + offset).replace(tzinfo=None)
        if after.date() < day:
            hour, minute = self._hours[0], self._minutes[0]
        elif after.date() > day:
            return None
        else:
            index = bisect_left(self._hours, after.hour)
            if index < len(self._hours) and self._hours[index] == after.hour:
                later = bisect_right(self._minutes, after.minute)
                if later < len(self._minutes):
                    return self._at(midnight, after.hour, self._minutes[later], offset)
                index += 1
            if index == len(self._hours):
                return None
            hour, minute = self._hours[index], self._minutes[0]
        return self._at(midnight, hour, minute, offset)

    @staticmethod
    def _at(midnight: datetime, hour: int, minute: int, offset: timedelta) -> datetime:
        return midnight.replace(hour=hour, minute=minute, tzinfo=UTC) - offset

    def _first_on_dst_day(
        self, midnight: datetime, moment: datetime, tz: tzinfo
    ) -> datetime | None:
        # The clocks change today (a day or two a year): try every scheduled wall time.
        best: datetime | None = None
        for hour in self._hours:
            for minute in self._minutes:
                wall = midnight.replace(hour=hour, minute=minute)
                instants = _wall_instants(wall, tz)
                if not self._every_hour:
                    instants = instants[:1] or [_gap_end(wall, tz)]
                for instant in instants:
                    if instant > moment and (best is None or instant < best):
                        best = instant
        return best

    def __repr__(self) -> str:
        return (
            f"<crontab: {_spec_text(self._orig_minute)} {_spec_text(self._orig_hour)} "
            f"{_spec_text(self._orig_day_of_month)} {_spec_text(self._orig_month_of_year)} "
            f"{_spec_text(self._orig_day_of_week)} (m/h/dM/MY/d)>"
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, crontab):
            return (
                self.minute == other.minute
                and self.hour == other.hour
                and self.day_of_week == other.day_of_week
                and self.day_of_month == other.day_of_month
                and self.month_of_year == other.month_of_year
                and self._tz == other._tz
                and super().__eq__(other)
            )
        return NotImplemented

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (
            self._orig_minute,
            self._orig_hour,
            self._orig_day_of_week,
            self._orig_day_of_month,
            self._orig_month_of_year,
        )
        return (self.__class__, fields, self._pickle_state())


def _as_given(spec: Cronspec | None, values: set[int]) -> Cronspec:
    if spec is None:
        return "*"
    return spec if isinstance(spec, str | int) else sorted(values)


def _spec_text(spec: Cronspec) -> str:
    if isinstance(spec, str | int):
        return str(spec)
    return ",".join(str(value) for value in sorted(spec))


def maybe_schedule(
    s: float | timedelta | BaseSchedule | None, relative: bool = False, app: Any = None
) -> BaseSchedule | None:
    """Return a schedule for ``s``: a number of seconds or a timedelta becomes a ``schedule``.

    A schedule is returned as is, with ``app`` set on it when given.
    """
    if s is None:
        return None
    if isinstance(s, int | float):
        s = timedelta(seconds=s)
    if isinstance(s, timedelta):
        return schedule(s, relative, app=app)
    if app is not None:
        s.app = app
    return s


def __getattr__(name: str) -> Any:
    # `solar` lives in celeriac.solar, which builds on BaseSchedule from here: it is imported on
    # first use, not at the top (a cycle), so `from celeriac.schedules import solar` works.
    if name == "solar":
        from .solar import solar

        return solar
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
