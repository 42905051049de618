"""Results in an SQLite file (the embedded default): a key/value table with expiry."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from ..sqlite_util import connect, sqlite_path
from .base import Backend

SCHEMA = """
CREATE TABLE IF NOT EXISTS celeriac_results (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL
);
"""


class SQLiteBackend(Backend):
    """`sqlite:///results.db` or Celery's `db+sqlite:///results.db`."""

    def __init__(self, app: Any, url: str) -> None:
        super().__init__(app, url)
        self.path = sqlite_path(url.removeprefix("db+"))
        self._local = threading.local()
        self._conn().executescript(SCHEMA)

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return conn

    def _get(self, key: str) -> bytes | None:
        row = self._conn().execute(
            "SELECT value FROM celeriac_results WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
            (key, time.time()),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def _mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        marks = ",".join("?" * len(keys))
        rows = self._conn().execute(
            f"SELECT key, value FROM celeriac_results WHERE key IN ({marks})"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (*keys, time.time()),
        ).fetchall()
        found = {key: bytes(value) for key, value in rows}
        return [found.get(key) for key in keys]

    def _set(self, key: str, value: bytes, ttl: int | None) -> None:
        self._set_many([(key, value)], ttl)

    def _set_many(self, items: Sequence[tuple[str, bytes]], ttl: int | None) -> None:
        expires_at = time.time() + ttl if ttl else None
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR REPLACE INTO celeriac_results (key, value, expires_at) VALUES (?, ?, ?)",
                [(key, value, expires_at) for key, value in items],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _delete(self, key: str) -> None:
        self._conn().execute("DELETE FROM celeriac_results WHERE key = ?", (key,))

    def cleanup(self) -> int:
        """Delete expired results; return how many."""
        cur = self._conn().execute(
            "DELETE FROM celeriac_results WHERE expires_at IS NOT NULL AND expires_at <= ?", (time.time(),)
        )
        return cur.rowcount

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local = threading.local()
