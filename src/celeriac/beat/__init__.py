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

Modules: `celeriac.beat.scheduler` (`ScheduleEntry`, `Scheduler`, `PersistentScheduler`),
`celeriac.beat.stores` (where the lease and last runs live: `BeatStore` and its SQLite, Redis,
file and memory stores, `store_for_app`), `celeriac.beat.database` (`DatabaseScheduler` and its
table), `celeriac.beat.service` (`Service`, `EmbeddedBeat`, `resolve_scheduler`).  Import
their public names from ``celeriac.beat``, as ``-S celeriac.beat:DatabaseScheduler`` does.
"""

from __future__ import annotations

from .database import (
    DatabaseScheduler,
    PeriodicTaskRow,
    ScheduleTable,
    database_url,
    schedule_from_json,
    schedule_to_json,
)
from .scheduler import (
    DEFAULT_MAX_INTERVAL,
    BeatLazyFunc,
    PersistentScheduler,
    ScheduleEntry,
    Scheduler,
    SchedulingError,
)
from .service import SCHEDULER_ALIASES, EmbeddedBeat, Service, resolve_scheduler
from .stores import (
    CLAIM_CONFLICT,
    CLAIM_NOT_LEADER,
    BeatStore,
    FileStore,
    MemoryStore,
    RedisStore,
    RunState,
    ScheduleFile,
    SQLiteStore,
    from_micros,
    lease_name,
    store_for_app,
    to_micros,
)

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
    # Also public in the former single-module beat.py:
    "CLAIM_CONFLICT",
    "CLAIM_NOT_LEADER",
    "DEFAULT_MAX_INTERVAL",
    "PeriodicTaskRow",
    "SCHEDULER_ALIASES",
    "database_url",
    "from_micros",
    "lease_name",
    "to_micros",
]
