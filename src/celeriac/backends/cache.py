"""Results in memcached, in the layout of Celery's cache backend.

``result_backend = "cache+memcached://127.0.0.1:11211/"`` (several servers: separate them
with ``;``; ``cache+memcache://`` and ``cache+pymemcache://`` are the same). The client is
pymemcache, as in Celery 5.7.

- ``celery-task-meta-<id>``: the task's meta, serialized with `result_serializer`, stored
  with `result_expires` as its time to live (0 = no expiry). Memcached reads a TTL over
  30 days as a Unix time; longer expiries are converted so they still mean "from now".
- ``celery-taskset-meta-<gid>``: a saved GroupResult.
- ``chord-unlock-<gid>``: Celery's chord counter (INCR). celeriac keeps each header result
  under ``celeriac-chord-part-<gid>-<slot>`` and claims the body with an ADD, so exactly one
  caller gets the results (see `CacheBackend.chord_part_done`).

Memcached evicts under memory pressure and forgets everything on restart: a result can be
lost before it expires. Use it where that is acceptable.

Settings: `cache_backend_options` (pymemcache client options, e.g. ``timeout``;
``retry_attempts`` and ``retry_delay`` wrap the client in pymemcache's RetryingClient),
`result_expires`, `result_chord_expires`, `result_chord_join_timeout`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..exceptions import ChordError, ImproperlyConfigured, OperationalError
from ..serialization import dumps
from ..urls import mask_url
from .base import Backend, _expires_seconds, exception_to_dict

if TYPE_CHECKING:
    from ..app import Celery

__all__ = ["CacheBackend", "memcache_ttl"]

logger = logging.getLogger("celeriac.backends.cache")

#: Memcached reads an expiry above this many seconds as an absolute Unix time.
MAX_RELATIVE_TTL = 30 * 24 * 60 * 60

CHORD_KEYPREFIX = "chord-unlock-"  # Celery's chord counter
_PART = "celeriac-chord-part-"
_SEEN = "celeriac-chord-seen-"
_SIZE = "celeriac-chord-size-"
_CLAIM = "celeriac-chord-claim-"

# Failed writes must raise, and a dead server must not block a worker forever.
_CLIENT_DEFAULTS = {"default_noreply": False, "connect_timeout": 5.0, "timeout": 5.0}


def memcache_ttl(seconds: int | None) -> int:
    """The expire argument memcached needs for a time to live in seconds (0: never)."""
    if not seconds:
        return 0
    if seconds > MAX_RELATIVE_TTL:
        return int(time.time()) + seconds
    return seconds


def parse_servers(url: str) -> list[tuple[str, int]]:
    """``cache+memcached://h1:11211;h2:11212/`` -> ``[("h1", 11211), ("h2", 11212)]``."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    servers = []
    for item in rest.strip("/").split(";"):
        item = item.strip().strip("/")
        if not item:
            continue
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "11211")
        servers.append((host.strip("[]") or "127.0.0.1", int(port or 11211)))
    return servers or [("127.0.0.1", 11211)]


def _make_client(servers: list[tuple[str, int]], options: dict[str, Any]) -> Any:
    try:
        from pymemcache.client.base import PooledClient
        from pymemcache.client.hash import HashClient
        from pymemcache.client.retrying import RetryingClient
    except ImportError as exc:
        raise ImproperlyConfigured(
            "The memcached result backend needs pymemcache: pip install pymemcache") from exc
    options = {**_CLIENT_DEFAULTS, **options}
    for unsupported in ("behaviors", "binary"):  # pylibmc-only options, ignored as Celery does
        options.pop(unsupported, None)
    attempts = options.pop("retry_attempts", None)
    retry_delay = options.pop("retry_delay", None)
    # Pooled clients: one worker shares the backend between threads.
    if len(servers) > 1:
        client: Any = HashClient(servers, use_pooling=True, **options)
    else:
        client = PooledClient(servers[0], **options)
    if attempts is not None:
        retry: dict[str, Any] = {"attempts": attempts}
        if retry_delay is not None:
            retry["retry_delay"] = retry_delay
        client = RetryingClient(client, **retry)
    return client


class CacheBackend(Backend):
    """Results in memcached, readable by Celery's ``cache+memcached://`` backend.

    Args:
        app: The app (see the module docstring for the settings used).
        url: ``cache+memcached://host:port/`` (``;`` between several servers); default
            the `cache_backend` setting.
    """

    def __init__(self, app: Celery, url: str | None = None) -> None:
        conf = app.conf
        url = url or conf.get("cache_backend") or "cache+memcached://127.0.0.1:11211/"
        super().__init__(app, url)
        self.servers = parse_servers(url)
        self.client = _make_client(self.servers, dict(conf.get("cache_backend_options") or {}))
        chord_expires = _expires_seconds(conf.get("result_chord_expires"))
        self.chord_expires = chord_expires if chord_expires is not None else self.expires
        self.claim_seconds = max(5, int((conf.get("result_chord_join_timeout") or 3.0) * 2))
        self._claims: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<CacheBackend {mask_url(self.url)}>"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except (OSError, EOFError) as exc:  # refused, reset, timed out
            raise OperationalError(f"Cannot reach memcached at {mask_url(self.url)}: {exc}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("pymemcache"):
                raise OperationalError(f"memcached error at {mask_url(self.url)}: {exc}") from exc
            raise

    # -- primitives ------------------------------------------------------------------------

    def _get(self, key: str) -> bytes | None:
        value = self._call("get", key)
        return None if value is None else bytes(value)

    def _mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        found = self._call("get_many", list(keys))
        return [found.get(key) for key in keys]

    def _set(self, key: str, value: bytes, ttl: int | None) -> None:
        self._call("set", key, value, expire=memcache_ttl(ttl))

    def _set_many(self, items: Sequence[tuple[str, bytes]], ttl: int | None) -> None:
        if items:
            failed = self._call("set_many", dict(items), expire=memcache_ttl(ttl))
            if failed:
                raise OperationalError(f"memcached did not store {len(failed)} results")

    def _delete(self, key: str) -> None:
        self._call("delete", key)

    def close(self) -> None:
        self.client.close()

    # -- chords ----------------------------------------------------------------------------

    def _counter(self, group_id: str) -> str:
        return CHORD_KEYPREFIX + group_id

    def chord_init(self, group_id: str, size: int) -> None:
        """Start counting a chord's header of `size` tasks (Celery sets its counter to 0 too)."""
        ttl = memcache_ttl(self.chord_expires)
        self._call("delete", _CLAIM + group_id)
        self._call("set_many", {self._counter(group_id): b"0", _SIZE + group_id: str(size).encode()},
                   expire=ttl)

    def chord_add(self, group_id: str, count: int = 1) -> None:
        """Tell a running chord that `count` more header tasks were added."""
        self._call("incr", _SIZE + group_id, count)

    def _chord_size(self, group_id: str) -> int | None:
        raw = self._call("get", _SIZE + group_id)
        if raw is not None:
            return int(raw)
        # A chord started by a Celery client: its size is the saved group's length.
        saved = self.get_group(group_id)
        if saved is not None:
            return len(saved[1] or ())
        return None

    def chord_part_done(
        self, group_id: str, task_id: str, group_index: int | None, state: str, result: Any
    ) -> list[tuple[str, str, Any]] | None:
        """Record one header task's outcome; the caller that completes the chord gets all.

        Each result is ADDed to its own slot (the group index; completion order when there
        is none), so a redelivered header task is counted once; the INCR of Celery's counter
        that reaches the size, then an ADD of the claim key, picks one caller.

        Returns:
            None, except for exactly one caller: the header results as ``(task_id, state,
            result)`` in group-index order. That caller sends the body, then calls
            `chord_complete`; if it dies first, its claim runs out after a few seconds and a
            redelivered header task claims the chord again.

        Raises:
            ChordError: memcached lost part of the chord's state (evicted or restarted).
        """
        if isinstance(result, BaseException):
            result = exception_to_dict(result)
        ttl = memcache_ttl(self.chord_expires)
        entry = dumps([task_id, state, result], self.serializer)[0]
        if group_index is not None:
            fresh = self._call("add", f"{_PART}{group_id}-{group_index}", entry, expire=ttl)
            count = self._call("incr", self._counter(group_id), 1) if fresh else None
        else:
            fresh = self._call("add", f"{_SEEN}{group_id}-{task_id}", b"1", expire=ttl)
            count = self._call("incr", self._counter(group_id), 1) if fresh else None
            if count is not None:
                self._call("set", f"{_PART}{group_id}-{int(count) - 1}", entry, expire=ttl)
        if not fresh:
            # Seen before: a redelivery, which may have to finish what a dead worker claimed.
            count = self._call("get", self._counter(group_id))
        if count is None:
            return None  # unknown chord, or already completed
        size = self._chord_size(group_id)
        if size is None or int(count) < size:
            return None
        token = uuid.uuid4().hex
        if not self._call("add", _CLAIM + group_id, token.encode(), expire=self.claim_seconds):
            return None
        slots = [f"{_PART}{group_id}-{index}" for index in range(size)]
        found = self._call("get_many", slots)
        if len(found) != size:
            self._call("delete", _CLAIM + group_id)
            raise ChordError(
                f"Chord {group_id}: memcached lost {size - len(found)} of {size} header results")
        self._claims[group_id] = token
        return [tuple(self.decode(found[slot])) for slot in slots]  # type: ignore[misc]

    def chord_complete(self, group_id: str) -> bool:
        """After sending the body: mark the chord done and drop its keys, if still ours."""
        token = self._claims.pop(group_id, None)
        if token is None:
            return False
        claim = _CLAIM + group_id
        if self._call("get", claim) != token.encode():
            return False
        self._call("set", claim, b"done", expire=300)
        size = self._chord_size(group_id) or 0
        keys = [self._counter(group_id), _SIZE + group_id]
        keys += [f"{_PART}{group_id}-{index}" for index in range(size)]
        self._call("delete_many", keys)
        return True
