"""A connection of a redis-py pool kept checked out by its owner (used by the Redis broker for
publishes and by the Redis backend for reads and writes).

Checking a connection out of redis-py's pool and back costs ~10 us per command (a poll for
stray data, locks, metrics): more than a command on loopback. The owner keeps one; a thread
that finds it busy is told so and uses the pool; a forked child checks out its own.
Commands are packed by hiredis itself, without redis-py's Python wrapper around it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import hiredis
import redis

from . import _state

__all__ = ["CONNECTION_ERRORS", "KeptConnection", "send_and_read", "send_packed_and_read"]

#: What redis-py raises when Redis cannot be reached (as opposed to an error reply).
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError)


def send_and_read(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send commands in one write; read every reply (so the connection stays in step) and raise
    the first error reply. A connection that failed midway is dropped: it reconnects on use."""
    return send_packed_and_read(conn, [_pack(conn, commands)], len(commands))


def send_packed_and_read(conn: Any, packed: Iterable[bytes], replies: int) -> list[Any]:
    """`send_and_read` for commands already packed in RESP: each piece is sent as soon as it
    is made (a generator lets Redis run one while the next is packed), then `replies` replies
    are read."""
    try:
        for data in packed:
            conn.send_packed_command([data], check_health=False)
        out = []
        for _ in range(replies):
            try:
                out.append(conn.read_response())
            except redis.ResponseError as exc:
                out.append(exc)
    except BaseException:
        conn.disconnect()
        raise
    for reply in out:
        if isinstance(reply, redis.ResponseError):
            raise reply
    return out


def _pack(conn: Any, commands: Sequence[tuple[Any, ...]]) -> bytes:
    # hiredis packs directly: redis-py's packer wraps it in ~5 us of Python per command.
    try:
        return b"".join([hiredis.pack_command(command) for command in commands])
    except TypeError:  # a value hiredis can't pack (redis-py's encoder takes any)
        return b"".join(conn.pack_commands(commands))


class KeptConnection:
    """One pool connection of `client`, kept for `run`."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._conn: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    def run(self, commands: Sequence[tuple[Any, ...]]) -> list[Any] | None:
        """`send_and_read` on the kept connection; None when another thread is using it."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._conn is None or self._pid != _state.pid:  # never the parent's, after a fork
                self._conn = self.client.connection_pool.get_connection()
                self._pid = _state.pid
            return send_and_read(self._conn, commands)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Disconnect and give the connection back to the pool (not a forked copy's)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == _state.pid:
                conn.disconnect()
                self.client.connection_pool.release(conn)
