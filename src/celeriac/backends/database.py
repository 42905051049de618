"""Results in an SQL database through SQLAlchemy, in Celery's table layout.

``result_backend = "db+postgresql://user@host/db"`` (also ``db+postgresql+psycopg://``,
``db+mysql://``, ``db+mysql+pymysql://``, ``db+sqlite:///path``). The tables are Celery's, so
a Celery worker or client on the same database reads what celeriac writes and the reverse:

- ``celery_taskmeta``: one row per task: ``task_id``, ``status``, ``result`` (the value alone,
  serialized with `result_serializer`), ``date_done`` (naive UTC), ``traceback``,
  ``children``, and the `result_extended` columns ``name``, ``args``, ``kwargs``, ``worker``,
  ``retries``, ``queue`` (``stamps`` exists and is left empty).
- ``celery_tasksetmeta``: saved GroupResults (``taskset_id``, ``result``, ``date_done``).

Celery has no chord counter for this backend (it polls with ``celery.chord_unlock``);
celeriac adds two tables of its own, ``celeriac_chordmeta`` and ``celeriac_chordpart``, so
header results are counted in one transaction (see `DatabaseBackend.chord_part_done`).

Settings used: `database_url` (when the URL is not given), `database_engine_options`,
`database_short_lived_sessions` (no connection pool: a connection per operation),
`database_table_names` / `database_table_schemas` (keys ``task``, ``group``, and celeriac's
``chord`` and ``chordpart``), `database_create_tables_at_setup`, `result_expires`
(`cleanup` deletes older rows), `result_extended`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.pool import NullPool

from .. import states
from ..exceptions import BackendError, BackendGetMetaError, BackendStoreError, ImproperlyConfigured
from ..serialization import dumps
from ..urls import mask_url
from .base import Backend, exception_to_dict, pending_meta

if TYPE_CHECKING:
    from ..app import Celery

__all__ = ["DatabaseBackend", "result_tables"]

logger = logging.getLogger("celeriac.backends.database")

T = TypeVar("T")

# Celery's LargeBinary is a 64 KiB BLOB on MySQL; a bigger type reads the same for Celery.
_Blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_Text = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# Celery's id column: a BIGINT on MSSQL only.
_Id = sa.Integer().with_variant(sa.BigInteger(), "mssql")

_RETRYABLE = (sa.exc.OperationalError, sa.exc.InterfaceError)

# Engines whose pooled connections a forked child must not use (or close: that would close
# the parent's sockets too). The app makes a new backend in the child; this drops the old pool.
_engines: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def _forget_pools_after_fork() -> None:
    for engine in list(_engines):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_pools_after_fork)


def result_tables(
    metadata: sa.MetaData,
    names: dict[str, str] | None = None,
    schemas: dict[str, str] | None = None,
) -> dict[str, sa.Table]:
    """Define Celery's result tables (and celeriac's chord tables) on `metadata`.

    Returns:
        ``{"task": ..., "group": ..., "chord": ..., "chordpart": ...}``.
    """
    names = names or {}
    schemas = schemas or {}
    task_schema, group_schema = schemas.get("task"), schemas.get("group")
    task = sa.Table(
        names.get("task", "celery_taskmeta"), metadata,
        sa.Column("id", _Id, sa.Sequence("task_id_sequence", schema=task_schema),
                  primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(155), unique=True),
        sa.Column("status", sa.String(50), default=states.PENDING),
        sa.Column("result", _Blob, nullable=True),
        sa.Column("date_done", _DateTime, nullable=True, index=True),
        sa.Column("traceback", _Text, nullable=True),
        sa.Column("children", _Blob, nullable=True),
        sa.Column("name", sa.String(155), nullable=True),
        sa.Column("args", _Blob, nullable=True),
        sa.Column("kwargs", _Blob, nullable=True),
        sa.Column("worker", sa.String(155), nullable=True),
        sa.Column("retries", sa.Integer, nullable=True),
        sa.Column("queue", sa.String(155), nullable=True),
        sa.Column("stamps", _Blob, nullable=True),
        schema=task_schema,
        sqlite_autoincrement=True,
    )
    group = sa.Table(
        names.get("group", "celery_tasksetmeta"), metadata,
        sa.Column("id", _Id, sa.Sequence("taskset_id_sequence", schema=group_schema),
                  primary_key=True, autoincrement=True),
        sa.Column("taskset_id", sa.String(155), unique=True),
        sa.Column("result", _Blob, nullable=True),
        sa.Column("date_done", _DateTime, nullable=True, index=True),
        schema=group_schema,
        sqlite_autoincrement=True,
    )
    chord = sa.Table(
        names.get("chord", "celeriac_chordmeta"), metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_id", sa.String(155), nullable=False, unique=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("claim_token", sa.String(64), nullable=True),
        sa.Column("claimed_until", _DateTime, nullable=True),
        sa.Column("date_created", _DateTime, nullable=False, index=True),
        schema=schemas.get("chord", group_schema),
    )
    chordpart = sa.Table(
        names.get("chordpart", "celeriac_chordpart"), metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_id", sa.String(155), nullable=False),
        # "<task id>:<group index>": a redelivered header task is counted once.
        sa.Column("member", sa.String(200), nullable=False),
        sa.Column("group_index", sa.Integer, nullable=True),
        sa.Column("task_id", sa.String(155), nullable=False),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("result", _Blob, nullable=True),
        sa.UniqueConstraint("group_id", "member"),
        schema=schemas.get("chordpart", group_schema),
    )
    return {"task": task, "group": group, "chord": chord, "chordpart": chordpart}


def engine_url(url: str) -> sa.URL:
    """The SQLAlchemy URL for a ``db+...`` result backend URL.

    A bare ``postgresql://`` or ``mysql://`` names SQLAlchemy's default driver (psycopg2,
    mysqlclient); when that is not installed but psycopg 3 or PyMySQL is, that one is used.
    """
    parsed = sa.make_url(url.removeprefix("db+"))
    fallbacks = {"postgresql": ("psycopg2", "postgresql+psycopg", "psycopg"),
                 "mysql": ("MySQLdb", "mysql+pymysql", "pymysql"),
                 "mariadb": ("MySQLdb", "mariadb+pymysql", "pymysql")}
    if parsed.drivername in fallbacks:
        default, replacement, module = fallbacks[parsed.drivername]
        if importlib.util.find_spec(default) is None and importlib.util.find_spec(module) is not None:
            parsed = parsed.set(drivername=replacement)
    return parsed


def _utcnow() -> datetime:
    # Celery's columns are timezone-naive; the values are UTC.
    return datetime.now(UTC).replace(tzinfo=None)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


class DatabaseBackend(Backend):
    """Results in SQL tables (Celery's ``celery_taskmeta`` / ``celery_tasksetmeta`` layout).

    Args:
        app: The app; see the module docstring for the settings used.
        url: ``db+<sqlalchemy url>`` (the ``db+`` is optional); default `database_url`.
        engine_options: Keyword arguments for `sqlalchemy.create_engine`, over
            `database_engine_options`.
    """

    #: Retries of a lost connection or a deadlock when `result_backend_always_retry` is off.
    default_retries = 3

    def __init__(self, app: Celery, url: str | None = None,
                 engine_options: dict[str, Any] | None = None) -> None:
        conf = app.conf
        url = url or conf.get("database_url")
        if not url:
            raise ImproperlyConfigured(
                "The database result backend needs a URL: result_backend='db+postgresql://...' "
                "or the database_url setting."
            )
        super().__init__(app, url)
        options = dict(conf.get("database_engine_options") or {})
        options.update(engine_options or {})
        if conf.get("database_short_lived_sessions"):
            # Celery's short-lived sessions: nothing is kept open between operations.
            options = {k: v for k, v in options.items()
                       if not k.startswith("pool") and k not in ("max_overflow", "echo_pool")}
            options["poolclass"] = NullPool
        self.engine = sa.create_engine(engine_url(url), **options)
        callback: Any = conf.get("database_engine_callback")
        if callback is not None:
            if isinstance(callback, str):
                from ..config import load_object

                callback = load_object(callback)
            callback(self.engine)
        _engines.add(self.engine)
        self.metadata = sa.MetaData()
        tables = result_tables(self.metadata, conf.get("database_table_names"),
                               conf.get("database_table_schemas"))
        self.task_table = tables["task"]
        self.group_table = tables["group"]
        self.chord_table = tables["chord"]
        self.chordpart_table = tables["chordpart"]
        self.claim_seconds = max(5, int((conf.get("result_chord_join_timeout") or 3.0) * 2))
        self._claims: dict[str, str] = {}
        self._prepared = False
        self._prepare_lock = threading.Lock()
        if conf.get("database_create_tables_at_setup", True):
            self.create_tables()

    def __repr__(self) -> str:
        return f"<DatabaseBackend {mask_url(self.url)}>"

    # -- plumbing --------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Create the tables that are missing, and add columns missing from older tables."""
        with self._prepare_lock:
            if self._prepared:
                return
            for attempt in range(10):
                try:
                    self.metadata.create_all(self.engine)
                    break
                except sa.exc.DatabaseError:
                    # Two processes creating the same table: the loser sees it next time.
                    if attempt == 9:
                        raise
                    time.sleep(0.05 * (attempt + 1))
            self._add_missing_columns()
            self._prepared = True

    def _add_missing_columns(self) -> None:
        # Tables made by an older Celery lack `children` and `stamps` (and, with
        # result_extended off before Celery 5.x, the extended columns): add them, as Celery does.
        inspector = sa.inspect(self.engine)
        preparer = self.engine.dialect.identifier_preparer
        for table in (self.task_table, self.group_table):
            present = {col["name"] for col in inspector.get_columns(table.name, schema=table.schema)}
            for column in table.columns:
                if column.name in present or not column.nullable:
                    continue
                kind = column.type.compile(self.engine.dialect)
                statement = (f"ALTER TABLE {preparer.format_table(table)} "
                             f"ADD COLUMN {preparer.quote(column.name)} {kind}")
                try:
                    with self.engine.begin() as conn:
                        conn.execute(sa.text(statement))
                except sa.exc.DatabaseError as exc:
                    logger.warning("Could not add column %s to %s: %s", column.name, table.name, exc)

    def exception_safe_to_retry(self, exc: Exception) -> bool:
        """SQLAlchemy's OperationalError (lost connection, deadlock) and InterfaceError."""
        return isinstance(exc, _RETRYABLE)

    def _transaction(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run `fn(connection)` in a transaction, once."""
        if not self._prepared:
            self.create_tables()
        with self.engine.begin() as conn:
            return fn(conn)

    def _run(self, fn: Callable[[sa.Connection], T], error: type[BackendError] = BackendError,
             **details: Any) -> T:
        """`_transaction`, retried after lost connections and deadlocks (see `_retrying`)."""
        return self._retrying(self._transaction, fn, error=error, **details)

    def _pack(self, value: Any) -> bytes:
        return dumps(value, self.serializer)[0]

    def _unpack(self, data: bytes | None) -> Any:
        return None if data is None else self.decode(bytes(data))

    def close(self) -> None:
        self.engine.dispose()

    # Key/value primitives: this backend overrides every method that would use them.
    def _get(self, key: str) -> bytes | None:
        raise NotImplementedError("DatabaseBackend stores rows, not keys")

    def _set(self, key: str, value: bytes, ttl: int | None) -> None:
        raise NotImplementedError("DatabaseBackend stores rows, not keys")

    def _delete(self, key: str) -> None:
        raise NotImplementedError("DatabaseBackend stores rows, not keys")

    # -- task results ----------------------------------------------------------------------

    def _row_values(self, meta: dict[str, Any]) -> dict[str, Any]:
        date_done = _utcnow() if meta["status"] in states.READY_STATES else None
        values: dict[str, Any] = {
            "status": meta["status"],
            "result": self._pack(meta["result"]),
            "date_done": date_done,
            "traceback": meta.get("traceback"),
            "children": self._pack(meta["children"]) if meta.get("children") else None,
        }
        if "name" in meta:  # result_extended, with a request
            values.update(
                name=meta["name"],
                args=self._pack(meta["args"]),
                kwargs=self._pack(meta["kwargs"]),
                worker=meta["worker"],
                retries=meta["retries"],
                queue=meta["queue"],
            )
        return values

    def _write_row(self, conn: sa.Connection, meta: dict[str, Any]) -> None:
        table = self.task_table
        task_id = meta["task_id"]
        values = self._row_values(meta)
        # One UPDATE, no read first: it keeps a stored SUCCESS (as Celery: a task run twice
        # keeps its first success) and locks nothing else, so MySQL takes no gap lock.
        updated = conn.execute(sa.update(table).values(**values).where(
            (table.c.task_id == task_id) & (table.c.status != states.SUCCESS)))
        if updated.rowcount:
            return
        if conn.execute(sa.select(table.c.id).where(table.c.task_id == task_id)).first() is None:
            conn.execute(sa.insert(table).values(task_id=task_id, **values))

    def _store_metas(self, metas: Sequence[dict[str, Any]]) -> None:
        """One try (the callers retry): `store_result` (through `_write_meta`), `store_many`."""
        def write(conn: sa.Connection) -> None:
            for meta in metas:
                self._write_row(conn, meta)

        try:
            self._transaction(write)
        except sa.exc.IntegrityError:
            # Another process inserted the same task id between our read and insert.
            self._transaction(write)

    def _write_meta(self, meta: dict[str, Any], request: Any) -> None:
        """Store a state in the task's row (created on first write)."""
        self._store_metas([meta])

    def store_many(self, metas: Any) -> None:
        """Store prepared metas in one transaction."""
        metas = list(metas)
        if metas:
            self._retrying(self._store_metas, metas, error=BackendStoreError)

    def _meta_from_row(self, row: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "status": row.status,
            "result": self._unpack(row.result),
            "traceback": row.traceback,
            "children": self._unpack(row.children) or [],
            "date_done": _iso(row.date_done),
        }
        if self.extended:
            meta.update(
                name=row.name,
                args=self._unpack(row.args),
                kwargs=self._unpack(row.kwargs),
                worker=row.worker,
                retries=row.retries,
                queue=row.queue,
            )
        meta["task_id"] = row.task_id
        return meta

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        """The task's row as a meta dict, or a PENDING meta when there is no row."""
        table = self.task_table
        row = self._run(lambda conn: conn.execute(
            sa.select(table).where(table.c.task_id == task_id)).first(),
            error=BackendGetMetaError, task_id=task_id)
        return pending_meta(task_id) if row is None else self._meta_from_row(row)

    def get_many_metas(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Several metas in one query, in the order asked."""
        if not task_ids:
            return []
        table = self.task_table
        rows = self._run(lambda conn: conn.execute(
            sa.select(table).where(table.c.task_id.in_(list(task_ids)))).all(),
            error=BackendGetMetaError)
        found = {row.task_id: row for row in rows}
        return [self._meta_from_row(found[tid]) if tid in found else pending_meta(tid)
                for tid in task_ids]

    def forget(self, task_id: str) -> None:
        table = self.task_table
        self._run(lambda conn: conn.execute(sa.delete(table).where(table.c.task_id == task_id)))

    def task_result_exists(self, task_id: str) -> bool:
        """Whether a row exists for the task (Celery 5.7's name)."""
        table = self.task_table
        row = self._run(lambda conn: conn.execute(
            sa.select(table.c.id).where(table.c.task_id == task_id)).first())
        return row is not None

    # -- groups ----------------------------------------------------------------------------

    def save_group(self, group_id: str, result: Any) -> None:
        """Store a GroupResult's tuple form in ``celery_tasksetmeta``."""
        table = self.group_table
        values = {"result": self._pack(result), "date_done": _utcnow()}

        def write(conn: sa.Connection) -> None:
            where = table.c.taskset_id == group_id
            if conn.execute(sa.select(table.c.id).where(where)).first() is None:
                conn.execute(sa.insert(table).values(taskset_id=group_id, **values))
            else:
                conn.execute(sa.update(table).where(where).values(**values))

        try:
            self._run(write)
        except sa.exc.IntegrityError:
            self._run(write)

    def get_group(self, group_id: str) -> Any:
        table = self.group_table
        row = self._run(lambda conn: conn.execute(
            sa.select(table.c.result).where(table.c.taskset_id == group_id)).first())
        return None if row is None else self._unpack(row.result)

    def delete_group(self, group_id: str) -> None:
        table = self.group_table
        self._run(lambda conn: conn.execute(sa.delete(table).where(table.c.taskset_id == group_id)))

    # -- expiry ----------------------------------------------------------------------------

    def cleanup(self) -> int:
        """Delete results, groups and chord state older than `result_expires`; return how many.

        Rows of unfinished tasks (no ``date_done``) are kept, as Celery keeps them.
        """
        if not self.expires:
            return 0
        cutoff = _utcnow() - timedelta(seconds=self.expires)

        def purge(conn: sa.Connection) -> int:
            task, group, chord, part = (self.task_table, self.group_table,
                                        self.chord_table, self.chordpart_table)
            deleted = conn.execute(sa.delete(task).where(task.c.date_done < cutoff)).rowcount
            deleted += conn.execute(sa.delete(group).where(group.c.date_done < cutoff)).rowcount
            old = sa.select(chord.c.group_id).where(chord.c.date_created < cutoff)
            conn.execute(sa.delete(part).where(part.c.group_id.in_(old)))
            conn.execute(sa.delete(chord).where(chord.c.date_created < cutoff))
            return int(deleted)

        return self._run(purge)

    # -- chords ----------------------------------------------------------------------------

    def chord_init(self, group_id: str, size: int) -> None:
        """Start counting a chord's header of `size` tasks (forgetting an earlier run)."""
        chord, part = self.chord_table, self.chordpart_table

        def start(conn: sa.Connection) -> None:
            conn.execute(sa.delete(part).where(part.c.group_id == group_id))
            conn.execute(sa.delete(chord).where(chord.c.group_id == group_id))
            conn.execute(sa.insert(chord).values(group_id=group_id, size=size, date_created=_utcnow()))

        self._run(start)

    def chord_add(self, group_id: str, count: int = 1) -> None:
        """Tell a running chord that `count` more header tasks were added."""
        chord = self.chord_table
        self._run(lambda conn: conn.execute(
            sa.update(chord).where(chord.c.group_id == group_id).values(size=chord.c.size + count)))

    def chord_part_done(
        self, group_id: str, task_id: str, group_index: int | None, state: str, result: Any
    ) -> list[tuple[str, str, Any]] | None:
        """Record one header task's outcome; the caller that completes the chord gets all.

        One transaction locks the chord's row (SELECT ... FOR UPDATE; SQLite serializes
        writers anyway), adds the part unless this (task id, group index) is already in,
        counts the parts and, when all are in, claims the chord for this caller.

        Returns:
            None, except for exactly one caller: the header results as ``(task_id, state,
            result)`` in group-index order (exceptions as Celery's dicts). That caller sends
            the body, then calls `chord_complete`. If it dies first, its claim runs out after
            ``2 * result_chord_join_timeout`` seconds (at least 5) and a redelivered header
            task claims the chord again.
        """
        if isinstance(result, BaseException):
            result = exception_to_dict(result)
        chord, part = self.chord_table, self.chordpart_table
        member = f"{task_id}:{'' if group_index is None else group_index}"
        token = uuid.uuid4().hex

        def record(conn: sa.Connection) -> Sequence[Any] | None:
            head = conn.execute(sa.select(chord).where(chord.c.group_id == group_id)
                                .with_for_update()).first()
            if head is None:
                return None  # unknown, or already completed
            mine = (part.c.group_id == group_id) & (part.c.member == member)
            if conn.execute(sa.select(part.c.id).where(mine)).first() is None:
                conn.execute(sa.insert(part).values(
                    group_id=group_id, member=member, group_index=group_index, task_id=task_id,
                    status=state, result=self._pack(result)))
            count = conn.execute(sa.select(sa.func.count()).select_from(part)
                                 .where(part.c.group_id == group_id)).scalar_one()
            if count < head.size:
                return None
            now = _utcnow()
            if head.claim_token is not None and head.claimed_until > now:
                return None  # another caller is sending the body
            conn.execute(sa.update(chord).where(chord.c.group_id == group_id).values(
                claim_token=token, claimed_until=now + timedelta(seconds=self.claim_seconds)))
            return conn.execute(
                sa.select(part.c.task_id, part.c.status, part.c.result)
                .where(part.c.group_id == group_id)
                .order_by(part.c.group_index.is_(None), part.c.group_index, part.c.id)).all()

        try:
            rows = self._run(record)
        except sa.exc.IntegrityError:
            rows = self._run(record)  # the same part recorded at the same time elsewhere
        if rows is None:
            return None
        self._claims[group_id] = token
        return [(row.task_id, row.status, self._unpack(row.result)) for row in rows]

    def chord_complete(self, group_id: str) -> bool:
        """After sending the body: drop the chord's rows, if our claim still holds."""
        token = self._claims.pop(group_id, None)
        if token is None:
            return False
        chord, part = self.chord_table, self.chordpart_table

        def finish(conn: sa.Connection) -> bool:
            mine = (chord.c.group_id == group_id) & (chord.c.claim_token == token)
            if conn.execute(sa.delete(chord).where(mine)).rowcount == 0:
                return False
            conn.execute(sa.delete(part).where(part.c.group_id == group_id))
            return True

        return self._run(finish)
