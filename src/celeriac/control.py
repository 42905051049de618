"""Remote control of workers: `app.control` and `app.control.inspect()`, as in Celery.

Commands travel in Celery's pidbox layout (celery-wire.md 2.7 and 4.6), so `celery inspect`
reaches celeriac workers and `celeriac inspect` reaches Celery workers:

- a request is broadcast on the fanout exchange ``<control_exchange>.pidbox`` (Redis:
  PUBLISH ``/<db>.celery.pidbox``) with the body ``{"method", "arguments", "destination",
  "pattern", "matcher"}`` and, when replies are wanted, ``"ticket"`` and ``"reply_to"``;
- every worker whose name matches runs the command and sends ``{<hostname>: <reply>}`` to
  the direct exchange ``reply.<control_exchange>.pidbox`` with the requester's id as routing
  key; the requester reads its own queue ``<id>.reply.celery.pidbox`` until no reply has
  come for `timeout` seconds (or `limit` replies came).

Beyond Celery, `revoke` also stores the ids in the broker for `REVOKE_EXPIRES` seconds, so a
worker started later (or restarted) still skips them (celery#4886).
"""

from __future__ import annotations

import itertools
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .brokers.base import Envelope
from .entities import Exchange, Queue
from .serialization import accept_content_types, dumps, loads

if TYPE_CHECKING:
    from .app import Celery

#: Seconds a revoke is remembered (Celery's default for its in-memory set).
REVOKE_EXPIRES = 10800.0

_clock = itertools.count(1)


def pidbox_exchange(app: Celery) -> str:
    """The fanout exchange workers listen on: ``celery.pidbox`` by default."""
    return f"{app.conf.control_exchange or 'celery'}.pidbox"


def reply_exchange(app: Celery) -> str:
    """The direct exchange replies go to: ``reply.celery.pidbox`` by default."""
    return f"reply.{app.conf.control_exchange or 'celery'}.pidbox"


def node_queue_name(app: Celery, hostname: str) -> str:
    """A worker's own pidbox queue (AMQP), e.g. ``w1@host.celery.pidbox``."""
    return f"{hostname}.{pidbox_exchange(app)}"


def queue_arguments(app: Celery) -> dict[str, int]:
    """``x-expires`` and ``x-message-ttl`` of pidbox queues, from the control_queue_* settings."""
    conf = app.conf
    arguments = {}
    if conf.control_queue_expires:
        arguments["x-expires"] = int(float(conf.control_queue_expires) * 1000)
    if conf.control_queue_ttl:
        arguments["x-message-ttl"] = int(float(conf.control_queue_ttl) * 1000)
    return arguments


def encode(app: Celery, body: Any, headers: dict[str, Any], delivery_mode: int) -> Envelope:
    """An envelope for a pidbox request or reply (the task serializer, JSON by default)."""
    data, content_type, content_encoding = dumps(body, app.conf.task_serializer or "json")
    properties = {"delivery_mode": delivery_mode, "priority": 0}
    return Envelope(data, {**headers, "clock": next(_clock)}, properties, content_type, content_encoding)


def decode(app: Celery, envelope: Envelope) -> Any:
    """The body of a pidbox request or reply; only `accept_content` types are read."""
    accept = accept_content_types(app.conf.accept_content or ["json"])
    return loads(envelope.body, envelope.content_type, envelope.content_encoding, accept)


def flatten_reply(replies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``[{node: reply}, ...]`` -> ``{node: reply, ...}``, warning about duplicate names."""
    nodes: dict[str, Any] = {}
    dupes: set[str] = set()
    for item in replies:
        dupes.update(name for name in item if name in nodes)
        nodes.update(item)
    if dupes:
        warnings.warn(f"Received multiple replies from node name(s) {', '.join(sorted(dupes))}: "
                      "give each worker a unique name with -n", stacklevel=2)
    return nodes


class Inspect:
    """Ask workers what they are doing; each method returns ``{hostname: reply}`` or None.

    Args:
        destination: Worker names to ask (default: all).
        timeout: Seconds to wait for each further reply.
        callback: Called with each reply as it arrives.
        limit: Stop after this many replies.
        pattern: Ask the workers whose name matches (with `matcher` ``glob`` or ``pcre``).
    """

    def __init__(self, destination: str | Sequence[str] | None = None, timeout: float = 1.0,
                 callback: Callable[[Any], None] | None = None, connection: Any = None,
                 app: Celery | None = None, limit: int | None = None, pattern: str | None = None,
                 matcher: str | None = None) -> None:
        if app is None:
            from ._state import get_current_app

            app = get_current_app()
        self.app = app
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher

    def _request(self, command: str, **kwargs: Any) -> Any:
        destination = self.destination
        if isinstance(destination, str):
            destination = [destination]
        replies = Control(self.app).broadcast(
            command, arguments=kwargs, destination=destination, callback=self.callback,
            limit=self.limit, timeout=self.timeout, reply=True, pattern=self.pattern,
            matcher=self.matcher)
        if not replies:
            return None
        by_node = flatten_reply(replies)
        if self.destination and isinstance(self.destination, str):
            return by_node.get(self.destination)
        return by_node

    def ping(self, destination: Any = None) -> Any:
        """``{hostname: {'ok': 'pong'}}`` for each live worker."""
        return self._request("ping")

    def active(self, safe: bool | None = None) -> Any:
        """Tasks running now, per worker."""
        return self._request("active", safe=safe)

    def reserved(self, safe: bool | None = None) -> Any:
        """Tasks received and waiting for a free pool slot (not ETA ones)."""
        return self._request("reserved")

    def scheduled(self, safe: bool | None = None) -> Any:
        """Tasks held for their ETA or countdown: ``[{'eta', 'priority', 'request'}]``."""
        return self._request("scheduled")

    def revoked(self) -> Any:
        """Revoked task ids each worker knows."""
        return self._request("revoked")

    def registered(self, *taskinfoitems: str) -> Any:
        """Task names each worker knows (with their rate limits, as Celery shows them)."""
        return self._request("registered", taskinfoitems=list(taskinfoitems) or None)

    registered_tasks = registered

    def stats(self) -> Any:
        """Pool, prefetch, counts, uptime, rusage and broker of each worker."""
        return self._request("stats")

    def active_queues(self) -> Any:
        """The queues each worker consumes from."""
        return self._request("active_queues")

    def query_task(self, *ids: str) -> Any:
        """``{hostname: {task_id: [state, info]}}`` for tasks the workers hold."""
        if len(ids) == 1 and isinstance(ids[0], list | tuple):
            ids = tuple(ids[0])
        return self._request("query_task", ids=list(ids))

    def conf(self, with_defaults: bool = False) -> Any:
        """Each worker's settings."""
        return self._request("conf", with_defaults=with_defaults)

    def clock(self) -> Any:
        return self._request("clock")

    def report(self) -> Any:
        return self._request("report")

    def hello(self, from_node: str, revoked: Any = None) -> Any:
        return self._request("hello", from_node=from_node, revoked=revoked)


class Control:
    """`app.control`: commands for workers (revoke, rate limits, pool size, queues, shutdown)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def inspect(self, destination: str | Sequence[str] | None = None, timeout: float = 1.0,
                callback: Callable[[Any], None] | None = None, connection: Any = None,
                limit: int | None = None, pattern: str | None = None,
                matcher: str | None = None) -> Inspect:
        """An `Inspect` for these workers: ``app.control.inspect().active()``."""
        return Inspect(destination, timeout, callback, connection, self.app, limit, pattern, matcher)

    # -- the wire ----------------------------------------------------------------------

    def broadcast(self, command: str, arguments: dict[str, Any] | None = None,
                  destination: Sequence[str] | None = None, connection: Any = None,
                  reply: bool = False, timeout: float = 1.0, limit: int | None = None,
                  callback: Callable[[Any], None] | None = None, channel: Any = None,
                  pattern: str | None = None, matcher: str | None = None,
                  **extra_kwargs: Any) -> list[dict[str, Any]] | None:
        """Send a command to all workers (or `destination`); with `reply`, collect answers.

        Returns:
            With `reply`, the replies as ``[{hostname: reply}, ...]``; else None.
        """
        if destination is not None and not isinstance(destination, list | tuple):
            raise ValueError(f"destination must be a list/tuple not {type(destination)}")
        if limit is None and destination:
            limit = len(destination)
        message: dict[str, Any] = {
            "method": command, "arguments": dict(arguments or {}, **extra_kwargs),
            "destination": list(destination) if destination else None,
            "pattern": pattern, "matcher": matcher,
        }
        broker = self.app.broker
        if not reply:
            self._publish(broker, message, timeout)
            return None
        ticket = str(uuid.uuid4())
        oid = str(uuid.uuid4())
        exchange = reply_exchange(self.app)
        message.update(ticket=ticket, reply_to={"exchange": exchange, "routing_key": oid})
        queue = Queue(f"{oid}.{exchange}", Exchange(exchange, "direct", durable=False, delivery_mode=1),
                      oid, durable=False, exclusive=True, auto_delete=True,
                      queue_arguments=queue_arguments(self.app))
        subscription = broker.subscribe_queue(queue, prefetch=0, no_ack=True)
        try:
            self._publish(broker, message, timeout)
            return self._collect(subscription, ticket, limit, timeout, callback)
        finally:
            subscription.close()
            broker.delete_queue(queue.name, exchange, oid)

    def _publish(self, broker: Any, message: dict[str, Any], timeout: float) -> None:
        headers = {"expires": time.time() + timeout if timeout else 0}
        broker.publish_fanout(pidbox_exchange(self.app), encode(self.app, message, headers, 2))

    def _collect(self, subscription: Any, ticket: str, limit: int | None, timeout: float,
                 callback: Callable[[Any], None] | None) -> list[dict[str, Any]]:
        # As kombu: wait up to `timeout` for each next reply, so slow fleets still answer.
        replies: list[dict[str, Any]] = []
        while limit is None or len(replies) < limit:
            deliveries = subscription.get_many(100, timeout)
            if not deliveries:
                break
            subscription.ack_many(deliveries)
            for delivery in deliveries:
                headers = delivery.envelope.headers or {}
                if headers.get("ticket", ticket) != ticket:
                    continue  # a late reply to an earlier request
                body = decode(self.app, delivery.envelope)
                if callback is not None:
                    callback(body)
                replies.append(body)
        return replies

    # -- commands ------------------------------------------------------------------------

    def revoke(self, task_id: str | Sequence[str], destination: Sequence[str] | None = None,
               terminate: bool = False, signal: str | int = "SIGTERM", **kwargs: Any) -> Any:
        """Tell workers not to run these tasks (and to stop them if running, with `terminate`).

        The ids are also kept in the broker for `REVOKE_EXPIRES` seconds, for workers that
        are not running now.
        """
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self.app.broker.store_revoked(ids, time.time() + REVOKE_EXPIRES)
        return self.broadcast("revoke", destination=destination, arguments={
            "task_id": task_id, "terminate": terminate, "signal": signal}, **kwargs)

    def terminate(self, task_id: str | Sequence[str], destination: Sequence[str] | None = None,
                  signal: str | int = "SIGTERM", **kwargs: Any) -> Any:
        """`revoke(..., terminate=True)`."""
        return self.revoke(task_id, destination=destination, terminate=True, signal=signal, **kwargs)

    def ping(self, destination: Sequence[str] | None = None, timeout: float = 1.0, **kwargs: Any) -> Any:
        """``[{hostname: {'ok': 'pong'}}, ...]`` for the workers that answer within `timeout`."""
        return self.broadcast("ping", reply=True, arguments={}, destination=destination,
                              timeout=timeout, **kwargs)

    def rate_limit(self, task_name: str, rate_limit: str | float | None,
                   destination: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """Set a task type's rate limit (``'10/s'``, ``'100/m'``, ``'1000/h'``) on workers."""
        return self.broadcast("rate_limit", destination=destination, arguments={
            "task_name": task_name, "rate_limit": rate_limit}, **kwargs)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """Set a task type's soft and hard time limits on workers."""
        return self.broadcast("time_limit", destination=destination, arguments={
            "task_name": task_name, "hard": hard, "soft": soft}, **kwargs)

    def add_consumer(self, queue: str, exchange: str | None = None, exchange_type: str = "direct",
                     routing_key: str | None = None, options: dict[str, Any] | None = None,
                     destination: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """Tell workers to consume from `queue` too."""
        return self.broadcast("add_consumer", destination=destination, arguments=dict({
            "queue": queue, "exchange": exchange, "exchange_type": exchange_type,
            "routing_key": routing_key}, **options or {}), **kwargs)

    def cancel_consumer(self, queue: str, destination: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """Tell workers to stop consuming from `queue`."""
        return self.broadcast("cancel_consumer", destination=destination, arguments={"queue": queue},
                              **kwargs)

    def pool_grow(self, n: int = 1, destination: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """Add `n` processes (or threads) to the pools."""
        return self.broadcast("pool_grow", arguments={"n": n}, destination=destination, **kwargs)

    def pool_shrink(self, n: int = 1, destination: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """Remove `n` processes (or threads) from the pools."""
        return self.broadcast("pool_shrink", arguments={"n": n}, destination=destination, **kwargs)

    def autoscale(self, max: int, min: int, destination: Sequence[str] | None = None,  # noqa: A002
                  **kwargs: Any) -> Any:
        """Change the `--autoscale` bounds of workers."""
        return self.broadcast("autoscale", arguments={"max": max, "min": min},
                              destination=destination, **kwargs)

    def shutdown(self, destination: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """Warm shutdown: workers finish their running tasks and exit."""
        return self.broadcast("shutdown", arguments={}, destination=destination, **kwargs)

    def pool_restart(self, modules: Any = None, reload: bool = False, reloader: Any = None,
                     destination: Sequence[str] | None = None, **kwargs: Any) -> Any:
        return self.broadcast("pool_restart", arguments={"modules": modules, "reload": reload,
                                                         "reloader": reloader},
                              destination=destination, **kwargs)

    def enable_events(self, destination: Sequence[str] | None = None, **kwargs: Any) -> Any:
        return self.broadcast("enable_events", arguments={}, destination=destination, **kwargs)

    def disable_events(self, destination: Sequence[str] | None = None, **kwargs: Any) -> Any:
        return self.broadcast("disable_events", arguments={}, destination=destination, **kwargs)

    def heartbeat(self, destination: Sequence[str] | None = None, **kwargs: Any) -> Any:
        return self.broadcast("heartbeat", arguments={}, destination=destination, **kwargs)

    def election(self, id: str, topic: str, action: Any = None, connection: Any = None) -> None:  # noqa: A002
        self.broadcast("election", arguments={"id": id, "topic": topic, "action": action})

    def purge(self, connection: Any = None) -> int:
        """Delete every waiting message from the app's task queues; return how many."""
        broker = self.app.broker
        return sum(broker.purge(name) for name in self.app.router.queues)

    discard_all = purge
