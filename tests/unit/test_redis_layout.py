"""Golden tests: what the Redis broker writes is kombu's layout, byte for byte.

The first part is pure (captured envelopes from real Celery 5.7, URL parsing). The second part
puts real kombu 5.7 (a test dependency) and RedisBroker side by side on a live Redis (db 13).
"""

from __future__ import annotations

import base64
import json
import ssl
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from celeriac.brokers.base import Envelope, Route  # noqa: E402
from celeriac.brokers.redis import (  # noqa: E402
    SEP,
    RedisBroker,
    _step,
    _topic_matches,
    decode_envelope,
    encode_envelope,
    redis_client,
)
from redis_server import redis_url, require_redis  # noqa: E402

# Copies of shared/reference/captures/redis (see golden/README.md).
CAPTURES = Path(__file__).resolve().parent / "golden" / "redis"
DB = 13


def captured_messages() -> list[dict]:
    dump = json.loads((CAPTURES / "cap_redis_send1.json").read_text())
    out = []
    for key in ("celery", f"celery{SEP}6", "other"):
        for message in dump[key]["value"]:
            message = dict(message)
            message.pop("_decoded_body", None)
            out.append(message)
    return out


def as_envelope(message: dict) -> Envelope:
    props = {k: v for k, v in message["properties"].items() if k not in ("delivery_info", "body_encoding", "delivery_tag")}
    return Envelope(base64.b64decode(message["body"]), message["headers"], props,
                    message["content-type"], message["content-encoding"])


def same_but_tag(ours: str, theirs: str) -> None:
    tag = json.loads(theirs)["properties"]["delivery_tag"]
    ours_tag = json.loads(ours)["properties"]["delivery_tag"]
    assert ours.replace(ours_tag, tag) == theirs


@pytest.mark.skipif(not CAPTURES.exists(), reason="captures not found")
def test_envelopes_match_celery_captures_byte_for_byte():
    messages = captured_messages()
    assert len(messages) == 13
    for message in messages:
        info = message["properties"]["delivery_info"]
        ours = encode_envelope(as_envelope(message), info["exchange"], info["routing_key"])
        same_but_tag(ours, json.dumps(message))
        assert len(json.loads(ours)["properties"]["delivery_tag"]) == 36  # a uuid4


@pytest.mark.skipif(not CAPTURES.exists(), reason="captures not found")
def test_decode_captured_envelope():
    message = captured_messages()[0]
    envelope = decode_envelope(json.dumps(message))
    assert envelope.body == base64.b64decode(message["body"])
    assert envelope.headers == message["headers"]
    assert envelope.properties == message["properties"]
    assert (envelope.content_type, envelope.content_encoding) == ("application/json", "utf-8")


def test_priority_steps_like_kombu():
    assert [_step(p) for p in (None, -3, 0, 2, 3, 5, 6, 8, 9, 12, "7")] == [0, 0, 0, 0, 3, 3, 6, 6, 9, 9, 6]


def test_topic_patterns():
    assert _topic_matches("worker.#", "worker.heartbeat")
    assert _topic_matches("*.eu", "news.eu") and not _topic_matches("*.eu", "a.news.eu")
    assert _topic_matches("#", "anything.at.all") and not _topic_matches("a.b", "a.bb")


def pool_kwargs(url: str, **kw) -> dict:
    client, db = redis_client(url, **kw)
    return {**client.connection_pool.connection_kwargs, "db": db}


def test_redis_urls():
    kw = pool_kwargs("redis://:332572@127.0.0.1:6390/1")
    assert (kw["host"], kw["port"], kw["db"], kw["password"], kw.get("username")) == ("127.0.0.1", 6390, 1, "332572", None)
    kw = pool_kwargs("redis://user:p%40ss@h")
    assert (kw["host"], kw["port"], kw["db"], kw["username"], kw["password"]) == ("h", 6379, 0, "user", "p@ss")
    kw = pool_kwargs("redis+socket:///tmp/r.sock?virtual_host=2")
    assert (kw["path"], kw["db"]) == ("/tmp/r.sock", 2)


def test_rediss_ssl_options():
    client, _ = redis_client("rediss://h:6380/0?ssl_cert_reqs=CERT_NONE")
    kw = client.connection_pool.connection_kwargs
    assert kw["ssl_cert_reqs"] == "none" and kw["ssl_check_hostname"] is False
    client, _ = redis_client("redis://h/0", ssl={"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/ca.pem"})
    kw = client.connection_pool.connection_kwargs
    assert kw["ssl_cert_reqs"] == ssl.CERT_REQUIRED and kw["ssl_ca_certs"] == "/ca.pem"
    assert "SSL" in client.connection_pool.connection_class.__name__


def test_sentinel_url_needs_master_name():
    from celeriac.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured):
        redis_client("sentinel://h1:26379;sentinel://h2:26380")
    client, db = redis_client("sentinel://:pw@h1:26379/4;sentinel://h2:26380", options={"master_name": "mymaster"})
    assert db == 4
    assert client.connection_pool.service_name == "mymaster"
    hosts = [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
             for s in client.connection_pool.sentinel_manager.sentinels]
    assert hosts == [("h1", 26379), ("h2", 26380)]


# -- side by side with kombu 5.7 on a live Redis -----------------------------------------------


@pytest.fixture
def r():
    return require_redis(DB)


@pytest.fixture
def kombu_conn(r):
    kombu = pytest.importorskip("kombu")
    with kombu.Connection(redis_url(DB), transport_options={"visibility_timeout": 1}) as conn:
        yield conn


HEADERS = {"lang": "py", "task": "rtasks.add", "id": "t-golden", "eta": None, "retries": 0,
           "timelimit": [None, None], "argsrepr": "('ü', {'n': [1]})", "stamps": {}}
BODY = json.dumps([["ü", {"n": [1]}], {}, {"callbacks": None, "chain": None}]).encode()


def test_publish_is_byte_identical_to_kombu(r, kombu_conn):
    from kombu import Exchange as KExchange
    from kombu import Queue as KQueue

    queue = KQueue("golden", KExchange("golden", "direct"), "golden")
    producer = kombu_conn.Producer()
    for priority in (0, 7):
        producer.publish(BODY, exchange="", routing_key="golden", headers=HEADERS, content_type="application/json",
                         content_encoding="utf-8", correlation_id="t-golden", reply_to="oid", delivery_mode=2,
                         priority=priority, declare=[queue])
    theirs = [r.lpop("golden"), r.lpop(f"golden{SEP}6")]
    bindings = {k: r.smembers(k) for k in r.keys("_kombu.binding*")}
    r.flushdb()
    broker = RedisBroker(redis_url(DB), {})
    from celeriac.entities import Exchange, Queue

    broker.declare([Queue("golden", Exchange("golden"), "golden")])
    for priority in (0, 7):
        props = {"correlation_id": "t-golden", "reply_to": "oid", "delivery_mode": 2, "priority": priority}
        broker.publish(Envelope(BODY, HEADERS, props), Route("golden", "", "golden"))
    ours = [r.lpop("golden"), r.lpop(f"golden{SEP}6")]
    for mine, kombus in zip(ours, theirs, strict=True):
        same_but_tag(mine.decode(), kombus.decode())
    assert {k: r.smembers(k) for k in r.keys("_kombu.binding*")} == bindings


def test_kombu_to_celeriac_and_back(r, kombu_conn):
    # kombu publishes, RedisBroker consumes: same headers, body and delivery tag.
    producer = kombu_conn.Producer()
    producer.publish(BODY, routing_key="both", headers=HEADERS, content_type="application/json",
                     content_encoding="utf-8", priority=3)
    broker = RedisBroker(redis_url(DB), {})
    sub = broker.subscribe(["both"], prefetch=0)
    [delivery] = sub.get_many(10, 1)
    assert delivery.envelope.body == BODY and delivery.envelope.headers == HEADERS
    assert delivery.envelope.properties["priority"] == 3
    sub.ack(delivery)
    sub.close()
    # RedisBroker publishes, a kombu consumer receives the same message.
    broker.publish(Envelope(BODY, HEADERS, {"priority": 9}), Route("both", "", "both"))
    simple = kombu_conn.SimpleQueue("both")
    message = simple.get(timeout=2)
    assert message.body == BODY and message.headers == HEADERS
    assert message.content_type == "application/json" and message.properties["priority"] == 9
    assert message.delivery_info == {"exchange": "", "routing_key": "both"}
    assert r.hlen("unacked") == 1  # kombu recorded it in the same unacked hash
    message.ack()
    assert r.hlen("unacked") == 0
    simple.close()


def test_kombu_restores_what_a_lost_celeriac_consumer_held(r, kombu_conn):
    # Our unacked entries are in kombu's format: a Celery worker can restore them.
    broker = RedisBroker(redis_url(DB), {"broker_transport_options": {"heartbeat_ttl": 0}})
    broker.publish(Envelope(BODY, HEADERS, {}), Route("lost", "", "lost"))
    sub = broker.subscribe(["lost"], prefetch=0)
    [delivery] = sub.get_many(1, 0)
    r.zadd("unacked_index", {delivery.tag: time.time() - 10})  # delivered long ago
    channel = kombu_conn.default_channel
    channel.qos.restore_visible(num=10, interval=1)
    assert r.hlen("unacked") == 0
    raw = json.loads(r.lpop("lost"))
    assert raw["properties"]["delivery_tag"] == delivery.tag
    assert raw["headers"]["redelivered"] is True and raw["properties"]["delivery_info"]["redelivered"] is True


def test_celeriac_restores_what_a_lost_kombu_consumer_held(r, kombu_conn):
    producer = kombu_conn.Producer()
    producer.publish(BODY, routing_key="lost2", headers=HEADERS, content_type="application/json",
                     content_encoding="utf-8")
    simple = kombu_conn.SimpleQueue("lost2")
    message = simple.get(timeout=2)  # held by kombu, never acked
    r.zadd("unacked_index", {message.delivery_tag: time.time() - 10})
    broker = RedisBroker(redis_url(DB), {"broker_transport_options": {"visibility_timeout": 5}})
    sub = broker.subscribe(["lost2"], prefetch=0)
    [delivery] = sub.get_many(1, 0)
    assert delivery.tag == message.delivery_tag and delivery.redelivered
    assert delivery.envelope.headers == {**HEADERS, "redelivered": True}
    sub.ack(delivery)
    sub.close()
