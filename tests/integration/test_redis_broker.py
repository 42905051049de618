"""The Redis broker against a real Redis: kombu's layout, batching, delays, recovery, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from celeriac.brokers.base import Envelope, Route  # noqa: E402
from celeriac.brokers.redis import SEP, RedisBroker  # noqa: E402
from celeriac.entities import Broadcast, Exchange, Queue  # noqa: E402
from celeriac.exceptions import OperationalError  # noqa: E402
from redis_server import RedisServer, redis_url, require_redis, wait_for_port  # noqa: E402

pytestmark = pytest.mark.redis
DB = 10


@pytest.fixture
def r():
    return require_redis(DB)


def make_broker(url: str = redis_url(DB), **options) -> RedisBroker:
    return RedisBroker(url, {"broker_transport_options": options})


@pytest.fixture
def broker(r):
    b = make_broker()
    yield b
    b.close()


def env(task_id: str = "t1", priority: int | None = None, body: bytes = b'[[1], {}, {}]') -> Envelope:
    props: dict = {"correlation_id": task_id, "reply_to": "r", "delivery_mode": 2}
    if priority is not None:
        props["priority"] = priority
    return Envelope(body, {"task": "t.add", "id": task_id}, props)


def ids(deliveries) -> list[str]:
    return [d.envelope.headers["id"] for d in deliveries]


def to(queue: str) -> Route:
    return Route(queue, "", queue)


def force_restore_check(sub) -> None:
    # Restores run at most every `unacked_restore_interval` seconds: make the next call run one.
    sub._next_tick = sub._next_restore = 0


def test_publish_get_ack_in_kombus_layout(r, broker):
    broker.publish(env("a"), to("celery"))
    raw = json.loads(r.lrange("celery", 0, -1)[0])
    assert raw["properties"]["delivery_info"] == {"exchange": "", "routing_key": "celery"}
    sub = broker.subscribe(["celery"], prefetch=10)
    [d] = sub.get_many(10, 0)
    assert (d.queue, d.tag, d.redelivered, d.envelope.body) == ("celery", raw["properties"]["delivery_tag"], False, b'[[1], {}, {}]')
    assert json.loads(r.hget("unacked", d.tag)) == [raw, "", "celery"]
    assert r.zscore("unacked_index", d.tag) == pytest.approx(time.time(), abs=5)
    sub.ack_many([d])
    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0
    assert r.hlen(sub.held_key) == 0
    sub.close()
    assert r.zscore("_celeriac.consumers", sub.id) is None


def test_priority_lists_and_order(r, broker):
    for i, priority in enumerate([9, 7, 3, 0, None, 2]):
        broker.publish(env(f"p{i}", priority), to("celery"))
    assert r.llen("celery") == 3 and r.llen(f"celery{SEP}3") == 1
    assert r.llen(f"celery{SEP}6") == 1 and r.llen(f"celery{SEP}9") == 1
    sub = broker.subscribe(["celery"], prefetch=0)
    # Priority 0 first on Redis (kombu), FIFO within a step.
    assert ids(sub.get_many(100, 0)) == ["p3", "p4", "p5", "p2", "p1", "p0"]
    sub.close()


def test_get_many_respects_limit_and_prefetch(broker):
    broker.publish_many([(env(f"m{i}"), to("celery"), None) for i in range(500)])
    sub = broker.subscribe(["celery"], prefetch=300)
    first = sub.get_many(200, 0)
    assert ids(first) == [f"m{i}" for i in range(200)]
    assert len(sub.get_many(200, 0)) == 100  # prefetch caps what is held
    assert sub.get_many(200, 0) == []
    sub.ack_many(first)
    assert len(sub.get_many(500, 0)) == 200
    sub.close()


def test_idle_consumer_wakes_at_once(broker):
    sub = broker.subscribe(["celery"], prefetch=0)
    sub.get_many(1, 0)  # first tick done
    timer = threading.Timer(0.3, broker.publish, (env("late"), to("celery")))
    start = time.monotonic()
    timer.start()
    got = sub.get_many(10, 5)
    elapsed = time.monotonic() - start
    assert ids(got) == ["late"] and 0.25 < elapsed < 0.6
    assert sub.get_many(10, 0.2) == []
    sub.close()


def test_several_queues_rotate(broker):
    for i in range(4):
        broker.publish(env(f"a{i}"), to("qa"))
        broker.publish(env(f"b{i}"), to("qb"))
    sub = broker.subscribe(["qa", "qb"], prefetch=0)
    got = [sub.get_many(1, 0)[0] for _ in range(8)]
    assert sorted(d.queue for d in got[:2]) == ["qa", "qb"]  # neither queue starves
    assert sorted(ids(got)) == sorted([f"a{i}" for i in range(4)] + [f"b{i}" for i in range(4)])
    sub.close()


def test_declare_writes_kombu_bindings(r, broker):
    broker.declare([Queue("celery", Exchange("celery"), "celery"), Queue("plain")])
    assert r.smembers("_kombu.binding.celery") == {f"celery{SEP}{SEP}celery".encode()}
    assert r.smembers("_kombu.binding_permanent.celery") == {f"celery{SEP}{SEP}celery".encode()}
    broker.declare([Queue("reply", Exchange("reply.x"), "rk", expires=10)])
    assert r.smembers("_kombu.binding.reply.x") == {f"rk{SEP}{SEP}reply".encode()}
    assert not r.exists("_kombu.binding_permanent.reply.x")
    deadline = r.zscore("_kombu.binding_deadlines", "reply.x")
    assert deadline == pytest.approx(time.time() * 1000 + 3600_000, abs=10_000)


def test_named_direct_and_topic_exchanges(r, broker):
    broker.declare([
        Queue("d1", Exchange("direct_x"), "k"), Queue("d2", Exchange("direct_x"), "k"),
        Queue("t1", Exchange("topic_x", "topic"), "news.*"), Queue("t2", Exchange("topic_x", "topic"), "#.eu"),
    ])
    broker.publish(env("d"), Route("", "direct_x", "k"))
    broker.publish(env("t"), Route("", "topic_x", "news.eu", "topic"))
    broker.publish(env("u"), Route("", "topic_x", "sport.eu", "topic"))
    assert (r.llen("d1"), r.llen("d2"), r.llen("t1"), r.llen("t2")) == (1, 1, 1, 2)
    raw = json.loads(r.lindex("t1", 0))
    assert raw["properties"]["delivery_info"] == {"exchange": "topic_x", "routing_key": "news.eu"}


def test_fanout_is_pubsub_on_kombus_channel(r, broker):
    broker.declare([Broadcast("bcast")])
    listener = broker.subscribe_fanout("bcast")
    pidbox = broker.subscribe_fanout("celeryev", routing_key="worker.#")
    assert listener.pattern == f"/{DB}.bcast" and pidbox.pattern == f"/{DB}.celeryev/worker.*"
    broker.publish(env("b"), Route("", "bcast", "", "fanout"))
    broker.publish_fanout("celeryev", env("e"), "worker.heartbeat")
    assert listener.get(2).headers["id"] == "b"
    got = pidbox.get(2)
    assert got.headers["id"] == "e"
    assert got.properties["delivery_info"] == {"exchange": "celeryev", "routing_key": "worker.heartbeat"}
    assert listener.get(0.1) is None
    assert r.llen("bcast") == 0
    listener.close()
    pidbox.close()


def test_reject_requeue_goes_to_tail_marked_redelivered(r, broker):
    broker.publish_many([(env(i), to("celery"), None) for i in ("x", "y")])
    sub = broker.subscribe(["celery"], prefetch=0)
    x, y = sub.get_many(2, 0)
    broker.publish(env("z"), to("celery"))
    sub.reject(x, requeue=True)
    sub.reject(y, requeue=False)
    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0
    got = sub.get_many(10, 0)
    assert ids(got) == ["z", "x"]
    assert got[1].redelivered and got[1].envelope.headers["redelivered"] is True
    assert got[1].tag == x.tag
    sub.close()


def test_close_gives_back_to_the_head_in_order(r, broker):
    broker.publish_many([(env(f"c{i}"), to("celery"), None) for i in range(4)])
    sub = broker.subscribe(["celery"], prefetch=0)
    got = sub.get_many(3, 0)
    sub.ack(got[1])
    sub.close()
    assert r.hlen("unacked") == 0 and not r.exists(sub.held_key)
    again = broker.subscribe(["celery"], prefetch=0)
    back = again.get_many(10, 0)
    assert ids(back) == ["c0", "c2", "c3"]
    assert [d.redelivered for d in back] == [True, True, False]
    again.close()


def test_visibility_timeout_restore_honours_kombus_mutex(r):
    broker = make_broker(visibility_timeout=1, heartbeat_ttl=0)
    broker.publish(env("v"), to("celery"))
    lost = broker.subscribe(["celery"], prefetch=0)
    [d] = lost.get_many(1, 0)  # never acked, never closed
    time.sleep(1.1)
    r.set("unacked_mutex", "someone-else", px=5000)
    other = broker.subscribe(["celery"], prefetch=0)
    assert other.get_many(1, 0) == []  # a kombu worker is restoring: leave it alone
    r.delete("unacked_mutex")
    force_restore_check(other)
    [back] = other.get_many(1, 0)
    assert back.tag == d.tag and back.redelivered
    assert not r.exists("unacked_mutex")
    other.close()


def test_delayed_publish_waits_in_a_zset_not_in_unacked(r, broker):
    due = time.time() + 1.0
    broker.publish(env("later", priority=6), to("celery"), not_before=due)
    broker.publish(env("now"), to("celery"), not_before=time.time() - 1)
    assert r.zcard(f"celery{SEP}delayed") == 1 and r.llen("celery") == 1
    sub = broker.subscribe(["celery"], prefetch=0)
    assert ids(sub.get_many(10, 0)) == ["now"]
    start = time.time()
    got = sub.get_many(10, 3)
    assert ids(got) == ["later"] and due - 0.05 <= time.time() < due + 0.5, time.time() - start
    assert got[0].envelope.properties["priority"] == 6
    assert r.zcard(f"celery{SEP}delayed") == 0
    sub.close()


def test_defer_moves_out_of_unacked(r, broker):
    broker.publish(env("eta"), to("celery"))
    sub = broker.subscribe(["celery"], prefetch=1)
    [d] = sub.get_many(1, 0)
    sub.defer(d, time.time() + 0.8)
    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0 and r.zcard(f"celery{SEP}delayed") == 1
    assert sub.get_many(1, 0.2) == []
    [again] = sub.get_many(1, 3)
    assert again.tag == d.tag and again.envelope.headers["id"] == "eta"
    sub.close()


def test_many_delayed_messages_keep_no_memory(r, broker):
    due = time.time() + 3600
    broker.publish_many([(env(f"e{i}"), to("celery"), due) for i in range(5000)])
    sub = broker.subscribe(["celery"], prefetch=0)
    assert sub.get_many(100, 0) == [] and sub.held == {}
    assert r.zcard(f"celery{SEP}delayed") == 5000 and r.hlen("unacked") == 0
    sub.close()


DEAD_CONSUMER = """
import sys, time
from celeriac.brokers.redis import RedisBroker
b = RedisBroker({url!r}, {{"broker_transport_options": {{"heartbeat_ttl": 1}}}})
s = b.subscribe(["celery"], prefetch=0)
print(len(s.get_many(3, 2)), flush=True)
time.sleep(60)
"""


def test_killed_consumers_messages_come_back_within_seconds(r):
    broker = make_broker(heartbeat_ttl=1)
    broker.publish_many([(env(f"k{i}"), to("celery"), None) for i in range(3)])
    code = textwrap.dedent(DEAD_CONSUMER.format(url=redis_url(DB)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"3"
        assert r.hlen("unacked") == 3
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        sub = broker.subscribe(["celery"], prefetch=0)
        start = time.monotonic()
        got = []
        while len(got) < 3 and time.monotonic() - start < 6:
            got += sub.get_many(10, 0.5)
        assert sorted(ids(got)) == ["k0", "k1", "k2"] and all(d.redelivered for d in got)
        assert time.monotonic() - start < 4
        assert r.zcard("_celeriac.consumers") == 1  # the dead one is forgotten
        sub.ack_many(got)
        sub.close()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_live_consumer_keeps_its_messages_past_the_visibility_timeout(r):
    broker = make_broker(heartbeat_ttl=0.6, visibility_timeout=1)
    broker.publish(env("long"), to("celery"))
    busy = broker.subscribe(["celery"], prefetch=0)
    [d] = busy.get_many(1, 0)
    other = broker.subscribe(["celery"], prefetch=0)
    end = time.monotonic() + 2.5
    while time.monotonic() < end:  # a long task: the heartbeat keeps it ours
        force_restore_check(other)
        assert other.get_many(1, 0.2) == []
    busy.ack(d)
    busy.close()
    other.close()
    assert r.hlen("unacked") == 0


def test_global_keyprefix(r):
    broker = make_broker(global_keyprefix="pre:")
    broker.declare([Queue("celery", Exchange("celery"), "celery")])
    broker.publish(env("g", priority=9), to("celery"))
    sub = broker.subscribe(["celery"], prefetch=0)
    [d] = sub.get_many(1, 0)
    assert r.hexists("pre:unacked", d.tag) and r.zscore("pre:unacked_index", d.tag)
    assert r.exists("pre:_kombu.binding.celery") and r.exists(f"pre:{sub.held_key.removeprefix('pre:')}")
    assert broker.fanout_channel("bcast", "celery") == f"pre:/{DB}.bcast/celery"
    sub.close()
    assert r.llen(f"pre:celery{SEP}9") == 1
    assert not [k for k in r.keys() if not k.startswith(b"pre:")]


def test_purge_counts_every_priority(r, broker):
    broker.publish_many([(env(str(p), p), to("celery"), None) for p in (0, 3, 6, 9, 0)])
    assert broker.purge("celery") == 5
    assert r.dbsize() == 0


def test_password_url_tutorial_form():
    with RedisServer(password="332572") as server:
        broker = RedisBroker(f"redis://:332572@127.0.0.1:{server.port}/1", {})
        broker.publish(env("pw"), to("celery"))
        sub = broker.subscribe(["celery"], prefetch=0)
        assert ids(sub.get_many(1, 0)) == ["pw"]
        sub.close()
        assert server.client(1).llen("celery") == 1
        wrong = RedisBroker(f"redis://:nope@127.0.0.1:{server.port}/1", {"broker_connection_max_retries": 1})
        with pytest.raises(Exception, match="(?i)password|auth"):
            wrong.publish(env(), to("celery"))


def test_unix_socket_url(tmp_path):
    path = tmp_path / "redis.sock"
    with RedisServer(extra=["--unixsocket", str(path)]) as server:
        broker = RedisBroker(f"redis+socket://{path}?virtual_host=3", {})
        broker.publish(env("sock"), to("celery"))
        assert server.client(3).llen("celery") == 1


def test_gives_up_with_operational_error_naming_masked_url():
    with RedisServer() as server:
        port = server.port
    broker = RedisBroker(f"redis://:secret@127.0.0.1:{port}/0", {"broker_connection_max_retries": 2})
    with pytest.raises(OperationalError, match=rf"redis://:\*\*@127.0.0.1:{port}/0") as info:
        broker.publish(env(), to("celery"))
    assert "secret" not in str(info.value)
    nope = RedisBroker(f"redis://127.0.0.1:{port}/0", {"broker_connection_retry": False})
    start = time.monotonic()
    with pytest.raises(OperationalError):
        nope.purge("celery")
    assert time.monotonic() - start < 1


def test_redis_restart_loses_nothing():
    with RedisServer(appendonly=True) as server:
        broker = RedisBroker(server.url(), {"broker_transport_options": {"heartbeat_ttl": 0}})
        broker.publish_many([(env(f"r{i}"), to("celery"), None) for i in range(10)])
        sub = broker.subscribe(["celery"], prefetch=0)
        first = sub.get_many(5, 0)
        sub.ack_many(first[:3])
        server.stop(signal.SIGKILL)  # appendfsync always: every write is on disk
        threading.Timer(0.7, server.start).start()
        publisher = threading.Thread(target=broker.publish, args=(env("during"), to("celery")))
        publisher.start()
        rest = sub.get_many(100, 5)  # reconnects with backoff and goes on
        publisher.join(10)
        rest += sub.get_many(100, 0.5)
        assert sorted(ids(rest)) == sorted([f"r{i}" for i in range(5, 10)] + ["during"])
        sub.ack_many(rest)
        sub.close()  # r3, r4 were never acked: back to the queue
        again = broker.subscribe(["celery"], prefetch=0)
        assert sorted(ids(again.get_many(100, 0))) == ["r3", "r4"]
        again.close()
        broker.close()


def test_rediss_with_broker_use_ssl_and_url_options(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                           "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                           "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True)
    if made.returncode:
        pytest.skip(f"openssl cannot make a certificate: {made.stderr[-200:]!r}")
    server = RedisServer()
    server.extra = ["--port", "0", "--tls-port", str(server.port), "--tls-cert-file", str(cert),
                    "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    with server:
        url = f"rediss://127.0.0.1:{server.port}/2"
        by_conf = RedisBroker(url, {"broker_use_ssl": {"ssl_cert_reqs": "required", "ssl_ca_certs": str(cert)}})
        by_conf.publish(env("tls1"), to("celery"))
        by_query = RedisBroker(f"{url}?ssl_cert_reqs=required&ssl_ca_certs={cert}", {})
        sub = by_query.subscribe(["celery"], prefetch=0)
        assert ids(sub.get_many(5, 1)) == ["tls1"]
        sub.close()
        untrusted = RedisBroker(f"{url}?ssl_cert_reqs=required", {"broker_connection_max_retries": 1})
        with pytest.raises(OperationalError):
            untrusted.publish(env(), to("celery"))


def test_sentinel_finds_the_master(tmp_path):
    with RedisServer() as master:
        port = master.port
        sentinel_port = RedisServer().port
        conf = tmp_path / "sentinel.conf"
        conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                        f"sentinel monitor mymaster 127.0.0.1 {port} 1\n")
        proc = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
        try:
            wait_for_port(sentinel_port, proc)
            url = f"sentinel://127.0.0.1:1/5;sentinel://127.0.0.1:{sentinel_port}/5"
            broker = RedisBroker(url, {"broker_transport_options": {"master_name": "mymaster"}})
            broker.publish(env("sent"), to("celery"))
            assert master.client(5).llen("celery") == 1
            assert broker.fanout_channel("x") == "/5.x"
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)


def test_messages_popped_for_a_lost_reply_are_given_back(r, broker):
    broker.publish_many([(env(f"l{i}"), to("celery"), None) for i in range(3)])
    sub = broker.subscribe(["celery"], prefetch=0)
    keys, names = sub._keys()
    # The pop script ran but its reply never arrived (the connection dropped).
    broker.fetch_script(keys=[broker.unacked_key, broker.index_key, sub.held_key, *keys],
                        args=[2, time.time(), "", 0, *names])
    assert r.hlen(sub.held_key) == 2 and r.llen("celery") == 1
    sub._recover()
    assert r.hlen(sub.held_key) == 0 and r.hlen("unacked") == 0
    assert ids(sub.get_many(10, 0)) == ["l0", "l1", "l2"]
    sub.close()


def test_undecodable_message_is_dropped_not_stuck(r, broker):
    r.lpush("celery", b"not json \xff")
    broker.publish(env("fine"), to("celery"))
    sub = broker.subscribe(["celery"], prefetch=0)
    assert ids(sub.get_many(10, 0)) == ["fine"]
    assert r.hlen("unacked") == 1 and r.hlen(sub.held_key) == 1
    sub.close()


def test_unacked_records_tag_exchange_and_routing_key_of_any_envelope(r, broker):
    """The fetch script reads tag, exchange and routing key from the tail of a kombu-written
    envelope, and decodes any other JSON (other key order, escapes, a numeric or missing tag)."""
    def text(properties: dict) -> bytes:
        return json.dumps({"body": "W1sxXSwge30sIHt9XQ==", "content-encoding": "utf-8",
                           "content-type": "application/json",
                           "headers": {"task": "t.add", "id": "x", "delivery_tag": "not-this"},
                           "properties": properties}).encode()

    kombu_tail = {"correlation_id": "x", "delivery_mode": 2,
                  "delivery_info": {"exchange": "ex", "routing_key": "rk.1"}, "priority": 0,
                  "body_encoding": "base64", "delivery_tag": "tag-kombu"}
    other_order = {"delivery_tag": "tag-other", "body_encoding": "base64", "priority": 0,
                   "delivery_info": {"exchange": "e\"x", "routing_key": "r/k"}}
    numeric_tag = {"delivery_tag": 42, "body_encoding": "base64",
                   "delivery_info": {"exchange": "ex", "routing_key": 7}}
    no_tag = {"body_encoding": "base64", "delivery_info": {"exchange": "", "routing_key": ""}}
    raws = [text(p) for p in (kombu_tail, other_order, numeric_tag, no_tag)]
    r.lpush("celery", *raws)
    sub = broker.subscribe(["celery"], prefetch=0)
    got = sub.get_many(10, 0)
    import hashlib

    expected = [("tag-kombu", "ex", "rk.1"), ("tag-other", 'e"x', "r/k"), ("42", "", "celery"),
                (hashlib.sha1(raws[3]).hexdigest(), "", "celery")]
    assert [d.tag for d in got] == [tag for tag, _, _ in expected]
    for (tag, exchange, routing_key), raw in zip(expected, raws, strict=True):
        assert json.loads(r.hget("unacked", tag)) == [json.loads(raw), exchange, routing_key]
        assert r.hget(sub.held_key, tag) == b"celery"
        assert r.zscore("unacked_index", tag) == pytest.approx(time.time(), abs=5)
    sub.ack_many(got)
    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0 and r.hlen(sub.held_key) == 0
    sub.close()
