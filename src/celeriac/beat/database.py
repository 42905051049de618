"""`DatabaseScheduler`: periodic tasks from a table of an SQLite file, editable while beat runs.

`ScheduleTable` is the ``celeriac_periodic_tasks`` table; `schedule_from_json` and
`schedule_to_json` convert schedules to and from the JSON its ``schedule`` column holds.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .. import schedules
from ..schedules import BaseSchedule
from ..sqlite_util import connect, sqlite_path
from .scheduler import ScheduleEntry, Scheduler

if TYPE_CHECKING:
    from ..app import Celery

__all__ = [
    "DatabaseScheduler",
    "PeriodicTaskRow",
    "ScheduleTable",
    "database_url",
    "schedule_from_json",
    "schedule_to_json",
]

# One logger for all of beat, as before the split into modules.
logger = logging.getLogger("celeriac.beat")


def schedule_from_json(data: str | Mapping[str, Any]) -> BaseSchedule:
    """Build a schedule from its JSON form (as in the ``celeriac_periodic_tasks`` table).

    Forms: ``{"every": seconds}`` (with ``"relative": true`` to align to the clock),
    ``{"crontab": "m h dom mon dow"}`` or ``{"crontab": {"minute": ..., "hour": ...}}``
    (with ``"tz": "Europe/Paris"`` for another zone than the app's), and
    ``{"solar": "sunset", "lat": 48.85, "lon": 2.35}``.

    Raises:
        ValueError: Not one of these forms, or invalid values.
    """
    if isinstance(data, str):
        data = json.loads(data)
    if not isinstance(data, Mapping):
        raise ValueError(f"a schedule must be a JSON object, not {data!r}")
    tz = ZoneInfo(data["tz"]) if data.get("tz") else None
    if "every" in data:
        seconds = float(data["every"])
        if seconds <= 0:
            raise ValueError(f"'every' must be positive, not {seconds}")
        return schedules.schedule(timedelta(seconds=seconds), bool(data.get("relative")), tz=tz)
    if "crontab" in data:
        spec = data["crontab"]
        if isinstance(spec, str):
            return schedules.crontab.from_string(spec, tz=tz)
        if isinstance(spec, Mapping):
            fields = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
            unknown = set(spec) - set(fields)
            if unknown:
                raise ValueError(f"unknown crontab fields {sorted(unknown)}")
            return schedules.crontab(**spec, tz=tz)
        raise ValueError(f"'crontab' must be a string or an object, not {spec!r}")
    if "solar" in data:
        return schedules.solar(data["solar"], float(data["lat"]), float(data["lon"]))
    raise ValueError(f"unknown schedule {dict(data)!r}: use {{'every': seconds}}, "
                     "{'crontab': 'm h dom mon dow'} or {'solar': event, 'lat': ..., 'lon': ...}")


def _cron_field(values: set[int], first: int, last: int) -> str:
    if values == set(range(first, last + 1)):
        return "*"
    return ",".join(str(value) for value in sorted(values))


def schedule_to_json(value: Any) -> dict[str, Any]:
    """The JSON form (see `schedule_from_json`) of seconds, a timedelta, a schedule or a dict.

    A crontab's own ``tz`` is not kept: the app's zone applies (add ``"tz"`` to the dict).
    """
    if isinstance(value, Mapping):
        schedule_from_json(value)  # validate
        return dict(value)
    if isinstance(value, int | float | timedelta):
        value = schedules.schedule(value)
    if isinstance(value, schedules.schedule):
        data: dict[str, Any] = {"every": value.seconds}
        if value.relative:
            data["relative"] = True
        return data
    if isinstance(value, schedules.crontab):
        fields = (_cron_field(value.minute, 0, 59), _cron_field(value.hour, 0, 23),
                  _cron_field(value.day_of_month, 1, 31), _cron_field(value.month_of_year, 1, 12),
                  _cron_field(value.day_of_week, 0, 6))
        return {"crontab": " ".join(fields)}
    if isinstance(value, schedules.solar):
        return {"solar": value.event, "lat": value.lat, "lon": value.lon}
    raise TypeError(f"cannot store a {type(value).__name__} schedule in the table")


@dataclass(frozen=True)
class PeriodicTaskRow:
    """A row of ``celeriac_periodic_tasks``, its JSON columns as stored."""

    name: str
    task: str
    schedule: str
    args: str
    kwargs: str
    options: str
    enabled: bool
    last_run_at: str | None
    total_run_count: int

    def definition(self) -> dict[str, Any]:
        """The entry, as a ``beat_schedule`` dict.

        Raises:
            ValueError: A column doesn't hold what it should.
        """
        args, kwargs, options = json.loads(self.args), json.loads(self.kwargs), json.loads(self.options)
        if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(options, dict):
            raise ValueError("args must be a JSON list, kwargs and options JSON objects")
        definition = {"task": self.task, "schedule": schedule_from_json(self.schedule),
                      "args": args, "kwargs": kwargs, "options": options}
        if self.last_run_at:
            definition["last_run_at"] = datetime.fromisoformat(self.last_run_at)
            definition["total_run_count"] = self.total_run_count
        return definition


class ScheduleTable:
    """The ``celeriac_periodic_tasks`` table of an SQLite file: periodic tasks editable live.

    Columns: ``name`` (primary key), ``task``, ``schedule`` (JSON, see `schedule_from_json`),
    ``args`` (JSON list), ``kwargs`` and ``options`` (JSON objects), ``enabled`` (0/1), and
    ``last_run_at`` (ISO 8601, UTC) / ``total_run_count``, written by beat after each send.
    Edit it with SQL or with `add`, `remove` and `enable`; `DatabaseScheduler` reads it.

    Args:
        url: ``sqlite:///path`` (or a plain path).
    """

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS celeriac_periodic_tasks (
        name TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        schedule TEXT NOT NULL,
        args TEXT NOT NULL DEFAULT '[]',
        kwargs TEXT NOT NULL DEFAULT '{}',
        options TEXT NOT NULL DEFAULT '{}',
        enabled INTEGER NOT NULL DEFAULT 1,
        last_run_at TEXT,
        total_run_count INTEGER NOT NULL DEFAULT 0
    );
    """

    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url.removeprefix("db+")) if "://" in url else url
        self._lock = threading.Lock()
        self._conn = connect(self.path)
        self._conn.executescript(self.SCHEMA)

    def add(self, name: str, task: str, schedule: Any, args: Any = (),
            kwargs: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
            enabled: bool = True) -> None:
        """Add a periodic task, or replace the one of that name (keeping its run record)."""
        row = (name, task, json.dumps(schedule_to_json(schedule)), json.dumps(list(args)),
               json.dumps(dict(kwargs or {})), json.dumps(dict(options or {})), int(enabled))
        with self._lock:
            self._conn.execute(
                "INSERT INTO celeriac_periodic_tasks"
                " (name, task, schedule, args, kwargs, options, enabled) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET task = excluded.task,"
                " schedule = excluded.schedule, args = excluded.args, kwargs = excluded.kwargs,"
                " options = excluded.options, enabled = excluded.enabled",
                row,
            )

    def remove(self, name: str) -> bool:
        """Delete a periodic task; return whether it existed."""
        with self._lock:
            cursor = self._conn.execute("DELETE FROM celeriac_periodic_tasks WHERE name = ?", (name,))
        return cursor.rowcount > 0

    def enable(self, name: str, enabled: bool = True) -> None:
        """Switch a periodic task on or off."""
        with self._lock:
            self._conn.execute("UPDATE celeriac_periodic_tasks SET enabled = ? WHERE name = ?",
                               (int(enabled), name))

    def rows(self) -> list[PeriodicTaskRow]:
        """Every row, in name order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, task, schedule, args, kwargs, options, enabled, last_run_at,"
                " total_run_count FROM celeriac_periodic_tasks ORDER BY name"
            ).fetchall()
        return [PeriodicTaskRow(name, task, schedule, args, kwargs, options, bool(enabled),
                                last_run_at, count)
                for name, task, schedule, args, kwargs, options, enabled, last_run_at, count in rows]

    def record_run(self, name: str, last_run_at: datetime, total_run_count: int) -> None:
        """Write when a task was last sent (for people reading the table)."""
        with self._lock:
            self._conn.execute(
                "UPDATE celeriac_periodic_tasks SET last_run_at = ?, total_run_count = ?"
                " WHERE name = ?",
                (last_run_at.astimezone(UTC).isoformat(), total_run_count, name),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def database_url(app: Celery) -> str:
    """Where `DatabaseScheduler`'s table is: ``beat_dburi``, else an SQLite broker or backend."""
    configured = app.conf.get("beat_dburi")
    if configured:
        return str(configured)
    for url in (app.broker_url, app.result_backend_url):
        if url and url.startswith(("sqlite://", "db+sqlite://")):
            return url
    return "sqlite:///celeriac-beat.db"


class DatabaseScheduler(Scheduler):
    """Entries from ``beat_schedule`` and from the ``celeriac_periodic_tasks`` table.

    The table (see `ScheduleTable`) is in the SQLite file ``beat_dburi`` names, else in the
    SQLite broker's or backend's file, else in ``celeriac-beat.db``.  It is read again every
    `max_interval` seconds (default 5), so rows added, changed, disabled or deleted take effect
    without a restart.  A table row overrides a ``beat_schedule`` entry of the same name; a row
    that can't be read is skipped with an error in the log.  Choose it with
    ``-S celeriac.beat:DatabaseScheduler`` or ``beat_scheduler``.

    Args:
        dburi: The table's SQLite URL, instead of `database_url`.
    """

    max_interval = 5.0

    def __init__(self, app: Celery, *args: Any, dburi: str | None = None, **kwargs: Any) -> None:
        self.table = ScheduleTable(dburi or database_url(app))
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        self.refresh_every = self.max_interval
        super().setup_schedule()

    def read_definitions(self) -> dict[str, Any]:
        definitions = super().read_definitions()
        for row in self.table.rows():
            if not row.enabled:
                definitions.pop(row.name, None)
                continue
            try:
                definitions[row.name] = row.definition()
            except (ValueError, TypeError, KeyError) as exc:
                logger.error("beat: Skipping periodic task %r of %s: %s", row.name,
                             self.table.path, exc)
        return definitions

    def on_entry_sent(self, entry: ScheduleEntry, result: Any) -> None:
        try:
            self.table.record_run(entry.name, entry.last_run_at, entry.total_run_count)
        except sqlite3.Error as exc:
            logger.warning("beat: Cannot record the run of %r: %r", entry.name, exc)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.table.close()

    @property
    def info(self) -> str:
        return "\n".join(filter(None, [f"    . table -> {self.table.path}", super().info]))
