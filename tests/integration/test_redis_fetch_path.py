"""The Redis subscription's fast path: acks ride with the next fetch, and a message an idle
consumer's BRPOP takes is delivered before the reply of its record in ``unacked`` is read."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from celeriac.brokers.base import Envelope, Route  # noqa: E402
from celeriac.brokers.redis import RedisBroker  # noqa: E402
from redis_server import redis_url, require_redis  # noqa: E402

pytestmark = pytest.mark.redis
DB = 10


@pytest.fixture
def r():
    return require_redis(DB)


@pytest.fixture
def broker(r):
    b = RedisBroker(redis_url(DB), {"broker_transport_options": {}})
    yield b
    b.close()


def env(task_id: str) -> Envelope:
    return Envelope(b'[[1], {}, {}]', {"task": "t.add", "id": task_id}, {"correlation_id": task_id})


def to(queue: str) -> Route:
    return Route(queue, "", queue)


def ids(deliveries) -> list[str]:
    return [d.envelope.headers["id"] for d in deliveries]


def test_acks_ride_with_the_next_fetch(r, broker):
    broker.publish_many([(env(f"a{i}"), to("celery"), None) for i in range(3)])
    sub = broker.subscribe(["celery"], prefetch=2)
    first = sub.get_many(10, 0)
    assert ids(first) == ["a0", "a1"]  # the prefetch bound
    # Acking two frees room for the third within the same call.
    [third] = sub.ack_and_get_many(first, 10, 0)
    assert third.envelope.headers["id"] == "a2"
    assert [t.decode() for t in r.hkeys("unacked")] == [third.tag]
    assert [t.decode() for t in r.zrange("unacked_index", 0, -1)] == [third.tag]
    assert [t.decode() for t in r.hkeys(sub.held_key)] == [third.tag]
    # Nothing to fetch: the acks are still settled, at once.
    assert sub.ack_and_get_many([third], 10, 0) == []
    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0 and r.hlen(sub.held_key) == 0
    sub.close()


def test_a_woken_consumers_message_is_recorded_before_it_is_settled(r, broker):
    sub = broker.subscribe(["celery"], prefetch=0)
    assert sub.get_many(1, 0) == []  # idle: the next call blocks in BRPOP
    timer = threading.Timer(0.2, broker.publish, (env("late"), to("celery")))
    timer.start()
    [d] = sub.get_many(10, 5)
    assert d.envelope.headers["id"] == "late" and not d.redelivered
    # The record went out before the delivery was handed over: Redis has it already.
    deadline = time.monotonic() + 2
    while not r.hexists("unacked", d.tag) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.hget(sub.held_key, d.tag) == b"celery"
    assert r.zscore("unacked_index", d.tag) == pytest.approx(time.time(), abs=5)
    sub.ack_many([d])
    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0 and r.hlen(sub.held_key) == 0
    sub.close()


def test_a_woken_consumers_message_goes_back_on_close(r, broker):
    sub = broker.subscribe(["celery"], prefetch=0)
    assert sub.get_many(1, 0) == []
    threading.Timer(0.1, broker.publish, (env("back"), to("celery"))).start()
    [d] = sub.get_many(10, 5)
    sub.close()  # not acked: back to the head of its list, marked redelivered
    assert r.hlen("unacked") == 0 and r.llen("celery") == 1
    again = broker.subscribe(["celery"], prefetch=0)
    [d2] = again.get_many(10, 0)
    assert d2.envelope.headers["id"] == "back" and d2.redelivered and d2.tag == d.tag
    again.ack_many([d2])
    again.close()


def test_a_woken_consumers_reject_with_requeue_is_not_lost(r, broker):
    sub = broker.subscribe(["celery"], prefetch=0)
    assert sub.get_many(1, 0) == []
    threading.Timer(0.1, broker.publish, (env("again"), to("celery"))).start()
    [d] = sub.get_many(10, 5)
    sub.reject(d, requeue=True)
    assert r.hlen("unacked") == 0 and r.llen("celery") == 1
    [d2] = sub.get_many(10, 0)
    assert d2.envelope.headers["id"] == "again" and d2.redelivered
    sub.ack_many([d2])
    sub.close()
