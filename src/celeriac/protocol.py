"""Celery's task message protocol: build v2 messages, read v2 and v1 ones. Pure, no I/O.

A v2 task message keeps all metadata (task name, id, eta, retries, ...) in headers and only
`[args, kwargs, embed]` in the body. `task_message_from_envelope` therefore reads headers
only: the consumer routes, schedules and checks expiry without deserializing arguments, and
the body is decoded (`decode_body`) only where the task runs.

Protocol v1 (Celery 3 style, `task_protocol=1`) kept everything in the body and sent no
headers; such messages are read by decoding the body once and building v2-style headers
from it, so callers only ever see v2 headers.

Header order and values follow Celery 5.7's `AMQP.as_task_v2` (wire reference
celery-wire.md, section 1.2); properties follow what Celery + kombu publish (section 1.3).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from celeriac.brokers.base import Envelope, Members, SharedEnvelope
from celeriac.exceptions import DecodeError
from celeriac.serialization import (
    DEFAULT_ACCEPT,
    compress,
    decompress,
    dumps,
    encode_json,
    ensure_accepted,
    loads,
)

__all__ = [
    "MessageTemplate",
    "TaskMessage",
    "build_task_message",
    "decode_body",
    "default_origin",
    "parse_iso8601",
    "task_message_from_envelope",
    "to_iso8601",
]

#: Celery truncates argsrepr/kwargsrepr to this many characters.
REPR_MAXSIZE = 1024

_UTC = UTC
_EMBED_KEYS = frozenset({"callbacks", "errbacks", "chain", "chord"})


# --- small helpers --------------------------------------------------------------------------


def to_iso8601(dt: datetime) -> str:
    """Format a datetime as Celery does in `eta`/`expires`; naive datetimes are taken as UTC.

    Always writing an offset matters: a Celery worker reads a naive timestamp in its own
    local timezone.
    """
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_UTC)
    return dt.isoformat()


def parse_iso8601(s: str, default_tz: tzinfo = _UTC) -> datetime:
    """Parse an ISO-8601 timestamp (as found in `eta`/`expires`) to an aware datetime.

    Args:
        s: e.g. `"2026-11-25T07:29:42.110547+00:00"`; `Z` and any offset are accepted.
        default_tz: Timezone given to a timestamp without offset. UTC by default; a Celery
            worker would use its configured timezone, so pass that to match it exactly.

    Raises:
        ValueError: The string is not an ISO-8601 timestamp.
    """
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=default_tz)
    return dt


_origin: str | None = None


def default_origin() -> str:
    """The sender node name Celery clients put in `origin`: `gen<pid>@<hostname>`."""
    global _origin
    if _origin is None:
        _origin = f"gen{os.getpid()}@{socket.gethostname()}"
    return _origin


def _forget_origin() -> None:
    global _origin
    _origin = None


# The cached origin names the pid; a forked child must compute its own.
os.register_at_fork(after_in_child=_forget_origin)


def _short_repr(obj: Any) -> str:
    # Display-only field. Celery uses its own streaming `saferepr`; plain repr() gives the
    # same text for ordinary arguments and is much faster (this runs on every delay()).
    # Known differences: saferepr elides containers nested deeper than 3 levels ("(...)"),
    # escapes quotes differently and cuts long values mid-way rather than at the end.
    try:
        text = repr(obj)
    except Exception as exc:  # a broken __repr__ must not stop the task from being sent
        text = f"<unrepresentable {type(obj).__name__}: {exc!r}>"
    if len(text) > REPR_MAXSIZE:
        text = text[:REPR_MAXSIZE] + "..."
    return text


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=_UTC) if dt.tzinfo is None else dt


def _add_seconds(dt: datetime, seconds: float) -> datetime:
    # Add elapsed time (in UTC), then show it in the caller's timezone, as Celery does:
    # across a DST change this is the real elapsed time, not wall-clock arithmetic.
    return (dt.astimezone(_UTC) + timedelta(seconds=seconds)).astimezone(dt.tzinfo)


def _expiry(expires: datetime | str | float, now: datetime) -> tuple[str, str]:
    """The `expires` header and the `expiration` property (ms string) for an expiry."""
    if isinstance(expires, str):  # e.g. kept from the original message on retry
        text = expires
        seconds = (parse_iso8601(expires) - now).total_seconds()
    elif isinstance(expires, datetime):
        text = to_iso8601(expires)
        seconds = (_aware(expires) - now).total_seconds()
    else:  # seconds from now
        text = _add_seconds(now, expires).isoformat()
        seconds = expires
    # kombu's formula; a past expiry becomes "0" (RabbitMQ: expire unless deliverable).
    return text, str(int(max(seconds, 0) * 1000))


# --- building -------------------------------------------------------------------------------


def build_task_message(
    name: str,
    task_id: str,
    args: list[Any] | tuple[Any, ...] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    eta: datetime | str | None = None,
    expires: datetime | str | float | None = None,
    countdown: float | None = None,
    group_id: str | None = None,
    group_index: int | None = None,
    retries: int = 0,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    origin: str | None = None,
    ignore_result: bool | None = False,
    shadow: str | None = None,
    callbacks: list[Any] | None = None,
    errbacks: list[Any] | None = None,
    chain: list[Any] | None = None,
    chord: Any = None,
    reply_to: str = "",
    priority: int | None = None,
    delivery_mode: int = 2,
    headers: Mapping[str, Any] | None = None,
    serializer: str = "json",
    compression: str | None = None,
    argsrepr: str | None = None,
    kwargsrepr: str | None = None,
    replaced_task_nesting: int = 0,
    stamped_headers: list[str] | None = None,
    stamps: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Envelope:
    """Build a Celery protocol v2 task message, as `Task.apply_async` would send it.

    Args:
        name: Registered task name (`headers.task`).
        task_id: Task id (`headers.id`, `correlation_id`).
        args: Positional arguments (list or tuple).
        kwargs: Keyword arguments.
        eta: Earliest run time; naive datetimes are taken as UTC; a string is sent as is.
        expires: Expiry as a datetime, an ISO string, or seconds from `now`. Also sets the
            `expiration` property (milliseconds, `"0"` if already past).
        countdown: Seconds from `now`; replaces `eta` (0 or None means no countdown).
        group_id: Group id (`headers.group`).
        group_index: Position in the group.
        retries: Retries so far.
        time_limit: Hard time limit in seconds (`timelimit[0]`).
        soft_time_limit: Soft time limit in seconds (`timelimit[1]`).
        root_id: Workflow root id; defaults to `task_id`.
        parent_id: Id of the task that sent this one.
        origin: Sender node name; defaults to `gen<pid>@<hostname>`.
        ignore_result: Tell the worker not to store a result.
        shadow: Display name for logs.
        callbacks: Signatures (dicts) to call on success (`link`).
        errbacks: Signatures to call on failure (`link_error`).
        chain: Remaining chain, in reverse order (next task last).
        chord: Chord body signature, for chord header tasks.
        reply_to: Reply queue name (the client's oid for rpc://); "" for none.
        priority: Message priority; 0 when None.
        delivery_mode: 2 (persistent, Celery's default for tasks) or 1 (transient).
        headers: Extra headers, added after the standard ones.
        serializer: Body serializer name (`json`, `pickle`, `msgpack`, `yaml`).
        compression: Compression name (`gzip`, `bzip2`, `lzma`, ...) or None.
        argsrepr: Display text for args; defaults to their repr (max 1024 chars).
        kwargsrepr: Display text for kwargs; defaults to their repr (max 1024 chars).
        replaced_task_nesting: `Task.replace()` depth.
        stamped_headers: Names of stamp headers (canvas stamping), or None.
        stamps: Stamp values; `{}` when None.
        now: The current time, used for countdown and numeric expires (default: now, UTC).

    Returns:
        The envelope: serialized body, headers, properties, content type and encoding.

    Raises:
        TypeError: args is not a list/tuple, or kwargs is not a mapping, or a value cannot
            be serialized.
    """
    if args is None:
        args = ()
    elif not isinstance(args, (list, tuple)):
        raise TypeError("task args must be a list or tuple")
    if kwargs is None:
        kwargs = {}
    elif not isinstance(kwargs, Mapping):
        raise TypeError("task keyword arguments must be a mapping")

    expiration = None
    if countdown or expires is not None:
        clock = _aware(now) if now is not None else datetime.now(_UTC)
        if countdown:
            eta = _add_seconds(clock, countdown)
        if expires is not None:
            expires, expiration = _expiry(expires, clock)
    if eta is not None and not isinstance(eta, str):
        eta = to_iso8601(eta)

    message_headers: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": shadow,
        "eta": eta,
        "expires": expires,
        "group": group_id,
        "group_index": group_index,
        "retries": retries,
        "timelimit": [time_limit, soft_time_limit],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": _short_repr(args) if argsrepr is None else argsrepr,
        "kwargsrepr": _short_repr(kwargs) if kwargsrepr is None else kwargsrepr,
        "origin": origin or default_origin(),
        "ignore_result": ignore_result,
        "replaced_task_nesting": replaced_task_nesting,
        "stamped_headers": stamped_headers,
        "stamps": {} if stamps is None else stamps,
    }
    if headers:
        message_headers.update(headers)

    # A tuple, as Celery builds it: JSON/msgpack write it as an array either way, and
    # pickled bodies come out byte-identical to Celery's.
    body, content_type, content_encoding = dumps(
        (
            args,
            kwargs,
            {"callbacks": callbacks, "errbacks": errbacks, "chain": chain, "chord": chord},
        ),
        serializer,
    )
    if compression:
        body, message_headers["compression"] = compress(body, compression)

    properties: dict[str, Any] = {
        "correlation_id": task_id,
        "reply_to": reply_to or "",
        "delivery_mode": delivery_mode,
    }
    if expiration is not None:
        properties["expiration"] = expiration
    properties["priority"] = priority or 0

    return Envelope(body, message_headers, properties, content_type, content_encoding)


# Header and property keys that differ between the messages of one template, in the order
# `build_task_message` writes them ("root_id", after "group_index", too when it is the id).
_PER_MESSAGE_HEADERS = ("id", "group_index", "argsrepr", "kwargsrepr")
_PER_MESSAGE_PROPERTIES = ("correlation_id",)


@dataclass(slots=True)
class MessageTemplate:
    """Messages that differ from `first` only in task id, args, kwargs and group index.

    `make` builds each of them as `build_task_message` would, from copies of the first
    message's headers and properties (the members of a group: ~3 us instead of ~10 us), and
    `members` many at once without an envelope each (`brokers.base.Members`).
    Not for messages with their own `root_id` per task (it defaults to the task id) unless
    `root_is_id`, nor extra headers that override these fields (see `can_share`).

    Attributes:
        first: The message built by `build_task_message` for the first task.
        embed: Its embed (`callbacks`, `errbacks`, `chain`, `chord`).
        serializer: Its body serializer name.
        compression: Its compression name, or None.
        root_is_id: The root id is each message's own task id (no parent, no root given).
    """

    first: Envelope
    embed: dict[str, Any]
    serializer: str
    compression: str | None
    root_is_id: bool
    changed: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    embed_json: str | None = None

    def __post_init__(self) -> None:
        headers = ("id", "group_index", "root_id", "argsrepr", "kwargsrepr") if self.root_is_id else _PER_MESSAGE_HEADERS
        self.changed = (headers, _PER_MESSAGE_PROPERTIES)
        if self.serializer == "json":
            self.embed_json = encode_json(self.embed)

    @staticmethod
    def can_share(extra_headers: Mapping[str, Any] | None) -> bool:
        """Whether messages with these extra headers may be built from a template."""
        return not extra_headers or not (extra_headers.keys() & {*_PER_MESSAGE_HEADERS, "root_id"})

    def member(self, task_id: str, args: list[Any] | tuple[Any, ...], kwargs: Mapping[str, Any],
               group_index: int | None) -> tuple[bytes, tuple[Any, ...], tuple[Any, ...]]:
        """One more task's body and its values of the `changed` keys (args a list or tuple,
        kwargs a dict)."""
        if self.embed_json is not None:  # what dumps() writes, with the embed encoded once
            try:
                body = f"[{encode_json(args)}, {encode_json(kwargs) if kwargs else '{}'}, {self.embed_json}]".encode()
            except RecursionError as exc:
                raise ValueError("Circular reference detected (or nesting too deep)") from exc
        else:
            body, _, _ = dumps((args, kwargs, self.embed), self.serializer)
        if self.compression:
            body, _ = compress(body, self.compression)
        argsrepr, kwargsrepr = _short_repr(args), _short_repr(kwargs) if kwargs else "{}"
        if self.root_is_id:
            return body, (task_id, group_index, task_id, argsrepr, kwargsrepr), (task_id,)
        return body, (task_id, group_index, argsrepr, kwargsrepr), (task_id,)

    def make(self, task_id: str, args: list[Any] | tuple[Any, ...], kwargs: Mapping[str, Any],
             group_index: int | None) -> SharedEnvelope:
        """The message for one more task (args a list or tuple, kwargs a dict)."""
        return Members(self.first, self.changed, [self.member(task_id, args, kwargs, group_index)]).envelopes()[0]

    def members(self, calls: Sequence[tuple[str, list[Any] | tuple[Any, ...], Mapping[str, Any], int | None]]) -> Members:
        """The messages for many more tasks, from (task id, args, kwargs, group index)."""
        member = self.member
        return Members(self.first, self.changed, [member(*call) for call in calls])


# --- reading --------------------------------------------------------------------------------


@dataclass(slots=True)
class TaskMessage:
    """A received task message: v2-style headers now, the body only when asked.

    Attributes:
        headers: Protocol v2 headers. For a v2 message this is the envelope's own dict
            (not copied); for v1 it is built from the body.
        envelope: The message as received.
        protocol: 2 or 1.
        v1_body: The already decoded body of a v1 message (None for v2).
    """

    headers: dict[str, Any]
    envelope: Envelope
    protocol: int = 2
    v1_body: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        """The task id."""
        return self.headers["id"]

    @property
    def task(self) -> str:
        """The task name."""
        return self.headers["task"]

    def decode_body(
        self, accept: AbstractSet[str] | None = DEFAULT_ACCEPT
    ) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        """Shortcut for `decode_body(self, accept)`."""
        return decode_body(self, accept)


def _raw_body(envelope: Envelope, accept: AbstractSet[str] | None) -> Any:
    data = envelope.body
    compression = (envelope.headers or {}).get("compression")
    if compression:
        # Refuse before decompressing: no work is spent on content that is not accepted.
        ensure_accepted(envelope.content_type, accept)
        data = decompress(data, compression)
    return loads(data, envelope.content_type, envelope.content_encoding, accept)


def _v1_headers(body: dict[str, Any], envelope_headers: Mapping[str, Any]) -> dict[str, Any]:
    args = body.get("args") or ()
    kwargs = body.get("kwargs") or {}
    headers = {
        "lang": body.get("lang") or "py",
        "task": body["task"],
        "id": body["id"],
        "shadow": body.get("shadow"),
        "eta": body.get("eta"),
        "expires": body.get("expires"),
        # v1 carried the group id twice; `taskset` is the older name.
        "group": body.get("group") or body.get("taskset"),
        "group_index": body.get("group_index"),
        "retries": body.get("retries") or 0,
        "timelimit": list(body.get("timelimit") or (None, None)),
        "root_id": body.get("root_id"),
        "parent_id": body.get("parent_id"),
        "argsrepr": body.get("argsrepr") or _short_repr(args),
        "kwargsrepr": body.get("kwargsrepr") or _short_repr(kwargs),
        "origin": body.get("origin"),
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    # As Celery does: whatever the transport put in the headers (compression,
    # redelivered, ...) wins.
    headers.update(envelope_headers)
    return headers


def task_message_from_envelope(
    envelope: Envelope, accept: AbstractSet[str] | None = DEFAULT_ACCEPT
) -> TaskMessage:
    """Read a received envelope as a task message, decoding only what is needed.

    A v2 message (a `task` header) is read from its headers alone. A v1 message has its
    body decoded here (it holds the task name and id), so `accept` applies to it.

    Args:
        envelope: The message as received from a broker.
        accept: Accepted content types, used only for v1 bodies; None accepts all.

    Raises:
        DecodeError: Not a task message (no task name or id), or a v1 body that cannot be
            decoded.
        ContentDisallowed: A v1 body of a content type not in `accept`.
    """
    headers = envelope.headers
    if headers and headers.get("task"):
        if headers.get("id") is None:
            raise DecodeError(f"Task message for {headers['task']!r} has no 'id' header")
        return TaskMessage(headers, envelope)

    body = _raw_body(envelope, accept)
    if not isinstance(body, dict) or not body.get("task") or body.get("id") is None:
        raise DecodeError(
            "Not a Celery task message: no 'task' header (protocol 2) "
            "and no 'task'/'id' in the body (protocol 1)"
        )
    return TaskMessage(_v1_headers(body, headers or {}), envelope, 1, body)


def _empty_embed() -> dict[str, Any]:
    return {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _check_args(args: Any, kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    if isinstance(args, tuple):  # pickle keeps tuples
        args = list(args)
    elif not isinstance(args, list):
        raise DecodeError(f"Task args must be a list, got {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise DecodeError(f"Task kwargs must be a mapping, got {type(kwargs).__name__}")
    return args, kwargs


def decode_body(
    message: TaskMessage, accept: AbstractSet[str] | None
) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """Decode a task message's body into `(args, kwargs, embed)`.

    `embed` always has the four keys `callbacks`, `errbacks`, `chain`, `chord` (None when
    unused); a v1 message has no `chain`.

    Args:
        message: From `task_message_from_envelope`.
        accept: Accepted content types (see `serialization.accept_content_types`); None
            accepts all.

    Raises:
        ContentDisallowed: The content type is not in `accept`.
        DecodeError: The body cannot be decoded or is not `[args, kwargs, embed]`.
    """
    envelope = message.envelope
    if message.protocol == 1:
        body = message.v1_body
        if body is None:  # a TaskMessage built by hand
            body = _raw_body(envelope, accept)
        else:
            ensure_accepted(envelope.content_type, accept)
        args, kwargs = _check_args(body.get("args") or [], body.get("kwargs") or {})
        embed = {
            "callbacks": body.get("callbacks"),
            "errbacks": body.get("errbacks"),
            "chain": None,
            "chord": body.get("chord"),
        }
        return args, kwargs, embed

    body = _raw_body(envelope, accept)
    if not isinstance(body, (list, tuple)) or len(body) != 3:
        raise DecodeError(
            "Task body must be [args, kwargs, embed], got "
            + (f"{len(body)} items" if isinstance(body, (list, tuple)) else type(body).__name__)
        )
    args, kwargs, embed = body
    args, kwargs = _check_args(args, kwargs)
    if embed is None:
        embed = _empty_embed()
    elif not isinstance(embed, dict):
        raise DecodeError(f"Task embed must be a mapping or null, got {type(embed).__name__}")
    elif not embed.keys() >= _EMBED_KEYS:
        embed = {**_empty_embed(), **embed}
    return args, kwargs, embed
