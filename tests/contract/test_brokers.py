"""One contract, every broker: what the worker relies on from `Broker` and `Subscription`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac.brokers import broker_from_url
from celeriac.brokers.base import Broker, Envelope, Route
from celeriac.config import Settings
from tests.helpers import require_port

BROKERS = ["memory", "sqlite", "redis", "amqp"]


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    kind = request.param
    conf = Settings()
    if kind == "memory":
        url = f"memory://{uuid.uuid4().hex}"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path}/broker.db"
    elif kind == "redis":
        require_port("Redis", "127.0.0.1", 6379)
        pytest.importorskip("celeriac.brokers.redis")
        url = "redis://127.0.0.1:6379/9"
    else:
        require_port("RabbitMQ", "127.0.0.1", 5672)
        pytest.importorskip("celeriac.brokers.amqp")
        url = "amqp://guest:guest@127.0.0.1:5672//"
    b = broker_from_url(url, conf)
    b.kind = kind  # type: ignore[attr-defined]
    yield b
    b.close()


def envelope(n: int, priority: int = 0) -> Envelope:
    return Envelope(f"[[{n}], {{}}, null]".encode(), {"task": "t.x", "id": f"id-{n}", "lang": "py"},
                    {"priority": priority, "delivery_mode": 2, "correlation_id": f"id-{n}", "reply_to": ""})


def queue_name() -> str:
    return f"contract-{uuid.uuid4().hex[:8]}"


def declare(broker: Broker, name: str) -> Route:
    from celeriac.entities import Exchange, Queue

    broker.declare([Queue(name, Exchange(name), routing_key=name)])
    return Route(queue=name, exchange="", routing_key=name)


def drain(sub: Any, want: int, timeout: float = 5.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += sub.get_many(want - len(got), 0.2)
    return got


def test_publish_get_ack_in_order(broker: Broker) -> None:
    name = queue_name()
    route = declare(broker, name)
    for n in range(5):
        broker.publish(envelope(n), route)
    sub = broker.subscribe([name], prefetch=10)
    try:
        got = drain(sub, 5)
        assert [d.envelope.headers["id"] for d in got] == [f"id-{n}" for n in range(5)]
        assert got[0].envelope.body == b"[[0], {}, null]"
        assert got[0].envelope.content_type == "application/json"
        assert not any(d.redelivered for d in got)
        sub.ack_many(got)
        assert sub.get_many(10, 0.3) == []
    finally:
        sub.close()
    assert broker.purge(name) == 0


def test_get_many_respects_limit_and_publish_many(broker: Broker) -> None:
    name = queue_name()
    route = declare(broker, name)
    broker.publish_many([(envelope(n), route, None) for n in range(10)])
    sub = broker.subscribe([name], prefetch=3)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 10
        while len(seen) < 10 and time.monotonic() < deadline:
            batch = sub.get_many(3, 0.5)
            assert len(batch) <= 3
            seen += [d.envelope.headers["id"] for d in batch]
            sub.ack_many(batch)
        assert seen == [f"id-{n}" for n in range(10)]
    finally:
        sub.close()


def test_reject_requeue_and_drop(broker: Broker) -> None:
    name = queue_name()
    route = declare(broker, name)
    broker.publish(envelope(1), route)
    broker.publish(envelope(2), route)
    sub = broker.subscribe([name], prefetch=2)
    try:
        one = drain(sub, 1)[0]
        sub.reject(one, requeue=True)
        again = drain(sub, 2)
        ids = sorted(d.envelope.headers["id"] for d in again)
        assert ids == ["id-1", "id-2"]
        for d in again:
            sub.reject(d, requeue=False)
        assert sub.get_many(5, 0.3) == []
    finally:
        sub.close()


def test_unacked_come_back_after_close(broker: Broker) -> None:
    name = queue_name()
    route = declare(broker, name)
    broker.publish(envelope(7), route)
    sub = broker.subscribe([name], prefetch=1)
    held = drain(sub, 1)
    assert held
    sub.close()
    sub2 = broker.subscribe([name], prefetch=1)
    try:
        again = drain(sub2, 1)
        assert [d.envelope.headers["id"] for d in again] == ["id-7"]
        sub2.ack_many(again)
    finally:
        sub2.close()


def test_not_before_and_defer_delay_delivery(broker: Broker) -> None:
    name = queue_name()
    route = declare(broker, name)
    broker.publish(envelope(1), route, not_before=time.time() + 1.5)
    broker.publish(envelope(2), route)
    sub = broker.subscribe([name], prefetch=5)
    try:
        now = drain(sub, 1)
        assert [d.envelope.headers["id"] for d in now] == ["id-2"]
        sub.defer(now[0], time.time() + 1.0)
        assert sub.get_many(5, 0.3) == []
        later = drain(sub, 2, timeout=6)
        assert sorted(d.envelope.headers["id"] for d in later) == ["id-1", "id-2"]
        sub.ack_many(later)
    finally:
        sub.close()


def test_priority_order(broker: Broker) -> None:
    name = queue_name()
    from celeriac.entities import Exchange, Queue

    broker.declare([Queue(name, Exchange(name), routing_key=name, max_priority=10)])
    route = Route(queue=name, exchange="", routing_key=name)
    for n, prio in enumerate([0, 9, 5]):
        broker.publish(envelope(n, prio), route)
    sub = broker.subscribe([name], prefetch=1)
    try:
        got = []
        for _ in range(3):
            batch = drain(sub, 1)
            got += batch
            sub.ack_many(batch)
        priorities = [d.envelope.properties["priority"] for d in got]
        # Redis (kombu's layout) serves 0 first; the others serve the highest first.
        expected = [0, 5, 9] if broker.kind == "redis" else [9, 5, 0]  # type: ignore[attr-defined]
        assert priorities == expected
    finally:
        sub.close()


def test_purge_counts_ready_messages(broker: Broker) -> None:
    name = queue_name()
    route = declare(broker, name)
    for n in range(4):
        broker.publish(envelope(n), route)
    time.sleep(0.1)
    assert broker.purge(name) == 4
    sub = broker.subscribe([name], prefetch=5)
    try:
        assert sub.get_many(5, 0.3) == []
    finally:
        sub.close()


def test_topic_exchange_routes_by_binding(broker: Broker) -> None:
    from celeriac.entities import Exchange, Queue

    media = Exchange(f"media-{uuid.uuid4().hex[:6]}", type="topic")
    videos, images = queue_name(), queue_name()
    broker.declare([Queue(videos, media, routing_key="media.video"),
                    Queue(images, media, routing_key="media.*")])
    broker.publish(envelope(1), Route(queue="", exchange=media.name, routing_key="media.video",
                                      exchange_type="topic"))
    broker.publish(envelope(2), Route(queue="", exchange=media.name, routing_key="media.image",
                                      exchange_type="topic"))
    sub_v = broker.subscribe([videos], prefetch=5)
    sub_i = broker.subscribe([images], prefetch=5)
    try:
        v = drain(sub_v, 1)
        i = drain(sub_i, 2)
        assert [d.envelope.headers["id"] for d in v] == ["id-1"]
        assert sorted(d.envelope.headers["id"] for d in i) == ["id-1", "id-2"]
        sub_v.ack_many(v)
        sub_i.ack_many(i)
    finally:
        sub_v.close()
        sub_i.close()
