"""The scheduler: `ScheduleEntry` (one periodic task) and `Scheduler`, which sends each due
entry while its beat holds the leader lease (`PersistentScheduler` also keeps the schedule file).

See `celeriac.beat` for the lease, the claims and how to write a scheduler; the stores are in
`celeriac.beat.stores`, the loop that runs a scheduler in `celeriac.beat.service`.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import schedules
from ..exceptions import CeleriacError, ImproperlyConfigured
from ..schedules import BaseSchedule, maybe_schedule
from .stores import (
    CLAIM_CONFLICT,
    CLAIM_NOT_LEADER,
    BeatStore,
    RunState,
    ScheduleFile,
    from_micros,
    lease_name,
    store_for_app,
    to_micros,
)

if TYPE_CHECKING:
    from ..app import Celery

__all__ = [
    "DEFAULT_MAX_INTERVAL",
    "BeatLazyFunc",
    "PersistentScheduler",
    "ScheduleEntry",
    "Scheduler",
    "SchedulingError",
]

# One logger for all of beat, as before the split into modules.
logger = logging.getLogger("celeriac.beat")

#: Longest sleep between two looks at the schedule when ``beat_max_loop_interval`` is 0.
DEFAULT_MAX_INTERVAL = 300.0


class SchedulingError(CeleriacError):
    """A periodic task could not be sent."""


# --- entries ------------------------------------------------------------------------------


class BeatLazyFunc:
    """An argument computed when the entry is sent, e.g. ``BeatLazyFunc(datetime.now)``."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._func = func
        self._args = args
        self._kwargs = kwargs

    def __call__(self) -> Any:
        return self.delay()

    def delay(self) -> Any:
        return self._func(*self._args, **self._kwargs)


class ScheduleEntry:
    """One periodic task: what to send, on which schedule, and when it was last sent.

    Args:
        name: The entry's name (its key in ``beat_schedule``).
        task: The task name to send.
        last_run_at: When it was last sent; default now (so it first runs one interval later).
        total_run_count: How many times it was sent.
        schedule: A `schedules.BaseSchedule`, or seconds / a timedelta for an interval.
        args: Positional arguments (`BeatLazyFunc` values are called at send time).
        kwargs: Keyword arguments.
        options: Options for ``apply_async`` (queue, expires, priority, ...).
        relative: For an interval: run on the interval's boundaries of the wall clock.
        app: The app.
    """

    def __init__(
        self,
        name: str | None = None,
        task: str | None = None,
        last_run_at: datetime | None = None,
        total_run_count: int | None = None,
        schedule: Any = None,
        args: Any = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        relative: bool = False,
        app: Any = None,
    ) -> None:
        self.app = app
        self.name: str = name or ""
        self.task = task
        self.args = args or ()
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.schedule: BaseSchedule = maybe_schedule(schedule, relative, app=app)  # type: ignore[assignment]
        self.last_run_at: datetime = last_run_at or self.default_now()
        self.total_run_count = total_run_count or 0

    def default_now(self) -> datetime:
        """Now, by the schedule's clock (or the app's)."""
        return self.schedule.now() if self.schedule is not None else self.app.now()

    def is_due(self) -> schedules.schedstate:
        """``schedstate(is_due, next)``: see `schedules.BaseSchedule.is_due`."""
        return self.schedule.is_due(self.last_run_at)

    def update(self, other: ScheduleEntry) -> None:
        """Take ``other``'s task, schedule, args, kwargs and options; keep the run record."""
        self.task = other.task
        self.schedule = other.schedule
        self.args = other.args
        self.kwargs = other.kwargs
        self.options = other.options

    def editable_fields_equal(self, other: ScheduleEntry) -> bool:
        return all(
            getattr(self, name) == getattr(other, name)
            for name in ("task", "args", "kwargs", "options", "schedule")
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ScheduleEntry):
            return self.editable_fields_equal(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        call = ", ".join([repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()])
        return f"<{type(self).__name__}: {self.name} {self.task}({call}) {self.schedule!r}>"


_ENTRY_FIELDS = ("task", "schedule", "args", "kwargs", "options", "relative", "last_run_at",
                 "total_run_count")


# --- the scheduler ------------------------------------------------------------------------


class Scheduler:
    """Sends each entry when it is due, while this beat holds the leader lease.

    Call `tick` in a loop (as `Service` does): it sends what is due and returns how long to
    sleep.  Subclasses change where entries come from: see `celeriac.beat`.

    Args:
        app: The app.
        schedule: More entries, added to ``beat_schedule``.
        max_interval: Longest sleep between ticks, in seconds (``beat_max_loop_interval``;
            default 300, or the class's `max_interval`).
        lazy: Don't set up the schedule now (for introspection, as in Celery).
        sync_every_tasks: Save the schedule file after this many sends (``beat_sync_every``).
        schedule_filename: The schedule file (``beat_schedule_filename``).
        store: Where the lease and last runs live (default: `store_for_app`).
    """

    Entry = ScheduleEntry

    #: Longest sleep between ticks (seconds) when neither the caller nor the settings say.
    max_interval: float = DEFAULT_MAX_INTERVAL
    #: Save the schedule file this often (seconds).
    sync_every: float = 180.0
    #: The lease runs out this long after its last renewal (seconds).
    lease_ttl: float = 4.0
    #: The leader renews the lease this often (seconds).
    lease_renew_interval: float = 1.0
    #: A standby tries to take the lease this often (seconds).
    standby_interval: float = 0.5
    #: Read `read_definitions` again this often (seconds); None: only at start.
    refresh_every: float | None = None
    #: Keep last runs in the schedule file (the store, or a copy of a shared store).
    persistent: bool = False

    def __init__(
        self,
        app: Celery,
        schedule: Mapping[str, Any] | None = None,
        max_interval: float | None = None,
        lazy: bool = False,
        sync_every_tasks: int | None = None,
        *,
        schedule_filename: str | None = None,
        store: BeatStore | None = None,
        **kwargs: Any,
    ) -> None:
        self.app = app
        conf = app.conf
        self.max_interval = float(max_interval or conf.beat_max_loop_interval or self.max_interval)
        self.sync_every_tasks = conf.beat_sync_every if sync_every_tasks is None else sync_every_tasks
        self.schedule_filename: str = schedule_filename or conf.beat_schedule_filename
        #: This beat's id in the lease: host, pid and a random part.
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: True while this beat holds the leader lease and sends.
        self.is_leader = False
        self.store: BeatStore | None = store
        self.mirror: ScheduleFile | None = None
        self._extra = dict(schedule or {})
        self._entries: dict[str, ScheduleEntry] = {}
        self._seed: dict[str, RunState] = {}
        self._next_check: dict[str, float] = {}
        self._next_renew = 0.0
        self._next_refresh = 0.0
        self._announced_standby = False
        self._last_sync = time.monotonic()
        self._sends_since_sync = 0
        if not lazy:
            self.setup_schedule()

    # -- what subclasses override ----------------------------------------------------------

    def read_definitions(self) -> dict[str, Any]:
        """Return the entries to run: ``{name: dict}`` as in ``beat_schedule``, or entries.

        A dict has ``task`` and ``schedule``, and may have ``args``, ``kwargs``, ``options``,
        ``relative``, and ``last_run_at`` / ``total_run_count`` (used when the store has no
        record of the entry).
        """
        return {**(self.app.conf.beat_schedule or {}), **self._extra}

    def on_entry_sent(self, entry: ScheduleEntry, result: Any) -> None:
        """Called after ``entry`` was sent (``result`` is None if sending failed)."""

    # -- set up ----------------------------------------------------------------------------

    @property
    def schedule(self) -> dict[str, ScheduleEntry]:
        """The entries, by name."""
        return self._entries

    def setup_schedule(self) -> None:
        """Open the store and read the entries."""
        if self.store is None:
            self.store = store_for_app(self.app, schedule_filename=self.schedule_filename,
                                       persistent=self.persistent)
        if self.persistent and self.store.shared:
            self.mirror = ScheduleFile(self.schedule_filename)
            self._seed = self.mirror.read()
        self.merge_inplace(self.read_definitions())
        if self.refresh_every is not None:
            self._next_refresh = self._now() + self.refresh_every

    def _make_entry(self, name: str, definition: Any) -> ScheduleEntry:
        if isinstance(definition, ScheduleEntry):
            definition.app = self.app
            definition.name = name
            if definition.schedule is not None:
                definition.schedule.app = self.app
            return definition
        if not isinstance(definition, Mapping):
            raise ImproperlyConfigured(f"beat_schedule entry {name!r} must be a dict, "
                                       f"not {type(definition).__name__}")
        for required in ("task", "schedule"):
            if definition.get(required) is None:
                raise ImproperlyConfigured(f"beat_schedule entry {name!r} has no {required!r}")
        fields = {key: definition[key] for key in _ENTRY_FIELDS if key in definition}
        return self.Entry(name=name, app=self.app, **fields)

    def merge_inplace(self, definitions: Mapping[str, Any]) -> bool:
        """Make the entries match ``definitions``, keeping the run records of those that stay.

        Returns:
            True if an entry was added, removed or changed.
        """
        changed = False
        for name in [name for name in self._entries if name not in definitions]:
            del self._entries[name]
            self._next_check.pop(name, None)
            changed = True
        for name, definition in definitions.items():
            entry = self._make_entry(name, definition)
            current = self._entries.get(name)
            if current is None:
                self._entries[name] = entry
                changed = True
            elif not current.editable_fields_equal(entry):
                current.update(entry)
                self._next_check.pop(name, None)
                changed = True
        return changed

    def add(self, **kwargs: Any) -> ScheduleEntry:
        """Add an entry: ``add(name=..., task=..., schedule=..., args=..., ...)``."""
        entry = self.Entry(app=self.app, **kwargs)
        self._entries[entry.name] = entry
        if self.is_leader:
            self._load_state()
        return entry

    def update_from_dict(self, definitions: Mapping[str, Any]) -> None:
        """Add or replace entries from ``{name: dict}``."""
        for name, definition in definitions.items():
            self._entries[name] = self._make_entry(name, definition)
        if self.is_leader:
            self._load_state()

    # -- the loop --------------------------------------------------------------------------

    def _now(self) -> float:
        return self.app.now().timestamp()

    def tick(self) -> float:
        """Send what is due if this beat leads; return the seconds to sleep until the next tick."""
        try:
            return self._tick()
        except Exception as exc:
            # An unreachable store must not end beat: stand by and try again shortly.
            logger.error("beat: %r; trying again in %s s", exc, self.standby_interval, exc_info=True)
            self.is_leader = False
            self._next_renew = 0.0
            return min(self.standby_interval, self.max_interval)

    def _tick(self) -> float:
        now = self._now()
        if not self._keep_lease(now):
            return min(self.standby_interval, self.max_interval)
        if self.refresh_every is not None and now >= self._next_refresh and self._refresh(now):
            self._load_state()
        for entry in list(self._entries.values()):
            if self._next_check.get(entry.name, now) > now:
                continue
            delay = self._send_if_due(entry)
            if not self.is_leader:  # the lease was lost: another beat sends from now on
                return min(self.standby_interval, self.max_interval)
            self._next_check[entry.name] = self._now() + delay
        return self._sleep_time(self._now())

    def _sleep_time(self, now: float) -> float:
        wakes = [now + self.max_interval, *self._next_check.values()]
        if self.store is not None and self.store.shared:
            wakes.append(self._next_renew)
        if self.refresh_every is not None:
            wakes.append(self._next_refresh)
        return max(min(wakes) - now, 0.0)

    def _keep_lease(self, now: float) -> bool:
        """Renew (or try to take) the lease when it is time; return whether this beat leads."""
        if now < self._next_renew:
            return self.is_leader
        assert self.store is not None
        held = self.store.acquire(self.holder, self.lease_ttl)
        if not self.store.shared:
            self._next_renew = math.inf  # nobody else to hand over to
        else:
            self._next_renew = now + (self.lease_renew_interval if held else self.standby_interval)
        was_leader, self.is_leader = self.is_leader, held
        if held and not was_leader:
            self._announced_standby = False
            if self.store.shared:
                logger.info("beat: Acquired the leader lease %r (%s): sending due tasks",
                            lease_name(self.app), self.store.description)
            self._elected(now)
        elif not held and was_leader:
            logger.warning("beat: Lost the leader lease %r: standing by", lease_name(self.app))
        elif not held and not self._announced_standby:
            logger.info("beat: Another beat holds the leader lease %r (%s): standing by",
                        lease_name(self.app), self.store.description)
            self._announced_standby = True
        return held

    def _elected(self, now: float) -> None:
        # The schedule may have changed, and other beats may have sent, while we stood by.
        if self.refresh_every is not None:
            self._refresh(now)
        self._load_state()

    def _refresh(self, now: float) -> bool:
        """Read the definitions again; return True if the entries changed."""
        assert self.refresh_every is not None
        self._next_refresh = now + self.refresh_every
        try:
            changed = self.merge_inplace(self.read_definitions())
        except Exception as exc:
            logger.error("beat: Cannot read the schedule: %r", exc, exc_info=True)
            return False
        if changed:
            logger.info("beat: Schedule changed: %d entr%s", len(self._entries),
                        "y" if len(self._entries) == 1 else "ies")
        return changed

    def _load_state(self) -> None:
        """Adopt the store's last runs; record ours for the entries it doesn't know."""
        assert self.store is not None
        seed = {
            name: self._seed.get(name)
            or RunState(to_micros(entry.last_run_at), entry.total_run_count)
            for name, entry in self._entries.items()
        }
        self.store.add_missing(seed)
        states = self.store.load()
        for name, entry in self._entries.items():
            state = states.get(name)
            if state is not None:
                entry.last_run_at = from_micros(state.last_run_at)
                entry.total_run_count = state.total_run_count
        self._next_check.clear()

    def is_due(self, entry: ScheduleEntry) -> schedules.schedstate:
        """``schedstate(is_due, next)`` of ``entry``."""
        return entry.is_due()

    def _send_if_due(self, entry: ScheduleEntry) -> float:
        """Claim and send ``entry`` if it is due; return the seconds until it should be checked."""
        try:
            due, delay = self.is_due(entry)
        except Exception:
            # One broken entry must not stop the others.
            logger.error("beat: Cannot calculate the next run of %r, trying again in %s s",
                         entry.name, self.max_interval, exc_info=True)
            return self.max_interval
        if not due:
            return delay
        assert self.store is not None
        sent_at = self.app.now()
        count = self.store.claim(self.holder, entry.name, to_micros(entry.last_run_at),
                                 to_micros(sent_at))
        if count == CLAIM_NOT_LEADER:
            logger.warning("beat: Lost the leader lease %r: standing by", lease_name(self.app))
            self.is_leader = False
            self._next_renew = 0.0
            return self.standby_interval
        if count == CLAIM_CONFLICT:
            logger.info("beat: %s was already sent by another beat", entry.name)
            self._load_state()
            due, delay = self.is_due(entry)
            return self.standby_interval if due else delay
        entry.last_run_at = sent_at
        entry.total_run_count = count
        result = self.apply_entry(entry)
        self._sends_since_sync += 1
        self.on_entry_sent(entry, result)
        return delay

    # -- sending ---------------------------------------------------------------------------

    def apply_entry(self, entry: ScheduleEntry) -> Any:
        """Send ``entry``'s task, logging as Celery does; return its result, or None on error."""
        logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        try:
            result = self.apply_async(entry)
        except Exception as exc:
            logger.error("Message Error: %s", exc, exc_info=True)
            return None
        logger.debug("%s sent. id->%s", entry.task, getattr(result, "id", None))
        return result

    def apply_async(self, entry: ScheduleEntry, **kwargs: Any) -> Any:
        """Send ``entry``'s task with its args, kwargs and options.

        Raises:
            SchedulingError: The message could not be sent.
        """
        args = [arg() if isinstance(arg, BeatLazyFunc) else arg for arg in entry.args or ()]
        call_kwargs = {key: value() if isinstance(value, BeatLazyFunc) else value
                       for key, value in (entry.kwargs or {}).items()}
        options = {**entry.options, **kwargs}
        # Celery 5.7 marks beat's messages with this header.
        options["headers"] = {**(options.get("headers") or {}), "celery_beat_task": True}
        task = self.app.tasks.get(entry.task)  # type: ignore[arg-type]
        try:
            if task is not None:
                return task.apply_async(args, call_kwargs, **options)
            return self.send_task(entry.task, args, call_kwargs, **options)
        except Exception as exc:
            raise SchedulingError(f"Couldn't apply scheduled task {entry.name}: {exc}") from exc

    def send_task(self, *args: Any, **kwargs: Any) -> Any:
        return self.app.send_task(*args, **kwargs)

    # -- saving and closing ----------------------------------------------------------------

    def should_sync(self) -> bool:
        """True when the schedule file is due to be saved."""
        return (time.monotonic() - self._last_sync > self.sync_every) or bool(
            self.sync_every_tasks and self._sends_since_sync >= self.sync_every_tasks
        )

    def sync(self) -> None:
        """Save the last runs to the schedule file, if it is a copy of a shared store."""
        self._last_sync = time.monotonic()
        self._sends_since_sync = 0
        if self.mirror is not None and self.is_leader:
            self.mirror.write({
                name: RunState(to_micros(entry.last_run_at), entry.total_run_count)
                for name, entry in self._entries.items()
            })

    def close(self) -> None:
        """Save, then give up the lease so a standby takes over at once, and disconnect."""
        try:
            self.sync()
        finally:
            store = self.store
            if store is not None:
                if self.is_leader and store.shared:
                    try:
                        store.release(self.holder)
                        logger.info("beat: Released the leader lease %r", lease_name(self.app))
                    except Exception as exc:
                        logger.warning("beat: Cannot release the leader lease: %r", exc)
                store.close()
            self.is_leader = False

    @property
    def info(self) -> str:
        """Lines for the banner."""
        lines = []
        if self.persistent:
            lines.append(f"    . db -> {self.schedule_filename}")
        if self.store is not None:
            lines.append(f"    . lease -> {lease_name(self.app)!r} in {self.store.description}")
        return "\n".join(lines)


class PersistentScheduler(Scheduler):
    """The default scheduler: last runs also kept in the schedule file (``-s``)."""

    persistent = True
