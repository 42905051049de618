"""The ``rpc://`` result backend: results travel back as messages, as with Celery's.

Wire format (celery-wire.md 4.5): the worker publishes each state of a task to the default
exchange ``""`` with routing key = the task message's ``reply_to`` property (the client's
``app.oid``) and ``correlation_id`` = the task id; the body is the usual meta dict (JSON with
``task_id``), ``delivery_mode`` 1 (2 with ``result_persistent``), no headers.

The client's reply queue is named by its oid and declared as Celery 5.7 declares it: durable,
auto-delete, ``x-expires`` = ``result_expires``. It must exist before a worker replies, so
`on_task_call` declares it (the producer calls it for tasks whose result is wanted). The client
consumes the queue without acks and keeps the latest meta of every task id it has seen, so one
`wait_for` also collects the results other waits will ask for.

rpc is not a store: results live in the memory of the client that sent the task.
`get_task_meta` for an id not seen yet is PENDING, results cannot be read from another
process, groups cannot be saved and chords are not supported (as in Celery).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import _state, states
from ..brokers.amqp import AMQPBroker
from ..brokers.amqp_consumer import AMQPSubscription
from ..brokers.base import Envelope
from ..entities import Exchange, Queue
from ..exceptions import ImproperlyConfigured, TimeoutError
from ..serialization import dumps, loads
from .base import Backend, pending_meta

if TYPE_CHECKING:
    from ..app import Celery

__all__ = ["RPCBackend"]

logger = logging.getLogger(__name__)

E_NO_CHORD_SUPPORT = (
    'The "rpc" result backend does not support chords!\n\n'
    "Note that a group chained with a task is also upgraded to be a chord, as this pattern "
    "requires synchronization.\n\nResult backends that support chords: Redis, database, ..."
)

#: Metas kept for task ids nobody waits for yet; the oldest are dropped beyond this.
MAX_CACHED = 100_000


class RPCBackend(Backend):
    """Results as reply messages over the app's AMQP broker (see the module docstring).

    Args:
        app: The app; its broker must be ``amqp://`` (also ``pyamqp://``, ``amqps://``).
            Settings used: ``result_expires`` (reply queue ``x-expires``),
            ``result_persistent`` (delivery mode 2), ``result_serializer``,
            ``result_accept_content``.
        url: ``rpc://`` (nothing in it is used: the broker's connection is).
    """

    supports_native_join = True

    def __init__(self, app: Celery, url: str | None = None) -> None:
        super().__init__(app, url or "rpc://")
        self.persistent = bool(app.conf.get("result_persistent"))
        self.delivery_mode = 2 if self.persistent else 1
        self._metas: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._subscription: AMQPSubscription | None = None
        self._declared = False
        self._pid = _state.pid

    def __repr__(self) -> str:
        return "<RPCBackend rpc://>"

    # -- plumbing --------------------------------------------------------------------------

    @property
    def broker(self) -> AMQPBroker:
        broker = self.app.broker
        if not isinstance(broker, AMQPBroker):
            raise ImproperlyConfigured(
                "The rpc:// result backend needs an AMQP broker (amqp://...), "
                f"not {type(broker).__name__}: use another result_backend (e.g. redis://)"
            )
        return broker

    @property
    def oid(self) -> str:
        """The reply queue's name: this client's id, sent as `reply_to` with its tasks."""
        return str(self.app.oid)

    def reply_queue(self) -> Queue:
        """The reply queue, declared exactly as Celery 5.7 declares it."""
        return Queue(self.oid, Exchange(""), self.oid, durable=True, auto_delete=True,
                     expires=self.expires)

    def _check_fork(self) -> None:
        if self._pid != _state.pid:
            # A forked child: the parent's consumer connection and results are not ours.
            self._pid = _state.pid
            self._subscription = None
            self._declared = False
            self._metas = {}

    def on_task_call(self, producer: Any = None, task_id: str | None = None) -> None:
        """Declare the reply queue before a task is sent (once per process)."""
        self._check_fork()
        if not self._declared:
            self.broker.declare([self.reply_queue()])
            self._declared = True

    def ensure_chords_allowed(self) -> None:
        """rpc:// cannot count chord parts: refuse chords, as Celery does."""
        raise NotImplementedError(E_NO_CHORD_SUPPORT)

    # -- the worker's side -----------------------------------------------------------------

    def _write_meta(self, meta: dict[str, Any], request: Any) -> None:
        """Send the state to the task's `reply_to` queue (nothing is sent without one)."""
        task_id = meta["task_id"]
        reply_to = getattr(request, "reply_to", None)
        if not reply_to:
            logger.debug("No reply_to for task %s: its %s state is not sent", task_id, meta["status"])
            return
        correlation_id = getattr(request, "correlation_id", None) or task_id
        body, content_type, content_encoding = dumps(meta, self.serializer)
        properties = {"correlation_id": correlation_id, "priority": 0, "delivery_mode": self.delivery_mode}
        envelope = Envelope(body, {}, properties, content_type, content_encoding)
        self.broker.send(envelope, "", reply_to)

    def store_many(self, metas: Iterable[dict[str, Any]]) -> None:
        """Not possible: a reply needs the request's `reply_to`; use `store_result`."""
        raise NotImplementedError("rpc:// sends each result to its request's reply_to: use store_result")

    # -- the client's side -----------------------------------------------------------------

    def _consume(self, timeout: float) -> None:
        """Read the reply queue for up to `timeout` s (until one message arrives)."""
        self._check_fork()
        if self._subscription is None:
            self._subscription = self.broker.subscribe_queue(self.reply_queue(), no_ack=True)
            self._declared = True
        for delivery in self._subscription.get_many(1000, timeout):
            self._remember(delivery.envelope)

    def _remember(self, envelope: Envelope) -> None:
        try:
            meta = loads(envelope.body, envelope.content_type, envelope.content_encoding, self.accept)
        except Exception as exc:  # a reply we cannot read must not stop the others
            logger.error("Dropping unreadable reply (correlation_id %s): %r",
                         envelope.properties.get("correlation_id"), exc)
            return
        if not isinstance(meta, Mapping):
            return
        task_id = envelope.properties.get("correlation_id") or meta.get("task_id")
        if not task_id:
            return
        meta = dict(meta)
        meta.setdefault("task_id", task_id)
        known = self._metas.get(task_id)
        if known is not None and known["status"] in states.READY_STATES \
                and meta.get("status") not in states.READY_STATES:
            return  # a late STARTED from a redelivered run must not hide the result
        self._metas.pop(task_id, None)
        self._metas[task_id] = meta
        if len(self._metas) > MAX_CACHED:
            del self._metas[next(iter(self._metas))]

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        """The latest state received for the task, or PENDING."""
        with self._lock:
            self._consume(0)
            return self._metas.get(task_id) or pending_meta(task_id)

    def get_many_metas(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        with self._lock:
            self._consume(0)
            return [self._metas.get(task_id) or pending_meta(task_id) for task_id in task_ids]

    def wait_for(
        self, task_id: str, timeout: float | None = None, interval: float = 0.5
    ) -> dict[str, Any]:
        """Consume replies until the task is ready; return its meta."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                meta = self._metas.get(task_id)
                if meta is not None and meta["status"] in states.READY_STATES:
                    return meta
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"The operation timed out waiting for task {task_id}.")
                # Short slices, so other threads waiting on this backend get their turn.
                self._consume(min(remaining, 0.25))

    def forget(self, task_id: str) -> None:
        """Drop what this client holds for the task (there is nothing on the server)."""
        with self._lock:
            self._metas.pop(task_id, None)

    def close(self) -> None:
        with self._lock:
            subscription, self._subscription = self._subscription, None
            self._declared = False
        if subscription is not None:
            subscription.close()

    # -- what a message backend cannot do ---------------------------------------------------

    def _get(self, key: str) -> bytes | None:
        return None

    def _set(self, key: str, value: bytes, ttl: int | None) -> None:
        raise NotImplementedError("rpc:// stores nothing: results are reply messages")

    def _delete(self, key: str) -> None:
        return None

    def save_group(self, group_id: str, result: Any) -> None:
        raise NotImplementedError("save_group is not supported by the rpc:// backend")

    def get_group(self, group_id: str) -> Any:
        raise NotImplementedError("restore_group is not supported by the rpc:// backend")

    def delete_group(self, group_id: str) -> None:
        raise NotImplementedError("delete_group is not supported by the rpc:// backend")
