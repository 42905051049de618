"""The AMQP broker against the real RabbitMQ on 127.0.0.1:5672, and against Celery/kombu 5.7.

URL and message-mapping tests at the top need no server. Every other test uses its own
uniquely named queues and deletes them. Tests marked `slow` restart RabbitMQ or wait for
delays of a few seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import amqp
import pytest

from celeriac import Celery, Exchange, Queue
from celeriac.brokers.amqp import (
    AMQPBroker,
    connection_params,
    delay_binding_key,
    delay_routing_key,
    message_from_envelope,
)
from celeriac.brokers.base import (
    Envelope,
    FanoutSubscription,
    Route,
)
from celeriac.exceptions import ImproperlyConfigured, OperationalError

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from amqp_server import (  # noqa: E402
    URL,
    Cleanup,
    connect,
    list_bindings,
    list_queues,
    require_amqp,
    unique,
)
from rabbitmq_node import running_node  # noqa: E402

CONF: dict[str, Any] = {"broker_heartbeat": 0}


def envelope(body: bytes = b"[[], {}, {}]", task_id: str = "t-1", **properties: Any) -> Envelope:
    props = {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2, "priority": 0, **properties}
    return Envelope(body, {"task": "tests.add", "id": task_id}, props)


def to_queue(name: str) -> Route:
    return Route(queue=name, exchange="", routing_key=name)


def drain(sub: Any, count: int, timeout: float = 5.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    got: list[Any] = []
    while len(got) < count and time.monotonic() < deadline:
        got += sub.get_many(count - len(got), 0.2)
    return got


def ready_count(queue: str) -> int:
    with connect() as connection:
        return int(connection.channel().queue_declare(queue, passive=True).message_count)


@pytest.fixture
def cleanup() -> Iterator[Cleanup]:
    done = Cleanup()
    yield done
    done.run()


@pytest.fixture
def broker(cleanup: Cleanup) -> Iterator[AMQPBroker]:
    require_amqp()
    b = AMQPBroker(URL, CONF)
    yield b
    b.close()


@pytest.fixture
def queue(broker: AMQPBroker, cleanup: Cleanup) -> str:
    name = cleanup.queue(unique("q"))
    broker.declare([Queue(name, Exchange(cleanup.exchange(name), "direct"), name)])
    return name


# -- no server needed ---------------------------------------------------------------------


@pytest.mark.parametrize(("url", "host", "vhost"), [
    ("amqp://guest:guest@localhost:5672//", "127.0.0.1:5672", "/"),
    ("amqp://guest:guest@localhost:5672/", "127.0.0.1:5672", "/"),
    ("amqp://localhost", "127.0.0.1:5672", "/"),
    ("amqp://u:p@rabbit.example:5673/prod", "rabbit.example:5673", "prod"),
    ("pyamqp://u:p@h/%2F", "h:5672", "/"),
    ("amqp://u:p@[::1]:5672/v", "[::1]:5672", "v"),
])
def test_connection_params_follow_kombu(url: str, host: str, vhost: str) -> None:
    params = connection_params(url, {})
    assert (params["host"], params["virtual_host"]) == (host, vhost)
    assert params["ssl"] is False


def test_connection_params_credentials_tls_and_settings() -> None:
    params = connection_params("amqp://me:s%40cret@h//", {"broker_connection_timeout": 7})
    assert (params["userid"], params["password"], params["connect_timeout"]) == ("me", "s@cret", 7)
    assert connection_params("amqp://h", {})["userid"] == "guest"
    tls = connection_params("amqps://h", {})
    assert tls["ssl"] is True and tls["host"] == "h:5671"
    custom = connection_params("amqp://h", {"broker_use_ssl": {"ca_certs": "/ca.pem", "server_hostname": None}})
    assert custom["ssl"] == {"ca_certs": "/ca.pem", "server_hostname": "h"} and custom["host"] == "h:5671"
    with pytest.raises(ImproperlyConfigured):
        connection_params("redis://h", {})


def test_failover_list_and_strategy() -> None:
    b = AMQPBroker("amqp://a:1//;amqp://u:secret@b:2//", CONF)
    assert [p["host"] for p in b.params] == ["a:1", "b:2"]
    assert "secret" not in b.masked_url
    with pytest.raises(ImproperlyConfigured):
        AMQPBroker(URL, {"broker_failover_strategy": "random-walk"})


def test_delay_routing_key_is_kombus() -> None:
    from kombu.transport.native_delayed_delivery import calculate_routing_key

    for seconds in (1, 2, 3, 60, 3600, 86400 * 365):
        assert delay_routing_key(seconds, "celery") == calculate_routing_key(seconds, "celery")
    assert delay_binding_key("a.b") == "*." * 28 + "a.b"


def test_message_has_only_amqp_properties() -> None:
    env = envelope(delivery_info={"exchange": ""}, body_encoding="base64", expiration="600000")
    message = message_from_envelope(env)
    assert message.properties == {
        "content_type": "application/json", "content_encoding": "utf-8",
        "application_headers": {"task": "tests.add", "id": "t-1"},
        "delivery_mode": 2, "priority": 0, "correlation_id": "t-1", "expiration": "600000",
    }
    assert "expiration" not in message_from_envelope(env, strip_expiration=True).properties


# -- publishing and consuming -------------------------------------------------------------


def test_publish_consume_ack(broker: AMQPBroker, queue: str) -> None:
    broker.publish_many([(envelope(task_id=f"t{i}"), to_queue(queue), None) for i in range(50)])
    sub = broker.subscribe([queue], prefetch=100)
    try:
        got = drain(sub, 50)
        assert [d.envelope.headers["id"] for d in got] == [f"t{i}" for i in range(50)]
        first = got[0]
        assert first.queue == queue and not first.redelivered
        assert first.envelope.body == b"[[], {}, {}]"
        assert first.envelope.properties["delivery_info"]["routing_key"] == queue
        sub.ack_many(got)
        assert sub.get_many(10, 0.1) == []
    finally:
        sub.close()
    assert ready_count(queue) == 0


def test_large_and_small_messages_read_in_chunks_arrive_whole(broker: AMQPBroker, queue: str) -> None:
    # The consumer reads the socket in 256 KiB chunks (amqp_consumer.read_frames): bodies
    # that span many frames and chunks, between small ones, must come out whole and in order.
    bodies = [b"small-0", bytes(range(256)) * 4096, b"small-1", os.urandom(3 * 1024 * 1024), b"small-2"]
    broker.publish_many([(envelope(body, task_id=f"t{i}"), to_queue(queue), None) for i, body in enumerate(bodies)])
    sub = broker.subscribe([queue], prefetch=10)
    try:
        got = drain(sub, len(bodies), timeout=10)
        assert [d.envelope.headers["id"] for d in got] == [f"t{i}" for i in range(len(bodies))]
        assert [d.envelope.body for d in got] == bodies
        sub.ack_many(got)
    finally:
        sub.close()
    assert ready_count(queue) == 0


def test_a_frame_left_half_read_is_finished_after_a_prefetch_change(broker: AMQPBroker, queue: str) -> None:
    # 20 MiB is more than one get_many reads (64 chunks of 256 KiB): the rest stays in the
    # transport's buffer. set_prefetch sends basic.qos without waiting; the next fetches read
    # the rest of the message, then the qos-ok (dropped) and the next message.
    body = os.urandom(20 * 1024 * 1024)
    broker.publish(envelope(body, task_id="big"), to_queue(queue))
    broker.publish(envelope(task_id="after"), to_queue(queue))
    sub = broker.subscribe([queue], prefetch=10)
    try:
        deadline = time.monotonic() + 10
        while sub.connection.transport._read_buffer == b"" and time.monotonic() < deadline:
            assert sub.get_many(10, 0) == []  # one read, not whole yet
        assert sub.connection.transport._read_buffer != b"", "never stopped half-way"
        sub.set_prefetch(20)  # returns at once
        assert sub.connection.transport._read_buffer != b""
        got = drain(sub, 2, timeout=10)
        assert [d.envelope.headers["id"] for d in got] == ["big", "after"]
        assert got[0].envelope.body == body
        sub.ack_many(got)
    finally:
        sub.close()


def test_ack_many_leaves_held_deliveries_unacked(broker: AMQPBroker, queue: str) -> None:
    broker.publish_many([(envelope(task_id=f"t{i}"), to_queue(queue), None) for i in range(6)])
    sub = broker.subscribe([queue], prefetch=10)
    got = drain(sub, 6)
    # Hold t3 and t5 (e.g. running acks_late tasks): a `multiple` ack must not take them.
    sub.ack_many([got[i] for i in (0, 1, 2, 4)])
    sub.ack_many([got[0]])  # acking twice is harmless
    sub.close()
    again = broker.subscribe([queue], prefetch=10)
    try:
        back = drain(again, 2)
        assert sorted(d.envelope.headers["id"] for d in back) == ["t3", "t5"]
        assert all(d.redelivered for d in back)
        again.ack_many(back)
    finally:
        again.close()


def test_reject_requeue_or_drop(broker: AMQPBroker, queue: str) -> None:
    broker.publish_many([(envelope(task_id="keep"), to_queue(queue), None),
                         (envelope(task_id="drop"), to_queue(queue), None)])
    sub = broker.subscribe([queue], prefetch=10)
    try:
        keep, drop = drain(sub, 2)
        sub.reject(drop, requeue=False)
        sub.reject(keep, requeue=True)
        (back,) = drain(sub, 1)
        assert back.envelope.headers["id"] == "keep" and back.redelivered
        sub.ack(back)
        assert sub.get_many(5, 0.2) == []
    finally:
        sub.close()


def test_prefetch_bounds_what_is_delivered(broker: AMQPBroker, queue: str) -> None:
    broker.publish_many([(envelope(task_id=f"t{i}"), to_queue(queue), None) for i in range(5)])
    sub = broker.subscribe([queue], prefetch=2)
    try:
        first = sub.get_many(10, 1.0)
        time.sleep(0.2)
        first += sub.get_many(10, 0.1)
        assert len(first) == 2
        sub.ack_many(first)
        second = drain(sub, 3, timeout=1.0)
        assert len(second) == 2  # still two at a time
        sub.ack_many(second)
        assert len(drain(sub, 1)) == 1
    finally:
        sub.close()


def test_several_queues_name_their_deliveries(broker: AMQPBroker, cleanup: Cleanup) -> None:
    a, b = cleanup.queue(unique("a")), cleanup.queue(unique("b"))
    broker.declare([Queue(a, Exchange(""), a), Queue(b, Exchange(""), b)])
    broker.publish(envelope(task_id="to-a"), to_queue(a))
    broker.publish(envelope(task_id="to-b"), to_queue(b))
    sub = broker.subscribe([a, b], prefetch=10)
    try:
        got = {d.envelope.headers["id"]: d.queue for d in drain(sub, 2)}
        assert got == {"to-a": a, "to-b": b}
    finally:
        sub.close()


def test_set_queues_adds_and_cancels_consumers(broker: AMQPBroker, cleanup: Cleanup) -> None:
    a, b = cleanup.queue(unique("a")), cleanup.queue(unique("b"))
    broker.declare([Queue(a, Exchange(""), a), Queue(b, Exchange(""), b)])
    sub = broker.subscribe([a], prefetch=10)
    try:
        sub.set_queues([a, b])
        broker.publish(envelope(task_id="to-b"), to_queue(b))
        (got,) = drain(sub, 1)
        assert (got.envelope.headers["id"], got.queue) == ("to-b", b)
        sub.ack(got)
        sub.set_queues([b])
        broker.publish(envelope(task_id="to-a"), to_queue(a))
        assert sub.get_many(5, 0.3) == []
        assert ready_count(a) == 1
    finally:
        sub.close()


def test_revoked_ids_kept_until_they_expire(broker: AMQPBroker, cleanup: Cleanup) -> None:
    broker.revoked_queue = cleanup.queue(unique("revoked"))  # not the shared celeriac.revoked
    broker.store_revoked(["r-1", "r-2"], time.time() + 60)
    broker.store_revoked(["gone"], time.time() + 0.05)
    time.sleep(0.1)
    assert sorted(broker.load_revoked()) == ["r-1", "r-2"]
    assert sorted(broker.load_revoked()) == ["r-1", "r-2"]  # reading keeps them


def test_priority_queue_serves_highest_first(broker: AMQPBroker, cleanup: Cleanup) -> None:
    name = cleanup.queue(unique("prio"))
    broker.declare([Queue(name, Exchange(""), name, max_priority=10)])
    broker.publish(envelope(task_id="low", priority=1), to_queue(name))
    broker.publish(envelope(task_id="high", priority=9), to_queue(name))
    sub = broker.subscribe([name], prefetch=10)
    try:
        assert [d.envelope.headers["id"] for d in drain(sub, 2)] == ["high", "low"]
    finally:
        sub.close()


def test_topic_exchange_routing(broker: AMQPBroker, cleanup: Cleanup) -> None:
    exchange = Exchange(cleanup.exchange(unique("topic")), "topic")
    images, every = cleanup.queue(unique("img")), cleanup.queue(unique("all"))
    broker.declare([Queue(images, exchange, "media.image.*"), Queue(every, exchange, "media.#")])
    broker.publish(envelope(task_id="jpg"), Route(images, exchange.name, "media.image.jpg", "topic"))
    broker.publish(envelope(task_id="mp4"), Route(every, exchange.name, "media.video.mp4", "topic"))
    a, b = broker.subscribe([images], prefetch=10), broker.subscribe([every], prefetch=10)
    try:
        assert [d.envelope.headers["id"] for d in drain(a, 1)] == ["jpg"]
        assert sorted(d.envelope.headers["id"] for d in drain(b, 2)) == ["jpg", "mp4"]
    finally:
        a.close()
        b.close()


def test_purge_and_delete(broker: AMQPBroker, queue: str) -> None:
    broker.publish_many([(envelope(), to_queue(queue), None)] * 3)
    assert broker.purge(queue) == 3
    assert broker.purge(unique("never-declared")) == 0
    broker.delete_queue(queue, queue, queue)
    with pytest.raises(amqp.exceptions.NotFound):
        ready_count(queue)


# -- declarations, as Celery makes them ---------------------------------------------------


def test_topology_is_celerys(broker: AMQPBroker, cleanup: Cleanup) -> None:
    """Our declarations, then Celery's for the same settings: no PRECONDITION_FAILED, same flags."""
    import celery
    import kombu

    plain, prio, quorum = (cleanup.queue(unique(n)) for n in ("plain", "prio", "quorum"))
    topic = cleanup.exchange(unique("topicx"))
    for name in (plain, prio, quorum):
        cleanup.exchange(name)
    ours = Celery("ours", broker=URL, set_as_current=False)
    ours.conf.task_queues = [
        Queue(plain, Exchange(plain), plain),
        Queue(prio, Exchange(prio), prio, max_priority=10),
        Queue(quorum, Exchange(topic, "topic"), "q.#", queue_arguments={"x-queue-type": "quorum"}),
    ]
    broker.declare(list(ours.router.queues.values()))

    theirs = celery.Celery("theirs", broker=URL, set_as_current=False)
    theirs.conf.task_queues = [
        kombu.Queue(plain, kombu.Exchange(plain), plain),
        kombu.Queue(prio, kombu.Exchange(prio), prio, max_priority=10),
        kombu.Queue(quorum, kombu.Exchange(topic, "topic"), "q.#", queue_arguments={"x-queue-type": "quorum"}),
    ]
    with theirs.connection_for_write() as connection:
        channel = connection.default_channel
        for name in (plain, prio, quorum):
            theirs.amqp.queues[name](channel).declare()  # raises if anything differs
    queues = list_queues()
    assert (queues[plain]["durable"], queues[plain]["auto_delete"], queues[plain]["arguments"]) == (True, False, {})
    assert queues[prio]["arguments"] == {"x-max-priority": 10}
    assert queues[quorum]["type"] == "quorum"
    bindings = list_bindings()
    assert (plain, plain, "queue", plain) in bindings
    # Celery's worker bindings for native delayed delivery of a quorum queue on a topic exchange.
    assert ("celery_delayed_delivery", topic, "exchange", "#.q.#") in bindings


def test_default_celery_queue_from_router(broker: AMQPBroker, cleanup: Cleanup) -> None:
    name = cleanup.queue(unique("celery"))
    cleanup.exchange(name)
    app = Celery("x", broker=URL, set_as_current=False)
    app.conf.task_default_queue = name
    app.conf.task_queue_max_priority = 10
    broker.declare(list(app.router.queues.values()))
    queue = list_queues()[name]
    assert (queue["durable"], queue["auto_delete"], queue["exclusive"]) == (True, False, False)
    assert queue["arguments"] == {"x-max-priority": 10}
    assert (name, name, "queue", name) in list_bindings()


# -- wire compatibility with Celery 5.7 ---------------------------------------------------


def _basic_get(queue: str) -> amqp.Message:
    with connect() as connection:
        message = connection.channel().basic_get(queue, no_ack=True)
    assert message is not None
    return message


def test_delivery_mode_settings_as_celerys(broker: AMQPBroker, queue: str) -> None:
    """`task_default_delivery_mode`, apply_async's `delivery_mode` and a queue exchange's
    `delivery_mode` reach the message's properties as Celery sends them."""
    import celery
    import kombu

    theirs = celery.Celery("theirs", broker=URL, set_as_current=False)
    ours = Celery("ours", broker=URL, set_as_current=False)
    for app in (theirs, ours):
        app.conf.task_default_delivery_mode = "transient"
        app.send_task("proj.add", [1], queue=queue)
    assert _basic_get(queue).properties["delivery_mode"] == _basic_get(queue).properties["delivery_mode"] == 1
    for app in (theirs, ours):
        app.send_task("proj.add", [1], queue=queue, delivery_mode="persistent")
    assert _basic_get(queue).properties["delivery_mode"] == _basic_get(queue).properties["delivery_mode"] == 2
    theirs.conf.task_default_delivery_mode = ours.conf.task_default_delivery_mode = "persistent"
    theirs.conf.task_queues = [kombu.Queue(queue, kombu.Exchange(queue, "direct", delivery_mode=1), queue)]
    ours.conf.task_queues = [Queue(queue, Exchange(queue, "direct", delivery_mode=1), queue)]
    for app in (theirs, ours):
        app.send_task("proj.add", [1], queue=queue)
    assert _basic_get(queue).properties["delivery_mode"] == _basic_get(queue).properties["delivery_mode"] == 1
    ours.conf.task_default_delivery_mode = "sometimes"
    with pytest.raises(ImproperlyConfigured, match="delivery_mode"):
        ours.send_task("proj.add", [1], queue="elsewhere")
    theirs.close()
    ours.close()


def test_task_message_equals_celerys(broker: AMQPBroker, queue: str) -> None:
    import celery

    theirs = celery.Celery("theirs", broker=URL, set_as_current=False)
    ours = Celery("ours", broker=URL, set_as_current=False)
    # Args as a list and an explicit ignore_result: for tuple args and send_task's default
    # the producer differs today (argsrepr '[2, 3]' vs '(2, 3)'; ignore_result False vs None).
    options = {"queue": queue, "reply_to": "reply-q", "priority": 5, "ignore_result": False}
    for app in (theirs, ours):
        app.send_task("proj.add", [2, 3], {"z": [1, None]}, task_id="golden-1", **options)
    theirs_msg, ours_msg = _basic_get(queue), _basic_get(queue)
    assert ours_msg.body == theirs_msg.body
    assert ours_msg.properties == theirs_msg.properties
    assert ours_msg.delivery_info["exchange"] == theirs_msg.delivery_info["exchange"] == ""
    assert ours_msg.delivery_info["routing_key"] == theirs_msg.delivery_info["routing_key"] == queue
    ours.broker.close()


def test_kombu_producer_to_our_subscription(broker: AMQPBroker, queue: str) -> None:
    import kombu

    headers = {"task": "proj.add", "id": "k-1", "timelimit": [None, None], "stamps": {}}
    with kombu.Connection(URL) as connection:
        producer = kombu.Producer(connection)
        producer.publish([[1, 2], {}, {}], routing_key=queue, serializer="json", headers=headers,
                         correlation_id="k-1", reply_to="r", priority=3, delivery_mode=2)
    sub = broker.subscribe([queue], prefetch=1)
    try:
        (delivery,) = drain(sub, 1)
        env = delivery.envelope
        assert env.body == b"[[1, 2], {}, {}]"
        assert env.headers == headers
        assert (env.content_type, env.content_encoding) == ("application/json", "utf-8")
        assert {k: env.properties[k] for k in ("correlation_id", "reply_to", "priority", "delivery_mode")} \
            == {"correlation_id": "k-1", "reply_to": "r", "priority": 3, "delivery_mode": 2}
        sub.ack(delivery)
    finally:
        sub.close()


def test_our_message_read_by_kombu(broker: AMQPBroker, queue: str) -> None:
    import kombu

    broker.publish(envelope(b'[[7], {}, {"callbacks": null}]', "o-1", reply_to="r"), to_queue(queue))
    with kombu.Connection(URL) as connection:
        message = kombu.Queue(queue, kombu.Exchange(queue), queue)(connection.default_channel).get(no_ack=True)
        assert message.payload == [[7], {}, {"callbacks": None}]
        assert message.headers == {"task": "tests.add", "id": "o-1"}
        assert message.properties["correlation_id"] == "o-1"


# -- publisher confirms -------------------------------------------------------------------


def test_confirms_on_by_default_and_nack_raises(broker: AMQPBroker, cleanup: Cleanup) -> None:
    assert broker.confirm_publish
    name = cleanup.queue(unique("full"))
    broker.declare([Queue(name, Exchange(""), name, max_length=1,
                          queue_arguments={"x-overflow": "reject-publish"})])
    broker.publish(envelope(), to_queue(name))
    with pytest.raises(OperationalError, match="nacked"):
        broker.publish(envelope(), to_queue(name))
    broker.purge(name)
    broker.publish(envelope(), to_queue(name))  # the link is usable again


def test_confirms_can_be_turned_off(queue: str) -> None:
    b = AMQPBroker(URL, {"broker_transport_options": {"confirm_publish": False}})
    try:
        assert not b.confirm_publish
        b.publish_many([(envelope(), to_queue(queue), None)] * 10)
        deadline = time.monotonic() + 5
        while ready_count(queue) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready_count(queue) == 10
    finally:
        b.close()


def test_send_to_missing_exchange_does_not_poison_the_link(broker: AMQPBroker, queue: str) -> None:
    broker.send(envelope(), unique("no-such-exchange"), "x")
    broker.publish_fanout(unique("nobody-listens"), envelope())
    broker.publish(envelope(task_id="after"), to_queue(queue))
    assert _basic_get(queue).headers["id"] == "after"


# -- delayed delivery ---------------------------------------------------------------------


@pytest.mark.slow
def test_delays_come_out_in_due_order(broker: AMQPBroker, queue: str) -> None:
    start = time.time()
    broker.publish(envelope(task_id="two"), to_queue(queue), not_before=start + 2)
    broker.publish(envelope(task_id="one"), to_queue(queue), not_before=start + 1)
    assert ready_count(queue) == 0
    sub = broker.subscribe([queue], prefetch=10)
    try:
        arrivals = []
        while len(arrivals) < 2 and time.time() - start < 6:
            arrivals += [(d.envelope.headers["id"], time.time() - start, d) for d in sub.get_many(2, 0.05)]
        assert [name for name, _, _ in arrivals] == ["one", "two"]
        assert 1.0 <= arrivals[0][1] < 1.8 and 2.0 <= arrivals[1][1] < 2.8
        info = arrivals[0][2].envelope.properties["delivery_info"]
        assert (info["exchange"], info["routing_key"]) == ("", queue)
        sub.ack_many([d for _, _, d in arrivals])
    finally:
        sub.close()


@pytest.mark.slow
def test_defer_keeps_the_message_in_rabbitmq(broker: AMQPBroker, queue: str) -> None:
    broker.publish(envelope(task_id="later"), to_queue(queue))
    sub = broker.subscribe([queue], prefetch=10)
    try:
        (delivery,) = drain(sub, 1)
        due = time.time() + 1.2
        sub.defer(delivery, due)
        assert sub.unacked == set()  # acked: nothing held by the consumer or in worker memory
        (back,) = drain(sub, 1, timeout=5)
        assert time.time() >= due
        assert back.envelope.headers["id"] == "later" and back.envelope.body == delivery.envelope.body
        sub.ack(back)
        assert sub.get_many(5, 0.3) == []  # delivered once
    finally:
        sub.close()


def test_delay_topology_is_celerys(broker: AMQPBroker, queue: str) -> None:
    from kombu import Connection
    from kombu.transport.native_delayed_delivery import (
        declare_native_delayed_delivery_exchanges_and_queues,
    )

    broker.publish(envelope(), to_queue(queue), not_before=time.time() + 3600)
    with Connection(URL) as connection:
        declare_native_delayed_delivery_exchanges_and_queues(connection, "quorum")  # no conflict
    assert list_queues()["celery_delayed_11"]["arguments"]["x-message-ttl"] == 2048000
    assert ("celery_delayed_delivery", queue, "queue", delay_binding_key(queue)) in list_bindings()


@pytest.mark.slow
def test_celery_native_delayed_delivery_reaches_our_quorum_queue(broker: AMQPBroker, cleanup: Cleanup) -> None:
    import celery
    import kombu

    name, topic = cleanup.queue(unique("qq")), cleanup.exchange(unique("qqx"))
    broker.declare([Queue(name, Exchange(topic, "topic"), name, queue_arguments={"x-queue-type": "quorum"})])
    theirs = celery.Celery("theirs", broker=URL, set_as_current=False)
    theirs.conf.task_queues = [kombu.Queue(name, kombu.Exchange(topic, "topic"), name,
                                           queue_arguments={"x-queue-type": "quorum"})]
    start = time.time()
    theirs.send_task("proj.add", (1, 1), queue=name, countdown=2)
    assert ready_count(name) == 0  # in the delay levels, not in the queue
    sub = broker.subscribe([name], prefetch=1)
    try:
        (delivery,) = drain(sub, 1, timeout=8)
        assert time.time() - start >= 1.9
        assert delivery.envelope.headers["task"] == "proj.add"
        sub.ack(delivery)
    finally:
        sub.close()


# -- fanout / remote control ----------------------------------------------------------------


def test_fanout_reaches_every_subscriber_in_pidbox_layout(broker: AMQPBroker, cleanup: Cleanup) -> None:
    exchange = cleanup.exchange(unique("pidbox"))
    args = {"x-expires": 10000, "x-message-ttl": 300000}
    one = broker.subscribe_fanout(exchange, f"w1@h.{exchange}", args)
    two = broker.subscribe_fanout(exchange, f"w2@h.{exchange}", args)
    assert isinstance(one, FanoutSubscription)
    try:
        queues = list_queues()
        node = queues[f"w1@h.{exchange}"]
        assert (node["durable"], node["auto_delete"], node["exclusive"]) == (False, True, True)
        assert node["arguments"] == args
        broker.publish_fanout(exchange, envelope(b'{"method": "ping"}', "ping"))
        assert one.get(5).body == b'{"method": "ping"}'
        assert two.get(5).body == b'{"method": "ping"}'
        assert one.get(0.1) is None
    finally:
        one.close()
        two.close()


def test_reply_queue_on_direct_exchange(broker: AMQPBroker, cleanup: Cleanup) -> None:
    exchange, oid = cleanup.exchange(unique("reply")), "6d49138b-oid"
    sub = broker.subscribe_fanout(exchange, f"{oid}.{exchange}", {"x-expires": 10000},
                                  routing_key=oid, exchange_type="direct")
    try:
        broker.send(envelope(b'{"w1": {"ok": "pong"}}', "r", delivery_mode=1), exchange, oid)
        broker.send(envelope(b"not for us", "r"), exchange, "someone-else")
        assert sub.get(5).body == b'{"w1": {"ok": "pong"}}'
        assert sub.get(0.2) is None
    finally:
        sub.close()


# -- failures -------------------------------------------------------------------------------


def test_gives_up_with_operational_error_naming_masked_url() -> None:
    b = AMQPBroker("amqp://guest:topsecret@127.0.0.1:1//",
                   {"broker_connection_max_retries": 2, "broker_transport_options": {"interval_start": 0}})
    with pytest.raises(OperationalError) as info:
        b.publish(envelope(), to_queue("x"))
    assert "127.0.0.1:1" in str(info.value) and "topsecret" not in str(info.value)
    with pytest.raises(OperationalError):
        AMQPBroker("amqp://127.0.0.1:1//", {"broker_connection_retry": False}).subscribe(["x"], prefetch=1)


def test_bad_credentials_fail_at_once() -> None:
    require_amqp()
    b = AMQPBroker("amqp://guest:wrong@127.0.0.1:5672//", {})
    start = time.monotonic()
    with pytest.raises(OperationalError, match="refused"):
        b.publish(envelope(), to_queue("x"))
    assert time.monotonic() - start < 5


def test_failover_to_the_next_url(queue: str) -> None:
    b = AMQPBroker(f"amqp://guest:guest@127.0.0.1:1//;{URL}", {})
    try:
        b.publish(envelope(task_id="via-second"), to_queue(queue))
        assert b._url_index == 1
        assert _basic_get(queue).headers["id"] == "via-second"
    finally:
        b.close()


def test_consuming_an_unknown_queue_raises(broker: AMQPBroker) -> None:
    with pytest.raises(OperationalError, match="NOT_FOUND"):
        broker.subscribe([unique("missing")], prefetch=1)


@pytest.mark.slow
def test_heartbeats_keep_an_idle_consumer_alive(queue: str) -> None:
    b = AMQPBroker(URL, {"broker_heartbeat": 1})
    sub = b.subscribe([queue], prefetch=1)
    try:
        generation = sub.generation
        time.sleep(3.5)  # no get_many: only the heartbeat thread talks to RabbitMQ
        b.publish(envelope(task_id="alive"), to_queue(queue))
        (delivery,) = drain(sub, 1)
        assert sub.generation == generation and not delivery.redelivered
        sub.ack(delivery)
    finally:
        sub.close()
        b.close()


_CONSUMER = textwrap.dedent("""
    import sys, time
    from celeriac.brokers.amqp import AMQPBroker
    broker = AMQPBroker(sys.argv[1], {})
    sub = broker.subscribe([sys.argv[2]], prefetch=1)
    while not sub.get_many(1, 1.0):
        pass
    print("got it", flush=True)
    time.sleep(60)
""")


def test_message_of_a_killed_consumer_is_redelivered(broker: AMQPBroker, queue: str) -> None:
    broker.publish(envelope(task_id="survivor"), to_queue(queue))
    child = subprocess.Popen([sys.executable, "-c", _CONSUMER, URL, queue], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "got it"
        assert ready_count(queue) == 0  # held, unacked, by the child
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        sub = broker.subscribe([queue], prefetch=1)
        try:
            (delivery,) = drain(sub, 1)
            assert delivery.envelope.headers["id"] == "survivor" and delivery.redelivered
            sub.ack(delivery)
        finally:
            sub.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.slow
def test_consumer_and_publisher_survive_a_rabbitmq_restart() -> None:
    """On a private node (the shared server is not touched), so it runs everywhere."""
    with running_node() as node:
        broker = AMQPBroker(node.url, CONF)
        queue = "restart-q"
        broker.declare([Queue(queue, Exchange(queue, "direct"), queue)])
        try:
            _survive_a_restart(node, broker, queue)
        finally:
            broker.close()


def _survive_a_restart(node: Any, broker: AMQPBroker, queue: str) -> None:
    broker.publish(envelope(task_id="before"), to_queue(queue))
    sub = broker.subscribe([queue], prefetch=2)
    received: list[Any] = []
    errors: list[BaseException] = []

    def consume() -> None:  # waits in get_many while RabbitMQ is down, then reconnects
        try:
            received.extend(drain(sub, 2, timeout=60))
        except BaseException as exc:
            errors.append(exc)

    def publish_during_outage() -> None:
        try:
            broker.publish(envelope(task_id="during"), to_queue(queue))
        except BaseException as exc:
            errors.append(exc)

    try:
        (held,) = drain(sub, 1)
        consumer = threading.Thread(target=consume)
        publisher = threading.Thread(target=publish_during_outage)
        node.stop()
        consumer.start()
        time.sleep(0.5)
        publisher.start()  # retries with backoff until RabbitMQ is back
        time.sleep(1.5)
        node.start()
        publisher.join(60)
        consumer.join(60)
        assert not errors
        assert sorted(d.envelope.headers["id"] for d in received) == ["before", "during"]
        assert [d.redelivered for d in received if d.envelope.headers["id"] == "before"] == [True]
        sub.ack(held)  # a stale tag: ignored, no crash
        sub.ack_many(received)
        assert sub.get_many(5, 0.3) == []
    finally:
        sub.close()
