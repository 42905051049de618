"""The fast enqueue paths give the same messages as the plain ones (issue 9).

- settings read as attributes are cached, and a later change is seen;
- `ids.uuid4` makes RFC 4122 version 4 ids;
- group members built from a `MessageTemplate` equal what `build_task_message` builds;
- the Redis encoding of such members is byte for byte `encode_envelope`'s;
- router functions still see each member's arguments;
- the Redis publishing link survives a killed connection and a fork.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from celeriac import Celery, group  # noqa: E402
from celeriac.brokers.base import Envelope, Route, SharedEnvelope  # noqa: E402
from celeriac.brokers.redis import RedisBroker, _SharedEncoding, decode_envelope, encode_envelope  # noqa: E402
from celeriac.config import Settings  # noqa: E402
from celeriac.ids import uuid4, uuid4_many  # noqa: E402
from celeriac.producer import _message_arguments, _template, send_batch  # noqa: E402
from celeriac.protocol import build_task_message, decode_body, task_message_from_envelope  # noqa: E402
from helpers import drain_envelopes as drain  # noqa: E402
from redis_server import redis_url, require_redis  # noqa: E402

DB = 13


def memory_app(**settings: Any) -> Celery:
    return Celery("t", broker=f"memory://{uuid.uuid4().hex}", backend=f"memory://{uuid.uuid4().hex}",
                  set_as_current=False, **settings)


# -- settings ----------------------------------------------------------------------------------


def test_settings_read_as_attributes_see_every_later_change() -> None:
    conf = Settings()
    assert conf.task_serializer == "json"
    conf.update(task_serializer="pickle")
    assert conf.task_serializer == "pickle"
    conf["task_serializer"] = "msgpack"
    assert conf.task_serializer == "msgpack"
    conf.CELERY_TASK_SERIALIZER = "yaml"  # an old name stands for the new one
    assert conf.task_serializer == "yaml"
    del conf.task_serializer
    assert conf.task_serializer == "json"
    assert conf.task_default_exchange == "celery"  # falls back to task_default_queue
    conf.task_default_queue = "other"
    assert conf.task_default_exchange == "other"
    assert conf.setdefault("task_compression", "gzip") is None  # a default counts as set


def test_conf_update_after_the_first_send_changes_the_next_message() -> None:
    app = memory_app()

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(1, 2)
    app.conf.update(task_serializer="pickle", task_compression="gzip")
    add.serializer = None  # the task took the app's serializer when it was bound
    add.delay(3, 4)
    first, second = drain(app)
    assert first.content_type == "application/json" and "compression" not in first.headers
    assert second.content_type == "application/x-python-serialize"
    assert second.headers["compression"] == "application/x-gzip"
    assert decode_body(task_message_from_envelope(second, None), None)[0] == [3, 4]


def test_routing_settings_changed_after_the_first_send_apply_to_the_next() -> None:
    app = memory_app()

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(1, 2)
    app.conf.update(task_default_priority=5, task_routes={"t.add": {"queue": "elsewhere"}})
    add.delay(3, 4)
    assert [e.properties["priority"] for e in drain(app)] == [0]
    assert [e.properties["priority"] for e in drain(app, "elsewhere")] == [5]


# -- ids -----------------------------------------------------------------------------------------


def test_uuid4_text_is_an_rfc4122_version4_uuid() -> None:
    ids = [uuid4() for _ in range(500)] + uuid4_many(500)
    assert len(set(ids)) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert uuid4_many(0) == []


def test_uuid4_made_ahead_are_never_shared_by_threads_or_a_forked_child() -> None:
    import threading

    from celeriac import _state

    uuid4()  # the parent now holds ids made ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids and pid, to the parent
        os.close(read)
        os.write(write, json.dumps({"pid": _state.pid, "ids": [uuid4() for _ in range(100)]}).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert child["pid"] == pid and _state.pid == os.getpid()
    parent = [uuid4() for _ in range(100)]
    assert not set(parent) & set(child["ids"])

    per_thread: list[list[str]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=lambda out=out: out.extend(uuid4() for _ in range(5000))) for out in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({i for ids in per_thread for i in ids}) == 20000


# -- group members from a template ---------------------------------------------------------------


MEMBERS: list[tuple[Any, dict[str, Any]]] = [
    ((1,), {}),
    (["snow \u2603 \"quoted\" 100%", {"n": [1, None, 2.5]}], {"k": "v"}),
    ((), {"only": True}),
]


@pytest.mark.parametrize("options", [
    {},
    {"group_id": "g1", "group_index": 0, "link": {"task": "t.cb", "args": [], "kwargs": {}, "options": {},
                                                  "subtask_type": None, "immutable": False}},
    {"headers": {"x-extra": "\u00e9"}, "compression": "gzip", "expires": 30, "priority": 7},
    {"serializer": "pickle", "root_id": "r1", "parent_id": "p1"},
])
def test_template_members_equal_build_task_message(options: dict[str, Any]) -> None:
    app = memory_app()
    arguments, _route, _ = _message_arguments(app, "t.add", (0,), {}, dict(options), None)
    template = _template(arguments, build_task_message(**arguments))
    for index, (args, kwargs) in enumerate(MEMBERS):
        task_id = uuid4()
        member = template.make(task_id, args, kwargs, index)
        expected = build_task_message(**{**arguments, "task_id": task_id, "args": args, "kwargs": kwargs,
                                         "group_index": index})
        assert isinstance(member, SharedEnvelope)
        assert list(member.headers.items()) == list(expected.headers.items())
        assert list(member.properties.items()) == list(expected.properties.items())
        assert member.body == expected.body
        assert (member.content_type, member.content_encoding) == (expected.content_type, expected.content_encoding)
        assert member.headers["root_id"] == (options.get("root_id") or task_id)


@pytest.mark.parametrize("route", [Route("celery", "", "celery"), Route("q", "ex%s", "rk.%d", "topic")])
def test_shared_encoding_is_byte_identical_to_encode_envelope(route: Route) -> None:
    app = memory_app()
    options = {"group_id": "g", "headers": {"note": "100% %s \u00e9"}, "priority": 3}
    arguments, _r, _ = _message_arguments(app, "t.add", (0,), {}, dict(options), None)
    template = _template(arguments, build_task_message(**arguments))
    encoding = _SharedEncoding(template.first, template.changed, route.exchange, route.routing_key)
    calls = [(uuid4(), args, kwargs, index) for index, (args, kwargs) in enumerate(MEMBERS)]
    members = template.members(calls)
    for call, member, values in zip(calls, members.envelopes(), members.values, strict=True):
        assert member == template.make(*call)
        tag = uuid4()
        text = encoding.encode(member, tag)
        assert text == encode_envelope(member, route.exchange, route.routing_key, tag)
        assert encoding.fill(values[0], (*values[1], *values[2]), tag) == text  # a `Members` item's text
        assert base64.b64decode(json.loads(text)["body"]) == member.body


def test_group_members_are_whole_messages_on_any_broker() -> None:
    app = memory_app()

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    result = group(add.s(i, i) for i in range(5)).apply_async()
    envelopes = drain(app)
    assert [e.headers["id"] for e in envelopes] == [r.id for r in result.results]
    assert [e.headers["group_index"] for e in envelopes] == list(range(5))
    assert {e.headers["group"] for e in envelopes} == {result.id}
    assert [e.headers["root_id"] for e in envelopes] == [r.id for r in result.results]
    assert [e.headers["argsrepr"] for e in envelopes] == [repr((i, i)) for i in range(5)]
    assert [e.properties["correlation_id"] for e in envelopes] == [r.id for r in result.results]
    bodies = [decode_body(task_message_from_envelope(e), None)[0] for e in envelopes]
    assert bodies == [[i, i] for i in range(5)]


def test_a_router_function_routes_each_member_by_its_arguments() -> None:
    seen: list[Any] = []

    def by_parity(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> Any:
        seen.append(tuple(args))
        return {"queue": "even" if args[0] % 2 == 0 else "odd"}

    app = memory_app(task_routes=[by_parity])

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    group(add.s(i, 0) for i in range(6)).apply_async()
    assert seen == [(i, 0) for i in range(6)]
    assert [e.headers["argsrepr"] for e in drain(app, "even")] == ["(0, 0)", "(2, 0)", "(4, 0)"]
    assert [e.headers["argsrepr"] for e in drain(app, "odd")] == ["(1, 0)", "(3, 0)", "(5, 0)"]


def test_send_batch_builds_each_message_alone_when_options_differ() -> None:
    app = memory_app()
    messages = [("t.add", (i,), {}, {"priority": i % 2, "task_id": f"id-{i}"}) for i in range(4)]
    ids = send_batch(app, messages)
    assert ids == [f"id-{i}" for i in range(4)]
    envelopes = drain(app)
    assert sorted((e.headers["id"], e.properties["priority"]) for e in envelopes) == [
        ("id-0", 0), ("id-1", 1), ("id-2", 0), ("id-3", 1)]


# -- the Redis publishing link ------------------------------------------------------------------


def test_redis_publishing_link_survives_a_killed_connection_and_a_fork() -> None:
    r = require_redis(DB)
    broker = RedisBroker(redis_url(DB), {})
    route = Route("link", "", "link")
    broker.publish(Envelope(b"1", {"n": 1}), route)
    link_id = broker._command("CLIENT", "ID")  # runs on the link
    assert r.execute_command("CLIENT", "KILL", "ID", link_id) == 1
    broker.publish(Envelope(b"2", {"n": 2}), route)  # reconnects and sends once
    pid = os.fork()
    if pid == 0:  # the child publishes on a connection of its own
        code = 1
        try:
            broker.publish(Envelope(b"3", {"n": 3}), route)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    broker.publish(Envelope(b"4", {"n": 4}), route)  # the parent's link still works
    assert [json.loads(m)["headers"]["n"] for m in r.lrange("link", 0, -1)][::-1] == [1, 2, 3, 4]
    broker.close()


# -- delay() from the task's template -------------------------------------------------------------


def test_repeated_delay_calls_are_whole_messages_and_follow_changes() -> None:
    app = memory_app()

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    results = [add.delay(i, y=i) for i in range(3)]
    add.queue = "other"  # a task option changed after the first sends
    moved = add.delay(9, y=9)
    add.queue = None
    back = add.delay(6, y=6)
    app.conf.task_compression = "gzip"  # and a setting
    compressed = add.delay(7, y=7)
    sent = drain(app)
    assert [e.headers["id"] for e in sent] == [r.id for r in results] + [back.id, compressed.id]
    for envelope, i in zip(sent, [0, 1, 2, 6, 7], strict=True):
        assert envelope.headers["root_id"] == envelope.headers["id"] == envelope.properties["correlation_id"]
        assert envelope.headers["argsrepr"] == f"({i},)" and envelope.headers["kwargsrepr"] == f"{{'y': {i}}}"
        assert decode_body(task_message_from_envelope(envelope), None)[:2] == ([i], {"y": i})
        assert envelope.properties["reply_to"] == app.oid
    assert [e.headers.get("compression") for e in sent] == [None, None, None, None, "application/x-gzip"]
    assert [e.headers["id"] for e in drain(app, "other")] == [moved.id]


def test_delay_with_a_task_expiry_gets_its_own_expiry_each_time() -> None:
    app = memory_app()

    @app.task(name="t.add", expires=60)
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(1, 1)
    time.sleep(0.01)
    add.delay(2, 2)
    first, second = drain(app)
    assert first.headers["expires"] < second.headers["expires"]


def test_redis_messages_of_templates_are_what_encode_envelope_writes() -> None:
    r = require_redis(DB)
    app = Celery("t", broker=redis_url(DB), backend=None, set_as_current=False)

    @app.task(name="t.add", ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    for i in range(3):
        add.delay(i, "100% \u00e9")
    group(add.s(i, i) for i in range(3)).apply_async()
    raws = [raw.decode() for raw in r.lrange("celery", 0, -1)][::-1]
    assert len(raws) == 6
    for raw in raws:
        tag = json.loads(raw)["properties"]["delivery_tag"]
        assert encode_envelope(decode_envelope(raw), "", "celery", tag) == raw
    assert [json.loads(raw)["headers"]["argsrepr"] for raw in raws] == [
        "(0, '100% \u00e9')", "(1, '100% \u00e9')", "(2, '100% \u00e9')", "(0, 0)", "(1, 1)", "(2, 2)"]
    app.close()


@pytest.mark.parametrize("with_receiver", [False, True])
def test_redis_group_of_mixed_members_keeps_order_ids_and_signals(with_receiver: bool) -> None:
    """Plain members go to Redis as `Members` items (one per run of one task); other members
    between them, and a before_task_publish receiver (which needs each envelope), still give
    every message, in the group's order."""
    from celeriac import signals

    r = require_redis(DB)
    r.delete("celery", "other")
    app = Celery("t", broker=redis_url(DB), backend=None, set_as_current=False)

    @app.task(name="t.add", ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.mul", ignore_result=True)
    def mul(x: int, y: int) -> int:
        return x * y

    seen: list[str] = []

    def receiver(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        seen.append(headers["id"])

    if with_receiver:
        signals.before_task_publish.connect(receiver)
    try:
        members = [add.s(0, 0), add.s(1, 1), mul.s(2, 2), add.s(3, 3).set(priority=9), add.s(4, 4),
                   add.s(5, 5), mul.s(6, 6).set(queue="other")]
        result = group(members).apply_async()
    finally:
        signals.before_task_publish.disconnect(receiver)
    ids = [child.id for child in result.results]
    raws = ([json.loads(raw) for raw in r.lrange("celery", 0, -1)][::-1]
            + [json.loads(raw) for raw in r.lrange("celery\x06\x169", 0, -1)])
    by_id = {raw["headers"]["id"]: raw for raw in raws + [json.loads(x) for x in r.lrange("other", 0, -1)]}
    assert set(by_id) == set(ids)
    for index, task_id in enumerate(ids):
        message = by_id[task_id]
        assert message["headers"]["group"] == result.id
        assert message["headers"]["group_index"] == index
        assert message["headers"]["root_id"] == task_id
        assert message["properties"]["correlation_id"] == task_id
        assert json.loads(base64.b64decode(message["body"]))[0] == [index, index]
        assert encode_envelope(decode_envelope(json.dumps(message)), "", message["properties"]["delivery_info"]["routing_key"],
                               message["properties"]["delivery_tag"]) == json.dumps(message)
    plain_order = [raw["headers"]["id"] for raw in raws if raw["properties"]["priority"] == 0]
    assert plain_order == [ids[i] for i in (0, 1, 2, 4, 5)]
    assert len({raw["properties"]["delivery_tag"] for raw in by_id.values()}) == 7
    assert seen == (ids if with_receiver else [])
    r.delete("celery", "other", "celery\x06\x169")
    app.close()
