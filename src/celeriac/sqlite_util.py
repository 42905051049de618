"""Opening SQLite files the way both the SQLite broker and the SQLite backend need them."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3

#: Held by background threads while they are inside SQLite, and taken around fork(): a child
#: forked while another thread holds one of SQLite's mutexes would deadlock on first use.
fork_lock = threading.Lock()
os.register_at_fork(before=fork_lock.acquire, after_in_parent=fork_lock.release,
                    after_in_child=fork_lock.release)


def sqlite_path(url: str) -> str:
    """The file of `sqlite:///rel.db` (relative) or `sqlite:////abs.db` (absolute)."""
    rest = url.split("://", 1)[1] if "://" in url else url
    path = rest[1:] if rest.startswith("/") else rest
    path = path.split("?", 1)[0]
    return path or "celeriac.db"


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode, WAL journal, waiting on locks instead of failing."""
    import sqlite3  # here: a worker on Redis or RabbitMQ needs only `fork_lock` (1.4 MiB less)

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    for attempt in range(200):
        # Switching a new file to WAL takes an exclusive lock and does not wait on the busy
        # handler: processes opening the same new file at once retry (two workers with -B).
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 199:
                raise
            time.sleep(0.05)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn
