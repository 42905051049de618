"""The RabbitMQ (AMQP 0-9-1) broker, in Celery's layout, on py-amqp (the client kombu uses).

Tasks go to the default exchange ``""`` with the queue name as routing key (or to a named
exchange with its routing key); queues, exchanges and bindings are declared with exactly the
flags and arguments Celery declares (celery-wire.md section 4). Properties and AMQP headers
are the envelope's; bodies travel raw. Beyond Celery (details in docs/notes-amqp.md):

- Publisher confirms are on by default (transport option ``confirm_publish``); `publish_many`
  publishes everything, then waits once; a nack or timeout raises `OperationalError`.
- Durable delayed delivery to any queue through Celery 5.5's "native delayed delivery" levels
  (``celery_delayed_0..27``, queue TTL 2**level s, dead-lettering level to level into
  ``celery_delayed_delivery``); each destination queue is bound there with
  ``*.``x28 ``<queue>``, so direct queues (``celery``) get delayed messages too.
- Reconnection with backoff for publishing and consuming, over a ``;`` failover list; stale
  delivery tags after a reconnect are ignored (RabbitMQ redelivers those messages).

The consumer side, `AMQPSubscription`, is in `celeriac.brokers.amqp_consumer`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import amqp
from amqp.exceptions import AccessRefused, ChannelError, NotAllowed, NotFound, PreconditionFailed

from .. import _state
from ..entities import Exchange, Queue
from ..exceptions import ImproperlyConfigured, OperationalError
from ..urls import mask_url, parse_url, split_urls
from .base import Broker, Envelope, RetryPolicy, Route

if TYPE_CHECKING:
    from .amqp_consumer import AMQPSubscription

__all__ = ["AMQPBroker", "AMQPSubscription", "connection_params", "delay_binding_key", "delay_routing_key",
           "envelope_from_message", "message_from_envelope"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DELAY_LEVELS = 28
#: Revoked task ids, one message per revoke with a TTL until it expires (beyond Celery).
REVOKED_QUEUE = "celeriac.revoked"
DELAY_DELIVERY_EXCHANGE = "celery_delayed_delivery"
MAX_DELAY = 2**DELAY_LEVELS - 1

# The connection is gone: reconnect. TimeoutError (socket.timeout) is an OSError too, so every
# `drain_events` catches it first.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (amqp.exceptions.ConnectionError, OSError)
# At connect time, no retry fixes these (bad credentials, unknown vhost).
FATAL_CONNECT_ERRORS: tuple[type[BaseException], ...] = (AccessRefused, NotAllowed)

_AMQP_PROPERTIES = ("delivery_mode", "priority", "correlation_id", "reply_to", "expiration", "message_id",
                    "timestamp", "type", "user_id", "app_id", "cluster_id")


def is_tls_setup_error(exc: BaseException) -> bool:
    """A TLS failure that no retry fixes: a certificate not trusted or refused, a TLS
    protocol mismatch, a missing certificate file. Not an EOF (a server going down)."""
    if isinstance(exc, FileNotFoundError | IsADirectoryError | ssl.SSLCertVerificationError):
        return True
    return isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError
                                                             | ssl.SSLSyscallError)


def delay_level_name(level: int) -> str:
    """The exchange and queue of one delay level."""
    return f"celery_delayed_{level}"


def delay_routing_key(seconds: int, queue: str) -> str:
    """Routing key through the delay levels of `seconds` (28 binary digits) to `queue`."""
    return ".".join(f"{min(max(seconds, 0), MAX_DELAY):0{DELAY_LEVELS}b}") + "." + queue


def delay_binding_key(queue: str) -> str:
    """Binds `queue` to ``celery_delayed_delivery``: exactly 28 words, then the queue name."""
    return "*." * DELAY_LEVELS + queue


def connection_params(url: str, conf: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for `amqp.Connection` from one URL, following kombu's rules.

    The path without its first '/' is the vhost (``amqp://h//`` and ``amqp://h`` are '/').
    ``amqps://`` or ``broker_use_ssl`` turn TLS on (port 5671); ``broker_use_ssl`` may be a
    dict of `ssl` options, where ``server_hostname: None`` means the URL's host. 'localhost'
    becomes 127.0.0.1, as in kombu.
    """
    parts = parse_url(url)
    if parts.scheme.lower() not in ("amqp", "amqps", "pyamqp"):
        raise ImproperlyConfigured(f"Not an AMQP URL: {mask_url(url)}")
    ssl: Any = conf.get("broker_use_ssl") or parts.scheme.lower() == "amqps"
    host = parts.hostname or conf.get("broker_host") or "localhost"
    host = "127.0.0.1" if host == "localhost" else host
    if isinstance(ssl, Mapping):
        ssl = dict(ssl)
        if ssl.get("server_hostname", host) is None:
            ssl["server_hostname"] = host
    port = parts.port or conf.get("broker_port") or (5671 if ssl else 5672)
    return {
        "host": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "userid": parts.username or conf.get("broker_user") or "guest",
        "password": parts.password or conf.get("broker_password") or "guest",
        "virtual_host": parts.path or conf.get("broker_vhost") or "/",
        "ssl": ssl,
        "connect_timeout": conf.get("broker_connection_timeout") or 4.0,
        "login_method": conf.get("broker_login_method") or "PLAIN",
        "client_properties": {"product": "celeriac"},
    }


def message_from_envelope(envelope: Envelope, *, strip_expiration: bool = False) -> amqp.Message:
    """The AMQP message for an envelope: AMQP properties only, headers, raw body."""
    props = {k: v for k in _AMQP_PROPERTIES if (v := envelope.properties.get(k)) not in (None, "")}
    props.setdefault("delivery_mode", 2)
    if strip_expiration:  # a TTL would cut the first delay level short; `expires` still holds
        props.pop("expiration", None)
    body = envelope.body.encode(envelope.content_encoding) if isinstance(envelope.body, str) else envelope.body
    return amqp.Message(body, content_type=envelope.content_type, content_encoding=envelope.content_encoding,
                        application_headers=envelope.headers, **props)


def envelope_from_message(message: amqp.Message) -> Envelope:
    """The envelope of a received message; its `delivery_info` goes into the properties."""
    info = message.delivery_info or {}
    return envelope_from_delivery(dict(message.properties), message.body, info.get("exchange", ""),
                                  info.get("routing_key", ""), bool(info.get("redelivered")),
                                  info.get("delivery_tag"))


def envelope_from_delivery(props: dict[str, Any], body: bytes | str, exchange: str, routing_key: str,
                           redelivered: bool, delivery_tag: int | None) -> Envelope:
    """The envelope of a delivery from its decoded properties (a dict we may change) and body."""
    headers = props.pop("application_headers", None) or {}
    content_type = props.pop("content_type", None) or "application/json"
    content_encoding = props.pop("content_encoding", None) or "utf-8"
    props["delivery_info"] = {"exchange": exchange, "routing_key": routing_key,
                              "redelivered": redelivered, "delivery_tag": delivery_tag}
    if not isinstance(body, bytes):
        body = bytes(body, content_encoding)
    return Envelope(body, headers, props, content_type, content_encoding)


def close_connection(connection: Any, polite: bool = True) -> None:
    """Close a connection: politely within 2 s (close, close-ok), else just its socket."""
    if polite:
        try:
            connection.sock.settimeout(2.0)  # close() waits for close-ok with no timeout
            connection.close()
            return
        except Exception:  # dead or half-open: drop the socket below
            pass
    try:
        connection.collect()
    except Exception:  # nothing more to release
        pass


class _Link:
    """One publishing connection and its channel, with publisher-confirm bookkeeping."""

    def __init__(self, connection: amqp.Connection, confirm: bool) -> None:
        self.connection = connection
        self.confirm = confirm
        self.pid = _state.pid
        self.channel: Any = None
        self.open_channel()

    def open_channel(self) -> None:
        """A fresh channel (after a channel error): confirm mode and counters start over."""
        if self.channel is not None:
            try:
                self.channel.close()
            except Exception:  # gone with the error that brought us here
                pass
        self.channel = self.connection.channel()
        # Confirms number publishes from 1 per channel and ack "all up to N" (floor) or one.
        self.seq = self.floor = 0
        self.singles: set[int] = set()
        self.nacks: list[int] = []
        if self.confirm:
            self.channel.confirm_select()
            self.channel.events["basic_ack"].add(self._on_ack)
            self.channel.events["basic_nack"].add(self._on_nack)

    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.floor = max(self.floor, tag)
        else:
            self.singles.add(tag)
        while self.floor + 1 in self.singles:  # fold singles in: unwaited sends pile up nothing
            self.floor += 1
            self.singles.discard(self.floor)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._on_ack(tag, multiple)
        self.nacks.append(tag)

    def drain_pending(self) -> None:
        """Read what the server sent meanwhile: raises if it closed the channel or connection.

        Without this, a publish after a broker restart could vanish into a dead socket.
        """
        while True:
            try:
                self.connection.drain_events(timeout=0)
            except TimeoutError:
                return

    def publish(self, message: amqp.Message, exchange: str, routing_key: str) -> int:
        self.channel.basic_publish(message, exchange, routing_key)
        self.seq += 1
        return self.seq

    def wait_confirms(self, first: int, timeout: float, where: str) -> None:
        """Wait until publishes `first`..`seq` are confirmed; raise on a nack or timeout."""
        deadline = time.monotonic() + timeout
        pending, last = first, self.seq
        while True:
            while pending <= last and (pending <= self.floor or pending in self.singles):
                pending += 1
            if pending > last:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OperationalError(f"RabbitMQ at {where} did not confirm a publish within {timeout}s")
            try:
                self.connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        nacked, self.nacks = any(tag >= first for tag in self.nacks), []
        if nacked:
            raise OperationalError(f"RabbitMQ at {where} refused (nacked) a published message")

    def close(self, polite: bool = True) -> None:
        if self.pid == _state.pid:  # never the socket of the process we forked from
            close_connection(self.connection, polite)


class AMQPBroker(Broker):
    """A broker on RabbitMQ (see the module docstring). Thread-safe for publishing.

    Args:
        url: ``amqp://user:pass@host:port/vhost`` (also ``pyamqp://``, ``amqps://``), or a
            ``;``-separated failover list of them.
        conf: Settings, with Celery's names: ``broker_heartbeat`` (consumer connections),
            ``broker_use_ssl``, ``broker_connection_timeout``, ``broker_connection_retry``,
            ``broker_connection_max_retries``, ``broker_failover_strategy`` ('round-robin'
            or 'shuffle'), ``broker_pool_limit``, ``broker_login_method``,
            ``broker_native_delayed_delivery_queue_type``, ``broker_transport_options``
            (``confirm_publish``, ``confirm_timeout``, ``interval_start``,
            ``interval_step``, ``interval_max``).
    """

    def __init__(self, url: str, conf: Mapping[str, Any]) -> None:
        self.url = url
        self.masked_url = mask_url(url)
        self.urls = split_urls(url)
        self.params = [connection_params(one, conf) for one in self.urls]
        self.failover_strategy = conf.get("broker_failover_strategy") or "round-robin"
        if self.failover_strategy not in ("round-robin", "shuffle"):
            raise ImproperlyConfigured(f"broker_failover_strategy={self.failover_strategy!r}: "
                                       "use 'round-robin' or 'shuffle'")
        options = conf.get("broker_transport_options") or {}
        self.confirm_publish = bool(options.get("confirm_publish", True))
        self.confirm_timeout = float(options.get("confirm_timeout", 30.0))
        self.heartbeat = float(conf.get("broker_heartbeat") or 0)
        retry = conf.get("broker_connection_retry")
        #: How the worker's own traffic retries (`broker_connection_*`, kombu's interval names
        #: in the transport options); a client's publish brings its own policy.
        self.connection_retry = RetryPolicy(
            max_retries=(conf.get("broker_connection_max_retries", 100) or None) if retry is None or retry else 0,
            interval_start=float(options.get("interval_start", 0.1)),
            interval_step=float(options.get("interval_step", 0.5)),
            interval_max=float(options.get("interval_max", 2.0)))
        self.pool_limit = int(conf.get("broker_pool_limit") or 10)
        self.delay_queue_type = conf.get("broker_native_delayed_delivery_queue_type") or "quorum"
        self.revoked_queue = REVOKED_QUEUE
        #: Queues declared through this broker: subscriptions declare them again on (re)connect.
        self.queues: dict[str, Queue] = {}
        self._url_index = 0
        self._idle: list[_Link] = []
        self._lock = threading.Lock()
        self._pid = _state.pid
        self._delay_ready = False

    def __repr__(self) -> str:
        return f"<AMQPBroker {self.masked_url}>"

    # -- connections ------------------------------------------------------------------------

    def connect(self, heartbeat: float = 0) -> amqp.Connection:
        """Open a connection, trying each URL of the failover list once, in turn."""
        order = list(range(len(self.params)))
        if self.failover_strategy == "shuffle":
            random.shuffle(order)
        else:  # round-robin: start from the URL that worked last
            order = order[self._url_index:] + order[:self._url_index]
        error: BaseException | None = None
        for index in order:
            connection = amqp.Connection(heartbeat=heartbeat, **self.params[index])
            try:
                connection.connect()
            except FATAL_CONNECT_ERRORS as exc:
                raise OperationalError(f"RabbitMQ at {mask_url(self.urls[index])} refused us: {exc}") from exc
            except CONNECTION_ERRORS as exc:
                if self.params[index]["ssl"] and is_tls_setup_error(exc):
                    raise OperationalError(f"TLS to RabbitMQ at {mask_url(self.urls[index])} failed: {exc} "
                                           "(check broker_use_ssl: ca_certs, certfile, keyfile)") from exc
                error = exc
                continue
            self._url_index = index
            return connection
        assert error is not None
        raise error

    def retrying(self, fn: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
        """Call `fn` until it gets through, with backoff after connection errors: as `policy`
        says (a client's publish), else as the ``broker_connection_*`` settings say.

        Raises:
            OperationalError: retries are off or used up; it names the masked URL.
        """
        attempt = 0
        while True:
            try:
                return fn()
            except CONNECTION_ERRORS as exc:
                attempt += 1
                delay = (policy or self.connection_retry).delay(attempt)
                if delay is None:
                    raise OperationalError(f"Cannot reach RabbitMQ at {self.masked_url} ({what}): {exc}") from exc
                logger.warning("RabbitMQ at %s unreachable while %s (%s); retry %d in %.1fs",
                               self.masked_url, what, exc or type(exc).__name__, attempt, delay)
                time.sleep(delay)

    def _acquire(self) -> _Link:
        with self._lock:
            if self._pid != _state.pid:  # forked: the parent's sockets are not ours
                self._idle, self._pid = [], _state.pid
            if self._idle:
                return self._idle.pop()
        connection = self.connect()
        try:
            return _Link(connection, self.confirm_publish)
        except BaseException:
            close_connection(connection, polite=False)
            raise

    def _release(self, link: _Link) -> None:
        with self._lock:
            if link.pid == self._pid and len(self._idle) < self.pool_limit:
                self._idle.append(link)
                return
        link.close()

    def _with_link(self, fn: Callable[[_Link], T], what: str, retry: RetryPolicy | None = None) -> T:
        """Run `fn` on a pooled link; after a lost connection, all of it again on a new one.

        A channel error (the server closed the channel, e.g. after an earlier unconfirmed send
        to a missing exchange) opens a new channel and runs `fn` once more.
        """

        def attempt() -> T:
            link = self._acquire()
            for last_try in (False, True):
                try:
                    link.drain_pending()
                    result = fn(link)
                except CONNECTION_ERRORS:
                    link.close(polite=False)
                    self.close(polite=False)  # the idle links are most likely dead too
                    self._delay_ready = False
                    raise
                except ChannelError as exc:
                    try:
                        link.open_channel()
                    except CONNECTION_ERRORS:
                        link.close(polite=False)
                        raise
                    if last_try:
                        self._release(link)
                        raise OperationalError(f"RabbitMQ at {self.masked_url} refused {what}: {exc}") from exc
                    continue
                except BaseException:
                    link.close()
                    raise
                self._release(link)
                return result
            raise AssertionError("unreachable")

        return self.retrying(attempt, what, retry)

    # -- declaring --------------------------------------------------------------------------

    def declare(self, queues: Sequence[Any], *, retry: RetryPolicy | None = None) -> None:
        """Declare queues, their exchanges and bindings, exactly as kombu declares them.

        Exclusive queues belong to one connection: the subscription consuming them declares
        them. Quorum queues on topic/fanout exchanges also get the bindings Celery's worker
        makes for native delayed delivery.
        """
        wanted = [q for q in queues if not q.no_declare]
        self.queues.update((q.name, q) for q in wanted)
        shared = [q for q in wanted if not q.exclusive]

        def run(link: _Link) -> None:
            for queue in shared:
                declare_queue(link.channel, queue)
            for queue in shared:
                if queue.queue_arguments.get("x-queue-type") == "quorum":
                    self._declare_delay_levels(link)
                    _bind_celery_delayed(link.channel, queue)

        if shared:
            self._with_link(run, "declaring queues", retry)

    def declare_exchange(self, exchange: Exchange, *, retry: RetryPolicy | None = None) -> None:
        """Declare one exchange (events, remote control)."""
        self._with_link(lambda link: declare_exchange(link.channel, exchange), f"declaring {exchange}", retry)

    def _declare_delay_levels(self, link: _Link) -> None:
        """Declare the 28 delay levels as Celery 5.5+ does (same names, types, arguments)."""
        if self._delay_ready:
            return
        channel = link.channel
        binding = "1.#"
        for level in range(DELAY_LEVELS - 1, -1, -1):
            name = delay_level_name(level)
            channel.exchange_declare(name, "topic", durable=True, auto_delete=False)
            arguments: dict[str, Any] = {
                "x-queue-type": self.delay_queue_type,
                "x-overflow": "reject-publish",
                "x-message-ttl": 2**level * 1000,
                "x-dead-letter-exchange": delay_level_name(level - 1) if level else DELAY_DELIVERY_EXCHANGE,
            }
            if self.delay_queue_type == "quorum":
                arguments["x-dead-letter-strategy"] = "at-least-once"
            try:
                channel.queue_declare(name, durable=True, auto_delete=False, arguments=arguments)
            except PreconditionFailed as exc:  # another queue type: it delays all the same
                logger.warning("Using the existing delay queue %s: %s", name, exc)
                link.open_channel()
                channel = link.channel
            channel.queue_bind(name, name, binding)
            binding = "*." + binding
        binding = "0.#"
        for level in range(DELAY_LEVELS - 1, 0, -1):
            channel.exchange_bind(delay_level_name(level - 1), delay_level_name(level), binding)
            binding = "*." + binding
        channel.exchange_declare(DELAY_DELIVERY_EXCHANGE, "topic", durable=True, auto_delete=False)
        channel.exchange_bind(DELAY_DELIVERY_EXCHANGE, delay_level_name(0), binding)
        self._delay_ready = True

    # -- publishing -------------------------------------------------------------------------

    def publish(self, envelope: Envelope, route: Route, *, not_before: float | None = None,
                retry: RetryPolicy | None = None) -> None:
        """Send one message (confirmed unless ``confirm_publish`` is off)."""
        self.publish_many([(envelope, route, not_before)], retry=retry)

    def publish_many(self, items: Sequence[tuple[Envelope, Route, float | None]], *,
                     retry: RetryPolicy | None = None) -> None:
        """Publish every message, then wait once for all their confirms.

        A message due more than half a second from now goes through the delay levels to its
        queue (`route.queue`, or the routing key on the default exchange). Without one queue
        to go to (a fanout route), it is sent at once and the worker holds it.
        """
        now = time.time()
        batch: list[tuple[amqp.Message, str, str, str | None]] = []
        for envelope, route, not_before in items:
            target = route.routing_key if not route.exchange else route.queue
            wait = not_before - now if not_before is not None else 0.0
            if wait > 0.5 and target and route.exchange_type != "fanout":
                key = delay_routing_key(math.ceil(wait), target)
                batch.append((message_from_envelope(envelope, strip_expiration=True),
                              delay_level_name(DELAY_LEVELS - 1), key, target))
            else:
                batch.append((message_from_envelope(envelope), route.exchange, route.routing_key, None))

        def run(link: _Link) -> None:
            # Bound on every delayed batch, not cached: a queue deleted and declared again
            # elsewhere loses its binding, and its delayed messages would vanish.
            for target in {t for *_, t in batch if t is not None}:
                self._declare_delay_levels(link)
                link.channel.queue_bind(target, DELAY_DELIVERY_EXCHANGE, delay_binding_key(target))
            first = link.seq + 1
            for message, exchange, key, _ in batch:
                link.publish(message, exchange, key)
            if link.confirm:
                link.wait_confirms(first, self.confirm_timeout, self.masked_url)

        if batch:
            self._with_link(run, "publishing", retry)

    def send(self, envelope: Envelope, exchange: str, routing_key: str, *, confirm: bool = False,
             retry: RetryPolicy | None = None) -> None:
        """Publish one message to an exchange (results, events, control replies).

        Unconfirmed by default: then a send to a missing exchange is dropped silently.
        """

        def run(link: _Link) -> None:
            first = link.publish(message_from_envelope(envelope), exchange, routing_key)
            if confirm and link.confirm:
                link.wait_confirms(first, self.confirm_timeout, self.masked_url)

        self._with_link(run, f"sending to {exchange!r}", retry)

    def publish_fanout(self, exchange: str, envelope: Envelope, routing_key: str = "", *,
                       retry: RetryPolicy | None = None) -> None:
        """Publish to a fanout exchange (broadcast, remote control); nobody listening is fine."""
        try:
            self.send(envelope, exchange, routing_key, confirm=True, retry=retry)
        except OperationalError as exc:
            if not isinstance(exc.__cause__, NotFound):
                raise
            logger.debug("No exchange %r (nobody ever listened): message dropped", exchange)

    # -- consuming --------------------------------------------------------------------------

    def subscribe(self, queues: Sequence[str], *, prefetch: int) -> AMQPSubscription:
        """Consume queues (names) with basic_qos(prefetch) and manual acks."""
        from .amqp_consumer import AMQPSubscription

        return AMQPSubscription(self, list(queues), prefetch)

    def subscribe_queue(self, queue: Queue, *, prefetch: int = 0, no_ack: bool = False) -> AMQPSubscription:
        """Declare `queue` on a new consumer connection (exclusive queues too) and consume it."""
        self.queues[queue.name] = queue
        from .amqp_consumer import AMQPSubscription

        return AMQPSubscription(self, [queue.name], prefetch, no_ack=no_ack)

    def subscribe_fanout(
        self,
        exchange: str,
        queue: str | None = None,
        queue_arguments: Mapping[str, Any] | None = None,
        *,
        routing_key: str = "",
        exchange_type: str = "fanout",
        exchange_durable: bool = False,
        exclusive: bool = True,
    ) -> AMQPSubscription:
        """Bind an own queue to an exchange and consume it without acks (Celery's pidbox).

        The defaults make a ``<node>.celery.pidbox`` queue: not durable, auto-delete,
        exclusive, on a non-durable fanout exchange. For ``<oid>.reply.celery.pidbox`` pass
        ``exchange_type='direct'`` and ``routing_key=<oid>``. Read it with ``get(timeout)``.
        """
        entity = Queue(queue or f"{uuid.uuid4()}.{exchange}",
                       Exchange(exchange, exchange_type, durable=exchange_durable, auto_delete=False),
                       routing_key, durable=False, auto_delete=True, exclusive=exclusive,
                       queue_arguments=queue_arguments)
        return self.subscribe_queue(entity, no_ack=True)

    # -- housekeeping -----------------------------------------------------------------------

    def purge(self, queue: str) -> int:
        """Delete a queue's ready messages; return how many (0 when there is no such queue)."""

        def run(link: _Link) -> int:
            try:
                return int(link.channel.queue_purge(queue) or 0)
            except NotFound:
                link.open_channel()
                return 0

        return self._with_link(run, f"purging {queue}")

    def delete_queue(self, queue: str, exchange: str = "", routing_key: str = "") -> None:
        """Delete a queue and its messages; its bindings go with it (a missing queue is fine)."""
        self._with_link(lambda link: link.channel.queue_delete(queue), f"deleting {queue}")
        self.queues.pop(queue, None)

    def store_revoked(self, task_ids: Sequence[str], expires: float) -> None:
        """Keep revoked ids for workers that start later: a message with a TTL until `expires`."""
        ttl = max(1, int((expires - time.time()) * 1000))
        body = json.dumps({"ids": list(task_ids), "expires": expires}).encode()
        envelope = Envelope(body, {}, {"delivery_mode": 2, "expiration": str(ttl)})

        def run(link: _Link) -> None:
            link.channel.queue_declare(self.revoked_queue, durable=True, auto_delete=False)
            first = link.publish(message_from_envelope(envelope), "", self.revoked_queue)
            if link.confirm:
                link.wait_confirms(first, self.confirm_timeout, self.masked_url)

        self._with_link(run, "storing revoked ids")

    def load_revoked(self) -> list[str]:
        """The revoked ids not yet expired: read every message, then give them all back.

        Two workers reading at the same moment may each miss what the other holds for those
        milliseconds; revokes sent later reach running workers by broadcast anyway.
        """

        def run(link: _Link) -> list[str]:
            channel = link.channel
            channel.queue_declare(self.revoked_queue, durable=True, auto_delete=False)
            ids: list[str] = []
            for _ in range(100_000):
                message = channel.basic_get(self.revoked_queue)
                if message is None:
                    break
                entry = json.loads(message.body)
                if entry.get("expires", 0) > time.time():
                    ids += entry.get("ids", [])
            channel.basic_recover(requeue=True)
            return ids

        return self._with_link(run, "loading revoked ids")

    def close(self, polite: bool = True) -> None:
        """Close the pooled publishing connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for link in idle:
            link.close(polite)


def declare_exchange(channel: Any, exchange: Exchange) -> None:
    """exchange.declare with kombu's flags; the default exchange is never declared."""
    if exchange.name and not exchange.no_declare:
        channel.exchange_declare(exchange.name, exchange.type, passive=exchange.passive, durable=exchange.durable,
                                 auto_delete=exchange.auto_delete, arguments=exchange.arguments or {})


def _bindings(queue: Queue) -> list[tuple[Exchange, str, dict[str, Any] | None]]:
    found = [(queue.exchange, queue.routing_key, queue.binding_arguments)] if queue.exchange else []
    return found + [(b.exchange, b.routing_key, b.arguments) for b in queue.bindings if b.exchange is not None]


def declare_queue(channel: Any, queue: Queue) -> None:
    """Declare a queue, its exchanges and bindings, as kombu's `Queue.declare` does."""
    for exchange, _key, _args in _bindings(queue):
        declare_exchange(channel, exchange)
    channel.queue_declare(queue.name, durable=queue.durable, exclusive=queue.exclusive,
                          auto_delete=queue.auto_delete, arguments=queue.queue_arguments or {})
    for exchange, key, args in _bindings(queue):
        if exchange.name:  # nothing binds to the default exchange
            channel.queue_bind(queue.name, exchange.name, key or "", arguments=args or {})


def _bind_celery_delayed(channel: Any, queue: Queue) -> None:
    """Bindings Celery's worker makes so native delayed delivery reaches a quorum queue."""
    for exchange, key, _args in _bindings(queue):
        if exchange.name and exchange.type != "direct":
            key = key if key.startswith("#") else f"#.{key}"
            channel.exchange_bind(exchange.name, DELAY_DELIVERY_EXCHANGE, key)
            channel.queue_bind(queue.name, exchange.name, key)


def __getattr__(name: str) -> Any:
    # AMQPSubscription moved to amqp_consumer, which imports this module: loaded on first use
    # (not at the top, which would be a cycle), so `from .amqp import AMQPSubscription` works.
    if name == "AMQPSubscription":
        from .amqp_consumer import AMQPSubscription

        return AMQPSubscription
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
