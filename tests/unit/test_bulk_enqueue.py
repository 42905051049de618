"""Bulk enqueue (a group's members in one publish) on Redis: the LPUSHes packed by the broker
itself (`RedisBroker._push`) give the same lists, raise error replies, and survive a killed
connection without sending twice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from celeriac.brokers.base import Envelope, Route  # noqa: E402
from celeriac.brokers.redis import RedisBroker, _lpush_command, decode_envelope, encode_envelope  # noqa: E402
from helpers import drain_envelopes as drain  # noqa: E402
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


def test_a_group_larger_than_one_lpush_keeps_its_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from celeriac import Celery, group
    from celeriac.brokers import redis as redis_broker

    r = require_redis(DB)
    monkeypatch.setattr(redis_broker, "_PUSH_CHUNK", 3)
    app = Celery("t", broker=redis_url(DB), backend=None, set_as_current=False)

    @app.task(name="t.add", ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    result = group(add.s(i, i) for i in range(10)).apply_async()
    raws = [raw.decode() for raw in r.lrange("celery", 0, -1)][::-1]
    assert [json.loads(raw)["headers"]["id"] for raw in raws] == [child.id for child in result.results]
    for raw in raws:
        tag = json.loads(raw)["properties"]["delivery_tag"]
        assert encode_envelope(decode_envelope(raw), "", "celery", tag) == raw
    app.close()


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


def test_a_connection_lost_between_chunks_sends_no_member_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunks of one push are a MULTI/EXEC: a connection lost after Redis has read the first
    chunk but before EXEC leaves nothing pushed, and the retry sends each member once."""
    import time

    from celeriac.brokers import redis as redis_broker

    r = require_redis(DB)
    monkeypatch.setattr(redis_broker, "_PUSH_CHUNK", 3)
    broker = RedisBroker(redis_url(DB), {})
    route = Route("q", "", "q")
    broker.publish_many([(Envelope(b"warm", {"n": -1}), route, None)])  # a pool connection to kill
    r.delete("q")
    victim = broker.client.client_id()
    packed = redis_broker._lpush_command
    calls = []

    def pack_then_kill(key: str, texts: Any) -> bytes:
        calls.append(len(texts))
        if len(calls) == 2:  # the first chunk is sent: let Redis read it, then drop the connection
            time.sleep(0.2)
            assert r.execute_command("CLIENT", "KILL", "ID", victim) == 1
        return packed(key, texts)

    monkeypatch.setattr(redis_broker, "_lpush_command", pack_then_kill)
    broker.publish_many([(Envelope(b"%d" % n, {"n": n}), route, None) for n in range(7)])
    assert calls[:3] == [3, 3, 1] and len(calls) == 6  # sent twice: the lost try, the retry
    assert [json.loads(raw)["headers"]["n"] for raw in r.lrange("q", 0, -1)][::-1] == list(range(7))
    broker.close()


# -- a group's results, made when first asked for -------------------------------------------------


def memory_app() -> Any:
    import uuid

    from celeriac import Celery

    return Celery("t", broker=f"memory://{uuid.uuid4().hex}", backend=f"memory://{uuid.uuid4().hex}",
                  set_as_current=False)


def test_group_results_are_made_when_first_asked_for_and_behave_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    from celeriac import GroupResult, group
    from celeriac.result import AsyncResult, PendingResults, ResultSet

    app = memory_app()

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    other = memory_app()
    foreign = other.task(name="t.add")(lambda x, y: x + y)
    nested = group(add.s(10, 10), add.s(11, 11))
    result = group([add.s(0, 0), add.s(1, 1), nested, add.s(2, 2).set(priority=3), foreign.s(3, 3)]).apply_async()
    assert type(result._results) is PendingResults  # nothing made yet
    assert len(result) == 6 and bool(result)
    assert type(result._results) is PendingResults
    sent = {e.headers["group_index"]: e.headers["id"] for e in drain(app)}  # the group's app sends all
    children = result.results
    assert type(result._results) is list and result.results is children  # made once
    assert sent == {index: r.id for index, r in enumerate(children)}
    assert all(type(r) is AsyncResult for r in children)
    assert [r.app for r in children] == [app] * 5 + [other]
    assert [r.task_name for r in children[:2]] == ["t.add", "t.add"]
    assert list(result) == children and result[0] == children[0] and result.children is children

    for n, child in enumerate(children):
        app.backend.mark_as_done(child.id, n)  # a set reads its members' states from its own backend
    assert result.get(timeout=5) == [0, 1, 2, 3, 4, 5] and result.ready() and result.completed_count() == 6

    result.save()
    restored = GroupResult.restore(result.id, app=app)
    assert restored == result and [r.id for r in restored.results] == [r.id for r in children]
    revoked: list[Any] = []
    monkeypatch.setattr(type(app.control), "revoke", lambda self, ids, **kw: revoked.append(ids))
    result.revoke()
    assert revoked == [[r.id for r in children]]
    assert repr(result).startswith(f"<GroupResult: {result.id} [{children[0].id}, ")
    assert result.as_tuple()[1] == [r.as_tuple() for r in children]
    rs = ResultSet(children[:2], app=app)
    rs.results = children[2:4]
    assert rs.results == children[2:4] and len(rs) == 2


def test_an_empty_group_result_is_falsy_without_an_id() -> None:
    from celeriac import GroupResult
    from celeriac.result import PendingResults

    app = memory_app()
    assert not GroupResult(None, PendingResults(app, [], []), app=app)
    assert GroupResult("g", PendingResults(app, [], []), app=app).results == []


def test_a_group_member_that_cannot_be_serialized_raises_and_nothing_is_sent() -> None:
    from celeriac import Celery, group

    r = require_redis(DB)
    app = Celery("t", broker=redis_url(DB), backend=None, set_as_current=False)

    @app.task(name="t.add", ignore_result=True)
    def add(x: Any, y: Any) -> Any:
        return x + y

    with pytest.raises(TypeError, match="not JSON serializable"):
        group([add.s(1, 1), add.s(2, 2), add.s(object(), 3), add.s(4, 4)]).apply_async()
    assert r.llen("celery") == 0
    group([add.s(1, 1), add.s(2, 2)]).apply_async()
    assert r.llen("celery") == 2
    app.close()


@pytest.mark.parametrize("n", [9, 10, 4096])
def test_uuid4_many_makes_canonical_version4_ids_of_any_count(n: int) -> None:
    import uuid

    from celeriac.ids import uuid4_many

    ids = uuid4_many(n)
    assert len(ids) == n == len(set(ids))
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
