"""The broker interface: brokers move envelopes and know nothing of tasks or settings.

A broker stores and hands out `Envelope`s (body bytes + headers + properties). Task logic
(protocol, routing, execution) lives elsewhere; a broker only needs a queue name, an
exchange and a routing key (`Route`), and an optional time before which a message must not
be delivered (`not_before`, the durable ETA).
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a publish is retried after connection errors, as kombu's `retry_over_time`.

    A broker given none retries as its ``broker_connection_*`` settings say (a worker's
    own traffic); the producer gives one for what clients send (`task_publish_retry_policy`).

    Attributes:
        max_retries: Retries after the first try (None: no end).
        interval_start: Seconds before the first retry; each next one waits `interval_step`
            more, at most `interval_max`.
    """

    max_retries: int | None = 3
    interval_start: float = 0.0
    interval_step: float = 0.2
    interval_max: float = 1.0

    def delay(self, attempt: int) -> float | None:
        """Seconds to wait before retry number `attempt` (1, 2, ...); None once spent."""
        if self.max_retries is not None and attempt > self.max_retries:
            return None
        return max(0.0, min(self.interval_start + self.interval_step * (attempt - 1), self.interval_max))


@dataclass(slots=True)
class Envelope:
    """One message as it travels: the body stays encoded until a task runs."""

    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any] = field(default_factory=dict)
    content_type: str = "application/json"
    content_encoding: str = "utf-8"


@dataclass(slots=True)
class SharedEnvelope(Envelope):
    """An envelope that equals `template` but for its body and the header and property keys
    named in `changed` (`(header keys, property keys)`), as the members of a group are.

    It is a complete envelope (any broker can treat it as one); a broker may use the promise
    to encode the common part once for a batch (Redis: `publish_many`).
    """

    template: Envelope | None = None
    changed: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())


@dataclass(slots=True)
class Members:
    """Many messages that equal `template` but for their bodies and the values of the header
    and property keys named in `changed`: the members of a group, given to `publish_many` as
    one item. A broker that sets `publishes_members` encodes them without building an
    envelope each; for the others the producer passes `envelopes()` instead.

    `values`: for each message, (body, header values, property values), the values in the
    order of `changed`; a list, or a collection that makes them as it is read (a group's
    members: `producer._MemberValues`), so read it once.
    """

    template: Envelope
    changed: tuple[tuple[str, ...], tuple[str, ...]]
    values: Collection[tuple[bytes, tuple[Any, ...], tuple[Any, ...]]]

    def envelopes(self) -> list[SharedEnvelope]:
        """Each message as a complete `SharedEnvelope`."""
        first, (header_keys, property_keys) = self.template, self.changed
        return [SharedEnvelope(body, {**first.headers, **dict(zip(header_keys, header_values, strict=True))},
                               {**first.properties, **dict(zip(property_keys, property_values, strict=True))},
                               first.content_type, first.content_encoding, first, self.changed)
                for body, header_values, property_values in self.values]


@dataclass(slots=True, frozen=True)
class Route:
    """Where a message goes: a queue, reached through an exchange with a routing key.

    `exchange == ""` is the default (anonymous) exchange: the message goes straight to the
    queue named by `routing_key`, as Celery publishes tasks for direct exchanges.
    """

    queue: str
    exchange: str = ""
    routing_key: str = ""
    exchange_type: str = "direct"


@dataclass(slots=True)
class Delivery:
    """A message handed to a consumer, to be acked or rejected exactly once."""

    envelope: Envelope
    queue: str
    tag: Any
    redelivered: bool = False


class Subscription(abc.ABC):
    """A consumer's pull-style view of some queues. Used from one thread."""

    @abc.abstractmethod
    def get_many(self, limit: int, timeout: float) -> list[Delivery]:
        """Return up to `limit` deliveries, waiting at most `timeout` seconds for the first."""

    @abc.abstractmethod
    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge deliveries: they are gone for good."""

    def ack(self, delivery: Delivery) -> None:
        self.ack_many([delivery])

    def ack_and_get_many(self, acks: Sequence[Delivery], limit: int, timeout: float, *,
                         ahead: int = 0) -> list[Delivery]:
        """`ack_many(acks)`, then `get_many(limit, timeout)`; a broker that can do both in
        one round trip (Redis) overrides this.

        `ahead`: where the broker can (Redis), once deliveries are in hand, also ask for up to
        this many more without waiting for them: the next call returns them first, so the
        worker runs one batch while the broker serves the next. They are held (prefetched)
        from the moment they are asked for, and count in `in_flight` until they arrive.
        """
        if acks:
            self.ack_many(acks)
        return self.get_many(limit, timeout)

    @property
    def in_flight(self) -> int:
        """Deliveries asked for with `ahead` and not yet returned (at most)."""
        return 0

    @abc.abstractmethod
    def reject(self, delivery: Delivery, *, requeue: bool) -> None:
        """Drop a delivery, or give it back to its queue to be delivered again."""

    @abc.abstractmethod
    def defer(self, delivery: Delivery, not_before: float) -> None:
        """Give a delivery back to be delivered again no earlier than `not_before` (epoch s).

        Used for far-off ETAs: the broker keeps them durably instead of worker memory.
        """

    def defer_many(self, items: Sequence[tuple[Delivery, float]]) -> None:
        """`defer` for many (delivery, not_before) pairs; brokers override it to batch."""
        for delivery, not_before in items:
            self.defer(delivery, not_before)

    @abc.abstractmethod
    def close(self) -> None:
        """Stop consuming; deliveries not acked are given back to their queues."""

    def set_prefetch(self, prefetch: int) -> None:
        """Hold at most `prefetch` unacked deliveries from now on (the pool was resized).

        The default updates a `prefetch` attribute where the subscription keeps one.
        """
        if hasattr(self, "prefetch"):
            self.prefetch = prefetch

    def set_queues(self, queues: Sequence[str]) -> None:
        """Consume from these queues from now on (`add_consumer`/`cancel_consumer`).

        Deliveries already handed out stay valid and are settled as usual.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot change its queues while consuming")


class FanoutSubscription(abc.ABC):
    """Messages broadcast on an exchange (remote control, `Broadcast` queues), no acks.

    Like PUB/SUB: a subscriber gets what is published while it is subscribed, nothing older.
    """

    @abc.abstractmethod
    def get(self, timeout: float) -> Envelope | None:
        """The next message, or None after `timeout` seconds."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop listening."""


class Broker(abc.ABC):
    """A message transport. Thread-safe for publishing; one Subscription per consumer."""

    url: str
    #: Whether `publish(not_before=...)` should be used for ETAs. A broker shared with Celery
    #: workers that cannot see a delayed store (Redis) takes ETA messages in the normal queue,
    #: as Celery sends them, and celeriac workers defer far-off ones with `Subscription.defer`.
    delays_on_publish: bool = True
    #: Whether `publish_many` takes `Members` items (a group's members in one item).
    publishes_members: bool = False

    @abc.abstractmethod
    def declare(self, queues: Sequence[Any], *, retry: RetryPolicy | None = None) -> None:
        """Make sure the queues (celeriac.entities.Queue) exist with their bindings.
        `retry`: how to retry after connection errors (default: the broker's own settings)."""

    @abc.abstractmethod
    def publish(self, envelope: Envelope, route: Route, *, not_before: float | None = None,
                retry: RetryPolicy | None = None) -> None:
        """Send one message. `not_before` (epoch seconds) delays delivery durably; `retry`
        as for `declare`."""

    def publish_many(
        self, items: Sequence[tuple[Envelope, Route, float | None]], *, retry: RetryPolicy | None = None
    ) -> None:
        """Send many messages; brokers override this to use one round trip."""
        for envelope, route, not_before in items:
            self.publish(envelope, route, not_before=not_before, retry=retry)

    @abc.abstractmethod
    def subscribe(self, queues: Sequence[str], *, prefetch: int) -> Subscription:
        """Start consuming from queues (names), holding at most `prefetch` unacked."""

    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Delete every ready message of a queue; return how many."""

    # -- broadcast and remote control (Celery's pidbox layout, celery-wire.md 2.6, 2.7, 4.6) --

    def declare_exchange(self, exchange: Any, *, retry: RetryPolicy | None = None) -> None:  # noqa: B027 - a hook
        """Make sure an exchange (celeriac.entities.Exchange) exists before publishing to it
        (events); only RabbitMQ has exchanges of its own to declare."""

    def publish_fanout(self, exchange: str, envelope: Envelope, routing_key: str = "", *,
                       retry: RetryPolicy | None = None) -> None:
        """Send a message to every current subscriber of a fanout exchange; none is stored."""
        raise NotImplementedError(f"{type(self).__name__} has no broadcast")

    def subscribe_fanout(self, exchange: str, queue: str | None = None,
                         queue_arguments: Mapping[str, Any] | None = None, *,
                         routing_key: str = "") -> FanoutSubscription:
        """Listen to a fanout exchange.

        Args:
            exchange: The exchange, e.g. ``celery.pidbox``.
            queue: The listener's own queue where the broker needs one (AMQP:
                ``<node>.celery.pidbox``, exclusive, auto-delete); others ignore it.
            queue_arguments: Its declaration arguments (``x-expires``, ``x-message-ttl``).
            routing_key: Binding key; ``""`` gets what is published with an empty routing
                key (Redis appends a non-empty key to the PUB/SUB channel name).
        """
        raise NotImplementedError(f"{type(self).__name__} has no broadcast")

    def subscribe_queue(self, queue: Any, *, prefetch: int = 0, no_ack: bool = False) -> Subscription:
        """Declare `queue` (a celeriac.entities.Queue, bindings and arguments) and consume it.

        Used for the reply queue of remote control (``<oid>.reply.celery.pidbox``).
        """
        self.declare([queue])
        return self.subscribe([queue.name], prefetch=prefetch)

    def delete_queue(self, queue: str, exchange: str = "", routing_key: str = "") -> None:
        """Drop a queue, its messages, and its binding to `exchange` with `routing_key`."""
        self.purge(queue)

    # -- revoked task ids, kept with a time to live (beyond Celery: celery#4886) ------------

    def store_revoked(self, task_ids: Sequence[str], expires: float) -> None:  # noqa: B027 - optional
        """Remember revoked task ids until `expires` (epoch seconds), for every worker."""

    def load_revoked(self) -> list[str]:
        """The revoked task ids not yet expired."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
