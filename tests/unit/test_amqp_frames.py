"""The consumer's own decoder of basic.deliver (brokers/amqp_frames.py) against py-amqp's."""

from __future__ import annotations

import struct
from datetime import datetime
from decimal import Decimal
from typing import Any

import amqp
import pytest
from amqp.serialization import decode_properties_basic, dumps

from celeriac.brokers.amqp_frames import decode_properties, parse_deliver

CELERY_HEADERS: dict[str, Any] = {
    "lang": "py", "task": "proj.tasks.add", "id": "3f1c0d6e-aaaa-bbbb-cccc-0123456789ab", "shadow": None,
    "eta": None, "expires": None, "group": None, "group_index": None, "retries": 0,
    "timelimit": [None, None], "root_id": "3f1c", "parent_id": None, "argsrepr": "(2, 2)",
    "kwargsrepr": "{}", "origin": "gen1@host", "ignore_result": False, "replaced_task_nesting": 0,
    "stamped_headers": None, "stamps": {}, "x-custom": {"nested": [1, -2, 2**40, -(2**40), "é", True]},
}


@pytest.mark.parametrize("properties", [
    {"content_type": "application/json", "content_encoding": "utf-8", "application_headers": CELERY_HEADERS,
     "delivery_mode": 2, "priority": 0, "correlation_id": "3f1c", "reply_to": "d1f3.reply"},
    {"application_headers": {"f": 1.5, "d": Decimal("1.25"), "ts": datetime(2026, 1, 2, 3, 4, 5),
                             "b": b"\x00\xff", "empty": {}, "list": [], "none": None, "big": 2**63 - 1}},
    {"content_type": "text/plain", "expiration": "60000", "message_id": "m1", "timestamp": 1_700_000_000,
     "type": "t", "user_id": "guest", "app_id": "app", "cluster_id": "c"},
    {},
])
def test_properties_decode_as_py_amqp_does(properties: dict[str, Any]) -> None:
    raw = amqp.Message(b"", **properties)._serialize_properties()
    expected, _offset = decode_properties_basic(raw, 0)
    assert decode_properties(raw, 0) == expected


def test_raw_table_types_decode_as_py_amqp_does() -> None:
    # Types py-amqp reads but does not write ('s' short int, 'b', 'B', 'u', 'i', 'l', 'I'),
    # as RabbitMQ or other clients may send them.
    items = [(b"s", struct.pack(">h", -7)), (b"b", struct.pack(">b", -3)), (b"B", struct.pack(">B", 200)),
             (b"u", struct.pack(">H", 65000)), (b"i", struct.pack(">I", 4_000_000_000)),
             (b"l", struct.pack(">q", -1000)), (b"I", struct.pack(">i", -5)), (b"L", struct.pack(">q", 7))]
    table = b"".join(bytes([len(k)]) + k + kind + value for k, (kind, value) in
                     zip([b"k%d" % i for i in range(len(items))], items, strict=True))
    raw = struct.pack(">H", 0x2000) + struct.pack(">I", len(table)) + table
    expected, _offset = decode_properties_basic(raw, 0)
    assert decode_properties(raw, 0) == expected
    assert expected["application_headers"]["k0"] == -7


def test_deliver_arguments() -> None:
    args = dumps("sLbss", ("celeriac.1.0", 42, True, "celery_delayed_0", "0.0.1.celery"))
    assert parse_deliver(args) == ("celeriac.1.0", 42, True, "celery_delayed_0", "0.0.1.celery")
    args = dumps("sLbss", ("tag", 2**40, False, "", "q"))
    assert parse_deliver(args) == ("tag", 2**40, False, "", "q")
