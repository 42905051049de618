"""The Redis subscription's fast path: acks ride with the next fetch, a fetch can be sent
ahead (its reply read at the next call), and a message an idle consumer's BRPOP takes is
delivered before the reply of its record in ``unacked`` is read."""

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


def test_fetch_ahead_returns_the_next_batch_first_within_the_prefetch(r, broker):
    broker.publish_many([(env(f"a{i}"), to("celery"), None) for i in range(10)])
    sub = broker.subscribe(["celery"], prefetch=6)
    first = sub.ack_and_get_many([], 6, 0, ahead=3)
    assert ids(first) == ["a0", "a1", "a2"]  # room left for the fetch sent ahead
    assert sub.in_flight == 3
    # Sent, not read: Redis popped and recorded the next three for this consumer already.
    deadline = time.monotonic() + 2
    while r.hlen(sub.held_key) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.hlen(sub.held_key) == 6 and r.llen("celery") == 4
    # The next call returns them at once and sends the following fetch with its acks.
    second = sub.ack_and_get_many(first, 6, 5, ahead=3)
    assert ids(second) == ["a3", "a4", "a5"] and sub.in_flight == 3
    third = sub.ack_and_get_many(second, 6, 5, ahead=3)
    assert ids(third) == ["a6", "a7", "a8"]
    fourth = sub.ack_and_get_many(third, 6, 5, ahead=3)
    assert ids(fourth) == ["a9"]  # what the last fetch ahead found
    assert sub.in_flight == 3  # another was sent: it will find nothing
    assert sub.ack_and_get_many(fourth, 6, 0, ahead=3) == []
    assert sub.in_flight == 0
    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0 and r.hlen(sub.held_key) == 0
    sub.close()


def test_fetch_ahead_in_flight_is_given_back_on_close_and_by_other_commands(r, broker):
    broker.publish_many([(env(f"b{i}"), to("celery"), None) for i in range(6)])
    sub = broker.subscribe(["celery"], prefetch=0)
    first = sub.ack_and_get_many([], 2, 0, ahead=2)
    assert ids(first) == ["b0"] and sub.in_flight == 2  # limit minus what goes ahead
    sub.reject(first[0], requeue=True)  # reads the reply ahead first: b1, b2 wait, held
    assert sub.in_flight == 0 and r.hlen(sub.held_key) == 2
    sub.close()  # never returned: they go back to the head, in order, marked redelivered
    assert r.hlen("unacked") == 0
    again = broker.subscribe(["celery"], prefetch=0)
    got = again.get_many(10, 0)
    assert ids(got) == ["b1", "b2", "b3", "b4", "b5", "b0"]
    assert [d.redelivered for d in got] == [True, True, False, False, False, True]
    again.ack_many(got)
    again.close()


def test_fetch_ahead_reply_lost_with_the_connection_loses_nothing(r, broker):
    broker.publish_many([(env(f"c{i}"), to("celery"), None) for i in range(5)])
    sub = broker.subscribe(["celery"], prefetch=0)
    first = sub.ack_and_get_many([], 4, 0, ahead=2)
    assert ids(first) == ["c0", "c1"] and sub.in_flight == 2
    deadline = time.monotonic() + 2
    while r.hlen(sub.held_key) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    # The reply of the fetch ahead is lost with the connection: it had popped c2, c3.
    sub._conn.disconnect()
    got = sub.ack_and_get_many(first, 4, 1)
    # c0 and c1 are acked; c2 and c3 went back to the head of the list and come again.
    assert ids(got) == ["c2", "c3", "c4"]
    assert [d.redelivered for d in got] == [True, True, False]
    sub.ack_many(got)
    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0 and r.hlen(sub.held_key) == 0
    assert r.llen("celery") == 0
    sub.close()
