"""The embedded broker: one SQLite file, safe for many processes on one machine.

At-least-once with leases: a consumer claims messages by setting `visible_at` to
now + lease and `leased_by` to its token in one UPDATE; ack deletes the row; a consumer
that dies stops renewing its leases (a background thread renews them every lease/3 s),
so its messages become visible again and are delivered to another consumer. ETA/countdown
messages are stored with `visible_at` = their due time, durably, not in worker memory.
Higher `priority` is served first (as on RabbitMQ), then oldest first.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ..serialization import json_loads
from ..sqlite_util import connect, fork_lock, sqlite_path
from .base import Broker, Delivery, Envelope, FanoutSubscription, RetryPolicy, Route, Subscription
from .bindings import matches

SCHEMA = """
CREATE TABLE IF NOT EXISTS celeriac_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL,
    leased_by TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    meta TEXT NOT NULL,
    body BLOB NOT NULL
);
-- the claim reads a queue in serving order (priority, then age) and skips rows not yet
-- visible: an index in that order keeps a claim cheap however long the backlog is
CREATE INDEX IF NOT EXISTS celeriac_messages_order
    ON celeriac_messages (queue, priority DESC, id);
CREATE INDEX IF NOT EXISTS celeriac_messages_lease
    ON celeriac_messages (leased_by);
CREATE TABLE IF NOT EXISTS celeriac_bindings (
    exchange TEXT NOT NULL,
    exchange_type TEXT NOT NULL,
    binding_key TEXT NOT NULL,
    queue TEXT NOT NULL,
    PRIMARY KEY (exchange, binding_key, queue)
);
CREATE TABLE IF NOT EXISTS celeriac_broadcast (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    created_at REAL NOT NULL,
    meta TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS celeriac_broadcast_exchange
    ON celeriac_broadcast (exchange, id);
CREATE TABLE IF NOT EXISTS celeriac_revoked (
    task_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
"""

#: Broadcast rows are kept this long (seconds) for listeners that poll slowly, then pruned.
BROADCAST_KEEP = 60.0

DEFAULT_LEASE = 30.0


def _encode_meta(envelope: Envelope) -> str:
    return json.dumps([envelope.headers, envelope.properties, envelope.content_type,
                       envelope.content_encoding])


def _decode_meta(meta: str, body: bytes) -> Envelope:
    headers, properties, content_type, content_encoding = json_loads(meta)
    return Envelope(body, headers, properties, content_type, content_encoding)


class SQLiteBroker(Broker):
    """`sqlite:///path.db`: messages in a table of an SQLite file (WAL mode)."""

    def __init__(self, url: str, conf: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.path = sqlite_path(url)
        options = dict((conf or {}).get("broker_transport_options") or {})
        self.lease = float(options.get("visibility_timeout", DEFAULT_LEASE))
        self.poll_interval = float(options.get("polling_interval", 0.05))
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self.conn.executescript(SCHEMA)

    @property
    def conn(self) -> Any:
        """A connection for the calling thread (SQLite connections are not shared)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
            with self._lock:
                self._all.append(conn)
        return conn

    def declare(self, queues: Sequence[Any], *, retry: RetryPolicy | None = None) -> None:
        rows = []
        for queue in queues:
            exchange = getattr(queue, "exchange", None)
            if exchange is not None and exchange.name:
                rows.append((exchange.name, exchange.type, queue.routing_key or "", queue.name))
        if rows:
            self.conn.executemany(
                "INSERT OR IGNORE INTO celeriac_bindings VALUES (?, ?, ?, ?)", rows
            )

    def _targets(self, route: Route) -> list[str]:
        if not route.exchange:
            return [route.routing_key or route.queue]
        rows = self.conn.execute(
            "SELECT exchange_type, binding_key, queue FROM celeriac_bindings WHERE exchange = ?",
            (route.exchange,),
        ).fetchall()
        queues = [q for kind, key, q in rows if matches(kind, key, route.routing_key)]
        return queues or ([route.queue] if route.queue else [])

    def publish(self, envelope: Envelope, route: Route, *, not_before: float | None = None,
                retry: RetryPolicy | None = None) -> None:
        self.publish_many([(envelope, route, not_before)])

    def publish_many(self, items: Sequence[tuple[Envelope, Route, float | None]], *,
                     retry: RetryPolicy | None = None) -> None:
        rows = []
        for envelope, route, not_before in items:
            meta = _encode_meta(envelope)
            priority = int(envelope.properties.get("priority") or 0)
            for queue in self._targets(route):
                rows.append((queue, priority, not_before or 0.0, meta, envelope.body))
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO celeriac_messages (queue, priority, visible_at, meta, body)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def subscribe(self, queues: Sequence[str], *, prefetch: int) -> Subscription:
        return SQLiteSubscription(self, list(queues))

    def purge(self, queue: str) -> int:
        cur = self.conn.execute(
            "DELETE FROM celeriac_messages WHERE queue = ? AND leased_by IS NULL", (queue,)
        )
        return cur.rowcount

    # -- broadcast and revokes ----------------------------------------------------------

    def publish_fanout(self, exchange: str, envelope: Envelope, routing_key: str = "", *,
                       retry: RetryPolicy | None = None) -> None:
        """Append a row that every listener of `exchange` reads once; prune old rows."""
        now = time.time()
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO celeriac_broadcast (exchange, routing_key, created_at, meta, body)"
                " VALUES (?, ?, ?, ?, ?)",
                (exchange, routing_key, now, _encode_meta(envelope), envelope.body),
            )
            conn.execute("DELETE FROM celeriac_broadcast WHERE created_at < ?", (now - BROADCAST_KEEP,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def subscribe_fanout(self, exchange: str, queue: str | None = None,
                         queue_arguments: Mapping[str, Any] | None = None, *,
                         routing_key: str = "") -> FanoutSubscription:
        return SQLiteFanoutSubscription(self, exchange, routing_key)

    def delete_queue(self, queue: str, exchange: str = "", routing_key: str = "") -> None:
        conn = self.conn
        conn.execute("DELETE FROM celeriac_messages WHERE queue = ?", (queue,))
        conn.execute("DELETE FROM celeriac_bindings WHERE queue = ?", (queue,))

    def store_revoked(self, task_ids: Sequence[str], expires: float) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR REPLACE INTO celeriac_revoked VALUES (?, ?)",
                             [(task_id, expires) for task_id in task_ids])
            conn.execute("DELETE FROM celeriac_revoked WHERE expires_at <= ?", (time.time(),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def load_revoked(self) -> list[str]:
        rows = self.conn.execute("SELECT task_id FROM celeriac_revoked WHERE expires_at > ?",
                                 (time.time(),)).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except Exception:  # closing another thread's handle may fail; it dies with it
                pass
        self._local = threading.local()


class SQLiteSubscription(Subscription):
    """Claims messages with leases, and renews them from a thread while it lives."""

    def __init__(self, broker: SQLiteBroker, queues: list[str]) -> None:
        self.broker = broker
        self.queues = queues
        self.token = uuid.uuid4().hex
        self.conn = connect(broker.path)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_leases, name="celeriac-lease", daemon=True)
        self._renewer.start()
        self.set_queues(queues)

    def set_queues(self, queues: Sequence[str]) -> None:
        marks = ",".join("?" * len(queues))
        with self._lock:
            self.queues = list(queues)
            self._claim_sql = (
                "UPDATE celeriac_messages SET visible_at = ?, leased_by = ?, deliveries = deliveries + 1"
                " WHERE id IN (SELECT id FROM celeriac_messages"
                f" WHERE queue IN ({marks}) AND visible_at <= ?"
                " ORDER BY priority DESC, id LIMIT ?)"
                " RETURNING id, queue, priority, deliveries, meta, body"
            )

    def _renew_leases(self) -> None:
        with fork_lock:
            conn = connect(self.broker.path)
        try:
            while not self._stop.wait(self.broker.lease / 3):
                with fork_lock:
                    conn.execute(
                        "UPDATE celeriac_messages SET visible_at = ? WHERE leased_by = ?",
                        (time.time() + self.broker.lease, self.token),
                    )
        finally:
            with fork_lock:
                conn.close()

    def _claim(self, limit: int) -> list[Delivery]:
        now = time.time()
        with self._lock:
            rows = self.conn.execute(
                self._claim_sql, (now + self.broker.lease, self.token, *self.queues, now, limit)
            ).fetchall()
        rows.sort(key=lambda row: (-row[2], row[0]))
        return [
            Delivery(_decode_meta(meta, body), queue, rowid, redelivered=deliveries > 1)
            for rowid, queue, _priority, deliveries, meta, body in rows
        ]

    def get_many(self, limit: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            deliveries = self._claim(limit)
            if deliveries:
                return deliveries
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, self.broker.poll_interval)

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(
                    "DELETE FROM celeriac_messages WHERE id = ? AND leased_by = ?",
                    [(d.tag, self.token) for d in deliveries],
                )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def reject(self, delivery: Delivery, *, requeue: bool) -> None:
        with self._lock:
            if requeue:
                self.conn.execute(
                    "UPDATE celeriac_messages SET visible_at = 0, leased_by = NULL"
                    " WHERE id = ? AND leased_by = ?",
                    (delivery.tag, self.token),
                )
            else:
                self.conn.execute(
                    "DELETE FROM celeriac_messages WHERE id = ? AND leased_by = ?",
                    (delivery.tag, self.token),
                )

    def defer(self, delivery: Delivery, not_before: float) -> None:
        with self._lock:
            self.conn.execute(
                "UPDATE celeriac_messages SET visible_at = ?, leased_by = NULL,"
                " deliveries = deliveries - 1 WHERE id = ? AND leased_by = ?",
                (not_before, delivery.tag, self.token),
            )

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self.conn.execute(
                "UPDATE celeriac_messages SET visible_at = 0, leased_by = NULL WHERE leased_by = ?",
                (self.token,),
            )
            self.conn.close()
        self._renewer.join(timeout=5)


class SQLiteFanoutSubscription(FanoutSubscription):
    """Reads the broadcast rows of one exchange newer than the last one it saw.

    Used from the worker's control thread: SQLite calls hold `fork_lock`, as the other
    background threads do.
    """

    def __init__(self, broker: SQLiteBroker, exchange: str, routing_key: str) -> None:
        self.broker = broker
        self.exchange = exchange
        self.routing_key = routing_key
        self.conn = connect(broker.path)
        self._buffer: list[Envelope] = []
        with fork_lock:
            row = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM celeriac_broadcast").fetchone()
        self.last_id = int(row[0])

    def _read(self) -> None:
        with fork_lock:
            rows = self.conn.execute(
                "SELECT id, routing_key, meta, body FROM celeriac_broadcast"
                " WHERE exchange = ? AND id > ? ORDER BY id LIMIT 100",
                (self.exchange, self.last_id),
            ).fetchall()
        for rowid, routing_key, meta, body in rows:
            self.last_id = rowid
            if self.routing_key in ("", "#") or matches("topic", self.routing_key, routing_key):
                self._buffer.append(_decode_meta(meta, body))

    def get(self, timeout: float) -> Envelope | None:
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            if not self._buffer:
                self._read()
            if self._buffer:
                return self._buffer.pop(0)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, self.broker.poll_interval)

    def close(self) -> None:
        with fork_lock:
            self.conn.close()
