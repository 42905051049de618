"""Bulk enqueue (a group's members in one publish) on Redis: the LPUSHes packed by the broker
itself (`RedisBroker._push`) give the same lists, raise error replies, and survive a killed
connection without sending twice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from celeriac.brokers.base import Envelope, Route  # noqa: E402
from celeriac.brokers.redis import RedisBroker, _lpush_command, decode_envelope, encode_envelope  # noqa: E402
from redis_server import redis_url, require_redis  # noqa: E402

DB = 13


def test_lpush_command_is_what_hiredis_packs() -> None:
    import hiredis

    texts = ["{\"a\": 1}", "", "x" * 5000, "\u00e9\r\n"]
    assert _lpush_command("q\u00e9", texts) == hiredis.pack_command(("LPUSH", "q\u00e9", *texts))


def test_publish_many_pushes_in_order_to_each_list() -> None:
    r = require_redis(DB)
    broker = RedisBroker(redis_url(DB), {})
    a, b = Route("a", "", "a"), Route("b", "", "b")
    items = [(Envelope(b"%d" % n, {"n": n}), a if n % 3 else b, None) for n in range(10)]
    broker.publish_many(items)
    for name, numbers in (("a", [1, 2, 4, 5, 7, 8]), ("b", [0, 3, 6, 9])):
        raws = [raw.decode() for raw in r.lrange(name, 0, -1)][::-1]
        assert [json.loads(raw)["headers"]["n"] for raw in raws] == numbers
        for raw in raws:
            tag = json.loads(raw)["properties"]["delivery_tag"]
            assert encode_envelope(decode_envelope(raw), "", name, tag) == raw
    broker.close()


def test_publish_many_raises_an_error_reply_and_the_connection_stays_usable() -> None:
    r = require_redis(DB)
    broker = RedisBroker(redis_url(DB), {})
    r.set("busy", "not a list")
    items = [(Envelope(b"1", {}), Route("busy", "", "busy"), None), (Envelope(b"2", {}), Route("ok", "", "ok"), None)]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        broker.publish_many(items)
    assert r.llen("ok") == 1  # the commands after the failed one still ran, as in a pipeline
    broker.publish_many(items[1:])
    assert r.llen("ok") == 2
    broker.close()


def test_publish_many_on_a_killed_connection_reconnects_and_sends_once() -> None:
    r = require_redis(DB)
    broker = RedisBroker(redis_url(DB), {})
    route = Route("q", "", "q")
    broker.publish_many([(Envelope(b"0", {"n": 0}), route, None), (Envelope(b"1", {"n": 1}), route, None)])
    pool_id = broker.client.client_id()  # a pool connection: the one the next publish takes
    assert r.execute_command("CLIENT", "KILL", "ID", pool_id) == 1
    broker.publish_many([(Envelope(b"2", {"n": 2}), route, None), (Envelope(b"3", {"n": 3}), route, None)])
    assert [json.loads(raw)["headers"]["n"] for raw in r.lrange("q", 0, -1)][::-1] == [0, 1, 2, 3]
    broker.close()
