"""Task protocol: golden messages from real Celery 5.7, and Celery's own builder, compared."""

from __future__ import annotations

import base64
import json
import os
import socket
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from celeriac.brokers.base import Envelope
from celeriac.exceptions import ContentDisallowed, DecodeError
from celeriac.protocol import (
    TaskMessage,
    build_task_message,
    decode_body,
    default_origin,
    parse_iso8601,
    task_message_from_envelope,
    to_iso8601,
)
from celeriac.serialization import DEFAULT_ACCEPT, accept_content_types, decompress, dumps, loads

GOLDEN = Path(__file__).parent / "golden" / "redis"
ALL_TYPES = accept_content_types(["json", "pickle", "msgpack"])
NOW = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
EMPTY_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

# Properties kombu's Redis transport adds to the envelope (not part of a task message).
KOMBU_REDIS_PROPERTIES = {"delivery_info", "body_encoding", "delivery_tag"}
STANDARD_HEADERS = [
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
]


# --- capture helpers ------------------------------------------------------------------------


def _send_captures() -> list[dict]:
    """Every envelope real Celery published in the client-side captures."""
    envelopes = []
    for path in sorted(GOLDEN.glob("cap_redis_send*.json")):
        for key in json.loads(path.read_text()).values():
            if key["type"] == "list":
                envelopes.extend(key["value"])
    return envelopes


def _monitor_captures() -> list[dict]:
    """Every task envelope pushed in the MONITOR logs (client and worker side)."""
    return [r["envelope"] for r in json.loads((GOLDEN / "monitor_task_envelopes.json").read_text())]


def _proto1_capture() -> dict:
    return json.loads((GOLDEN / "cap_redis_proto1.json").read_text())


def _envelope(redis_envelope: dict) -> Envelope:
    """The Envelope a Redis broker hands over for a kombu JSON envelope."""
    return Envelope(
        body=base64.b64decode(redis_envelope["body"]),
        headers=dict(redis_envelope["headers"]),
        properties=dict(redis_envelope["properties"]),
        content_type=redis_envelope["content-type"],
        content_encoding=redis_envelope["content-encoding"],
    )


def _body_of(redis_envelope: dict):
    """The body as kombu would decode it: the expected result of decode_body."""
    from kombu import compression as kombu_compression
    from kombu import serialization as kombu_serialization

    data = base64.b64decode(redis_envelope["body"])
    if "compression" in redis_envelope["headers"]:
        data = kombu_compression.decompress(data, redis_envelope["headers"]["compression"])
    return kombu_serialization.loads(
        data,
        redis_envelope["content-type"],
        redis_envelope["content-encoding"],
        accept=ALL_TYPES,
    )


def _ids(envelopes: list[dict]) -> list[str]:
    return [e["headers"].get("id") or e["properties"]["correlation_id"] for e in envelopes]


def _rebuild(redis_envelope: dict) -> Envelope:
    """Build with celeriac the message Celery built, from the options it recorded."""
    headers = redis_envelope["headers"]
    properties = redis_envelope["properties"]
    args, kwargs, embed = _body_of(redis_envelope)
    custom = {k: v for k, v in headers.items() if k not in STANDARD_HEADERS and k != "compression"}
    now = None
    if "expiration" in properties and headers["expires"]:
        # The expiration property counts from the client's "now": recover it.
        now = parse_iso8601(headers["expires"]) - timedelta(
            milliseconds=int(properties["expiration"])
        )
    serializer = {"application/json": "json", "application/x-python-serialize": "pickle"}
    return build_task_message(
        headers["task"],
        headers["id"],
        tuple(args),
        kwargs,
        eta=headers["eta"],
        expires=headers["expires"],
        group_id=headers["group"],
        group_index=headers["group_index"],
        retries=headers["retries"],
        time_limit=headers["timelimit"][0],
        soft_time_limit=headers["timelimit"][1],
        # None for a stand-alone task, to check the default (root_id = own id).
        root_id=None if headers["root_id"] == headers["id"] else headers["root_id"],
        parent_id=headers["parent_id"],
        origin=headers["origin"],
        ignore_result=headers["ignore_result"],
        shadow=headers["shadow"],
        callbacks=embed["callbacks"],
        errbacks=embed["errbacks"],
        chain=embed["chain"],
        chord=embed["chord"],
        reply_to=properties["reply_to"],
        priority=properties["priority"],
        headers=custom,
        serializer=serializer[redis_envelope["content-type"]],
        compression="gzip" if "compression" in headers else None,
        replaced_task_nesting=headers["replaced_task_nesting"],
        stamped_headers=headers["stamped_headers"],
        stamps=headers["stamps"],
        now=now,
    )


# --- golden: build --------------------------------------------------------------------------


def test_plain_apply_async_matches_capture():
    """`add.apply_async((2, 3), task_id='t-plain')` (celery-wire.md 1.1)."""
    captured = next(e for e in _send_captures() if e["headers"]["id"] == "t-plain")
    envelope = build_task_message(
        "rtasks.add", "t-plain", (2, 3), reply_to=captured["properties"]["reply_to"]
    )
    expected_headers = dict(captured["headers"], origin=envelope.headers["origin"])
    assert list(envelope.headers) == list(captured["headers"]) == STANDARD_HEADERS
    assert envelope.headers == expected_headers
    assert envelope.properties == {
        k: v for k, v in captured["properties"].items() if k not in KOMBU_REDIS_PROPERTIES
    }
    assert envelope.body == base64.b64decode(captured["body"])
    assert envelope.body == (
        b'[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
    )
    assert (envelope.content_type, envelope.content_encoding) == ("application/json", "utf-8")
    assert envelope.headers["origin"] == f"gen{os.getpid()}@{socket.gethostname()}"


REBUILDABLE = _send_captures() + _monitor_captures()


@pytest.mark.parametrize("captured", REBUILDABLE, ids=_ids(REBUILDABLE))
def test_rebuild_every_captured_message(captured):
    """Every message Celery sent (client and worker side) is rebuilt byte for byte."""
    envelope = _rebuild(captured)
    assert list(envelope.headers) == list(captured["headers"])
    assert envelope.headers == captured["headers"]
    # Worker retries also copy `origin` into the properties (a Celery quirk, 1.3).
    properties = {
        k: v
        for k, v in captured["properties"].items()
        if k not in KOMBU_REDIS_PROPERTIES and k != "origin"
    }
    assert envelope.properties == properties
    assert list(envelope.properties) == list(properties)
    assert envelope.body == base64.b64decode(captured["body"])
    assert envelope.content_type == captured["content-type"]
    assert envelope.content_encoding == captured["content-encoding"]


# --- Celery's own builder -------------------------------------------------------------------

CELERY_CASES = {
    "plain": dict(args=(2, 3)),
    "countdown": dict(args=(1,), countdown=30),
    "countdown-fraction": dict(args=(1,), countdown=0.25),
    "countdown-other-tz": dict(countdown=3600, now=NOW.astimezone(ZoneInfo("Europe/Paris"))),
    "eta-aware": dict(eta=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
    "eta-offset": dict(eta=datetime(2030, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=-5)))),
    "eta-string": dict(eta="2030-01-02T03:04:05+00:00"),
    "expires-seconds": dict(expires=60),
    "expires-float": dict(expires=0.5),
    "expires-datetime": dict(expires=datetime(2030, 1, 1, tzinfo=UTC)),
    "expires-string": dict(expires="2030-01-01T00:00:00+00:00"),
    "time-limits": dict(time_limit=30, soft_time_limit=20),
    "soft-only": dict(soft_time_limit=5.5),
    "group": dict(group_id="grp-id", group_index=3),
    "unicode-nested": dict(
        args=("héllo ✓ 日本", [1, {"a": 2}], {"k": None}),
        kwargs={"ü": ["x", 1.5, True], "n": {"m": [None]}},
    ),
    "list-args": dict(args=[1, 2]),
    "kwargs-only": dict(args=None, kwargs={"y": 5}),
    "ids": dict(root_id="root-1", parent_id="parent-1", retries=2),
    "shadow-ignore": dict(shadow="custom.name", ignore_result=True),
    "reprs": dict(argsrepr="<hidden>", kwargsrepr="<hidden kw>"),
    "canvas": dict(
        callbacks=[{"task": "t.cb", "args": [], "kwargs": {}, "options": {}}],
        errbacks=[{"task": "t.eb", "args": [], "kwargs": {}, "options": {}, "immutable": True}],
        chain=[{"task": "t.next", "args": [4], "kwargs": {}, "options": {"task_id": "c-3"}}],
        chord={"task": "t.body", "args": [], "kwargs": {}, "options": {"group_id": "g"}},
    ),
    # Celery's saferepr stops at 3 levels ("{'a': (...)}"); ours is plain repr() (faster,
    # display only): every other header and the body must still be identical.
    "deep-nesting": dict(args=([1, {"a": (2, [3])}],), kwargs={"k": {"l": {"m": [1]}}}),
    "nesting": dict(replaced_task_nesting=2),
    "stamps": dict(stamped_headers=["mystamp"], stamps={"mystamp": "v"}),
    "long-args": dict(args=(1, 2, 3), argsrepr="x" * 10),
}


def _celery_app():
    from celery import Celery

    return Celery("protocol-tests", broker="memory://", set_as_current=False)


@pytest.mark.parametrize("case", list(CELERY_CASES), ids=list(CELERY_CASES))
def test_same_message_as_celery_as_task_v2(case):
    from kombu.utils.json import dumps as kombu_dumps

    options = dict(CELERY_CASES[case])
    args = options.pop("args", ())
    kwargs = options.pop("kwargs", None)
    options.setdefault("now", NOW)
    stamps = options.pop("stamps", None)

    theirs = _celery_app().amqp.as_task_v2(
        "task-id",
        "rtasks.add",
        args,
        kwargs,
        origin="gen1@host",
        reply_to="rq",
        **options,
        **(stamps or {}),
    )
    ours = build_task_message(
        "rtasks.add",
        "task-id",
        args,
        kwargs,
        origin="gen1@host",
        reply_to="rq",
        stamps=stamps,
        **options,
    )
    assert list(ours.headers) == list(theirs.headers)
    if case == "deep-nesting":
        assert ours.headers["argsrepr"] == repr(args)
        assert ours.headers["kwargsrepr"] == repr(kwargs)
        ours.headers.update(argsrepr=theirs.headers["argsrepr"])
        ours.headers.update(kwargsrepr=theirs.headers["kwargsrepr"])
    assert ours.headers == theirs.headers
    assert ours.body == kombu_dumps(theirs.body).encode()
    assert ours.properties["correlation_id"] == theirs.properties["correlation_id"]
    assert ours.properties["reply_to"] == theirs.properties["reply_to"]


def test_same_message_as_celery_publish_through_kombu():
    """apply_async end to end (memory transport): properties, custom headers, compression."""
    app = _celery_app()

    @app.task(name="rtasks.add", shared=False)
    def add(x, y):  # pragma: no cover - never run
        return x + y

    with app.connection_for_write() as conn:
        add.apply_async(
            (2, 3),
            task_id="e2e-1",
            expires=60,
            priority=5,
            headers={"custom_hdr": "v1", "other": [1, 2]},
            compression="gzip",
            queue="celeriac-protocol-e2e",
            connection=conn,
        )
        message = conn.SimpleQueue("celeriac-protocol-e2e").get(timeout=1)

    ours = build_task_message(
        "rtasks.add",
        "e2e-1",
        (2, 3),
        expires=60,
        priority=5,
        headers={"custom_hdr": "v1", "other": [1, 2]},
        compression="gzip",
        reply_to=message.properties["reply_to"],
        origin=message.headers["origin"],
        now=parse_iso8601(message.headers["expires"]) - timedelta(seconds=60),
    )
    assert list(ours.headers) == list(message.headers)
    assert ours.headers == message.headers
    assert ours.properties == {
        k: v for k, v in message.properties.items() if k not in KOMBU_REDIS_PROPERTIES
    }
    assert decompress(ours.body, ours.headers["compression"]) == message.body


# --- build: details -------------------------------------------------------------------------


def test_expiration_property():
    def expiration(**options):
        return build_task_message("t", "i", now=NOW, **options).properties.get("expiration")

    assert expiration() is None
    assert expiration(expires=60) == "60000"
    assert expiration(expires=1.5) == "1500"
    assert expiration(expires=NOW + timedelta(seconds=90)) == "90000"
    assert expiration(expires=NOW - timedelta(seconds=5)) == "0"
    assert expiration(expires=-3) == "0"
    assert expiration(expires=to_iso8601(NOW + timedelta(minutes=2))) == "120000"


def test_naive_datetimes_are_taken_as_utc():
    naive = datetime(2030, 1, 2, 3, 4, 5)
    envelope = build_task_message("t", "i", eta=naive, expires=naive, now=datetime(2030, 1, 2))
    assert envelope.headers["eta"] == "2030-01-02T03:04:05+00:00"
    assert envelope.headers["expires"] == "2030-01-02T03:04:05+00:00"
    assert envelope.properties["expiration"] == str((3 * 3600 + 4 * 60 + 5) * 1000)
    countdown = build_task_message("t", "i", countdown=10, now=datetime(2030, 1, 2))
    assert countdown.headers["eta"] == "2030-01-02T00:00:10+00:00"


def test_countdown_without_now_uses_current_time():
    before = datetime.now(UTC)
    envelope = build_task_message("t", "i", countdown=100, expires=50)
    after = datetime.now(UTC)
    eta = parse_iso8601(envelope.headers["eta"])
    assert before + timedelta(seconds=100) <= eta <= after + timedelta(seconds=100)
    assert envelope.properties["expiration"] == "50000"


def test_countdown_zero_means_no_eta():
    assert build_task_message("t", "i", countdown=0).headers["eta"] is None


def test_argsrepr_is_truncated():
    envelope = build_task_message("t", "i", ("x" * 2000,), {"k": "y" * 2000})
    assert len(envelope.headers["argsrepr"]) == 1024 + 3
    assert envelope.headers["argsrepr"].startswith("('xxx") and envelope.headers[
        "argsrepr"
    ].endswith("...")
    assert len(envelope.headers["kwargsrepr"]) == 1024 + 3


def test_argsrepr_survives_broken_repr():
    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr")

        def __json__(self):
            return "broken"

    envelope = build_task_message("t", "i", (Broken(),))
    assert "unrepresentable" in envelope.headers["argsrepr"]


def test_bad_args_and_kwargs():
    with pytest.raises(TypeError, match="list or tuple"):
        build_task_message("t", "i", "ab")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapping"):
        build_task_message("t", "i", (), [("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        build_task_message("t", "i", ({1, 2},))


def test_other_serializers_and_compression_round_trip():
    for serializer in ("json", "pickle", "msgpack"):
        for compression in (None, "gzip", "bzip2", "lzma"):
            envelope = build_task_message(
                "t",
                "i",
                (1, "é", [2]),
                {"k": {"n": None}},
                serializer=serializer,
                compression=compression,
            )
            message = task_message_from_envelope(envelope, ALL_TYPES)
            args, kwargs, embed = decode_body(message, ALL_TYPES)
            assert (args, kwargs, embed) == ([1, "é", [2]], {"k": {"n": None}}, EMPTY_EMBED)


def test_priority_delivery_mode_and_reply_to_defaults():
    envelope = build_task_message("t", "i")
    assert envelope.properties == {
        "correlation_id": "i",
        "reply_to": "",
        "delivery_mode": 2,
        "priority": 0,
    }
    envelope = build_task_message("t", "i", priority=9, delivery_mode=1, reply_to="q")
    assert envelope.properties["priority"] == 9
    assert envelope.properties["delivery_mode"] == 1


def test_custom_header_may_override_a_standard_one_in_place():
    envelope = build_task_message("t", "i", headers={"retries": 5, "x": 1})
    assert list(envelope.headers)[-1] == "x"
    assert envelope.headers["retries"] == 5
    assert list(envelope.headers).index("retries") == STANDARD_HEADERS.index("retries")


def test_default_origin():
    assert default_origin() == f"gen{os.getpid()}@{socket.gethostname()}"
    assert default_origin() is default_origin()


# --- golden: decode -------------------------------------------------------------------------

V2_CAPTURES = _send_captures() + _monitor_captures()


@pytest.mark.parametrize("captured", V2_CAPTURES, ids=_ids(V2_CAPTURES))
def test_decode_every_captured_v2_message(captured):
    envelope = _envelope(captured)
    message = task_message_from_envelope(envelope, ALL_TYPES)
    assert message.protocol == 2
    assert message.headers is envelope.headers
    assert message.id == captured["headers"]["id"]
    assert message.task == captured["headers"]["task"]
    args, kwargs, embed = decode_body(message, ALL_TYPES)
    expected_args, expected_kwargs, expected_embed = _body_of(captured)
    assert args == list(expected_args)
    assert kwargs == expected_kwargs
    assert embed == expected_embed
    if "_decoded_body" in captured:
        assert [args, kwargs, embed] == captured["_decoded_body"]


def test_decode_chain_chord_group_captures():
    by_id = {e["headers"]["id"]: e for e in _send_captures()}
    _, _, embed = decode_body(task_message_from_envelope(_envelope(by_id["c-1"])), DEFAULT_ACCEPT)
    assert [s["options"]["task_id"] for s in embed["chain"]] == ["c-3", "c-2"]
    message = task_message_from_envelope(_envelope(by_id["g-2"]))
    assert (message.headers["group"], message.headers["group_index"]) == ("grp-id", 1)
    _, _, embed = decode_body(task_message_from_envelope(_envelope(by_id["cc-1"])), DEFAULT_ACCEPT)
    assert embed["chain"][0]["subtask_type"] == "chord"
    _, _, embed = message.decode_body()
    assert embed == EMPTY_EMBED


def test_decode_protocol_v1_capture():
    captured = _proto1_capture()
    message = task_message_from_envelope(_envelope(captured))
    assert message.protocol == 1
    headers = message.headers
    assert list(headers)[:3] == ["lang", "task", "id"]
    assert headers["task"] == "rtasks.add"
    assert headers["id"] == message.id == "v1-msg"
    assert headers["eta"] == "2026-11-25T07:32:18.626080+00:00"
    assert headers["expires"] == "2026-11-25T07:34:08.626080+00:00"
    assert headers["retries"] == 0
    assert headers["timelimit"] == [9, None]
    assert headers["group"] is None and headers["group_index"] is None
    assert headers["root_id"] is None and headers["parent_id"] is None
    assert headers["argsrepr"] == "[5, 6]"
    assert headers["kwargsrepr"] == "{'z': 1}"
    assert set(STANDARD_HEADERS) <= set(headers)
    args, kwargs, embed = decode_body(message, DEFAULT_ACCEPT)
    assert (args, kwargs) == ([5, 6], {"z": 1})
    assert embed == {
        "callbacks": captured["_decoded_body"]["callbacks"],
        "errbacks": None,
        "chain": None,
        "chord": None,
    }


def test_v1_body_is_decoded_once_and_accept_still_applies():
    body = {"task": "t.x", "id": "v1", "args": (1,), "kwargs": {}, "taskset": "ts"}
    data, content_type, encoding = dumps(body, "pickle")
    envelope = Envelope(data, {}, {}, content_type, encoding)
    with pytest.raises(ContentDisallowed):
        task_message_from_envelope(envelope)  # JSON only by default
    message = task_message_from_envelope(envelope, ALL_TYPES)
    assert message.headers["group"] == "ts"
    assert message.v1_body is not None
    with pytest.raises(ContentDisallowed):
        decode_body(message, DEFAULT_ACCEPT)
    assert decode_body(message, ALL_TYPES)[0] == [1]
    hand_made = TaskMessage(message.headers, envelope, protocol=1)
    assert decode_body(hand_made, None)[0] == [1]


def test_v1_envelope_headers_win():
    body = dumps({"task": "t.x", "id": "v1", "args": [], "kwargs": {}})[0]
    envelope = Envelope(body, {"redelivered": True, "retries": 3})
    message = task_message_from_envelope(envelope)
    assert message.headers["redelivered"] is True
    assert message.headers["retries"] == 3


def test_v1_bad_kwargs():
    body = dumps({"task": "t.x", "id": "v1", "args": [], "kwargs": [1]})[0]
    message = task_message_from_envelope(Envelope(body, {}))
    with pytest.raises(DecodeError, match="kwargs"):
        decode_body(message, None)


# --- decode: laziness and errors ------------------------------------------------------------


def test_headers_are_read_without_decoding_the_body():
    envelope = Envelope(b"\xff not json", {"task": "t.x", "id": "i"})
    message = task_message_from_envelope(envelope)
    assert message.task == "t.x"
    with pytest.raises(DecodeError):
        decode_body(message, DEFAULT_ACCEPT)


def test_v2_content_type_checked_on_decode_only():
    data, content_type, encoding = dumps(((1,), {}, None), "pickle")
    envelope = Envelope(data, {"task": "t.x", "id": "i"}, {}, content_type, encoding)
    message = task_message_from_envelope(envelope)
    with pytest.raises(ContentDisallowed, match="pickle"):
        decode_body(message, DEFAULT_ACCEPT)
    assert decode_body(message, ALL_TYPES) == ([1], {}, EMPTY_EMBED)


def test_compressed_body_refused_before_decompressing():
    data, content_type, encoding = dumps(((1,), {}, None), "pickle")
    envelope = Envelope(
        b"garbage",
        {"task": "t", "id": "i", "compression": "application/x-gzip"},
        {},
        content_type,
        encoding,
    )
    with pytest.raises(ContentDisallowed):
        decode_body(task_message_from_envelope(envelope), DEFAULT_ACCEPT)


@pytest.mark.parametrize(
    "body",
    [b"[[2, 3], {}]", b"[[2, 3], {}, null, 1]", b'{"args": []}', b"42", b'"text"', b"null"],
)
def test_body_must_be_three_items(body):
    message = task_message_from_envelope(Envelope(body, {"task": "t", "id": "i"}))
    with pytest.raises(DecodeError, match=r"\[args, kwargs, embed\]"):
        decode_body(message, DEFAULT_ACCEPT)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'[{"a": 1}, {}, null]', "args"),
        (b"[[1], [], null]", "kwargs"),
        (b"[[1], {}, [1]]", "embed"),
    ],
)
def test_body_item_types(body, match):
    message = task_message_from_envelope(Envelope(body, {"task": "t", "id": "i"}))
    with pytest.raises(DecodeError, match=match):
        decode_body(message, DEFAULT_ACCEPT)


def test_embed_is_normalized():
    def embed_of(body: bytes):
        return decode_body(
            task_message_from_envelope(Envelope(body, {"task": "t", "id": "i"})), None
        )[2]

    assert embed_of(b"[[2, 3], {}, null]") == EMPTY_EMBED  # hand-made minimum (1.8)
    assert embed_of(b'[[], {}, {"chain": []}]') == dict(EMPTY_EMBED, chain=[])
    assert embed_of(b'[[], {}, {"chain": [], "extra": 1}]') == dict(EMPTY_EMBED, chain=[], extra=1)


@pytest.mark.parametrize(
    ("headers", "body", "match"),
    [
        ({"task": "t.x"}, b"[[], {}, null]", "no 'id'"),
        ({}, b"[[], {}, null]", "Not a Celery task message"),
        ({}, b'{"task": "t.x"}', "Not a Celery task message"),
        ({}, b'{"id": "i"}', "Not a Celery task message"),
        ({"hostname": "w1@vm"}, b'{"type": "worker-heartbeat"}', "Not a Celery task message"),
    ],
)
def test_not_a_task_message(headers, body, match):
    with pytest.raises(DecodeError, match=match):
        task_message_from_envelope(Envelope(body, headers))


def test_undecodable_v1_body():
    with pytest.raises(DecodeError) as info:
        task_message_from_envelope(Envelope(b"{broken", {}))
    assert info.value.__cause__ is not None


# --- timestamps -----------------------------------------------------------------------------


def test_iso8601_helpers():
    assert to_iso8601(datetime(2030, 1, 2, 3, 4, 5)) == "2030-01-02T03:04:05+00:00"
    paris = datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=ZoneInfo("Europe/Paris"))
    assert to_iso8601(paris) == "2030-01-02T03:04:05.000006+01:00"
    assert parse_iso8601("2026-11-25T07:29:42.110547+00:00") == datetime(
        2026, 11, 25, 7, 29, 42, 110547, tzinfo=UTC
    )
    assert parse_iso8601("2030-01-02T03:04:05Z") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_iso8601("2030-01-02T03:04:05") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_iso8601("2030-01-02T03:04:05", ZoneInfo("Europe/Paris")).utcoffset() == (
        timedelta(hours=1)
    )
    assert parse_iso8601(to_iso8601(paris)) == paris
    with pytest.raises(ValueError):
        parse_iso8601("tomorrow")


def test_loads_of_built_body_is_plain_json():
    envelope = build_task_message("t", "i", (NOW,), {"d": NOW.date()})
    args, kwargs, _ = loads(envelope.body, envelope.content_type, envelope.content_encoding)
    assert args == [NOW] and kwargs == {"d": NOW.date()}
