"""Results in an SQLite file (the embedded default): a key/value table with expiry."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from ..sqlite_util import connect, sqlite_path
from .base import Backend, exception_to_dict

SCHEMA = """
CREATE TABLE IF NOT EXISTS celeriac_results (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS celeriac_chords (
    group_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS celeriac_chord_parts (
    group_id TEXT NOT NULL,
    member TEXT NOT NULL,
    group_index INTEGER,
    value BLOB NOT NULL,
    PRIMARY KEY (group_id, member)
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

    def chord_init(self, group_id: str, size: int) -> None:
        now = time.time()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Finished chords are kept a while so late duplicates are ignored; drop expired ones.
            conn.execute("DELETE FROM celeriac_chords WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
            conn.execute("DELETE FROM celeriac_chord_parts WHERE group_id = ?", (group_id,))
            conn.execute(
                "INSERT OR REPLACE INTO celeriac_chords (group_id, size, count, done, expires_at)"
                " VALUES (?, ?, 0, 0, ?)",
                (group_id, size, now + self.expires if self.expires else None),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def chord_part_done(self, group_id: str, task_id: str, group_index: int | None, state: str,
                        result: Any) -> list[tuple[str, str, Any]] | None:
        if isinstance(result, BaseException):
            result = exception_to_dict(result)
        entry = self.encode([task_id, state, result])
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # one writer at a time: exactly one caller completes
        try:
            rows = None
            chord = conn.execute("SELECT size, count, done FROM celeriac_chords WHERE group_id = ?",
                                 (group_id,)).fetchone()
            added = chord is not None and not chord[2] and conn.execute(
                "INSERT OR IGNORE INTO celeriac_chord_parts (group_id, member, group_index, value)"
                " VALUES (?, ?, ?, ?)", (group_id, f"{task_id}:{group_index}", group_index, entry),
            ).rowcount == 1  # 0: the same part delivered again
            if added:
                count = chord[1] + 1
                done = count >= chord[0]
                conn.execute("UPDATE celeriac_chords SET count = ?, done = ? WHERE group_id = ?",
                             (count, int(done), group_id))
                if done:
                    rows = conn.execute(
                        "SELECT value FROM celeriac_chord_parts WHERE group_id = ?"
                        " ORDER BY group_index IS NULL, group_index", (group_id,),
                    ).fetchall()
                    conn.execute("DELETE FROM celeriac_chord_parts WHERE group_id = ?", (group_id,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if rows is None:
            return None
        return [tuple(self.decode(bytes(value))) for (value,) in rows]  # type: ignore[misc]
