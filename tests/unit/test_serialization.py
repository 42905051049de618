"""Codecs: byte-for-byte kombu compatibility, accept_content, compression, errors."""

from __future__ import annotations

import base64
import json
import math
import pickle
import sys
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from celeriac import serialization
from celeriac.exceptions import ContentDisallowed, DecodeError, ImproperlyConfigured
from celeriac.serialization import (
    DEFAULT_ACCEPT,
    accept_content_types,
    compress,
    decompress,
    dumps,
    ensure_accepted,
    loads,
)

GOLDEN = Path(__file__).parent / "golden" / "redis"
AWARE = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
UID = uuid.UUID("12345678123456781234567812345678")

# Values kombu's JSON codec writes, each with our expectation after a round trip.
SAMPLES = [
    [[2, 3], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}],
    ((1, 2), {"a": (3, 4)}),
    {"text": "héllo wörld ✓ 日本 \U0001f600", "quote": 'it\'s "q"', "ctl": "a\nb\t\x00"},
    {1: "intkey", 2.5: "floatkey", False: "boolkey", None: "nonekey"},
    [1.0, 0.1, 1e100, -0.0, 2**70, -(2**70), True, False, None],
    [AWARE, date(2024, 1, 2), time(1, 2, 3), UID, Decimal("1.10")],
    [
        datetime(2024, 1, 2, 3, 4, 5, 123456),
        datetime(2024, 1, 2, tzinfo=timezone(timedelta(hours=5))),
    ],
    [time(1, 2, 3, 4, tzinfo=UTC), Decimal("-1e-30"), Decimal("Infinity")],
    [b"raw-bytes", b"\xff\x00\xfe", b""],
    {"nested": [{"deep": [{"deeper": [AWARE]}]}]},
    "just a string",
    42,
    None,
    [],
    {},
    {"__type__": "not-a-wrapper", "other": 1},
    ["__type__", {"k": "__type__"}],
]


def _normalize(value):
    """What a JSON round trip returns for `value`: tuples become lists, keys strings."""
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {_json_key(k): _normalize(v) for k, v in value.items()}
    return value


def _json_key(key):
    if isinstance(key, str):
        return key
    return json.dumps(key)


# --- JSON: kombu compatibility --------------------------------------------------------------


@pytest.mark.parametrize("value", SAMPLES)
def test_json_dumps_is_byte_identical_to_kombu(value):
    from kombu import serialization as kombu_serialization

    content_type, content_encoding, expected = kombu_serialization.dumps(value, "json")
    data, our_type, our_encoding = dumps(value)
    assert data == expected.encode("utf-8") if isinstance(expected, str) else expected
    assert (our_type, our_encoding) == (content_type, content_encoding)
    assert isinstance(data, bytes)


@pytest.mark.parametrize("value", SAMPLES)
def test_json_round_trip_both_ways_with_kombu(value):
    from kombu.utils import json as kombu_json

    data, _, _ = dumps(value)
    ours = loads(data, "application/json", "utf-8")
    assert ours == _normalize(value)
    assert kombu_json.loads(data) == ours
    assert loads(kombu_json.dumps(value).encode(), "application/json", "utf-8") == ours


def test_json_matches_kombu_for_large_body():
    from kombu.utils import json as kombu_json

    value = [list(range(5000)), {f"k{i}": "é" * i for i in range(100)}, {"chain": None}]
    assert dumps(value)[0] == kombu_json.dumps(value).encode()


def test_json_non_ascii_is_escaped_like_kombu():
    data, _, _ = dumps(["é✓\U0001f600"])
    assert data == b'["\\u00e9\\u2713\\ud83d\\ude00"]'


def test_json_wire_examples_from_capture():
    # celery-wire.md 1.4: the exact text kombu 5.7 wrote for these types.
    data, _, _ = dumps([[AWARE, date(2024, 1, 2)], {}, None])
    assert data == (
        b'[[{"__type__": "datetime", "__value__": "2024-01-02T03:04:05+00:00"}, '
        b'{"__type__": "date", "__value__": "2024-01-02"}], {}, null]'
    )
    data, _, _ = dumps([UID, Decimal("1.10"), b"raw-bytes", time(1, 2, 3)])
    assert data == (
        b'[{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}, '
        b'{"__type__": "decimal", "__value__": "1.10"}, '
        b'{"__type__": "bytes", "__value__": "raw-bytes"}, '
        b'{"__type__": "time", "__value__": "01:02:03"}]'
    )


@pytest.mark.parametrize(
    "value",
    [
        AWARE,
        datetime(2024, 1, 2, 3, 4, 5, 999999),
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
        date(1999, 12, 31),
        time(23, 59, 59, 1),
        UID,
        uuid.uuid4(),
        Decimal("3.141592653589793238462643383279"),
        Decimal("1E+3"),
        b"hello",
        b"\x80\x81\x82 not utf-8",
        bytes(range(256)),
    ],
)
def test_typed_values_round_trip(value):
    data, _, _ = dumps({"v": value, "list": [value]})
    result = loads(data, "application/json", "utf-8")
    assert result == {"v": value, "list": [value]}
    assert type(result["v"]) is type(value)


def test_non_utf8_bytes_use_base64_like_kombu():
    data, _, _ = dumps(b"\xff")
    assert json.loads(data) == {
        "__type__": "base64",
        "__value__": base64.b64encode(b"\xff").decode(),
    }


def test_dunder_json_hook_is_honoured():
    class Point:
        def __json__(self):
            return {"x": 1}

    assert dumps([Point()])[0] == b'[{"x": 1}]'


def test_wrapper_with_extra_keys_is_a_plain_dict():
    data = b'{"__type__": "date", "__value__": "2024-01-02", "extra": 1}'
    assert loads(data, "application/json", "utf-8") == {
        "__type__": "date",
        "__value__": "2024-01-02",
        "extra": 1,
    }


def test_unknown_type_marker_is_a_decode_error():
    with pytest.raises(DecodeError) as info:
        loads(b'{"__type__": "nope", "__value__": 1}', "application/json", "utf-8")
    assert isinstance(info.value.__cause__, ValueError)


def test_json_unserializable_values_raise():
    with pytest.raises(TypeError, match="set"):
        dumps({1, 2})
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular"):
        dumps(cycle)


def test_json_nan_and_infinity_like_kombu():
    data, _, _ = dumps([math.inf, -math.inf])
    assert data == b"[Infinity, -Infinity]"


@pytest.mark.parametrize("data", [b"[1, 2", b"\xff\xfe", b"{'single': 1}", b"[1] extra"])
def test_bad_json_is_a_decode_error_with_cause(data):
    with pytest.raises(DecodeError) as info:
        loads(data, "application/json", "utf-8")
    assert info.value.__cause__ is not None


def test_loads_accepts_str_bytearray_and_memoryview():
    data = b'[1, {"a": "b"}]'
    for value in (data, bytearray(data), memoryview(data), data.decode()):
        assert loads(value, "application/json", "utf-8") == [1, {"a": "b"}]


# --- accept_content -------------------------------------------------------------------------


def test_pickle_refused_by_default():
    data, content_type, encoding = dumps((1, 2), "pickle")
    with pytest.raises(ContentDisallowed) as info:
        loads(data, content_type, encoding, DEFAULT_ACCEPT)
    assert str(info.value) == (
        "Refusing to deserialize untrusted content of type pickle (application/x-python-serialize)"
    )


def test_refusal_message_matches_kombu():
    from kombu import serialization as kombu_serialization
    from kombu.exceptions import ContentDisallowed as KombuContentDisallowed

    for content_type in ("application/x-python-serialize", "application/x-msgpack", "text/x-odd"):
        with pytest.raises(KombuContentDisallowed) as theirs:
            kombu_serialization.loads(b"x", content_type, "binary", accept={"application/json"})
        with pytest.raises(ContentDisallowed) as ours:
            loads(b"x", content_type, "binary", DEFAULT_ACCEPT)
        assert str(ours.value) == str(theirs.value)


def test_pickle_accepted_when_listed():
    value = ((1, 2), {"d": AWARE}, {"callbacks": None})
    data, content_type, encoding = dumps(value, "pickle")
    assert (content_type, encoding) == ("application/x-python-serialize", "binary")
    assert loads(data, content_type, encoding, accept_content_types(["json", "pickle"])) == value
    assert loads(data, content_type, encoding, None) == value


def test_pickle_compatible_with_kombu():
    from kombu import serialization as kombu_serialization

    value = {"a": [1, 2], "b": AWARE}
    _, _, theirs = kombu_serialization.dumps(value, "pickle")
    assert dumps(value, "pickle")[0] == theirs
    assert loads(theirs, "application/x-python-serialize", "binary") == value


def test_ensure_accepted():
    ensure_accepted("application/json", DEFAULT_ACCEPT)
    ensure_accepted("application/x-python-serialize", None)
    ensure_accepted("application/data", DEFAULT_ACCEPT)  # raw data is always trusted
    ensure_accepted("", DEFAULT_ACCEPT)
    with pytest.raises(ContentDisallowed, match="yaml"):
        ensure_accepted("application/x-yaml", DEFAULT_ACCEPT)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["json"], {"application/json"}),
        (["json", "pickle", "msgpack", "yaml"], None),
        (["application/json", "application/x-custom"], None),
        ("json, pickle", {"application/json", "application/x-python-serialize"}),
        ([], set()),
    ],
)
def test_accept_content_types_matches_kombu(names, expected):
    from kombu.serialization import prepare_accept_content

    result = accept_content_types(names)
    assert isinstance(result, frozenset)
    if isinstance(names, str):
        assert result == expected
    else:
        assert result == prepare_accept_content(names)


def test_accept_content_unknown_name():
    with pytest.raises(ImproperlyConfigured, match="'bson'"):
        accept_content_types(["json", "bson"])


# --- raw and unknown content ----------------------------------------------------------------


def test_raw_data_is_returned_as_bytes():
    assert loads(b"\x00\x01", "application/data", "binary", DEFAULT_ACCEPT) == b"\x00\x01"
    # No content type means raw data; with no encoding either, kombu decodes it as UTF-8.
    assert loads(b"\x00\x01", None, None, DEFAULT_ACCEPT) == "\x00\x01"
    assert loads(b"\x00\x01", None, "binary", DEFAULT_ACCEPT) == b"\x00\x01"


def test_unknown_textual_content_is_decoded_to_text_like_kombu():
    from kombu import serialization as kombu_serialization

    for args in [
        (b"hi \xc3\xa9", "text/plain", "utf-8"),
        (b"abc", "application/text", "binary"),
        (b"\x00\x01", None, None),
        (b"\x00\x01", "application/data", "binary"),
    ]:
        assert loads(*args) == kombu_serialization.loads(*args)
    with pytest.raises(DecodeError):
        loads(b"\xff", "text/plain", "utf-8")


def test_empty_data_is_returned_unchanged():
    assert loads(b"", "application/json", "utf-8") == b""


# --- msgpack / yaml / unknown serializers ---------------------------------------------------


def test_msgpack_round_trip_and_kombu_compatibility():
    from kombu import serialization as kombu_serialization

    value = [[1, "é", b"\x00bytes", 1.5, None, True], {"k": [1, 2]}, {"chain": None}]
    data, content_type, encoding = dumps(value, "msgpack")
    assert (content_type, encoding) == ("application/x-msgpack", "binary")
    assert data == kombu_serialization.dumps(value, "msgpack")[2]
    accept = accept_content_types(["msgpack"])
    assert loads(data, content_type, encoding, accept) == value


def test_msgpack_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "msgpack", None)  # makes `import msgpack` fail
    with pytest.raises(ImproperlyConfigured, match="msgpack"):
        dumps([1], "msgpack")
    with pytest.raises(DecodeError, match="msgpack"):
        loads(b"\x91\x01", "application/x-msgpack", "binary")


def test_yaml_round_trip_or_clear_error():
    try:
        import yaml  # noqa: F401
    except ImportError:
        with pytest.raises(ImproperlyConfigured, match="PyYAML"):
            dumps([1], "yaml")
        with pytest.raises(DecodeError, match="PyYAML"):
            loads(b"[1]", "application/x-yaml", "utf-8")
    else:
        value = {"a": [1, 2], "b": "é"}
        data, content_type, encoding = dumps(value, "yaml")
        assert (content_type, encoding) == ("application/x-yaml", "utf-8")
        assert loads(data, content_type, encoding) == value


def test_unknown_serializer_is_named():
    with pytest.raises(ImproperlyConfigured, match="'bson'"):
        dumps([1], "bson")


# --- compression ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "content_type"),
    [
        ("gzip", "application/x-gzip"),
        ("zlib", "application/x-gzip"),
        ("bzip2", "application/x-bz2"),
        ("lzma", "application/x-lzma"),
        ("xz", "application/x-lzma"),
        ("application/x-gzip", "application/x-gzip"),
    ],
)
def test_compression_round_trip_and_kombu_compatibility(method, content_type):
    from kombu import compression as kombu_compression

    body = dumps([[1, 2], {"x": "y" * 100}, None])[0]
    compressed, header = compress(body, method)
    assert header == content_type
    assert (compressed, header) == kombu_compression.compress(body, method)
    assert decompress(compressed, header) == body
    assert kombu_compression.decompress(compressed, header) == body


def test_gzip_capture_decompresses():
    # The `m-gzip` message real Celery sent with compression='gzip' (a zlib stream).
    records = json.loads((GOLDEN / "monitor_task_envelopes.json").read_text())
    envelope = next(r["envelope"] for r in records if r["envelope"]["headers"]["id"] == "m-gzip")
    assert envelope["headers"]["compression"] == "application/x-gzip"
    body = decompress(base64.b64decode(envelope["body"]), envelope["headers"]["compression"])
    assert loads(body, "application/json", "utf-8") == [
        [7, 8],
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]


def test_compression_errors():
    with pytest.raises(ImproperlyConfigured, match="snappy"):
        compress(b"x", "snappy")
    with pytest.raises(DecodeError, match="snappy"):
        decompress(b"x", "application/x-snappy")
    with pytest.raises(DecodeError) as info:
        decompress(b"not compressed", "application/x-gzip")
    assert info.value.__cause__ is not None


def test_optional_compression_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "brotli", None)
    with pytest.raises(ImproperlyConfigured, match="brotli"):
        compress(b"x", "brotli")


def test_pickle_capture_refused_then_accepted():
    records = json.loads((GOLDEN / "monitor_task_envelopes.json").read_text())
    envelope = next(r["envelope"] for r in records if r["envelope"]["headers"]["id"] == "m-pickle")
    data = base64.b64decode(envelope["body"])
    content_type, encoding = envelope["content-type"], envelope["content-encoding"]
    with pytest.raises(ContentDisallowed):
        loads(data, content_type, encoding, DEFAULT_ACCEPT)
    body = loads(data, content_type, encoding, accept_content_types(["pickle"]))
    assert body == pickle.loads(data)
    assert body[0] == (7, 8)


def test_module_constants():
    assert serialization.SERIALIZERS["json"] == ("application/json", "utf-8")
    assert serialization.COMPRESSION_ALIASES["bzip"] == "application/x-bz2"


@pytest.mark.parametrize("text", [
    '[[1, "a", 2.5], {"k": null}, {"callbacks": null, "chain": null}]',
    '[18446744073709551616, -9223372036854775809, 12345678901234567890123]',  # past 64 bits
    '[NaN, Infinity, -Infinity, 1e400]',  # msgspec refuses these: json reads them
    '["\\ud800", "\\u00e9\\n", "\\/"]',  # a lone surrogate; escapes
    '{"a": 1, "a": 2, "b": [-0.0, 0.1, 1E5, true, false]}',
])
def test_json_loads_returns_what_json_loads_returns(text):
    from celeriac.serialization import json_loads

    for data in (text, text.encode()):
        assert repr(json_loads(data)) == repr(json.loads(text))
        assert repr(loads(data, "application/json", "utf-8")) == repr(json.loads(text))


def test_json_loads_errors_as_json_does():
    from celeriac.serialization import json_loads

    with pytest.raises(json.JSONDecodeError):
        json_loads(b"[1,")
    with pytest.raises(UnicodeDecodeError):
        json_loads(b"\xff[1]")
