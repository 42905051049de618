"""Sending a task: options -> route -> message (protocol v2) -> envelope -> broker.publish."""

from __future__ import annotations

import operator
import os
import socket
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import _state, signals
from .brokers.base import Members, RetryPolicy
from .entities import DELIVERY_MODES
from .events import EventDispatcher, task_fields
from .exceptions import ImproperlyConfigured
from .ids import uuid4
from .protocol import MessageTemplate, build_task_message
from .result import AsyncResult

if TYPE_CHECKING:
    from .app import Celery
    from .task import Task

#: Task attributes that are defaults for the options of each message.
_TASK_OPTIONS = ("queue", "priority", "expires", "time_limit", "soft_time_limit", "serializer")


def _as_signature_list(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return [dict(value)]
    return [dict(item) for item in value]


def _delivery_mode(value: Any) -> int:
    """2 for "persistent" (the default), 1 for "transient", as kombu reads `delivery_mode`."""
    mode = 2 if value is None else DELIVERY_MODES.get(value, value)
    if mode not in (1, 2):
        raise ImproperlyConfigured(f"delivery_mode must be 'persistent', 'transient', 1 or 2, not {value!r}")
    return mode  # type: ignore[no-any-return]


#: kombu's `ensure` defaults, for keys a retry policy leaves out.
_RETRY_DEFAULTS = {"max_retries": None, "interval_start": 1, "interval_step": 1, "interval_max": 1}
#: Keys kombu also takes (its callbacks, its error classes): accepted and not used.
_RETRY_IGNORED = frozenset({"retry_errors", "errback", "on_revive"})


def publish_retry(app: Celery, retry: bool | None = None, policy: Mapping[str, Any] | None = None) -> RetryPolicy:
    """How a client's publish is retried after connection errors: `task_publish_retry` and
    `task_publish_retry_policy`, with a call's own `retry` and `retry_policy` over them (the
    call's policy merged into the setting's, as Celery does). Off: one try, then the error.

    Raises:
        ImproperlyConfigured: An unknown key or a value that is not a number.
    """
    conf = app.conf
    cached = app._publish_retry
    if retry is None and policy is None and cached is not None and cached[0] == conf._version:
        return cached[1]  # type: ignore[no-any-return]
    if not (conf.task_publish_retry if retry is None else retry):
        result = RetryPolicy(max_retries=0)
    else:
        merged = {**_RETRY_DEFAULTS, **(conf.task_publish_retry_policy or {}), **(policy or {})}
        unknown = merged.keys() - _RETRY_DEFAULTS.keys() - _RETRY_IGNORED
        if unknown:
            raise ImproperlyConfigured(f"Unknown publish retry policy keys: {sorted(unknown)}; known: "
                                       f"{sorted(_RETRY_DEFAULTS)}")
        try:
            result = RetryPolicy(
                max_retries=None if merged["max_retries"] is None else int(merged["max_retries"]),
                interval_start=float(merged["interval_start"]), interval_step=float(merged["interval_step"]),
                interval_max=float(merged["interval_max"]))
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"Bad publish retry policy {merged!r}: {exc}") from None
    if retry is None and policy is None:
        app._publish_retry = (conf._version, result)
    return result


def _absolute(value: Any, now: datetime) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, timedelta):
        return now + value
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return now + timedelta(seconds=float(value))


def _message_arguments(
    app: Celery,
    name: str,
    args: Sequence[Any] | None,
    kwargs: dict[str, Any] | None,
    options: dict[str, Any],
    task: Task | None,
) -> tuple[dict[str, Any], Any, float | None]:
    """Resolve options: (the arguments of build_task_message, route, not_before)."""
    conf = app.conf
    if task is not None:
        for attr in _TASK_OPTIONS:
            if attr not in options:
                value = getattr(task, attr, None)
                if value is not None:
                    options[attr] = value
        if task.ignore_result and "ignore_result" not in options:
            options["ignore_result"] = True
    args = args if isinstance(args, tuple | list) else list(args or ())  # a tuple keeps Celery's argsrepr
    kwargs = dict(kwargs or {})
    route, options = app.router.route(name, args, kwargs, options, task)
    now = datetime.now(UTC)
    eta = _absolute(options.get("eta"), now)
    countdown = options.get("countdown")
    if countdown is not None and eta is None:
        eta = now + timedelta(seconds=float(countdown))
    expires = _absolute(options.get("expires"), now)
    task_id = options.get("task_id") or uuid4()
    parent_id = options.get("parent_id")
    root_id = options.get("root_id")
    current = _state.get_current_task()
    if current is not None:
        request = current.request
        if not request.called_directly and request.id:
            if parent_id is None:
                parent_id = request.id
                root_id = root_id or request.root_id
            if request.children is not None and options.get("add_to_parent", True):
                request.children.append([[task_id, None], None])  # shown as AsyncResult.children
    arguments = {
        "name": name,
        "task_id": task_id,
        "args": args,
        "kwargs": kwargs,
        "eta": eta,
        "expires": expires,
        "group_id": options.get("group_id"),
        "group_index": options.get("group_index"),
        "retries": options.get("retries", 0),
        "time_limit": options.get("time_limit"),
        "soft_time_limit": options.get("soft_time_limit"),
        "root_id": root_id,
        "parent_id": parent_id,
        "origin": options.get("origin"),
        "ignore_result": bool(options.get("ignore_result", False)),
        "shadow": options.get("shadow"),
        "callbacks": _as_signature_list(options.get("link")),
        "errbacks": _as_signature_list(options.get("link_error")),
        "chain": options.get("chain"),
        "chord": options.get("chord"),
        "reply_to": options.get("reply_to") or app.oid,
        "priority": options.get("priority"),
        "delivery_mode": _delivery_mode(options.get("delivery_mode") or conf.task_default_delivery_mode),
        "headers": options.get("headers"),
        "serializer": options.get("serializer") or conf.task_serializer or "json",
        "compression": options.get("compression") or conf.task_compression,
        "now": now,
    }
    not_before = eta.timestamp() if eta is not None and eta.timestamp() > time.time() else None
    return arguments, route, not_before


def prepare_task_message(
    app: Celery,
    name: str,
    args: Sequence[Any] | None,
    kwargs: dict[str, Any] | None,
    options: dict[str, Any],
    task: Task | None = None,
) -> tuple[Any, Any, float | None, str]:
    """Resolve options and build (envelope, route, not_before, task_id) for one task."""
    arguments, route, not_before = _message_arguments(app, name, args, kwargs, options, task)
    return build_task_message(**arguments), route, not_before, arguments["task_id"]


def _declare_once(app: Celery, broker: Any, queue_name: str, retry: RetryPolicy) -> None:
    if queue_name and queue_name not in app._declared:
        queue = app.router.queues.get(queue_name)
        if queue is not None:
            broker.declare([queue], retry=retry)
        app._declared.add(queue_name)


def _publish(app: Celery, items: list[tuple[Any, Any, float | None]], retry: RetryPolicy | None = None) -> None:
    """Publish prepared (envelope or `Members`, route, not_before) items: one round trip where
    possible; retried after connection errors as `retry` says (default: `publish_retry`)."""
    broker = app.broker
    if retry is None:
        retry = publish_retry(app)
    sent_events = app.conf.task_send_sent_event
    if (not broker.publishes_members or sent_events or signals.before_task_publish.receivers
            or signals.after_task_publish.receivers):
        items = [(member, route, not_before) for envelope, route, not_before in items
                 for member in (envelope.envelopes() if type(envelope) is Members else (envelope,))]
    if not broker.delays_on_publish and any(not_before is not None for _, _, not_before in items):
        items = [(envelope, route, None) for envelope, route, _ in items]
    if any(not (envelope.template if type(envelope) is Members else envelope).headers.get("ignore_result")
           for envelope, _, _ in items):
        app.backend.on_task_call()
    for queue in dict.fromkeys([route.queue for _, route, _ in items]):
        _declare_once(app, broker, queue, retry)
    if signals.before_task_publish.receivers:
        for envelope, route, _ in items:
            signals.before_task_publish.send(
                sender=envelope.headers["task"], body=envelope.body, exchange=route.exchange,
                routing_key=route.routing_key, headers=envelope.headers,
                properties=envelope.properties, declare=[], retry_policy=None,
            )
    if len(items) == 1 and type(items[0][0]) is not Members:
        broker.publish(items[0][0], items[0][1], not_before=items[0][2], retry=retry)
    else:
        broker.publish_many(items, retry=retry)
    if signals.after_task_publish.receivers:
        for envelope, route, _ in items:
            signals.after_task_publish.send(sender=envelope.headers["task"], body=envelope.body,
                                            headers=envelope.headers, exchange=route.exchange,
                                            routing_key=route.routing_key)
    if sent_events:
        _send_sent_events(app, items)


def _send_sent_events(app: Celery, items: list[tuple[Any, Any, float | None]]) -> None:
    """`task-sent` for each message (`task_send_sent_event`), from ``gen<pid>@<host>``, one
    event per message under `task.sent`, as Celery's client sends them."""
    if app._events is None:
        app._events = EventDispatcher(app, f"gen{os.getpid()}@{socket.gethostname()}")
    for envelope, route, _ in items:
        app._events.send("task-sent", **task_fields(envelope.headers), queue=route.queue,
                         exchange=route.exchange, routing_key=route.routing_key)


def send_task_message(
    app: Celery,
    name: str,
    args: Sequence[Any] | None,
    kwargs: dict[str, Any] | None,
    options: dict[str, Any],
    task: Task | None = None,
) -> AsyncResult[Any]:
    """Publish one task message; return its AsyncResult.

    `task.delay(...)` (a registered task, no options, not sent from a running task) is built
    from the task's `MessageTemplate`, kept until the settings, the task's options or the
    client id change: its options and route are resolved once, not per message.
    """
    if task is not None and not options and _state.get_current_task() is None:
        key = _template_key(app, task)
        cached = task.__dict__.get("_celeriac_template")
        if cached is not None and cached[0] == key:
            template, route = cached[1], cached[2]
            task_id = uuid4()
            args = args if isinstance(args, tuple | list) else list(args or ())
            _publish(app, [(template.members([(task_id, args, dict(kwargs or {}), None)]), route, None)])
            return AsyncResult(task_id, app=app, task_name=name)
        arguments, route, not_before = _message_arguments(app, name, args, kwargs, {}, task)
        envelope = build_task_message(**arguments)
        if (arguments["eta"] is None and arguments["expires"] is None and not_before is None
                and app.router.routes_by_name_only() and MessageTemplate.can_share(arguments["headers"])):
            task.__dict__["_celeriac_template"] = (key, _template(arguments, envelope), route)
        _publish(app, [(envelope, route, not_before)])
        return AsyncResult(arguments["task_id"], app=app, task_name=name)
    envelope, route, not_before, task_id = prepare_task_message(app, name, args, kwargs, dict(options), task)
    _publish(app, [(envelope, route, not_before)], publish_retry(app, options.get("retry"), options.get("retry_policy")))
    return AsyncResult(task_id, app=app, task_name=name)


def _template_key(app: Celery, task: Task) -> tuple[Any, ...]:
    """What a task's message template depends on, besides the task's name."""
    return (app.conf._version, app.router, app.oid, task.ignore_result, _task_options(task))


_task_options = operator.attrgetter(*_TASK_OPTIONS)


def send_many(app: Celery, messages: Sequence[tuple[str, Sequence[Any], dict[str, Any], dict[str, Any]]]) -> list[AsyncResult[Any]]:
    """Publish many task messages in as few round trips as the broker allows."""
    return [AsyncResult(task_id, app=app, task_name=message[0])
            for task_id, message in zip(send_batch(app, messages), messages, strict=True)]


@dataclass(slots=True)
class MemberCalls:
    """Plain members of a group that call one task (`canvas.group`): sent with one set of
    options, they become one `Members` item when they can share a message template.

    Attributes:
        name: The task's name.
        options: Every member's options (group id, ...), without task_id and group_index.
        calls: (task id, args, kwargs, group index) of each member.
    """

    name: str
    options: dict[str, Any]
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any], int]]


# Options that may differ between the messages of one template (see `send_batch`).
_PER_MESSAGE_OPTIONS = ("task_id", "group_index")


def send_batch(app: Celery, messages: Sequence[tuple[str, Sequence[Any], dict[str, Any], dict[str, Any]] | MemberCalls]
               ) -> list[str]:
    """Publish many task messages (name, args, kwargs, options), or `MemberCalls`; return
    their task ids.

    Consecutive messages for the same task whose options are the same objects but for
    `task_id` and `group_index` (the members of a group) share one resolution of options
    and route, and are built from the first one's message (`protocol.MessageTemplate`),
    unless a router function could route each by its arguments.
    """
    items: list[tuple[Any, Any, float | None]] = []
    ids: list[str] = []
    shareable = app.router.routes_by_name_only()
    template: MessageTemplate | None = None
    name0 = ""
    keys0: Any = None
    shared: list[tuple[str, Any]] = []  # the options every member must have, as these objects
    route: Any = None
    not_before: float | None = None
    children: list[Any] | None = None
    for message in messages:
        if type(message) is MemberCalls:
            template = None
            ids.extend(_add_members(app, message, shareable, items))
            continue
        name, args, kwargs, options = message  # type: ignore[misc]
        if template is not None and name == name0 and options.keys() == keys0:
            for key, value in shared:
                if options[key] is not value:
                    break
            else:
                task_id = options.get("task_id") or uuid4()
                if children is not None:
                    children.append([[task_id, None], None])
                args = args if isinstance(args, tuple | list) else list(args or ())
                member = template.make(task_id, args, dict(kwargs or {}), options.get("group_index"))
                items.append((member, route, not_before))
                ids.append(task_id)
                continue
        arguments, route, not_before = _message_arguments(
            app, name, args, kwargs, dict(options), app.tasks.get(name))
        envelope = build_task_message(**arguments)
        items.append((envelope, route, not_before))
        ids.append(arguments["task_id"])
        template = None
        if shareable and MessageTemplate.can_share(arguments["headers"]):
            template = _template(arguments, envelope)
            name0, keys0 = name, frozenset(options)
            shared = [(key, value) for key, value in options.items() if key not in _PER_MESSAGE_OPTIONS]
            children = _current_children(options)
    if items:
        _publish(app, items)
    return ids


def _add_members(app: Celery, batch: MemberCalls, shareable: bool, items: list[tuple[Any, Any, float | None]]
                 ) -> list[str]:
    """Add a group's members' messages to `items`: the first built alone, the others as one
    `Members` of its template (each alone if they can't share one); their ids."""
    if not batch.calls:
        return []
    task = app.tasks.get(batch.name)
    first_id, args, kwargs, index = batch.calls[0]
    arguments, route, not_before = _message_arguments(
        app, batch.name, args, kwargs, {**batch.options, "task_id": first_id, "group_index": index}, task)
    envelope = build_task_message(**arguments)
    items.append((envelope, route, not_before))
    rest = batch.calls[1:]
    if rest and shareable and MessageTemplate.can_share(arguments["headers"]):
        children = _current_children(batch.options)
        if children is not None:
            children.extend([[task_id, None], None] for task_id, _, _, _ in rest)
        template = _template(arguments, envelope)
        items.append((Members(template.first, template.changed, _MemberValues(template, rest)), route, not_before))
    else:
        for task_id, args, kwargs, index in rest:
            arguments, route, not_before = _message_arguments(
                app, batch.name, args, kwargs, {**batch.options, "task_id": task_id, "group_index": index}, task)
            items.append((build_task_message(**arguments), route, not_before))
    return [task_id for task_id, _, _, _ in batch.calls]


class _MemberValues(Collection[tuple[bytes, tuple[Any, ...], tuple[Any, ...]]]):
    """The values of a `Members`: `MessageTemplate.member` of each call, made as they are read.

    Each member's tuples are freed as soon as the broker has encoded it, not kept until the
    whole group is: a group of 10,000 sets off ~40% fewer cyclic GC passes (bench client.py
    enqueue --bulk). An error in a member's arguments (not JSON-serializable, ...) is raised
    when the broker reads it: after the queue is declared, before anything of the batch is sent.
    """

    __slots__ = ("calls", "template")

    def __init__(self, template: MessageTemplate, calls: list[tuple[str, tuple[Any, ...], dict[str, Any], int]]) -> None:
        self.template = template
        self.calls = calls

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Iterator[tuple[bytes, tuple[Any, ...], tuple[Any, ...]]]:
        member = self.template.member
        return (member(*call) for call in self.calls)

    def __contains__(self, value: object) -> bool:
        return any(value == item for item in self)


def _template(arguments: dict[str, Any], envelope: Any) -> MessageTemplate:
    embed = {"callbacks": arguments["callbacks"], "errbacks": arguments["errbacks"],
             "chain": arguments["chain"], "chord": arguments["chord"]}
    root_is_id = not arguments["root_id"]  # build_task_message made it the task id
    return MessageTemplate(envelope, embed, arguments["serializer"], arguments["compression"], root_is_id)


def _current_children(options: dict[str, Any]) -> list[Any] | None:
    """The running task's list of children, where the next messages must be recorded."""
    current = _state.get_current_task()
    if current is None or not options.get("add_to_parent", True):
        return None
    request = current.request
    if request.called_directly or not request.id:
        return None
    return request.children
