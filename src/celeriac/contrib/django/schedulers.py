"""Beat with periodic tasks kept in Django's database and edited in the admin.

``celeriac -A proj beat -S celeriac.contrib.django.schedulers:DatabaseScheduler`` (or the
``CELERY_BEAT_SCHEDULER`` setting). `DatabaseScheduler` is celeriac's beat `Scheduler` (leader
lease, exactly-once claims) reading its entries from the ``PeriodicTask`` model as well as
from ``beat_schedule``; an edit in the admin is picked up within `DatabaseScheduler.max_interval`
seconds (5), without a restart.

`DatabaseScheduleSource` is the part that talks to the models: `entries()` gives every
enabled periodic task as a ``beat_schedule`` entry, `changed()` says whether anything was
edited since the last read, and `record_run()` writes back ``last_run_at`` /
``total_run_count`` (and disables a one-off task) without marking the schedule as changed.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, close_old_connections
from django.db.models import F
from django.utils import timezone

from ...beat import ScheduleEntry, Scheduler

if TYPE_CHECKING:
    from ...app import Celery

__all__ = ["DatabaseScheduleSource", "DatabaseScheduler"]

logger = logging.getLogger("celeriac.contrib.django.schedulers")

# The entry keys beat's Scheduler takes from a definition.
_DEFINITION_KEYS = ("task", "schedule", "args", "kwargs", "options", "last_run_at", "total_run_count")


class DatabaseScheduleSource:
    """Reads periodic tasks from ``celeriac_periodictask`` and its schedule tables.

    Args:
        app: The app (its time zone applies to schedules without one).
        using: The database alias; default ``"default"``.
    """

    def __init__(self, app: Celery | None = None, using: str | None = None) -> None:
        self.app = app
        self.using = using or "default"
        self._seen: Any = None
        self._read_once = False

    def changed(self) -> bool:
        """Whether the periodic tasks changed since the last `entries()` (true at first)."""
        from .models import PeriodicTasksChanged

        if not self._read_once:
            return True
        return PeriodicTasksChanged.last_change(using=self.using) != self._seen

    def entries(self) -> dict[str, dict[str, Any]]:
        """The enabled periodic tasks, by name, as `beat_schedule` entries.

        Each entry has ``task``, ``schedule``, ``args``, ``kwargs``, ``options``, and from
        the database ``last_run_at``, ``total_run_count``, ``one_off`` and ``start_time``.
        """
        from .models import PeriodicTask, PeriodicTasksChanged

        self._seen = PeriodicTasksChanged.last_change(using=self.using)
        self._read_once = True
        rows = (PeriodicTask.objects.using(self.using).filter(enabled=True)
                .select_related("interval", "crontab"))
        out = {}
        for row in rows:
            try:
                entry = row.entry(self.app)
            except (ValidationError, ValueError) as exc:  # edited bypassing the admin's checks
                logger.error("beat: Skipping periodic task %r: %s", row.name, exc)
                continue
            if entry["schedule"] is not None:  # None: saved without one, bypassing validation
                out[row.name] = entry
        return out

    def record_run(self, name: str, when: datetime, total_run_count: int | None = None) -> None:
        """Note that `name` was sent at `when`; a one-off task is disabled.

        Written with ``QuerySet.update()``: no signal, so beat does not reload for its own
        bookkeeping.

        Args:
            name: The periodic task's name.
            when: When it was sent.
            total_run_count: The count to store; None: one more than stored.
        """
        from .models import PeriodicTask, PeriodicTasksChanged

        if not settings.USE_TZ and timezone.is_aware(when):
            when = timezone.make_naive(when)
        rows = PeriodicTask.objects.using(self.using).filter(name=name)
        count = F("total_run_count") + 1 if total_run_count is None else total_run_count
        rows.update(last_run_at=when, total_run_count=count)
        if rows.filter(one_off=True, enabled=True).update(enabled=False):
            PeriodicTasksChanged.touch(using=self.using)


class DatabaseScheduler(Scheduler):
    """Beat entries from ``beat_schedule`` and from the ``PeriodicTask`` model.

    A periodic task overrides a ``beat_schedule`` entry of the same name. Tasks with a
    ``start_time`` still ahead are left out until it passes. The models are read again every
    `max_interval` seconds, only when `PeriodicTasksChanged` moved.

    Args:
        app: The app.
        using: The database alias (default ``"default"``).
        **kwargs: As for `celeriac.beat.Scheduler`.
    """

    max_interval = 5.0

    def __init__(self, app: Celery, *args: Any, using: str | None = None, **kwargs: Any) -> None:
        from .fixup import ensure_setup

        ensure_setup()
        self.source = DatabaseScheduleSource(app, using=using)
        self._db_entries: dict[str, dict[str, Any]] = {}
        self._db_names: set[str] = set()
        self._starts: dict[str, datetime] = {}
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        self.refresh_every = self.max_interval
        super().setup_schedule()

    def read_definitions(self) -> dict[str, Any]:
        definitions = super().read_definitions()
        close_old_connections()  # beat is long-lived: drop a connection the server closed
        if self.source.changed():
            entries = self.source.entries()
            self._db_names = set(entries)
            self._db_entries = {
                name: {key: entry[key] for key in _DEFINITION_KEYS if entry.get(key) is not None}
                for name, entry in entries.items()
            }
            self._starts = {name: entry["start_time"] for name, entry in entries.items()
                            if entry.get("start_time") is not None}
        now = self.app.now()
        for name, definition in self._db_entries.items():
            start = self._starts.get(name)
            if start is None or start <= now:
                definitions[name] = definition
        return definitions

    def on_entry_sent(self, entry: ScheduleEntry, result: Any) -> None:
        if entry.name not in self._db_names:
            return
        try:
            self.source.record_run(entry.name, entry.last_run_at, entry.total_run_count)
        except DatabaseError as exc:
            logger.warning("beat: Cannot record the run of %r: %r", entry.name, exc)

    @property
    def info(self) -> str:
        return "\n".join(filter(None, ["    . periodic tasks -> Django database", super().info]))
