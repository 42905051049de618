"""The Redis result backend, in Celery's key layout (celery-wire.md section 3).

- ``celery-task-meta-<id>``: the task's meta as JSON, written with SETEX (`result_expires`,
  default one day; plain SET when results never expire) and PUBLISHed on a channel of the
  same name in the same write, so a waiting `get()` wakes at once and takes the meta from the
  message (no second read).
- ``celery-taskset-meta-<gid>``: a saved GroupResult; ``.s .j .t .d .c`` beside it are the
  chord counters Celery 5.7 uses (see `RedisBackend.chord_part_done`).
- ``result_backend_transport_options['global_keyprefix']`` prefixes every key and channel
  (with an ``_`` added unless it ends in one of ``:_-.``, as Celery does).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from .. import _state, states
from ..exceptions import BackendGetMetaError, TimeoutError
from ..redis_link import CONNECTION_ERRORS, KeptConnection
from ..serialization import dumps
from ..urls import mask_url
from .base import GROUP_KEYPREFIX, TASK_KEYPREFIX, Backend, exception_to_dict

if TYPE_CHECKING:
    from ..app import Celery

__all__ = ["RedisBackend"]


# Records one chord header result and, when all are in, claims the body for one caller and
# returns the results in order. KEYS: .j .t .s .d <group> .c; ARGV: task id, entry, ordered,
# group index, expires, claim seconds, token. Returns -1 (chord already done), 0 (not yet, or
# someone else claimed it) or the list of entries.
_CHORD_PART = """
local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if redis.call('GET', ckey) == 'done' then return -1 end
local ordered, member = ARGV[3] == '1', ARGV[1] .. ':' .. ARGV[4]
if redis.call('SISMEMBER', dkey, member) == 0 then
  if ordered then redis.call('ZADD', jkey, ARGV[4], ARGV[2]) else redis.call('RPUSH', jkey, ARGV[2]) end
  redis.call('SADD', dkey, member)
end
local count
if ordered then count = redis.call('ZCARD', jkey) else count = redis.call('LLEN', jkey) end
local expires = tonumber(ARGV[5])
if expires > 0 then
  for _, key in ipairs({jkey, tkey, skey, dkey, gkey}) do redis.call('EXPIRE', key, expires) end
end
local size = redis.call('GET', skey)
if not size or count ~= tonumber(size) + tonumber(redis.call('GET', tkey) or 0) then return 0 end
if not redis.call('SET', ckey, ARGV[7], 'NX', 'EX', ARGV[6]) then return 0 end
if ordered then return redis.call('ZRANGE', jkey, 0, -1) end
return redis.call('LRANGE', jkey, 0, -1)
"""

# Ends a claimed chord: drop its data and mark it done, if the claim is still ours.
# KEYS: .c .j .t .s .d; ARGV: token.
_CHORD_DONE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', KEYS[1], 'done', 'EX', 300)
return 1
"""


class RedisBackend(Backend):
    """Results in Redis, readable by Celery clients and written like Celery workers write them.

    Args:
        app: The app; its settings `result_expires`, `result_serializer`,
            `result_backend_transport_options` (``global_keyprefix``,
            ``result_chord_ordered``, socket options), `redis_backend_use_ssl`,
            `result_chord_join_timeout` are used.
        url: A Redis URL (see `celeriac.brokers.redis.redis_client`).
    """

    supports_native_join = True

    def __init__(self, app: Celery, url: str | None = None) -> None:
        from ..brokers.redis import redis_client

        super().__init__(app, url or "redis://")
        conf = app.conf
        options = conf.get("result_backend_transport_options") or {}
        self.client, self.db = redis_client(self.url, conf.get("redis_backend_use_ssl"), options)
        prefix = options.get("global_keyprefix") or ""
        if prefix and prefix[-1] not in ":_-.":
            prefix += "_"
        self.prefix: str = prefix
        self.chord_ordered = options.get("result_chord_ordered", True)
        self.claim_seconds = max(5, int((conf.get("result_chord_join_timeout") or 3.0) * 2))
        self._claims: dict[str, str] = {}
        self._local = threading.local()
        self._link = KeptConnection(self.client)  # for reads and writes (see `_run`)
        self._chord_part = self.client.register_script(_CHORD_PART)
        self._chord_done = self.client.register_script(_CHORD_DONE)

    #: About 15 s of retries (a Redis restart) when `result_backend_always_retry` is off.
    default_retries = 19

    def exception_safe_to_retry(self, exc: Exception) -> bool:
        """redis-py's connection and timeout errors: Redis is down or restarting."""
        return isinstance(exc, CONNECTION_ERRORS)

    # -- primitives ------------------------------------------------------------------------

    def _run(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send commands in one write and read their replies, on the connection the backend
        keeps; a thread that finds it busy uses a pipeline from the pool."""
        replies = self._link.run(commands)
        if replies is not None:
            return replies
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute()  # type: ignore[no-any-return]

    def _get(self, key: str) -> bytes | None:
        return self._run([("GET", self.prefix + key)])[0]  # type: ignore[no-any-return]

    def _mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return self._run([("MGET", *[self.prefix + key for key in keys])])[0]  # type: ignore[no-any-return]

    def _write(self, items: Sequence[tuple[str, bytes]], ttl: int | None) -> None:
        commands: list[tuple[Any, ...]] = []
        for key, value in items:
            full = self.prefix + key
            commands.append(("SETEX", full, ttl, value) if ttl else ("SET", full, value))  # Celery's
            commands.append(("PUBLISH", full, value))
        self._run(commands)

    def _set(self, key: str, value: bytes, ttl: int | None) -> None:
        self._write([(key, value)], ttl)

    def _set_many(self, items: Sequence[tuple[str, bytes]], ttl: int | None) -> None:
        if items:
            self._write(items, ttl)

    def _delete(self, key: str) -> None:
        self.client.delete(self.prefix + key)

    def close(self) -> None:
        self._drop_waiter()
        self._link.close()
        self.client.close()

    # -- waiting ---------------------------------------------------------------------------

    def _waiter(self) -> Any:
        """This thread's connection for waiting (kept: a new one per get() costs a connect)."""
        conn = getattr(self._local, "waiter", None)
        if conn is None or self._local.pid != _state.pid:
            conn = self._local.waiter = self.client.connection_pool.get_connection()
            self._local.pid = _state.pid
            self._local.channel = None
        return conn

    def _drop_waiter(self) -> None:
        conn = getattr(self._local, "waiter", None)
        self._local.waiter = None
        if conn is not None and self._local.pid == _state.pid:
            try:
                conn.disconnect()
            except Exception:  # already broken: nothing to release
                pass

    def wait_for(
        self, task_id: str, timeout: float | None = None, interval: float = 0.5
    ) -> dict[str, Any]:
        """Wait until the task is ready and return its meta; woken by the result's PUBLISH.

        One write on this thread's waiting connection: UNSUBSCRIBE from the last wait's
        channel, GET the key, SUBSCRIBE to its channel (valid in RESP2 and RESP3: the GET runs
        unsubscribed). Redis runs a client's pipelined commands back to back, so a result
        stored after the GET is published to us; the meta then comes in the message itself.

        Redis unreachable: retried (with a warning each time) as any read of the backend, so
        without `result_backend_always_retry` the wait ends in `BackendGetMetaError` after
        ~15 s of retries, not silently never; `timeout` still ends it first.
        """
        key = self.prefix + TASK_KEYPREFIX + task_id
        deadline = None if timeout is None else time.monotonic() + timeout

        def attempt() -> dict[str, Any]:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"The operation timed out waiting for task {task_id}.")
            return self._wait(key, task_id, deadline)

        return self._retrying(attempt, error=BackendGetMetaError, task_id=task_id)

    def _wait(self, key: str, task_id: str, deadline: float | None) -> dict[str, Any]:
        conn = self._waiter()
        old = self._local.channel
        commands: list[tuple[Any, ...]] = [("UNSUBSCRIBE", old)] if old is not None else []
        commands += [("GET", key), ("SUBSCRIBE", key)]
        self._local.channel = None
        try:
            conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            if old is not None:
                while not _is_reply(conn.read_response(push_request=True), b"unsubscribe"):
                    pass  # a message of the last wait's channel, published before it ended
            data = conn.read_response(push_request=True)
            if not _is_reply(conn.read_response(push_request=True), b"subscribe"):
                raise redis.ConnectionError("unexpected reply to SUBSCRIBE")
            self._local.channel = key  # left subscribed; the next wait unsubscribes in its write
            return self._wait_subscribed(conn, data, key, task_id, deadline)
        except TimeoutError:
            raise  # ours, between replies: the connection is in step
        except BaseException:
            self._drop_waiter()  # replies may be out of step: start afresh
            raise

    def _wait_subscribed(self, conn: Any, data: bytes | None, key: str, task_id: str,
                         deadline: float | None) -> dict[str, Any]:
        channel = key.encode()
        while True:
            if data is not None:
                meta = self.decode(data)
                if meta["status"] in states.READY_STATES:
                    return meta
            # Read the key again at least every second: a PUBLISH lost to a reconnect is found.
            next_read = time.monotonic() + 1.0
            data = None
            while data is None and time.monotonic() < next_read:
                wait = next_read - time.monotonic()
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        raise TimeoutError(f"The operation timed out waiting for task {task_id}.")
                if not conn.can_read(timeout=wait):
                    continue
                reply = conn.read_response(push_request=True)
                if _is_reply(reply, b"message") and reply[1] == channel:
                    data = reply[2]
            if data is None:
                data = self._get(TASK_KEYPREFIX + task_id)

    # -- chords ----------------------------------------------------------------------------

    def _group_key(self, group_id: str, suffix: str = "") -> str:
        return f"{self.prefix}{GROUP_KEYPREFIX}{group_id}{suffix}"

    def chord_init(self, group_id: str, size: int) -> None:
        """Start counting a chord's header: as Celery 5.7's client, DEL .c and SET .s."""

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(self._group_key(group_id, ".c"))
            pipe.set(self._group_key(group_id, ".s"), size, ex=self.expires)
            pipe.execute()

        self._retrying(run)

    def chord_add(self, group_id: str, count: int = 1) -> None:
        """Tell a running chord that `count` more header tasks were added (INCR .t)."""
        self._retrying(self.client.incr, self._group_key(group_id, ".t"), count)

    def chord_part_done(
        self, group_id: str, task_id: str, group_index: int | None, state: str, result: Any
    ) -> list[tuple[str, str, Any]] | None:
        """Record one header task's outcome; the caller that completes the chord gets all.

        Works with Celery 5.7 workers on the same chord: same keys, a result counted once per
        (task id, group index), and a dispatch claim (``.c``) so one party runs the body.

        Returns:
            None, except for exactly one caller: the header results as ``(task_id, state,
            result)`` in group-index order (exceptions as Celery's dicts). That caller
            publishes the body, then calls `chord_complete` (if it dies first, the claim runs
            out after a few seconds and a redelivered header task can claim it again).
        """
        if isinstance(result, BaseException):
            result = exception_to_dict(result)
        entry = dumps([1, task_id, state, result], self.serializer)[0]
        token = uuid.uuid4().hex
        keys = [self._group_key(group_id, s) for s in (".j", ".t", ".s", ".d", "", ".c")]
        index = "+inf" if group_index is None else group_index
        args = [task_id, entry, "1" if self.chord_ordered else "0", index, self.expires or 0, self.claim_seconds, token]
        out = self._retrying(self._chord_part, keys, args)
        if not isinstance(out, list):
            return None
        self._claims[group_id] = token
        results = []
        for raw in out:
            _, tid, tstate, value = self.decode(raw)
            results.append((tid, tstate, value))
        return results

    def chord_complete(self, group_id: str) -> bool:
        """After publishing the body: drop the chord's data and mark it done (Celery 5.7's way)."""
        token = self._claims.pop(group_id, None)
        if token is None:
            return False
        keys = [self._group_key(group_id, s) for s in (".c", ".j", ".t", ".s", ".d")]
        return bool(self._retrying(self._chord_done, keys, [token]))

    def __repr__(self) -> str:
        return f"<RedisBackend {mask_url(self.url)}>"


def _is_reply(reply: Any, kind: bytes) -> bool:
    """Whether a RESP2 reply is a PUB/SUB one of this kind (message, subscribe, ...)."""
    return isinstance(reply, list) and len(reply) == 3 and reply[0] == kind

