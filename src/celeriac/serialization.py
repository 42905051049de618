"""Codecs by content type: JSON (default), pickle, msgpack, YAML; accept_content; compression.

Pure functions, no I/O. Everything written here must be readable by kombu 5.x and the other
way round, so the formats follow kombu's byte for byte:

* JSON is `json.dumps` with Python's default separators (`", "`, `": "`) and ASCII escapes;
  datetime, date, time, Decimal, UUID and bytes are wrapped as
  `{"__type__": T, "__value__": V}` (kombu >= 5.3) and unwrapped on load.
* pickle uses protocol 4 (kombu's default); msgpack uses `use_bin_type=True` / `raw=False`.
* Content types and names are kombu's: `json` = `application/json` (utf-8), `pickle` =
  `application/x-python-serialize` (binary), `msgpack` = `application/x-msgpack` (binary),
  `yaml` = `application/x-yaml` (utf-8).
* Compression names map to the `compression` header values kombu writes; note that kombu's
  "gzip" is really a zlib stream (`zlib.compress`), and so is ours.

The JSON paths are on the hot path of both the client and the worker (bench: 30,000
messages/s), hence the module-level encoder/decoders and the `__type__` pre-check on load.
"""

from __future__ import annotations

import base64
import codecs
import json
import pickle
import uuid
import zlib
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import msgspec.json

from celeriac.exceptions import ContentDisallowed, DecodeError, ImproperlyConfigured

__all__ = [
    "DEFAULT_ACCEPT",
    "accept_content_types",
    "compress",
    "decompress",
    "dumps",
    "encode_json",
    "ensure_accepted",
    "loads",
]

JSON = "application/json"
PICKLE = "application/x-python-serialize"
MSGPACK = "application/x-msgpack"
YAML = "application/x-yaml"
DATA = "application/data"

#: serializer name -> (content type, content encoding), as kombu registers them.
SERIALIZERS: dict[str, tuple[str, str]] = {
    "json": (JSON, "utf-8"),
    "pickle": (PICKLE, "binary"),
    "msgpack": (MSGPACK, "binary"),
    "yaml": (YAML, "utf-8"),
}
_NAME_BY_TYPE = {content_type: name for name, (content_type, _) in SERIALIZERS.items()}

#: Celery's default `accept_content = ['json']`.
DEFAULT_ACCEPT: frozenset[str] = frozenset({JSON})

# kombu always accepts these, whatever accept_content says: they are never deserialized.
_TRUSTED = frozenset({DATA, "application/text"})
# Content encodings kombu leaves as bytes for content types it has no decoder for.
_SKIP_DECODE = frozenset({"binary", "ascii-8bit"})

# Pickle protocol 4, as kombu writes (readable by every Python 3 Celery).
PICKLE_PROTOCOL = 4


# --- JSON -----------------------------------------------------------------------------------


def _wrap(type_name: str, value: Any) -> dict[str, Any]:
    return {"__type__": type_name, "__value__": value}


def _json_default(o: Any) -> Any:
    # Called by the C encoder only for objects JSON has no type for. The order of the
    # isinstance checks matters: datetime is a subclass of date.
    reducer = getattr(o, "__json__", None)
    if reducer is not None:  # kombu's hook for user types
        return reducer()
    if isinstance(o, datetime):
        return _wrap("datetime", o.isoformat())
    if isinstance(o, date):
        return _wrap("date", o.isoformat())
    if isinstance(o, time):
        return _wrap("time", o.isoformat())
    if isinstance(o, Decimal):
        return _wrap("decimal", str(o))
    if isinstance(o, uuid.UUID):
        return _wrap("uuid", {"hex": o.hex})
    if isinstance(o, bytes):
        try:
            return _wrap("bytes", o.decode("utf-8"))
        except UnicodeDecodeError:
            return _wrap("base64", base64.b64encode(o).decode("ascii"))
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _make_json_encode() -> Callable[[Any], str]:
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - Python builds without the C accelerator
        return json.JSONEncoder(default=_json_default).encode
    # Building the C encoder once saves about half the cost of json.dumps per message.
    # markers=None turns off the circular-reference check, which would need a fresh dict
    # per call; a cycle then ends in RecursionError, reported by `dumps`.
    encode_chunks = c_make_encoder(
        None,  # markers
        _json_default,
        json.encoder.encode_basestring_ascii,  # ensure_ascii=True, as kombu writes
        None,  # indent
        ": ",
        ", ",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )

    def encode(obj: Any) -> str:
        return "".join(encode_chunks(obj, 0))

    return encode


_json_encode = _make_json_encode()


#: `encode_json(obj) -> str`: JSON text as `json.dumps(obj)` writes it (kombu's format), but
#: faster, and with kombu's `__type__` wrapping of datetime, Decimal, UUID and bytes.
encode_json: Callable[[Any], str] = _json_encode


def _decode_uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(**value)


_JSON_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": datetime.fromisoformat,
    "date": lambda v: datetime.fromisoformat(v).date(),
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": _decode_uuid,
    "bytes": lambda v: v.encode("utf-8"),
    "base64": lambda v: base64.b64decode(v.encode("ascii")),
}


def _object_hook(o: dict[str, Any]) -> Any:
    if len(o) == 2 and "__type__" in o and "__value__" in o:
        decoder = _JSON_DECODERS.get(o["__type__"])
        if decoder is None:
            raise ValueError(f"Unsupported __type__ in JSON: {o['__type__']!r}")
        return decoder(o["__value__"])
    return o


_plain_decoder = json.JSONDecoder()
_typed_decoder = json.JSONDecoder(object_hook=_object_hook)
_fast_decode = msgspec.json.Decoder().decode


def json_loads(data: bytes | str) -> Any:
    """What `json.loads` returns for UTF-8 JSON, read by msgspec where it can: 3-7 times faster
    on a task's envelope and body (bench/: drain). msgspec refuses a few texts json reads
    (NaN, Infinity, numbers past a double, lone surrogates): json reads those."""
    try:
        return _fast_decode(data)
    except msgspec.MsgspecError:
        return _plain_decoder.decode(data if isinstance(data, str) else data.decode("utf-8"))


def _json_loads(data: bytes | bytearray | memoryview | str) -> Any:
    if not isinstance(data, bytes | str):
        data = bytes(data)
    # The object hook costs a Python call per JSON object; most bodies hold no wrapped
    # value, so it is used only when the marker can occur at all.
    if isinstance(data, str):
        if "__type__" in data:
            return _typed_decoder.decode(data)
    elif b"__type__" in data:
        return _typed_decoder.decode(data.decode("utf-8"))
    return json_loads(data)


# --- other serializers ----------------------------------------------------------------------


def _pickle_dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=PICKLE_PROTOCOL)


def _import_msgpack() -> Any:
    try:
        import msgpack  # type: ignore[import-untyped]
    except ImportError:
        return None
    return msgpack


def _msgpack_dumps(obj: Any) -> bytes:
    msgpack = _import_msgpack()
    if msgpack is None:
        raise ImproperlyConfigured(
            "The msgpack serializer needs the msgpack library: pip install 'celeriac[msgpack]'"
        )
    return msgpack.packb(obj, use_bin_type=True)


def _msgpack_loads(data: bytes) -> Any:
    msgpack = _import_msgpack()
    if msgpack is None:
        raise DecodeError(
            "Cannot decode an application/x-msgpack message: msgpack is not installed"
        )
    return msgpack.unpackb(data, raw=False)


def _import_yaml() -> Any:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return None
    return yaml


def _yaml_dumps(obj: Any) -> bytes:
    yaml = _import_yaml()
    if yaml is None:
        raise ImproperlyConfigured("The yaml serializer needs PyYAML: pip install PyYAML")
    return yaml.safe_dump(obj).encode("utf-8")


def _yaml_loads(data: bytes) -> Any:
    yaml = _import_yaml()
    if yaml is None:
        raise DecodeError("Cannot decode an application/x-yaml message: PyYAML is not installed")
    return yaml.safe_load(bytes(data))


_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "pickle": _pickle_dumps,
    "msgpack": _msgpack_dumps,
    "yaml": _yaml_dumps,
}
_DECODERS: dict[str, Callable[[Any], Any]] = {
    JSON: _json_loads,
    PICKLE: lambda data: pickle.loads(data),
    MSGPACK: _msgpack_loads,
    YAML: _yaml_loads,
}


# --- public API -----------------------------------------------------------------------------


def dumps(obj: Any, serializer: str = "json") -> tuple[bytes, str, str]:
    """Serialize a value the way kombu does for the same serializer name.

    Args:
        obj: The value to serialize (for tasks, the body `[args, kwargs, embed]`).
        serializer: `"json"` (default), `"pickle"`, `"msgpack"` or `"yaml"`.

    Returns:
        `(data, content_type, content_encoding)`.

    Raises:
        ImproperlyConfigured: The serializer name is unknown, or its library is missing.
        TypeError: A value has no representation in the format (e.g. a set in JSON).
        ValueError: The value holds a reference cycle (JSON).
    """
    if serializer == "json":
        try:
            return _json_encode(obj).encode("utf-8"), JSON, "utf-8"
        except RecursionError as exc:
            raise ValueError("Circular reference detected (or nesting too deep)") from exc
    encoder = _ENCODERS.get(serializer)
    if encoder is None:
        raise ImproperlyConfigured(
            f"Unknown serializer {serializer!r}; use one of: {', '.join(SERIALIZERS)}"
        )
    content_type, content_encoding = SERIALIZERS[serializer]
    return encoder(obj), content_type, content_encoding


def ensure_accepted(content_type: str, accept: AbstractSet[str] | None) -> None:
    """Raise ContentDisallowed unless `content_type` may be deserialized.

    Args:
        content_type: The message's content type (empty means raw `application/data`).
        accept: Accepted content types (see `accept_content_types`); None accepts all.

    Raises:
        ContentDisallowed: The content type is neither accepted nor raw data.
    """
    content_type = content_type or DATA
    if accept is not None and content_type not in accept and content_type not in _TRUSTED:
        # Same text as kombu's, so logs read the same on both sides.
        name = _NAME_BY_TYPE.get(content_type, content_type)
        raise ContentDisallowed(
            f"Refusing to deserialize untrusted content of type {name} ({content_type})"
        )


def loads(
    data: bytes | bytearray | memoryview | str,
    content_type: str | None,
    content_encoding: str | None,
    accept: AbstractSet[str] | None = None,
) -> Any:
    """Deserialize message data by its content type, as kombu does.

    Raw data (`application/data`, or no content type) and unknown content types are not
    deserialized: they come back as bytes when the content encoding is `binary`, or as
    text decoded with the content encoding otherwise. Empty data is returned unchanged.

    Args:
        data: The serialized bytes.
        content_type: e.g. `application/json`.
        content_encoding: e.g. `utf-8` or `binary`.
        accept: Accepted content types (see `accept_content_types`); None accepts all.

    Raises:
        ContentDisallowed: The content type is not in `accept`.
        DecodeError: The data is not valid for its content type (the cause is chained).
    """
    content_type = content_type or DATA
    if accept is not None:
        ensure_accepted(content_type, accept)
    if not data:
        return data
    decoder = _DECODERS.get(content_type)
    try:
        if decoder is not None:
            return decoder(data)
        encoding = (content_encoding or "utf-8").lower()
        if encoding in _SKIP_DECODE or isinstance(data, str):
            return data
        return codecs.decode(bytes(data), encoding)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"Cannot decode {content_type} data: {exc!r}") from exc


def accept_content_types(names: Iterable[str] | str) -> frozenset[str]:
    """Turn an `accept_content` setting into a set of content types.

    Short names (`json`, `pickle`, `msgpack`, `yaml`) are mapped to their content types;
    anything containing a `/` is taken as a content type already, as Celery does.
    A string is read as a comma-separated list.

    Raises:
        ImproperlyConfigured: A short name is not a known serializer.
    """
    if isinstance(names, str):
        names = [part.strip() for part in names.split(",") if part.strip()]
    types = set()
    for name in names:
        if "/" in name:
            types.add(name)
            continue
        try:
            types.add(SERIALIZERS[name][0])
        except KeyError:
            raise ImproperlyConfigured(
                f"Unknown serializer {name!r} in accept_content; "
                f"use one of {', '.join(SERIALIZERS)} or a content type"
            ) from None
    return frozenset(types)


# --- compression ----------------------------------------------------------------------------

GZIP = "application/x-gzip"
BZIP2 = "application/x-bz2"
LZMA = "application/x-lzma"
BROTLI = "application/x-brotli"
ZSTD = "application/zstd"

#: compression name -> content type written in the `compression` header (kombu's names).
COMPRESSION_ALIASES: dict[str, str] = {
    "gzip": GZIP,
    "zlib": GZIP,
    "bzip2": BZIP2,
    "bzip": BZIP2,
    "lzma": LZMA,
    "xz": LZMA,
    "brotli": BROTLI,
    "zstd": ZSTD,
    "zstandard": ZSTD,
}


def _compression_module(content_type: str) -> Any:
    """The module providing compress()/decompress() for a content type, or None."""
    # Imported lazily: only zlib is always present and cheap to import.
    try:
        if content_type == GZIP:
            return zlib
        if content_type == BZIP2:
            import bz2

            return bz2
        if content_type == LZMA:
            import lzma

            return lzma
        if content_type == BROTLI:
            import brotli  # type: ignore[import-not-found]

            return brotli
        if content_type == ZSTD:
            try:
                from compression import zstd  # type: ignore[import-not-found]  # 3.14+
            except ImportError:
                from backports import zstd  # type: ignore[import-not-found,no-redef]
            return zstd
    except ImportError:
        return None
    return None


def compress(data: bytes, method: str) -> tuple[bytes, str]:
    """Compress a serialized body.

    Args:
        data: Serialized bytes.
        method: A name (`gzip`, `zlib`, `bzip2`, `lzma`, `xz`, `brotli`, `zstd`) or the
            content type itself (`application/x-gzip`, ...).

    Returns:
        `(compressed, content_type)`; the content type goes in the `compression` header.

    Raises:
        ImproperlyConfigured: The method is unknown or its library is not installed.
    """
    content_type = COMPRESSION_ALIASES.get(method, method)
    module = _compression_module(content_type)
    if module is None:
        raise ImproperlyConfigured(f"Compression method {method!r} is unknown or not installed")
    return module.compress(data), content_type


def decompress(data: bytes, content: str) -> bytes:
    """Undo `compress`, given the `compression` header value (or a method name).

    Raises:
        DecodeError: The method is unknown or not installed, or the data is corrupt.
    """
    content_type = COMPRESSION_ALIASES.get(content, content)
    module = _compression_module(content_type)
    if module is None:
        raise DecodeError(f"Cannot decompress {content!r}: unknown or not installed")
    try:
        return module.decompress(data)
    except Exception as exc:
        raise DecodeError(f"Cannot decompress {content} data: {exc!r}") from exc
