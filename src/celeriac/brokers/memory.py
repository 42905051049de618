"""An in-process broker for tests: same ack/lease semantics as the SQLite broker, no file.

Every `MemoryBroker` with the same URL in one process shares its queues, so a client and an
in-process worker (`celeriac.testing.start_worker`) see the same messages.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import Broker, Delivery, Envelope, FanoutSubscription, RetryPolicy, Route, Subscription
from .bindings import matches


@dataclass(order=True)
class _Item:
    sort_key: tuple[int, int]
    envelope: Envelope = field(compare=False)
    deliveries: int = field(default=0, compare=False)


class _Store:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ready: dict[str, list[_Item]] = {}
        self.delayed: list[tuple[float, int, str, _Item]] = []
        self.bindings: dict[str, set[tuple[str, str, str]]] = {}
        self.counter = itertools.count()
        self.listeners: dict[str, list[MemoryFanoutSubscription]] = {}
        self.revoked: dict[str, float] = {}

    def push(self, queue: str, item: _Item) -> None:
        heapq.heappush(self.ready.setdefault(queue, []), item)


_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()


class MemoryBroker(Broker):
    """Queues in this process's memory."""

    def __init__(self, url: str = "memory://", conf: Mapping[str, Any] | None = None) -> None:
        self.url = url
        with _stores_lock:
            self._store = _stores.setdefault(url, _Store())

    def declare(self, queues: Sequence[Any], *, retry: RetryPolicy | None = None) -> None:
        with self._store.cond:
            for queue in queues:
                exchange = getattr(queue, "exchange", None)
                if exchange is not None and exchange.name:
                    entry = (exchange.type, queue.routing_key or "", queue.name)
                    self._store.bindings.setdefault(exchange.name, set()).add(entry)
                self._store.ready.setdefault(queue.name, [])

    def _targets(self, route: Route) -> list[str]:
        if not route.exchange:
            return [route.routing_key or route.queue]
        bound = self._store.bindings.get(route.exchange, set())
        queues = [q for kind, key, q in bound if matches(kind, key, route.routing_key)]
        return queues or ([route.queue] if route.queue else [])

    def publish(self, envelope: Envelope, route: Route, *, not_before: float | None = None,
                retry: RetryPolicy | None = None) -> None:
        store = self._store
        priority = int(envelope.properties.get("priority") or 0)
        with store.cond:
            for queue in self._targets(route):
                item = _Item((-priority, next(store.counter)), envelope)
                if not_before is not None and not_before > time.time():
                    heapq.heappush(store.delayed, (not_before, next(store.counter), queue, item))
                else:
                    store.push(queue, item)
            store.cond.notify_all()

    def subscribe(self, queues: Sequence[str], *, prefetch: int) -> Subscription:
        return MemorySubscription(self._store, list(queues))

    def purge(self, queue: str) -> int:
        with self._store.cond:
            items = self._store.ready.pop(queue, [])
            return len(items)

    def publish_fanout(self, exchange: str, envelope: Envelope, routing_key: str = "", *,
                       retry: RetryPolicy | None = None) -> None:
        with self._store.cond:
            for listener in self._store.listeners.get(exchange, ()):
                if listener.routing_key in ("", "#") or matches("topic", listener.routing_key, routing_key):
                    listener.inbox.append(envelope)
            self._store.cond.notify_all()

    def subscribe_fanout(self, exchange: str, queue: str | None = None,
                         queue_arguments: Mapping[str, Any] | None = None, *,
                         routing_key: str = "") -> FanoutSubscription:
        listener = MemoryFanoutSubscription(self._store, exchange, routing_key)
        with self._store.cond:
            self._store.listeners.setdefault(exchange, []).append(listener)
        return listener

    def delete_queue(self, queue: str, exchange: str = "", routing_key: str = "") -> None:
        with self._store.cond:
            self._store.ready.pop(queue, None)
            for bound in self._store.bindings.values():
                bound.difference_update({entry for entry in bound if entry[2] == queue})

    def store_revoked(self, task_ids: Sequence[str], expires: float) -> None:
        with self._store.cond:
            now = time.time()
            kept = {tid: until for tid, until in self._store.revoked.items() if until > now}
            kept.update(dict.fromkeys(task_ids, expires))
            self._store.revoked = kept

    def load_revoked(self) -> list[str]:
        now = time.time()
        with self._store.cond:
            return [tid for tid, until in self._store.revoked.items() if until > now]


class MemorySubscription(Subscription):
    def __init__(self, store: _Store, queues: list[str]) -> None:
        self._store = store
        self._queues = queues
        self._held: dict[int, tuple[str, _Item]] = {}
        self._tags = itertools.count(1)

    def _promote_due(self) -> None:
        store = self._store
        now = time.time()
        while store.delayed and store.delayed[0][0] <= now:
            _, _, queue, item = heapq.heappop(store.delayed)
            store.push(queue, item)

    def _pop(self, limit: int) -> list[Delivery]:
        store = self._store
        self._promote_due()
        out: list[Delivery] = []
        while len(out) < limit:
            best = None
            for queue in self._queues:
                items = store.ready.get(queue)
                if items and (best is None or items[0] < store.ready[best][0]):
                    best = queue
            if best is None:
                break
            item = heapq.heappop(store.ready[best])
            item.deliveries += 1
            tag = next(self._tags)
            self._held[tag] = (best, item)
            out.append(Delivery(item.envelope, best, tag, redelivered=item.deliveries > 1))
        return out

    def get_many(self, limit: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self._store.cond:
            while True:
                out = self._pop(limit)
                remaining = deadline - time.monotonic()
                if out or remaining <= 0:
                    return out
                wait = remaining
                if self._store.delayed:
                    wait = min(wait, max(0.0, self._store.delayed[0][0] - time.time()))
                self._store.cond.wait(wait)

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        with self._store.cond:
            for delivery in deliveries:
                self._held.pop(delivery.tag, None)

    def reject(self, delivery: Delivery, *, requeue: bool) -> None:
        with self._store.cond:
            held = self._held.pop(delivery.tag, None)
            if held is not None and requeue:
                self._store.push(*held)
                self._store.cond.notify_all()

    def defer(self, delivery: Delivery, not_before: float) -> None:
        with self._store.cond:
            held = self._held.pop(delivery.tag, None)
            if held is not None:
                queue, item = held
                heapq.heappush(self._store.delayed, (not_before, next(self._store.counter), queue, item))
                self._store.cond.notify_all()

    def close(self) -> None:
        with self._store.cond:
            for queue, item in self._held.values():
                self._store.push(queue, item)
            self._held.clear()
            self._store.cond.notify_all()

    def set_queues(self, queues: Sequence[str]) -> None:
        with self._store.cond:
            self._queues = list(queues)


class MemoryFanoutSubscription(FanoutSubscription):
    """A listener's inbox of broadcast envelopes."""

    def __init__(self, store: _Store, exchange: str, routing_key: str) -> None:
        self._store = store
        self.exchange = exchange
        self.routing_key = routing_key
        self.inbox: deque[Envelope] = deque()

    def get(self, timeout: float) -> Envelope | None:
        deadline = time.monotonic() + timeout
        with self._store.cond:
            while not self.inbox:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._store.cond.wait(remaining)
            return self.inbox.popleft()

    def close(self) -> None:
        with self._store.cond:
            listeners = self._store.listeners.get(self.exchange, [])
            if self in listeners:
                listeners.remove(self)
