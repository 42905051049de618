"""The periodic task scheduler (beat): Celery's beat, and safe to run more than once.

Run it as ``celeriac -A proj beat``, or in a thread of a worker with ``worker -B``
(`EmbeddedBeat`). Entries come from the ``beat_schedule`` setting (which
`app.add_periodic_task` fills), and with `DatabaseScheduler` also from a table that can be
edited while beat runs.

Many beats, one sender.  Every beat takes part in an election for a *leader lease* kept where
the broker is: a table in the SQLite broker's file, or a key in the Redis broker (else in the
result backend, when that is SQLite or Redis; see `store_for_app`).  The leader renews it every
second; it runs out `Scheduler.lease_ttl` (4 s) after the last renewal, and a standby tries to
take it every 0.5 s, so when the leader dies another beat takes over in at most about 4.5 s.
Only the leader sends.  Before each send it *claims* the tick in the same store: an atomic
compare-and-set of the entry's last-run time that also checks the lease is still its own.  A
leader that stalled past its lease, or two beats both believing they lead, thus can't both send
one tick, and a new leader starts from the last-run times its predecessor wrote: each due tick
is sent exactly once, across a hand-over too.  The claim is written before the message is sent
(Celery also records a run before sending it), so a beat killed between the two loses that one
tick rather than sending it twice.

Persistence.  Last-run times are stored as UTC instants (integer microseconds), so a change of
``timezone`` or ``enable_utc`` leaves them valid.  With a shared store they live there; the
schedule file (``-s``, ``beat_schedule_filename``, default ``celerybeat-schedule``) is then a
JSON copy, written every 3 minutes (or every ``beat_sync_every`` sends) and at exit, and used to
seed entries the store has not seen.  With no shared place (an AMQP broker and an rpc or no
result backend) the schedule file is the store itself, rewritten at every send; run a single
beat then, as with Celery.  Celery keeps this file as a ``shelve`` database; celeriac writes
JSON, and replaces a file it can't read.

As with Celery, a new entry first runs one interval after beat starts, a beat that was down
runs each missed entry once (not once per missed tick), and a restart doesn't send again what
was sent before it.

Writing a scheduler (e.g. one reading Django models): subclass `Scheduler` and override

- `Scheduler.read_definitions`: return ``{name: entry}`` in ``beat_schedule``'s format; set
  `Scheduler.refresh_every` (seconds) to have it read again while beat runs;
- `Scheduler.on_entry_sent`: called after each send, e.g. to record ``last_run_at``;

and leave the lease, the claims and the timing to the base class (`DatabaseScheduler` is such
a subclass).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from . import __version__, schedules, signals
from .exceptions import CeleriacError, ImproperlyConfigured
from .schedules import BaseSchedule, maybe_schedule
from .sqlite_util import connect, sqlite_path
from .urls import mask_url

if TYPE_CHECKING:
    from .app import Celery

__all__ = [
    "BeatLazyFunc",
    "BeatStore",
    "DatabaseScheduler",
    "EmbeddedBeat",
    "FileStore",
    "MemoryStore",
    "PersistentScheduler",
    "RedisStore",
    "RunState",
    "SQLiteStore",
    "ScheduleEntry",
    "ScheduleFile",
    "ScheduleTable",
    "Scheduler",
    "SchedulingError",
    "Service",
    "resolve_scheduler",
    "schedule_from_json",
    "schedule_to_json",
    "store_for_app",
]

logger = logging.getLogger("celeriac.beat")

#: Longest sleep between two looks at the schedule when ``beat_max_loop_interval`` is 0.
DEFAULT_MAX_INTERVAL = 300.0

#: What `Scheduler.claim` returns when the entry's last run is no longer the expected one.
CLAIM_CONFLICT = 0
#: What `Scheduler.claim` returns when the caller does not hold the leader lease.
CLAIM_NOT_LEADER = -1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class SchedulingError(CeleriacError):
    """A periodic task could not be sent."""


def to_micros(moment: datetime) -> int:
    """Return ``moment`` as whole microseconds since the epoch (naive means UTC), exactly."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """Return the aware UTC datetime of `to_micros`' value."""
    return _EPOCH + timedelta(microseconds=micros)


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


# --- where the lease and the last runs live -----------------------------------------------


@dataclass(frozen=True)
class RunState:
    """When an entry was last sent (microseconds since the epoch, UTC), and how often."""

    last_run_at: int
    total_run_count: int = 0


class BeatStore:
    """Where beats keep the leader lease and each entry's last run: the interface.

    A store serves one *lease name* (beats of one app share it; see `lease_name`).
    """

    #: Other beat processes see this store: the lease means something, and the schedule file
    #: is only a copy.
    shared = True
    #: For the banner and the logs.
    description = ""

    def acquire(self, holder: str, ttl: float) -> bool:
        """Take the lease for ``ttl`` seconds, or extend it if ``holder`` has it; True if held."""
        raise NotImplementedError

    def release(self, holder: str) -> None:
        """Give the lease up now, if ``holder`` has it."""
        raise NotImplementedError

    def load(self) -> dict[str, RunState]:
        """Return every entry's recorded last run."""
        raise NotImplementedError

    def add_missing(self, states: Mapping[str, RunState]) -> None:
        """Record these last runs for the entries that have none yet (others are left alone)."""
        raise NotImplementedError

    def claim(self, holder: str, name: str, expected: int, new: int) -> int:
        """Record a send of ``name`` at ``new``, atomically, if it still last ran at ``expected``.

        Returns:
            The entry's new run count (1 or more); `CLAIM_CONFLICT` when its last run is no
            longer ``expected`` (another beat sent it), or `CLAIM_NOT_LEADER` when ``holder``
            doesn't hold the lease.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


class MemoryStore(BeatStore):
    """A store in this process's memory: for tests and single-process setups.

    Args:
        clock: Seconds since the epoch, for the lease (`time.time` by default).
        shared: Act as a shared store, with a real lease (tests run several schedulers on
            one); else the lease is always held.
    """

    description = "memory"

    def __init__(self, clock: Callable[[], float] = time.time, *, shared: bool = False) -> None:
        self.clock = clock
        self.shared = shared
        self.holder: str | None = None
        self.expires_at = 0.0
        self.states: dict[str, RunState] = {}
        self._lock = threading.Lock()

    def acquire(self, holder: str, ttl: float) -> bool:
        with self._lock:
            now = self.clock()
            if self.holder in (None, holder) or self.expires_at <= now:
                self.holder, self.expires_at = holder, now + ttl
                return True
            return False

    def release(self, holder: str) -> None:
        with self._lock:
            if self.holder == holder:
                self.holder, self.expires_at = None, 0.0

    def load(self) -> dict[str, RunState]:
        with self._lock:
            return dict(self.states)

    def add_missing(self, states: Mapping[str, RunState]) -> None:
        with self._lock:
            for name, state in states.items():
                self.states.setdefault(name, state)

    def claim(self, holder: str, name: str, expected: int, new: int) -> int:
        with self._lock:
            # A private store's lease is never renewed (see Scheduler._keep_lease): don't check.
            if self.shared and (self.holder != holder or self.expires_at <= self.clock()):
                return CLAIM_NOT_LEADER
            current = self.states.get(name)
            if current is None or current.last_run_at != expected:
                return CLAIM_CONFLICT
            self.states[name] = RunState(new, current.total_run_count + 1)
            return current.total_run_count + 1


class ScheduleFile:
    """The schedule file (``-s``): each entry's last run as JSON, replaced atomically.

    Format: ``{"celeriac_beat": 1, "entries": {name: {"last_run_at": ISO 8601 UTC,
    "total_run_count": n}}}``.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> dict[str, RunState]:
        """Return the recorded runs; empty (with a warning) if the file is unreadable."""
        try:
            with open(self.path, encoding="utf-8") as file:
                data = json.load(file)
            entries = data["entries"]
            if not isinstance(entries, dict):
                raise ValueError("'entries' is not an object")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # E.g. a Celery (shelve) schedule file: start afresh, as Celery does with a
            # corrupted one; the file is replaced at the first save.
            logger.warning("beat: Cannot read the schedule file %r (%s): starting afresh",
                           self.path, exc)
            return {}
        states = {}
        for name, item in entries.items():
            try:
                when = to_micros(datetime.fromisoformat(item["last_run_at"]))
                states[name] = RunState(when, int(item.get("total_run_count", 0)))
            except (KeyError, TypeError, ValueError):
                logger.warning("beat: Ignoring the unreadable record of %r in %r", name, self.path)
        return states

    def write(self, states: Mapping[str, RunState]) -> None:
        """Replace the file's content with ``states``."""
        data = {
            "celeriac_beat": 1,
            "version": __version__,
            "entries": {
                name: {"last_run_at": from_micros(state.last_run_at).isoformat(),
                       "total_run_count": state.total_run_count}
                for name, state in sorted(states.items())
            },
        }
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=1)
        # A rename replaces the file whole: a crash mid-write can't leave half a file.
        os.replace(temporary, self.path)


class FileStore(BeatStore):
    """The schedule file as the store, for a single beat (nothing else is shared).

    The lease is always held, and every claim rewrites the file, so a restart (even after
    SIGKILL) neither repeats nor forgets a send.
    """

    shared = False

    def __init__(self, path: str) -> None:
        self.file = ScheduleFile(path)
        self.description = f"file {path} (a single beat)"
        self.states = self.file.read()

    def acquire(self, holder: str, ttl: float) -> bool:
        return True

    def release(self, holder: str) -> None:
        pass

    def load(self) -> dict[str, RunState]:
        return dict(self.states)

    def add_missing(self, states: Mapping[str, RunState]) -> None:
        missing = {name: state for name, state in states.items() if name not in self.states}
        if missing:
            self.states.update(missing)
            self.file.write(self.states)

    def claim(self, holder: str, name: str, expected: int, new: int) -> int:
        current = self.states.get(name)
        if current is None or current.last_run_at != expected:
            return CLAIM_CONFLICT
        self.states[name] = RunState(new, current.total_run_count + 1)
        self.file.write(self.states)
        return current.total_run_count + 1


class SQLiteStore(BeatStore):
    """The lease and last runs in two tables of an SQLite file (the broker's, usually).

    Tables: ``celeriac_beat_lease`` (name, holder, expires_at) and ``celeriac_beat_state``
    (scope = the lease name, name, last_run_at in microseconds, total_run_count).

    Args:
        path: The SQLite file.
        name: The lease name.
        clock: Seconds since the epoch (`time.time`); beats on one machine share the clock.
    """

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS celeriac_beat_lease (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS celeriac_beat_state (
        scope TEXT NOT NULL,
        name TEXT NOT NULL,
        last_run_at INTEGER NOT NULL,
        total_run_count INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (scope, name)
    );
    """

    def __init__(self, path: str, name: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.name = name
        self.clock = clock
        self.description = f"sqlite {path}"
        self._lock = threading.Lock()
        self._conn = connect(path)
        self._conn.executescript(self.SCHEMA)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def acquire(self, holder: str, ttl: float) -> bool:
        now = self.clock()
        with self._lock:
            # One statement, so atomic: insert, or take over if ours or expired.
            cursor = self._conn.execute(
                "INSERT INTO celeriac_beat_lease (name, holder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " expires_at = excluded.expires_at"
                " WHERE celeriac_beat_lease.holder = excluded.holder"
                " OR celeriac_beat_lease.expires_at <= ?",
                (self.name, holder, now + ttl, now),
            )
            return cursor.rowcount == 1

    def release(self, holder: str) -> None:
        with self._lock:
            self._conn.execute(
                "DELETE FROM celeriac_beat_lease WHERE name = ? AND holder = ?", (self.name, holder)
            )

    def load(self) -> dict[str, RunState]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, last_run_at, total_run_count FROM celeriac_beat_state WHERE scope = ?",
                (self.name,),
            ).fetchall()
        return {name: RunState(last_run_at, count) for name, last_run_at, count in rows}

    def add_missing(self, states: Mapping[str, RunState]) -> None:
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO celeriac_beat_state VALUES (?, ?, ?, ?)",
                [(self.name, name, s.last_run_at, s.total_run_count) for name, s in states.items()],
            )

    def claim(self, holder: str, name: str, expected: int, new: int) -> int:
        with self._transaction() as conn:
            leader = conn.execute(
                "SELECT 1 FROM celeriac_beat_lease WHERE name = ? AND holder = ? AND expires_at > ?",
                (self.name, holder, self.clock()),
            ).fetchone()
            if leader is None:
                return CLAIM_NOT_LEADER
            row = conn.execute(
                "UPDATE celeriac_beat_state SET last_run_at = ?, total_run_count = total_run_count + 1"
                " WHERE scope = ? AND name = ? AND last_run_at = ? RETURNING total_run_count",
                (new, self.name, name, expected),
            ).fetchone()
        return CLAIM_CONFLICT if row is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# KEYS: lease; ARGV: holder, ttl in ms. Extend the lease if ours, else take it if free.
_REDIS_ACQUIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
# KEYS: lease; ARGV: holder.
_REDIS_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: lease, last runs, run counts; ARGV: holder, entry, expected, new. See BeatStore.claim.
_REDIS_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
return redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
"""


class RedisStore(BeatStore):
    """The lease and last runs in Redis (the broker's, usually).

    Keys (after the transport's ``global_keyprefix``): ``_celeriac.beat.<name>.lease`` (the
    holder's id, with a TTL: SET NX PX, renewed by a compare-and-expire script),
    ``_celeriac.beat.<name>.last_run`` and ``_celeriac.beat.<name>.runs`` (hashes: entry ->
    microseconds / count).  Claims are a Lua script checking the lease and the last run.

    Args:
        client: A redis-py client.
        name: The lease name.
        prefix: Prepended to every key.
    """

    def __init__(self, client: Any, name: str, prefix: str = "", description: str = "redis") -> None:
        self.client = client
        self.name = name
        base = f"{prefix}_celeriac.beat.{name}"
        self.lease_key = f"{base}.lease"
        self.runs_key = f"{base}.last_run"
        self.counts_key = f"{base}.runs"
        self.description = description
        self._acquire = client.register_script(_REDIS_ACQUIRE)
        self._release = client.register_script(_REDIS_RELEASE)
        self._claim = client.register_script(_REDIS_CLAIM)

    @classmethod
    def from_url(cls, url: str, name: str, *, ssl: Any = None,
                 options: Mapping[str, Any] | None = None) -> RedisStore:
        """Connect to a ``redis://``, ``rediss://``, ``redis+socket://`` or ``sentinel://`` URL."""
        options = dict(options or {})
        # A hung server must not freeze beat: time out, step down, retry.
        options.setdefault("socket_timeout", 5.0)
        try:
            from .brokers.redis import redis_client
        except ImportError:  # the broker module not available: plain redis-py
            import redis

            client = redis.Redis.from_url(url, socket_timeout=options["socket_timeout"])
        else:
            client, _db = redis_client(url, ssl=ssl, options=options)
        return cls(client, name, prefix=str(options.get("global_keyprefix") or ""),
                   description=f"redis {mask_url(url)}")

    def acquire(self, holder: str, ttl: float) -> bool:
        return self._acquire(keys=[self.lease_key], args=[holder, int(ttl * 1000)]) == 1

    def release(self, holder: str) -> None:
        self._release(keys=[self.lease_key], args=[holder])

    def load(self) -> dict[str, RunState]:
        runs, counts = self.client.pipeline().hgetall(self.runs_key).hgetall(self.counts_key).execute()
        counts = {_text(key): int(value) for key, value in counts.items()}
        return {_text(key): RunState(int(value), counts.get(_text(key), 0))
                for key, value in runs.items()}

    def add_missing(self, states: Mapping[str, RunState]) -> None:
        pipe = self.client.pipeline()
        for name, state in states.items():
            pipe.hsetnx(self.runs_key, name, state.last_run_at)
            pipe.hsetnx(self.counts_key, name, state.total_run_count)
        pipe.execute()

    def claim(self, holder: str, name: str, expected: int, new: int) -> int:
        keys = [self.lease_key, self.runs_key, self.counts_key]
        return int(self._claim(keys=keys, args=[holder, name, str(expected), str(new)]))

    def close(self) -> None:
        self.client.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_REDIS_SCHEMES = ("redis", "rediss", "redis+socket", "sentinel")


def lease_name(app: Celery) -> str:
    """The name beats of one app share a lease under: ``beat_lease_name``, else the app's main."""
    return str(app.conf.get("beat_lease_name") or app.main or "celeriac")


def store_for_app(app: Celery, *, name: str | None = None, schedule_filename: str | None = None,
                  persistent: bool = True) -> BeatStore:
    """Pick the store: where the broker is, else the result backend, else a local one.

    SQLite (broker or backend) gives an `SQLiteStore` in its file, Redis a `RedisStore`.
    Otherwise (an AMQP broker with an rpc or no backend, or the memory broker) the store is the
    schedule file (`FileStore`) when ``persistent``, else memory, and a warning says to run a
    single beat.
    """
    name = name or lease_name(app)
    conf = app.conf
    candidates = (
        (app.broker_url, conf.get("broker_use_ssl"), conf.get("broker_transport_options")),
        (app.result_backend_url, conf.get("redis_backend_use_ssl"),
         conf.get("result_backend_transport_options")),
    )
    for url, ssl, options in candidates:
        scheme = url.split("://", 1)[0].lower() if url and "://" in url else ""
        if scheme in ("sqlite", "db+sqlite"):
            return SQLiteStore(sqlite_path(url.removeprefix("db+")), name)  # type: ignore[union-attr]
        if scheme in _REDIS_SCHEMES:
            return RedisStore.from_url(url, name, ssl=ssl, options=options)  # type: ignore[arg-type]
    if not app.broker_url.startswith("memory"):
        logger.warning("beat: Neither the broker nor the result backend can hold a leader lease: "
                       "run only one beat for this app.")
    if persistent:
        return FileStore(schedule_filename or conf.beat_schedule_filename)
    return MemoryStore()


# --- the scheduler ------------------------------------------------------------------------


class Scheduler:
    """Sends each entry when it is due, while this beat holds the leader lease.

    Call `tick` in a loop (as `Service` does): it sends what is due and returns how long to
    sleep.  Subclasses change where entries come from: see the module docstring.

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


# --- a schedule in a database table -------------------------------------------------------


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


# --- running it -----------------------------------------------------------------------------

#: Short names for ``-S``.
SCHEDULER_ALIASES = {
    "persistent": "celeriac.beat:PersistentScheduler",
    "database": "celeriac.beat:DatabaseScheduler",
}


def resolve_scheduler(spec: str | type[Scheduler]) -> type[Scheduler]:
    """The scheduler class ``spec`` names: ``module:Class``, ``module.Class`` or an alias.

    Celery's ``celery.beat:...`` names map to this module's classes.
    """
    if not isinstance(spec, str):
        return spec
    spec = SCHEDULER_ALIASES.get(spec, spec)
    if spec.startswith("celery.beat:") or spec.startswith("celery.beat."):
        spec = "celeriac" + spec.removeprefix("celery")
    from .config import load_object

    try:
        found = load_object(spec)
    except (ImportError, AttributeError) as exc:
        raise ImproperlyConfigured(f"Cannot load the beat scheduler {spec!r}: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, Scheduler)):
        raise ImproperlyConfigured(f"{spec!r} is not a celeriac.beat.Scheduler subclass")
    return found


class Service:
    """Runs a scheduler: tick, sleep, repeat until `stop`; then save and give up the lease.

    Args:
        app: The app.
        max_interval: Longest sleep between ticks (``--max-interval``).
        schedule_filename: The schedule file (``-s``).
        scheduler_cls: The scheduler class or its name (``-S``; default ``beat_scheduler``).
    """

    def __init__(self, app: Celery, max_interval: float | None = None,
                 schedule_filename: str | None = None,
                 scheduler_cls: str | type[Scheduler] | None = None) -> None:
        self.app = app
        self.max_interval = max_interval
        self.schedule_filename = schedule_filename or app.conf.beat_schedule_filename
        self.scheduler_cls = resolve_scheduler(scheduler_cls or app.conf.beat_scheduler)
        self._scheduler: Scheduler | None = None
        self._shutdown = threading.Event()
        self._stopped = threading.Event()

    def get_scheduler(self, lazy: bool = False) -> Scheduler:
        """Create the scheduler (importing the task modules first, so their entries exist)."""
        if not lazy:
            self.app.finalize()
        return self.scheduler_cls(self.app, max_interval=self.max_interval,
                                  schedule_filename=self.schedule_filename, lazy=lazy)

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            self._scheduler = self.get_scheduler()
        return self._scheduler

    def start(self, embedded_process: bool = False) -> None:
        """Run until `stop` is called (or KeyboardInterrupt / SystemExit)."""
        logger.info("beat: Starting...")
        try:
            scheduler = self.scheduler
            logger.debug("beat: Ticking with max interval->%s s", scheduler.max_interval)
            signals.beat_init.send(sender=self)
            if embedded_process:
                signals.beat_embedded_init.send(sender=self)
            while not self._shutdown.is_set():
                interval = scheduler.tick()
                if interval > 0:
                    self._shutdown.wait(interval)
                if scheduler.should_sync():
                    scheduler.sync()
        except (KeyboardInterrupt, SystemExit):
            self._shutdown.set()
        finally:
            try:
                if self._scheduler is not None:
                    self._scheduler.close()
            finally:
                self._stopped.set()

    def stop(self, wait: bool = False) -> None:
        """Ask the loop to end (from any thread or a signal handler); ``wait`` until it has."""
        logger.info("beat: Shutting down...")
        self._shutdown.set()
        if wait:
            self._stopped.wait()


class EmbeddedBeat(threading.Thread):
    """Beat in a thread of the worker process (``worker -B``): `start`, later `stop`.

    Safe in every worker of a fleet: the lease makes one of them the sender.

    Args:
        app: The app.
        max_interval: Longest sleep between ticks.
        schedule_filename: The schedule file.
        scheduler_cls: The scheduler class or its name.
    """

    def __init__(self, app: Celery, *, max_interval: float | None = None,
                 schedule_filename: str | None = None,
                 scheduler_cls: str | type[Scheduler] | None = None) -> None:
        super().__init__(name="Beat", daemon=True)
        self.app = app
        self.service = Service(app, max_interval=max_interval, schedule_filename=schedule_filename,
                               scheduler_cls=scheduler_cls)

    def run(self) -> None:
        try:
            self.service.start(embedded_process=True)
        except Exception as exc:
            logger.critical("beat raised exception %s: %r", type(exc), exc, exc_info=True)

    def stop(self, timeout: float | None = 10.0) -> None:
        """End the loop, save, release the lease, and wait up to ``timeout`` s for the thread."""
        self.service.stop()
        if self.is_alive():
            self.join(timeout)
