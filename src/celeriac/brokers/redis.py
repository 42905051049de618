"""The Redis broker, in kombu's Redis layout, so Celery and celeriac can share one Redis.

Layout (celery-wire.md section 2; every key below is prefixed by the transport option
``global_keyprefix``):

- ``<queue>`` and ``<queue>\\x06\\x16<step>`` (steps 3, 6, 9): lists of JSON envelopes (body in
  base64), LPUSHed by publishers and popped from the right, so FIFO; priority 0 first.
- ``_kombu.binding.<exchange>`` (+ ``_kombu.binding_permanent.<exchange>``, kombu 5.7): sets of
  ``<routing_key>\\x06\\x16\\x06\\x16<queue>``, written by `declare`, read to publish to a named
  exchange. Fanout exchanges are PUB/SUB on ``/<db>.<exchange>[/<routing_key>]``.
- ``unacked`` hash (tag -> ``[envelope, exchange, routing_key]``) and ``unacked_index`` zset
  (tag -> delivery time): every message a consumer holds. Celery workers (and we, under the
  ``unacked_mutex``) push entries older than ``visibility_timeout`` back to their queue.

Speed: `RedisSubscription.get_many` pops up to N messages across the priority lists with one
Lua script that also records them in ``unacked``/``unacked_index`` atomically; only when the
lists are empty does it block in BRPOP (so an idle worker wakes at once), then sends the same
script to record that message and hands it over without waiting: the reply is read at the
subscription's next call, and everything it sends later runs after the record (one connection,
in order). The worker's acks ride along in the script call (`ack_and_get_many`); publishes
are one pipeline per batch. Bodies are only base64-decoded; the worker deserializes them when
the task runs.

Beyond Celery:

- Durable delayed delivery. ``<queue>\\x06\\x16delayed`` is a zset of envelopes scored by the
  time they are due. ``publish(..., not_before=t)`` and ``Subscription.defer`` put messages
  there (a defer removes the message from ``unacked`` in the same script), and every consumer
  moves due ones to the head of their list with a Lua script, at most about once a second. A
  far-off ETA thus never sits in ``unacked`` (where a Celery worker would restore it after the
  visibility timeout and run it twice) nor in worker memory.
- Fast recovery of a dead consumer's messages. Each subscription has an id; it registers in
  the zset ``_celeriac.consumers`` (id -> deadline, by the Redis clock), and records every tag it
  holds in the hash ``_celeriac.held.<id>`` (tag -> the list it came from). A small thread
  renews the deadline every ``heartbeat_ttl / 3`` seconds (transport option, default 30 s; 0
  turns this off) and also bumps the ``unacked_index`` score of the tags it holds, so neither
  Celery's nor our visibility-timeout restore takes the messages of a live consumer, however
  long its task runs. Any live consumer that finds an expired deadline puts that consumer's
  messages back at the head of their lists. Every give-back (restore, reject, defer, close)
  goes through one script that moves a message only if it removed the tag from ``unacked``
  itself, so two restorers (ours or Celery's WATCH/MULTI) never duplicate a message.

Modules: this one publishes and manages keys; `redis_consume` consumes (the subscriptions);
`redis_envelope` encodes and decodes the JSON envelope; `redis_lua` holds the scripts.

Connection loss: every command retries with backoff per ``broker_connection_retry`` and
``broker_connection_max_retries``, then raises `OperationalError` naming the masked URL. After
a reconnect a subscription gives back whatever a lost reply had popped for it.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..exceptions import ImproperlyConfigured, OperationalError
from ..ids import uuid4, uuid4_many
from ..redis_link import CONNECTION_ERRORS, KeptConnection, send_packed_and_read
from ..urls import mask_url, parse_url, split_urls
from . import redis_lua as lua
from .base import Broker, Envelope, Members, RetryPolicy, Route, SharedEnvelope
from .redis_consume import FanoutSubscription, RedisSubscription
from .redis_envelope import (
    PRIORITY_STEPS,
    SEP,
    _SharedEncoding,
    decode_envelope,
    encode_envelope,
    mark_redelivered,
)

__all__ = ["RedisBroker", "RedisSubscription", "FanoutSubscription", "redis_client", "decode_envelope",
           "encode_envelope", "SEP"]

logger = logging.getLogger(__name__)

#: Revoked task ids (celeriac): a sorted set scored by when each revoke expires.
REVOKED_KEY = "celeriac.revoked"


def redis_client(url: str, ssl: Any = None, options: Mapping[str, Any] | None = None) -> tuple[redis.Redis, int]:
    """Build a redis-py client from a kombu-style URL; return it and its db number.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS; query options
            such as ``ssl_cert_reqs=required``), ``redis+socket:///path[?virtual_host=db]``,
            ``unix:///path?db=N``, or ``sentinel://host:port[;sentinel://...]`` (with
            ``master_name`` in `options`).
        ssl: `broker_use_ssl` / `redis_backend_use_ssl`: a dict of ``ssl_*`` options, or True.
        options: Transport options: ``socket_timeout``, ``socket_connect_timeout``,
            ``socket_keepalive``, ``health_check_interval``, ``max_connections``,
            ``master_name``, ``sentinel_kwargs``.
    """
    options = options or {}
    parts = parse_url(url)
    query = dict(parts.query)
    common: dict[str, Any] = {
        "socket_timeout": options.get("socket_timeout"),
        "socket_connect_timeout": options.get("socket_connect_timeout", 5.0),
        "socket_keepalive": options.get("socket_keepalive", True),
        "health_check_interval": options.get("health_check_interval", 0),
        "max_connections": options.get("max_connections"),
        # Retries are ours (`RedisBroker._retry`): a silent re-run of a pop script would lose
        # the messages of the lost reply.
        "retry": Retry(NoBackoff(), 0),
        "username": parts.username,
        "password": parts.password or query.pop("password", None),
    }
    scheme = parts.scheme.lower()
    if scheme in ("redis+socket", "socket", "unix"):
        db = int(query.get("virtual_host") or query.get("db") or 0)
        return redis.Redis(unix_socket_path=parts.path, db=db, **common), db
    db = int((parts.path or "").strip("/") or query.get("virtual_host") or query.get("db") or 0)
    if ssl or scheme == "rediss":
        common["ssl"] = True
        settings = {**(ssl if isinstance(ssl, Mapping) else {}), **query}
        for name, value in settings.items():
            if name.startswith("ssl_"):
                common[name] = value
        reqs = common.get("ssl_cert_reqs")
        if isinstance(reqs, str):
            common["ssl_cert_reqs"] = reqs.lower().removeprefix("cert_")
        if common.get("ssl_cert_reqs") in ("none", 0):
            common.setdefault("ssl_check_hostname", False)
    if scheme == "sentinel":
        master = options.get("master_name")
        if not master:
            raise ImproperlyConfigured("sentinel:// needs broker_transport_options['master_name']")
        hosts = [parse_url(one) for one in split_urls(url)]
        sentinel = redis.sentinel.Sentinel(
            [(h.hostname or "localhost", h.port or 26379) for h in hosts],
            # Without our retry/timeouts redis-py retries each dead sentinel for seconds.
            sentinel_kwargs={
                "retry": common["retry"],
                "socket_connect_timeout": common["socket_connect_timeout"],
                "socket_timeout": common["socket_timeout"],
                **(options.get("sentinel_kwargs") or {}),
            },
            db=db,
            **common,
        )
        return sentinel.master_for(master), db
    if scheme not in ("redis", "rediss"):
        raise ImproperlyConfigured(f"Not a Redis URL: {mask_url(url)}")
    return redis.Redis(host=parts.hostname or "localhost", port=parts.port or 6379, db=db, **common), db


def _step(priority: Any) -> int:
    try:
        value = max(0, min(9, int(priority)))
    except (TypeError, ValueError):
        value = 0
    return 9 if value >= 9 else 6 if value >= 6 else 3 if value >= 3 else 0


#: Texts per LPUSH of `RedisBroker._push` (1 MB of ~1 KB texts; 250 is as fast, 4,000 slower).
_PUSH_CHUNK = 1000


_MULTI, _EXEC = b"*1\r\n$5\r\nMULTI\r\n", b"*1\r\n$4\r\nEXEC\r\n"


def _lpush_command(key: str, texts: Sequence[str]) -> bytes:
    """``LPUSH key *texts`` in the Redis protocol (RESP). Packed here: hiredis.pack_command
    takes ~1.7 us per 1 KB text and redis-py's pipeline more around it, this ~0.45 us (bench
    client.py enqueue --bulk, groups of 10,000)."""
    parts = [b"*%d\r\n$5\r\nLPUSH\r\n" % (len(texts) + 2)]
    for text in (key, *texts):
        data = text.encode()
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


def _topic_matches(pattern: str, key: str) -> bool:
    # AMQP topic: '*' is one word, '#' any number of words.
    regex = r"\.".join("[^.]+" if w == "*" else ".*" if w == "#" else re.escape(w) for w in pattern.split("."))
    return re.fullmatch(regex, key) is not None


class RedisBroker(Broker):
    """A broker on Redis in kombu's layout (see the module docstring).

    Args:
        url: A Redis URL (see `redis_client`).
        conf: Settings, read with Celery's names: ``broker_transport_options``
            (``global_keyprefix``, ``visibility_timeout``, ``heartbeat_ttl``,
            ``unacked_restore_interval``, socket options, sentinel ``master_name``),
            ``broker_use_ssl``, ``broker_connection_retry``, ``broker_connection_max_retries``.
    """

    # Celery workers sharing the queue could never see a delayed store: ETA messages go to
    # the normal queue, as Celery sends them, and celeriac workers defer far-off ones.
    delays_on_publish = False
    publishes_members = True

    def __init__(self, url: str, conf: Mapping[str, Any]) -> None:
        self.url = url
        self.masked_url = mask_url(url)
        options = conf.get("broker_transport_options") or {}
        self.client, self.db = redis_client(url, conf.get("broker_use_ssl"), options)
        self.prefix: str = options.get("global_keyprefix") or ""
        self.visibility_timeout = float(options.get("visibility_timeout") or 3600)
        self.heartbeat_ttl = float(options.get("heartbeat_ttl", 30) or 0)
        self.restore_interval = float(options.get("unacked_restore_interval") or 10)
        retry = conf.get("broker_connection_retry")
        self.retry = True if retry is None else bool(retry)
        self.max_retries = conf.get("broker_connection_max_retries", 100) or None
        self.unacked_key = self.prefix + "unacked"
        self.index_key = self.prefix + "unacked_index"
        self.mutex_key = self.prefix + "unacked_mutex"
        self.consumers_key = self.prefix + "_celeriac.consumers"
        self.exchange_types: dict[str, str] = {}
        self.expires: dict[str, int] = {}
        register = self.client.register_script
        self.fetch_script = register(lua.FETCH)
        self.restore_script = register(lua.RESTORE)
        self.tick_script = register(lua.TICK)
        self.heartbeat_script = register(lua.HEARTBEAT)
        self.forget_script = register(lua.FORGET)
        self.bind_expiring_script = register(lua.BIND_EXPIRING)
        self.unlock_script = register(lua.UNLOCK)
        self._link = KeptConnection(self.client)  # for single publishes (see `_command`)
        # Cut texts of SharedEnvelope templates, by (id(template), exchange, routing key).
        self._encodings: dict[tuple[int, str, str], tuple[Envelope, _SharedEncoding | None]] = {}

    # -- plumbing ---------------------------------------------------------------------------

    def _retry(self, fn: Callable[..., Any], *args: Any, policy: RetryPolicy | None = None, **kwargs: Any) -> Any:
        """Run `fn`, reconnecting while Redis is unreachable: as `policy` says (a client's
        publish), else with backoff as the ``broker_connection_*`` settings say."""
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except CONNECTION_ERRORS as exc:
                attempt += 1
                if policy is not None:
                    delay = policy.delay(attempt)
                elif not self.retry or (self.max_retries and attempt > self.max_retries):
                    delay = None
                else:
                    delay = min(0.1 * 2 ** (attempt - 1), 2.0)
                if delay is None:
                    raise OperationalError(f"Cannot reach Redis at {self.masked_url}: {exc}") from exc
                logger.warning("Redis at %s unreachable (%s); retry %d in %.1fs", self.masked_url, exc, attempt, delay)
                time.sleep(delay)

    def _command(self, *args: Any) -> Any:
        """Run one command on the broker's kept connection (a single `delay()` is ~40 us in all,
        a pool checkout ~10 us); a thread that finds it busy uses the pool. A connection that
        failed mid-command is dropped and the error raised, for `_retry`."""
        replies = self._link.run([args])
        return self.client.execute_command(*args) if replies is None else replies[0]

    def _pipe(self, commands: Sequence[tuple[Any, ...]], retry: RetryPolicy | None = None) -> list[Any]:
        """Run (method name, *args) commands in one pipeline, retried as a whole.

        Built afresh on each try: redis-py empties a pipeline whose execute failed.
        """

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for name, *args in commands:
                getattr(pipe, name)(*args)
            return pipe.execute()

        return self._retry(run, policy=retry) if commands else []

    def queue_key(self, queue: str, step: int = 0) -> str:
        """The key of a queue's list for a priority step (0, 3, 6, 9)."""
        return f"{self.prefix}{queue}{SEP}{step}" if step else self.prefix + queue

    def delayed_key(self, queue: str) -> str:
        """The key of a queue's zset of delayed messages."""
        return f"{self.prefix}{queue}{SEP}delayed"

    def fanout_channel(self, exchange: str, routing_key: str = "") -> str:
        """The PUB/SUB channel kombu uses for a fanout exchange."""
        channel = f"{self.prefix}/{self.db}.{exchange}"
        return f"{channel}/{routing_key}" if routing_key else channel

    # -- declaring --------------------------------------------------------------------------

    def declare(self, queues: Sequence[Any], *, retry: RetryPolicy | None = None) -> None:
        """Write each queue's bindings (`_kombu.binding.*`), as kombu 5.7 does."""
        for queue in queues:
            bindings = [(queue.exchange, queue.routing_key)] if queue.exchange is not None else []
            bindings += [(b.exchange, b.routing_key) for b in getattr(queue, "bindings", ()) or ()]
            expires = (getattr(queue, "queue_arguments", None) or {}).get("x-expires")
            if expires is not None:
                self.expires[queue.name] = int(expires)
            for exchange, routing_key in bindings:
                name = getattr(exchange, "name", exchange) or ""
                if not name:
                    continue
                self.exchange_types[name] = getattr(exchange, "type", None) or "direct"
                member = f"{routing_key or ''}{SEP}{SEP}{queue.name}"
                if expires is not None:
                    ttl = max(int(expires) * 2, 3600 * 1000)
                    keys = [f"{self.prefix}_kombu.binding.{name}", f"{self.prefix}_kombu.binding_deadlines"]
                    self._retry(self.bind_expiring_script, keys=keys, args=[member, name, ttl], policy=retry)
                else:
                    self._pipe([
                        ("sadd", f"{self.prefix}_kombu.binding.{name}", member),
                        ("sadd", f"{self.prefix}_kombu.binding_permanent.{name}", member),
                    ], retry)

    def bindings(self, exchange: str, retry: RetryPolicy | None = None) -> list[tuple[str, str]]:
        """(routing key, queue) pairs bound to an exchange."""
        members = self._retry(self.client.smembers, f"{self.prefix}_kombu.binding.{exchange}", policy=retry)
        out = []
        for member in members:
            parts = member.decode().split(SEP, 2)
            if len(parts) == 3:
                out.append((parts[0], parts[2]))
        return out

    def delete_queue(self, queue: str, exchange: str = "", routing_key: str = "") -> None:
        """Drop a queue's lists, delayed set and binding (e.g. a pidbox reply queue)."""
        commands: list[tuple[Any, ...]] = []
        if exchange:
            member = f"{routing_key}{SEP}{SEP}{queue}"
            commands.append(("srem", f"{self.prefix}_kombu.binding.{exchange}", member))
            commands.append(("srem", f"{self.prefix}_kombu.binding_permanent.{exchange}", member))
        keys = [self.queue_key(queue, s) for s in PRIORITY_STEPS]
        self._pipe([*commands, ("delete", *keys, self.delayed_key(queue))])

    # -- publishing -------------------------------------------------------------------------

    def _exchange_type(self, route: Route) -> str:
        if route.exchange_type != "direct":
            return route.exchange_type
        return self.exchange_types.get(route.exchange, "direct")

    def _targets(self, route: Route, tables: Mapping[str, list[tuple[str, str]]]) -> list[str]:
        """The queues a publish reaches: the anonymous exchange names the queue itself."""
        if not route.exchange:
            return [route.routing_key or route.queue]
        topic = self._exchange_type(route) == "topic"
        rk = route.routing_key
        found = [q for key, q in tables.get(route.exchange, ()) if (_topic_matches(key, rk) if topic else key == rk)]
        if not found and route.queue:
            found = [route.queue]  # declared destination, even if its binding was swept
        if not found:
            logger.warning("Message to exchange %r with key %r matched no queue; dropped", route.exchange, rk)
        return list(dict.fromkeys(found))

    def publish(self, envelope: Envelope, route: Route, *, not_before: float | None = None,
                retry: RetryPolicy | None = None) -> None:
        """Send one message (LPUSH, ZADD for `not_before` in the future, PUBLISH for fanout)."""
        if not route.exchange and not_before is None and (route.routing_key or route.queue) not in self.expires:
            # The common case, one round trip without a pipeline (bench: enqueue, single delay()).
            queue = route.routing_key or route.queue
            key = self.queue_key(queue, _step(envelope.properties.get("priority")))
            self._retry(self._command, "LPUSH", key, self._encode(envelope, "", queue), policy=retry)
            return
        self.publish_many([(envelope, route, not_before)], retry=retry)

    def publish_many(self, items: Sequence[tuple[Any, Route, float | None]], *,  # Envelope or Members
                     retry: RetryPolicy | None = None) -> None:
        """Send many messages in one pipeline (plus one to read the bindings they need).

        Consecutive messages to one list go in one LPUSH (which keeps their order; of at most
        `_PUSH_CHUNK` texts, sent one after the other, when the batch is only LPUSHes); the
        members of a group (`Members`, or `SharedEnvelope`s of one template) are encoded from
        one cut text.
        """
        if len(items) == 1 and type(items[0][0]) is Members:  # one task's delay(): no pipeline
            members, route, not_before = items[0]
            command = self._members_command(members, route, not_before)
            if command is not None:
                self._retry(self._command, *command, policy=retry)
                return
        if any(type(envelope) is Members for envelope, _, _ in items):
            items = self._encode_members(items)
        named = {r.exchange for _, r, _ in items if r.exchange and self._exchange_type(r) != "fanout"}
        tables: dict[str, list[tuple[str, str]]] = {name: self.bindings(name, retry) for name in named}
        now = time.time()
        commands: list[list[Any]] = []
        targets: dict[int, list[str]] = {}  # id(route) -> queues (the routes live in `items`)
        # A run of members of one template to one plain queue: (template, route, encoding, LPUSH).
        run: tuple[Any, Any, _SharedEncoding, list[Any]] | None = None
        for envelope, route, not_before in items:
            if type(envelope) is list:  # members' LPUSH, from `_encode_members`
                if commands and commands[-1][0] == "lpush" and commands[-1][1] == envelope[1]:
                    commands[-1].extend(envelope[2:])
                else:
                    commands.append(envelope)
                run = None
                continue
            if (run is not None and not_before is None and route is run[1] and type(envelope) is SharedEnvelope
                    and envelope.template is run[0] and commands[-1] is run[3]):
                run[3].append(run[2].encode(envelope, uuid4()))
                continue
            routing_key = route.routing_key or (route.queue if not route.exchange else "")
            raw = self._encode(envelope, route.exchange, routing_key, uuid4())
            if route.exchange and self._exchange_type(route) == "fanout":
                commands.append(["publish", self.fanout_channel(route.exchange, routing_key), raw])
                continue
            queues = targets.get(id(route))
            if queues is None:
                queues = targets[id(route)] = self._targets(route, tables)
            step = _step(envelope.properties.get("priority"))
            for queue in queues:
                if not_before is not None and not_before > now:
                    commands.append(["zadd", self.delayed_key(queue), {raw: not_before}])
                    continue
                key = self.queue_key(queue, step)
                if commands and commands[-1][0] == "lpush" and commands[-1][1] == key:
                    commands[-1].append(raw)
                else:
                    commands.append(["lpush", key, raw])
                if queue in self.expires:
                    for s in PRIORITY_STEPS:
                        commands.append(["pexpire", self.queue_key(queue, s), self.expires[queue]])
            run = None
            if (len(queues) == 1 and not_before is None and type(envelope) is SharedEnvelope
                    and queues[0] not in self.expires and commands and commands[-1][0] == "lpush"):
                # The next members of this template to this route: encoded and pushed alone.
                encoding = self._encoding(envelope.template, envelope.changed, route.exchange, routing_key)  # type: ignore[arg-type]
                if encoding is not None:
                    run = (envelope.template, route, encoding, commands[-1])
        if commands and all(command[0] == "lpush" for command in commands):
            self._retry(self._push, commands, policy=retry)
        else:
            self._pipe([tuple(command) for command in commands], retry)

    def _push(self, commands: Sequence[list[Any]]) -> None:
        """Run ``["lpush", key, *texts]`` commands on a pool connection, packed here rather than
        by redis-py's pipeline and hiredis (`_lpush_command`); raise the first error reply. A
        connection that failed midway is dropped: it reconnects on use.

        A command of many texts goes as LPUSHes of `_PUSH_CHUNK` each, sent one after the other
        and the replies read at the end: Redis reads one while the next is packed, and no 10 MB
        buffer is built (group of 10,000: ~8.6 -> ~7.2 us per member, bench client.py enqueue
        --bulk). Several LPUSHes go inside MULTI/EXEC (~5% slower): a connection lost before
        EXEC leaves nothing pushed, so `_retry`, which sends the whole again, sends no member
        twice (only a loss after EXEC ran, before its reply, could, as for any publish).
        """
        chunks = [(command[1], command[start:start + _PUSH_CHUNK])
                  for command in commands for start in range(2, len(command), _PUSH_CHUNK)]
        packed: Iterable[bytes] = (_lpush_command(key, texts) for key, texts in chunks)
        atomic = len(chunks) > 1  # all or none: a connection lost before EXEC pushed nothing
        if atomic:
            packed = itertools.chain((_MULTI,), packed, (_EXEC,))
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            out = send_packed_and_read(conn, packed, len(chunks) + 2 * atomic)
        finally:
            pool.release(conn)
        if atomic:
            for reply in out[-1]:  # EXEC's replies: an error in one did not stop the others
                if isinstance(reply, Exception):
                    raise reply

    def _encode_members(self, items: Sequence[tuple[Any, Route, float | None]]) -> list[tuple[Any, Route, float | None]]:
        """The items, with each `Members` as its LPUSH command (a list) where it has one, and
        as its envelopes where not."""
        out: list[tuple[Any, Route, float | None]] = []
        for envelope, route, not_before in items:
            command = self._members_command(envelope, route, not_before) if type(envelope) is Members else None
            if command is not None:
                out.append((command, route, not_before))
            elif type(envelope) is Members:
                out.extend((member, route, not_before) for member in envelope.envelopes())
            else:
                out.append((envelope, route, not_before))
        return out

    def _members_command(self, members: Members, route: Route, not_before: float | None) -> list[Any] | None:
        """The LPUSH of `members` to a plain queue, from their template's cut text (None when
        they go elsewhere or the template can't be cut)."""
        if not_before is not None or route.exchange:
            return None
        queue = route.routing_key or route.queue
        encoding = self._encoding(members.template, members.changed, "", queue) if queue not in self.expires else None
        if encoding is None:
            return None
        fill = encoding.fill
        return ["lpush", self.queue_key(queue, _step(members.template.properties.get("priority"))),
                *[fill(body, (*header_values, *property_values), tag)
                  for (body, header_values, property_values), tag
                  in zip(members.values, uuid4_many(len(members.values)), strict=True)]]

    def _encoding(self, template: Envelope, changed: tuple[tuple[str, ...], tuple[str, ...]],
                  exchange: str, routing_key: str) -> _SharedEncoding | None:
        """The cut text of a template's messages (None if it can't be cut).

        The cut texts of the last templates seen are kept (with their template, so an id is
        never taken for another's): a group, or a task's `delay()` calls, share one.
        """
        key = (id(template), exchange, routing_key)
        cached = self._encodings.get(key)
        if cached is None or cached[0] is not template:
            try:
                encoding: _SharedEncoding | None = _SharedEncoding(template, changed, exchange, routing_key)
            except ValueError:
                encoding = None
            if len(self._encodings) >= 64:
                self._encodings.clear()
            cached = self._encodings[key] = (template, encoding)
        return cached[1]

    def _encode(self, envelope: Envelope, exchange: str, routing_key: str, tag: str | None = None) -> str:
        """`encode_envelope`, from the template's cut text for a `SharedEnvelope`."""
        encoding = None
        if isinstance(envelope, SharedEnvelope) and envelope.template is not None:
            encoding = self._encoding(envelope.template, envelope.changed, exchange, routing_key)
        if encoding is None:
            return encode_envelope(envelope, exchange, routing_key, tag)
        return encoding.encode(envelope, tag or uuid4())

    def publish_fanout(self, exchange: str, envelope: Envelope, routing_key: str = "", *,
                       retry: RetryPolicy | None = None) -> None:
        """PUBLISH to a fanout exchange's channel (broadcast, remote control, events)."""
        raw = encode_envelope(envelope, exchange, routing_key)
        self._retry(self.client.publish, self.fanout_channel(exchange, routing_key), raw, policy=retry)

    # -- consuming --------------------------------------------------------------------------

    def subscribe(self, queues: Sequence[str], *, prefetch: int) -> RedisSubscription:
        """Start consuming from queues (names), holding at most `prefetch` (0: no limit)."""
        return RedisSubscription(self, list(queues), prefetch)

    def subscribe_fanout(self, exchange: str, queue: str | None = None,
                         queue_arguments: Mapping[str, Any] | None = None, *,
                         routing_key: str = "") -> FanoutSubscription:
        """Listen to a fanout exchange (PSUBSCRIBE; `#` in the binding key becomes `*`).

        PUB/SUB needs no queue: `queue` and `queue_arguments` are accepted and unused.
        """
        return FanoutSubscription(self, self.fanout_channel(exchange, routing_key.replace("#", "*")))

    def store_revoked(self, task_ids: Sequence[str], expires: float) -> None:
        """Keep revoked ids in a sorted set scored by expiry; drop the expired ones."""
        key = self.prefix + REVOKED_KEY
        self._pipe([("zadd", key, dict.fromkeys(task_ids, expires)),
                    ("zremrangebyscore", key, "-inf", time.time())])

    def load_revoked(self) -> list[str]:
        """Revoked ids not yet expired."""
        members = self._retry(self.client.zrangebyscore, self.prefix + REVOKED_KEY, time.time(), "+inf")
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    def purge(self, queue: str) -> int:
        """Delete a queue's ready messages (every priority list); delayed ones stay."""
        commands: list[tuple[Any, ...]] = []
        for step in PRIORITY_STEPS:
            commands += [("llen", self.queue_key(queue, step)), ("delete", self.queue_key(queue, step))]
        return sum(self._pipe(commands)[::2])

    def close(self) -> None:
        """Release connections."""
        self._link.close()
        self.client.close()

    # -- restoring (used by subscriptions) --------------------------------------------------

    def restore(self, moves: Sequence[tuple[str, str, str, str | bytes, float]], held_key: str = "") -> int:
        """Move messages out of `unacked` (see `redis_lua.RESTORE`); return how many this call moved."""
        total = 0
        for start in range(0, len(moves), 500):
            args = [part for move in moves[start:start + 500] for part in move]
            keys = [self.unacked_key, self.index_key, held_key or self.prefix + "_celeriac.none"]
            total += self._retry(self.restore_script, keys=keys, args=args)
        return total

    def _requeue_moves(self, tags: Sequence[str], values: Sequence[bytes | None], dests: Sequence[str | None]) -> list:
        """Moves that put unacked entries back at the head of a list, marked redelivered."""
        moves = []
        for tag, value, dest in zip(tags, values, dests, strict=True):
            if value is None:
                moves.append((tag, "r", "", "", 0))
                continue
            message, exchange, routing_key = json.loads(value)
            step = _step((message.get("properties") or {}).get("priority"))
            if dest:
                targets = [dest]
            else:
                route = Route(queue="", exchange=exchange, routing_key=routing_key)
                tables = {exchange: self.bindings(exchange)} if exchange else {}
                targets = [self.queue_key(q, step) for q in self._targets(route, tables)]
            # No queue found: leave it in `unacked` rather than lose it (kombu drops it).
            payload = mark_redelivered(message)
            moves += [(tag, "r", target, payload, 0) for target in targets]
        return moves

    def restore_visible(self, limit: int = 100) -> int:
        """Push back unacked messages older than the visibility timeout (as kombu does)."""
        token = uuid.uuid4().hex
        if not self._retry(self.client.set, self.mutex_key, token, nx=True, px=300_000):
            return 0
        try:
            ceiling = time.time() - self.visibility_timeout
            old = self._retry(self.client.zrange, self.index_key, ceiling, 0, desc=True, byscore=True, offset=0, num=limit)
            if not old:
                return 0
            tags = [t.decode() for t in old]
            values = self._retry(self.client.hmget, self.unacked_key, tags)
            return self.restore(self._requeue_moves(tags, values, [None] * len(tags)))
        finally:
            self._retry(self.unlock_script, keys=[self.mutex_key], args=[token])

    def restore_consumer(self, consumer_id: str) -> int:
        """Give back every message an expired consumer held; forget the consumer."""
        held_key = f"{self.prefix}_celeriac.held.{consumer_id}"
        held = self._retry(self.client.hgetall, held_key)
        # Newest first to the head, so the oldest is served first again (a small hash keeps
        # insertion order).
        tags = [t.decode() for t in reversed(held)]
        values = self._retry(self.client.hmget, self.unacked_key, tags) if tags else []
        moved = self.restore(self._requeue_moves(tags, values, [held[t.encode()].decode() for t in tags]), held_key)
        self._retry(self.forget_script, keys=[self.consumers_key, held_key], args=[consumer_id])
        if moved:
            logger.warning("Restored %d message(s) of expired consumer %s", moved, consumer_id)
        return moved
