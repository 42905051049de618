"""Exchange, Queue, binding and Broadcast: what a user declares in `task_queues`.

These replace `from kombu import Exchange, Queue` one for one. They are plain descriptions
(no channel, no I/O): brokers read them to declare queues, and the router reads them to
decide where a task goes. Defaults and the computed `queue_arguments` match kombu 5.x, so a
queue declared by celeriac is the same queue Celery declares (RabbitMQ refuses to redeclare
a queue with different arguments).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Binding", "Broadcast", "DELIVERY_MODES", "Exchange", "Queue", "binding"]

#: kombu's names for AMQP delivery modes.
DELIVERY_MODES = {"transient": 1, "persistent": 2}

# Keywords kombu accepts but that mean nothing without a kombu channel: accepted, ignored.
_IGNORED_KOMBU_KWARGS = frozenset({"channel", "on_declared"})


def _check_kwargs(cls_name: str, kwargs: Mapping[str, Any]) -> None:
    # kombu silently drops unknown keywords; a typo there declares the wrong queue, so we
    # refuse them instead.
    unknown = sorted(set(kwargs) - _IGNORED_KOMBU_KWARGS)
    if unknown:
        raise TypeError(f"{cls_name}() got unexpected keyword argument(s): {', '.join(unknown)}")


def _flag(value: Any, default: bool) -> bool:
    # kombu treats an explicit None as "use the default" (Queue.from_dict relies on it).
    return default if value is None else bool(value)


def _seconds_to_ms(value: float) -> int:
    return int(float(value) * 1000.0)


def _text(value: str) -> str:
    # repr() without its quotes: escapes control characters like kombu's reprs do.
    return repr(value)[1:-1]


class Exchange:
    """An AMQP exchange: a name and a type (direct, topic, fanout, headers).

    Args:
        name: Exchange name; `""` is the broker's default (anonymous) exchange.
        type: `"direct"` (default), `"topic"`, `"fanout"` or `"headers"`.
        durable: Survive a broker restart.
        auto_delete: Delete the exchange when its last queue is unbound.
        delivery_mode: Default for messages sent through it: 1/`"transient"` or
            2/`"persistent"`; None leaves it to the sender.
        arguments: Extra declaration arguments.
        passive: Only check that the exchange exists when declaring.
        no_declare: Never declare this exchange.
    """

    def __init__(
        self,
        name: str | None = "",
        type: str | None = "direct",  # noqa: A002 - kombu's keyword
        *,
        durable: bool | None = True,
        auto_delete: bool | None = False,
        delivery_mode: int | str | None = None,
        arguments: Mapping[str, Any] | None = None,
        passive: bool | None = False,
        no_declare: bool | None = False,
        **kwargs: Any,
    ) -> None:
        _check_kwargs("Exchange", kwargs)
        self.name: str = name or ""
        self.type: str = type or "direct"
        self.durable = _flag(durable, True)
        self.auto_delete = _flag(auto_delete, False)
        if isinstance(delivery_mode, str):
            delivery_mode = DELIVERY_MODES[delivery_mode]
        self.delivery_mode: int | None = delivery_mode or None
        self.arguments: dict[str, Any] | None = dict(arguments) if arguments else None
        self.passive = _flag(passive, False)
        self.no_declare = _flag(no_declare, False)

    def binding(self, routing_key: str = "", arguments: Mapping[str, Any] | None = None) -> Binding:
        """Return a binding of this exchange with `routing_key`, for `Queue(bindings=...)`."""
        return Binding(self, routing_key, arguments)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Exchange):
            return NotImplemented
        return (
            self.name == other.name
            and self.type == other.type
            and self.arguments == other.arguments
            and self.durable == other.durable
            and self.auto_delete == other.auto_delete
            and self.delivery_mode == other.delivery_mode
        )

    def __hash__(self) -> int:
        return hash(f"E|{self.name}")

    def __str__(self) -> str:
        return f"Exchange {_text(self.name) or repr('')}({self.type})"

    def __repr__(self) -> str:
        return f"<{self}>"


class Binding:
    """One binding of a queue to an exchange with a routing key (kombu's `binding`).

    Args:
        exchange: The exchange to bind to.
        routing_key: The binding key.
        arguments: Binding arguments (used by headers exchanges).
        unbind_arguments: Arguments used when unbinding.
    """

    def __init__(
        self,
        exchange: Exchange | None = None,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
        unbind_arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key or ""
        self.arguments: dict[str, Any] | None = dict(arguments) if arguments else None
        self.unbind_arguments: dict[str, Any] | None = (
            dict(unbind_arguments) if unbind_arguments else None
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Binding):
            return NotImplemented
        return (
            self.exchange == other.exchange
            and self.routing_key == other.routing_key
            and self.arguments == other.arguments
        )

    def __hash__(self) -> int:
        return hash((self.exchange, self.routing_key))

    def __repr__(self) -> str:
        exchange = _text(self.exchange.name) if self.exchange is not None else ""
        return f"<binding: {exchange}->{_text(self.routing_key)}>"


#: kombu's spelling: `from celeriac.entities import binding`.
binding = Binding


class Queue:
    """A named queue, bound to an exchange with a routing key.

    `Queue("name")` is bound to the nameless exchange with an empty routing key, like kombu;
    the router then gives it the app's default exchange and routing key, as Celery does.

    Args:
        name: Queue name.
        exchange: An `Exchange`, an exchange name (a direct exchange), or a list of
            `Binding`s (then the queue has no main exchange).
        routing_key: Binding key to `exchange`.
        durable: Survive a broker restart.
        exclusive: Only this connection may use it; implies `auto_delete`.
        auto_delete: Delete it when its last consumer goes.
        queue_arguments: Declaration arguments, merged with the ones computed below.
        binding_arguments: Arguments for the binding to `exchange`.
        consumer_arguments: Arguments for consuming (e.g. `x-priority`).
        max_priority: `x-max-priority`.
        expires: `x-expires`, given in seconds.
        message_ttl: `x-message-ttl`, given in seconds.
        max_length: `x-max-length`.
        max_length_bytes: `x-max-length-bytes`.
        queue_type: `x-queue-type` (e.g. `"quorum"`). A celeriac convenience: kombu has no
            such keyword (pass `queue_arguments={"x-queue-type": ...}` there).
        bindings: Extra `Binding`s.
        no_ack: Consume without acknowledgements.
        alias: Another name the queue can be selected and routed by.
        no_declare: Never declare this queue or its exchange.

    Attributes:
        queue_arguments: The full declaration arguments: `queue_arguments` as given, with the
            `x-...` entries computed from the keywords above (they win, as in kombu).
    """

    def __init__(
        self,
        name: str | None = "",
        exchange: Exchange | str | Iterable[Binding] | None = None,
        routing_key: str | None = "",
        *,
        durable: bool | None = True,
        exclusive: bool | None = False,
        auto_delete: bool | None = False,
        queue_arguments: Mapping[str, Any] | None = None,
        binding_arguments: Mapping[str, Any] | None = None,
        consumer_arguments: Mapping[str, Any] | None = None,
        max_priority: int | None = None,
        expires: float | None = None,
        message_ttl: float | None = None,
        max_length: int | None = None,
        max_length_bytes: int | None = None,
        queue_type: str | None = None,
        bindings: Iterable[Binding] | None = None,
        no_ack: bool | None = None,
        alias: str | None = None,
        no_declare: bool | None = False,
        **kwargs: Any,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        self.name: str = name or ""
        self.routing_key: str = routing_key or ""
        self.bindings: set[Binding] = set(bindings or ())
        self.exchange: Exchange | None
        if isinstance(exchange, Exchange):
            self.exchange = exchange
        elif isinstance(exchange, str):
            self.exchange = Exchange(exchange)
        elif exchange is None:
            self.exchange = Exchange("")
        else:  # kombu's Queue("name", [binding(...), ...])
            self.bindings |= set(exchange)
            self.exchange = None
        if self.bindings:
            self.exchange = None

        self.durable = _flag(durable, True)
        self.exclusive = _flag(exclusive, False)
        # An exclusive queue cannot outlive its connection, so kombu forces auto_delete.
        self.auto_delete = True if self.exclusive else _flag(auto_delete, False)
        self.no_ack = _flag(no_ack, False)
        self.no_declare = _flag(no_declare, False)
        self.alias = alias
        self.binding_arguments: dict[str, Any] | None = (
            dict(binding_arguments) if binding_arguments else None
        )
        self.consumer_arguments: dict[str, Any] | None = (
            dict(consumer_arguments) if consumer_arguments else None
        )

        self.max_priority = None if max_priority is None else int(max_priority)
        self.expires = None if expires is None else float(expires)
        self.message_ttl = None if message_ttl is None else float(message_ttl)
        self.max_length = None if max_length is None else int(max_length)
        self.max_length_bytes = None if max_length_bytes is None else int(max_length_bytes)
        self.queue_type = queue_type

        arguments = dict(queue_arguments or {})
        if self.expires is not None:
            arguments["x-expires"] = _seconds_to_ms(self.expires)
        if self.message_ttl is not None:
            arguments["x-message-ttl"] = _seconds_to_ms(self.message_ttl)
        if self.max_length is not None:
            arguments["x-max-length"] = self.max_length
        if self.max_length_bytes is not None:
            arguments["x-max-length-bytes"] = self.max_length_bytes
        if self.max_priority is not None:
            arguments["x-max-priority"] = self.max_priority
        if queue_type is not None:
            arguments["x-queue-type"] = queue_type
        self.queue_arguments: dict[str, Any] = arguments

    @classmethod
    def from_dict(cls, name: str, **options: Any) -> Queue:
        """Build a queue from Celery's dict form of `task_queues` (`{name: options}`).

        Understands kombu's keys: `exchange`, `exchange_type`, `routing_key`/`binding_key`,
        `durable`, `auto_delete`, `exchange_durable`, `exchange_auto_delete`,
        `queue_durable`, `queue_auto_delete`, `exchange_arguments`, `delivery_mode`, and
        every `Queue` keyword.
        """
        exchange_durable = options.pop("exchange_durable", None)
        exchange_auto_delete = options.pop("exchange_auto_delete", None)
        queue_durable = options.pop("queue_durable", None)
        queue_auto_delete = options.pop("queue_auto_delete", None)
        durable = options.pop("durable", None)
        auto_delete = options.pop("auto_delete", None)
        binding_key = options.pop("binding_key", None)
        routing_key = options.pop("routing_key", None)
        exchange = options.pop("exchange", None)
        exchange_type = options.pop("exchange_type", None)
        delivery_mode = options.pop("delivery_mode", None)
        exchange_arguments = options.pop("exchange_arguments", None)
        if not isinstance(exchange, Exchange):
            exchange = Exchange(
                exchange,
                exchange_type,
                delivery_mode=delivery_mode,
                durable=durable if exchange_durable is None else exchange_durable,
                auto_delete=auto_delete if exchange_auto_delete is None else exchange_auto_delete,
                arguments=exchange_arguments,
            )
        return cls(
            name,
            exchange,
            binding_key or routing_key,
            durable=durable if queue_durable is None else queue_durable,
            auto_delete=auto_delete if queue_auto_delete is None else queue_auto_delete,
            **options,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Queue):
            return NotImplemented
        return (
            self.name == other.name
            and self.exchange == other.exchange
            and self.routing_key == other.routing_key
            and self.queue_arguments == other.queue_arguments
            and self.binding_arguments == other.binding_arguments
            and self.consumer_arguments == other.consumer_arguments
            and self.durable == other.durable
            and self.exclusive == other.exclusive
            and self.auto_delete == other.auto_delete
        )

    def __hash__(self) -> int:
        return hash(f"Q|{self.name}")

    def __repr__(self) -> str:
        if self.bindings:
            bindings = ", ".join(repr(b) for b in self.bindings)
            return f"<Queue {_text(self.name)} -> [{bindings}]>"
        return f"<Queue {_text(self.name)} -> {self.exchange!r} -> {_text(self.routing_key)}>"


class Broadcast(Queue):
    """A queue bound to a fanout exchange: every consumer gets its own copy of each message.

    Like Celery's `Broadcast` (kombu.common.Broadcast): `name` names the fanout exchange and
    is the queue's alias (so `task_routes` and `-Q` can use it); the queue itself gets a
    unique name per consumer unless `queue` is given, and is deleted when unused.

    Args:
        name: The fanout exchange's name, and the queue's alias.
        queue: The queue's name; default `bcast.<uuid4>`.
        unique: Always add a unique suffix: `<queue or "bcast">.<uuid4>`.
        auto_delete: Delete the queue when its last consumer goes (default True).
        exchange: Use this exchange instead of `Exchange(name, "fanout")`.
        alias: Alias instead of `name`.
        **kwargs: Any other `Queue` keyword.
    """

    def __init__(
        self,
        name: str | None = None,
        queue: str | None = None,
        *,
        unique: bool = False,
        auto_delete: bool = True,
        exchange: Exchange | None = None,
        alias: str | None = None,
        **kwargs: Any,
    ) -> None:
        if unique:
            queue = f"{queue or 'bcast'}.{uuid.uuid4()}"
        else:
            queue = queue or f"bcast.{uuid.uuid4()}"
        self.queue = queue
        super().__init__(
            queue,
            exchange if exchange is not None else Exchange(name, "fanout"),
            alias=alias or name,
            auto_delete=auto_delete,
            **kwargs,
        )
