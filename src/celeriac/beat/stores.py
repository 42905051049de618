"""Where beats keep the leader lease and each entry's last run: `BeatStore` and its stores.

`store_for_app` picks one: an `SQLiteStore` in the SQLite broker's (or backend's) file, a
`RedisStore` in the Redis broker (or backend), else the schedule file (`FileStore`, a single
beat) or memory (`MemoryStore`).  Last runs are UTC instants in integer microseconds
(`to_micros`).  See `celeriac.beat` for how the lease and the claims make each tick sent once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..sqlite_util import connect, sqlite_path
from ..urls import mask_url

if TYPE_CHECKING:
    from ..app import Celery

__all__ = [
    "CLAIM_CONFLICT",
    "CLAIM_NOT_LEADER",
    "BeatStore",
    "FileStore",
    "MemoryStore",
    "RedisStore",
    "RunState",
    "SQLiteStore",
    "ScheduleFile",
    "from_micros",
    "lease_name",
    "store_for_app",
    "to_micros",
]

# One logger for all of beat, as before the split into modules.
logger = logging.getLogger("celeriac.beat")

#: What `BeatStore.claim` returns when the entry's last run is no longer the expected one.
CLAIM_CONFLICT = 0
#: What `BeatStore.claim` returns when the caller does not hold the leader lease.
CLAIM_NOT_LEADER = -1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Return ``moment`` as whole microseconds since the epoch (naive means UTC), exactly."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """Return the aware UTC datetime of `to_micros`' value."""
    return _EPOCH + timedelta(microseconds=micros)


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
            from ..brokers.redis import redis_client
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
