"""The consumer side of the RabbitMQ broker: `AMQPSubscription`, made by `AMQPBroker.subscribe`.

Each subscription has its own connection (with ``broker_heartbeat``), basic_qos(prefetch) and
manual acks; the connection plumbing and declarations it uses are in `celeriac.brokers.amqp`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

import amqp
from amqp import spec
from amqp.exceptions import ChannelError

from .. import _state
from ..entities import Queue
from ..exceptions import OperationalError
from .amqp import (
    CONNECTION_ERRORS,
    AMQPBroker,
    close_connection,
    declare_queue,
    envelope_from_delivery,
)
from .amqp_frames import decode_properties, parse_deliver, read_frames
from .base import Delivery, Envelope, FanoutSubscription, Route, Subscription

__all__ = ["AMQPSubscription"]

# The broker's logger, as before the consumer moved to its own module.
logger = logging.getLogger("celeriac.brokers.amqp")


class AMQPSubscription(Subscription, FanoutSubscription):
    """A consumer of some queues on its own connection. Used from one thread.

    RabbitMQ pushes up to `prefetch` unacked messages (basic_qos); they wait in a buffer for
    `get_many`. A delivery's tag is (connection generation, delivery tag): after a reconnect the
    old tags are stale, and RabbitMQ redelivers those messages by itself. With a heartbeat, a
    small thread keeps sending heartbeats while the consumer thread is busy elsewhere.
    """

    def __init__(self, broker: AMQPBroker, queues: list[str], prefetch: int, *, no_ack: bool = False) -> None:
        self.broker = broker
        self.queues = queues
        self.prefetch = max(0, min(int(prefetch or 0), 65535))  # basic_qos takes a short
        self.no_ack = no_ack
        self.connection: amqp.Connection | None = None
        self.channel: Any = None
        self.generation = 0
        self.buffer: deque[Delivery] = deque()
        self.unacked: set[int] = set()
        self._consumers: dict[str, str] = {}
        self._closed = threading.Event()
        self._last_tick = time.monotonic()
        self._pid = _state.pid
        broker.retrying(self._connect, "subscribing")
        self._beat: threading.Thread | None = None
        if broker.heartbeat > 0:
            self._beat = threading.Thread(target=self._beat_loop, name="celeriac-amqp-heartbeat", daemon=True)
            self._beat.start()

    # -- connection -------------------------------------------------------------------------

    def _connect(self) -> None:
        connection = self.broker.connect(heartbeat=self.broker.heartbeat)
        # New generation first: deliveries arrive while later basic.consume calls wait.
        self.generation += 1
        self.unacked.clear()
        self.buffer.clear()
        self._consumers = {f"celeriac.{self.generation}.{i}": name for i, name in enumerate(self.queues)}
        try:
            channel = connection.channel()
            known = [self.broker.queues[name] for name in self.queues if name in self.broker.queues]
            for queue in known:  # again after a restart: auto-delete queues are gone
                declare_queue(channel, queue)
            if self.prefetch:
                channel.basic_qos(0, self.prefetch, self._qos_global(connection, known))
            self.connection, self.channel = connection, channel
            for tag, name in self._consumers.items():
                self._consume(tag, name)
        except BaseException as exc:
            close_connection(connection, polite=False)
            self.connection = self.channel = None
            if isinstance(exc, ChannelError):
                raise OperationalError(f"Cannot consume {self.queues} at {self.broker.masked_url}: {exc}") from exc
            raise
        self._last_tick = time.monotonic()

    def _consume(self, tag: str, name: str) -> None:
        known = self.broker.queues.get(name)
        arguments = (known.consumer_arguments if known is not None else None) or {}
        self.channel.basic_consume(name, consumer_tag=tag, callback=self._on_message,
                                   no_ack=self.no_ack, arguments=arguments)

    def set_prefetch(self, prefetch: int) -> None:
        """Change how many unacked messages RabbitMQ pushes (basic_qos), e.g. on pool_grow.

        The basic.qos is sent without waiting for its qos-ok: RabbitMQ applies it in order,
        and waiting would make py-amqp read (slowly, one frame at a time) every delivery
        already on the way; the qos-ok is read and dropped with them by the next fetch. A
        refusal closes the channel, which the next fetch sees (and reconnects).
        """
        self.prefetch = max(0, min(int(prefetch or 0), 65535))
        if self.channel is not None and self.connection is not None:
            known = [self.broker.queues[name] for name in self.queues if name in self.broker.queues]
            try:
                self.channel.send_method(spec.Basic.Qos, "lBb",
                                         (0, self.prefetch, self._qos_global(self.connection, known)))
            except CONNECTION_ERRORS as exc:
                self._lost(exc)  # the next get_many reconnects with the new prefetch

    def set_queues(self, queues: Sequence[str]) -> None:
        """Consume from these queues from now on (basic.consume / basic.cancel)."""
        wanted = list(dict.fromkeys(queues))
        if self.channel is not None:
            try:
                for tag, name in list(self._consumers.items()):
                    if name not in wanted:
                        self.channel.basic_cancel(tag)
                        del self._consumers[tag]
                for name in wanted:
                    if name not in self._consumers.values():
                        if name in self.broker.queues:
                            declare_queue(self.channel, self.broker.queues[name])
                        tag = f"celeriac.{self.generation}.{uuid.uuid4().hex[:8]}"
                        self._consumers[tag] = name
                        self._consume(tag, name)
            except ChannelError as exc:
                self._lost(exc)
                raise OperationalError(f"Cannot consume {wanted} at {self.broker.masked_url}: {exc}") from exc
            except CONNECTION_ERRORS as exc:
                self._lost(exc)  # the next get_many reconnects with the new list
        self.queues = wanted

    @staticmethod
    def _qos_global(connection: amqp.Connection, queues: list[Queue]) -> bool:
        # As kombu/Celery: RabbitMQ 3.3-3.x applies a "global" prefetch per channel, which is
        # what a worker means; quorum queues do not support it, and 4.x dropped it.
        if any(q.queue_arguments.get("x-queue-type") == "quorum" for q in queues):
            return False
        try:
            major, minor = (int(p) for p in str(connection.server_properties.get("version")).split(".")[:2])
        except ValueError:
            return False
        return (3, 3) <= (major, minor) < (4, 0)

    def _lost(self, exc: BaseException) -> None:
        logger.warning("Lost the connection to RabbitMQ at %s: %s; reconnecting",
                       self.broker.masked_url, exc or type(exc).__name__)
        if self.connection is not None:
            close_connection(self.connection, polite=False)
        self.connection = self.channel = None
        self.buffer.clear()  # unacked: RabbitMQ redelivers them
        self.unacked.clear()

    def _on_message(self, message: amqp.Message) -> None:
        """A delivery py-amqp assembled (frames split across reads, or during its own waits)."""
        info = message.delivery_info
        queue = self._consumers.get(info.get("consumer_tag", ""), str(info.get("routing_key", "")))
        self._add(queue, dict(message.properties), message.body, str(info.get("exchange", "")),
                  str(info.get("routing_key", "")), bool(info.get("redelivered")), info["delivery_tag"])

    def _deliver(self, args: bytes, header: bytes, body: bytes) -> bool:
        """A basic.deliver whose frames `read_frames` found whole: decoded here, not by py-amqp."""
        consumer_tag, tag, redelivered, exchange, routing_key = parse_deliver(args)
        queue = self._consumers.get(consumer_tag)
        if queue is None:
            return False  # not ours (cancelled meanwhile): py-amqp's way, which rejects it
        self._add(queue, decode_properties(header, 12), body, exchange, routing_key, redelivered, tag)
        return True

    def _add(self, queue: str, props: dict[str, Any], body: bytes | str, exchange: str, routing_key: str,
             redelivered: bool, tag: int) -> None:
        if exchange.startswith("celery_delayed_"):
            # Out of the delay levels: name the queue itself, so a retry routed by
            # `request.delivery_info` goes straight back to it, not into a delay level.
            exchange, routing_key = "", queue
        envelope = envelope_from_delivery(props, body, exchange, routing_key, redelivered, tag)
        if not self.no_ack:
            self.unacked.add(tag)
        self.buffer.append(Delivery(envelope, queue, (self.generation, tag), redelivered))

    # -- heartbeats -------------------------------------------------------------------------

    def _beat_loop(self) -> None:
        # While the consumer thread is away (a full prefetch, a long task), send heartbeats
        # from here: py-amqp serializes frame writes with a lock.
        while not self._closed.wait(self.broker.heartbeat / 4):
            connection = self.connection
            interval = getattr(connection, "heartbeat", 0) or 0
            if not interval or time.monotonic() - self._last_tick < interval / 2:
                continue
            try:
                connection.send_heartbeat()  # type: ignore[union-attr]
            except Exception as exc:  # the consumer thread will notice and reconnect
                logger.debug("Heartbeat not sent: %r", exc)

    # -- fetching ---------------------------------------------------------------------------

    def _pump(self, timeout: float) -> None:
        """Read frames for up to `timeout` seconds, then whatever else has arrived; tick."""
        assert self.connection is not None
        read_frames(self.connection, timeout, self._deliver)
        # After reading, so heartbeats that waited in the socket count as received.
        self.connection.heartbeat_tick(rate=2)
        self._last_tick = time.monotonic()

    def get_many(self, limit: int, timeout: float) -> list[Delivery]:
        """Return up to `limit` deliveries, waiting up to `timeout` s for the first one.

        Reconnects (with backoff) after a lost connection; raises `OperationalError` when
        the retries are used up.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.connection is None:
                    self.broker.retrying(self._connect, "reconnecting the consumer")
                self._pump(0)
                step = (self.connection.heartbeat or 4.0) / 4  # type: ignore[union-attr]
                while not self.buffer and (remaining := deadline - time.monotonic()) > 0:
                    self._pump(min(remaining, step))
                break
            except (*CONNECTION_ERRORS, ChannelError) as exc:  # ChannelError: queue deleted
                self._lost(exc)
        return [self.buffer.popleft() for _ in range(min(limit, len(self.buffer)))]

    def get(self, timeout: float) -> Envelope | None:
        """The next message's envelope (acked), or None after `timeout` seconds."""
        deliveries = self.get_many(1, timeout)
        if not deliveries:
            return None
        self.ack_many(deliveries)
        return deliveries[0].envelope

    # -- settling ---------------------------------------------------------------------------

    def _current(self, delivery: Delivery) -> int | None:
        generation, tag = delivery.tag
        if self.no_ack or generation != self.generation or self.channel is None or tag not in self.unacked:
            return None  # stale (RabbitMQ redelivers it), already settled, or no acks at all
        return int(tag)

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """One `multiple` basic_ack for the run of tags below any still held, single acks after."""
        tags = sorted(t for t in map(self._current, deliveries) if t is not None)
        if not tags:
            return
        held = self.unacked.difference(tags)
        below = min(held) if held else math.inf
        run = [t for t in tags if t < below]
        try:
            if run:
                self.channel.basic_ack(run[-1], multiple=len(run) > 1)
            for tag in tags[len(run):]:
                self.channel.basic_ack(tag)
        except (*CONNECTION_ERRORS, ChannelError) as exc:
            self._lost(exc)  # RabbitMQ redelivers what was not acked
            return
        self.unacked.difference_update(tags)

    def reject(self, delivery: Delivery, *, requeue: bool) -> None:
        """basic_reject: drop the message, or give it back to its queue."""
        tag = self._current(delivery)
        if tag is None:
            return
        try:
            self.channel.basic_reject(tag, requeue=requeue)
        except (*CONNECTION_ERRORS, ChannelError) as exc:
            self._lost(exc)
            return
        self.unacked.discard(tag)

    def defer(self, delivery: Delivery, not_before: float) -> None:
        """Publish a copy through the delay levels to the same queue (confirmed), then ack."""
        envelope = delivery.envelope
        properties = {k: v for k, v in envelope.properties.items() if k != "delivery_info"}
        copy = Envelope(envelope.body, envelope.headers, properties, envelope.content_type, envelope.content_encoding)
        self.broker.publish(copy, Route(queue=delivery.queue, exchange="", routing_key=delivery.queue),
                            not_before=not_before)
        self.ack_many([delivery])

    def close(self) -> None:
        """Close the connection: RabbitMQ gives every unacked delivery back to its queue."""
        self._closed.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        connection, self.connection, self.channel = self.connection, None, None
        self.buffer.clear()
        self.unacked.clear()
        if connection is not None and self._pid == _state.pid:  # not a forked copy's
            close_connection(connection)

