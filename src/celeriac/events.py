"""Events for monitors (Flower, `celery events`), in Celery's layout (celery-wire.md 5).

Every event is a JSON dict with `hostname`, `utcoffset`, `pid`, `clock` (a Lamport clock),
`timestamp` and `type`. It goes to the `celeryev` exchange with the type as routing key, `-`
made `.` (`worker.heartbeat`, `task.succeeded`): on Redis a PUBLISH on kombu's fanout channel
``/<db>.celeryev/<routing key>``, on RabbitMQ the durable topic exchange `celeryev`. Messages
are transient (delivery_mode 1) with headers ``{"hostname": ...}``.

A worker sends `worker-online`, a `worker-heartbeat` every 2 s and `worker-offline`; with
``-E`` (`worker_send_task_events`) also the task events, which the consumer loop buffers and
sends once per turn: one alone under its own routing key, several as a list under
`task.multi`, as Celery's worker does.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .brokers.base import Envelope, RetryPolicy
from .entities import Exchange
from .serialization import dumps
from .version import __version__

if TYPE_CHECKING:
    from .app import Celery

__all__ = ["EXCHANGE", "HEARTBEAT_INTERVAL", "EventDispatcher", "Heart", "task_fields"]

logger = logging.getLogger("celeriac.events")

#: The exchange every event goes to (Celery's `event_exchange` default).
EXCHANGE = "celeryev"
#: Seconds between worker heartbeats (Celery's `freq`).
HEARTBEAT_INTERVAL = 2.0
#: Events are not worth a wait: one try (the worker's own loop reconnects the broker).
_ONE_TRY = RetryPolicy(max_retries=0)
#: Task events buffered at most before a send (as Celery's worker), if the turn is longer.
BUFFER_MAX = 24


def task_fields(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The fields `task-sent` and `task-received` take from a task message's headers."""
    return {"uuid": headers["id"], "name": headers["task"], "args": headers.get("argsrepr"),
            "kwargs": headers.get("kwargsrepr"), "root_id": headers.get("root_id"),
            "parent_id": headers.get("parent_id"), "retries": headers.get("retries", 0),
            "eta": headers.get("eta"), "expires": headers.get("expires")}


def _utcoffset() -> float:
    """Celery's `utcoffset`: hours west of UTC (`time.timezone`, or `altzone` in summer time)."""
    offset = time.altzone if time.localtime().tm_isdst > 0 else time.timezone
    return float(offset // 3600)


class EventDispatcher:
    """Sends events from one process (`hostname`), through `app`'s broker.

    Args:
        app: The app whose broker carries the events.
        hostname: The sender's node name (``celery@host``, or ``gen<pid>@host`` for a client).
        task_events: Whether task events are sent (`enabled`; worker events always are).
    """

    def __init__(self, app: Celery, hostname: str, task_events: bool = False) -> None:
        self.app = app
        self.hostname = hostname
        self.task_events = task_events
        self.pid = os.getpid()
        self.utcoffset = _utcoffset()
        self.exchange = str(app.conf.event_exchange or EXCHANGE)
        self.clock = 0
        self.buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._declared = False

    def event(self, type: str, **fields: Any) -> dict[str, Any]:  # noqa: A002 - Celery's field
        """An event of `type` with the sender's fields, the next clock value and now."""
        with self._lock:
            self.clock += 1
            clock = self.clock
        return {"hostname": self.hostname, "utcoffset": self.utcoffset, "pid": self.pid, "clock": clock,
                **fields, "timestamp": time.time(), "type": type}

    def send(self, type: str, **fields: Any) -> None:  # noqa: A002 - Celery's field
        """Send one event now, under its own routing key."""
        self._publish(self.event(type, **fields), type.replace("-", "."))

    def buffer_task(self, type: str, **fields: Any) -> None:  # noqa: A002 - Celery's field
        """Keep a task event for the next `flush` (if task events are on)."""
        if self.task_events:
            self.buffer.append(self.event(type, **fields))
            if len(self.buffer) >= BUFFER_MAX:
                self.flush()

    def flush(self) -> None:
        """Send the buffered task events: one alone, several as a list under `task.multi`."""
        if not self.buffer:
            return
        events, self.buffer = self.buffer, []
        if len(events) == 1:
            self._publish(events[0], events[0]["type"].replace("-", "."))
        else:
            self._publish(events, "task.multi")

    def _publish(self, body: Any, routing_key: str) -> None:
        """Publish; a monitor is never worth a task: errors are logged, not raised."""
        data, content_type, content_encoding = dumps(body, "json")
        envelope = Envelope(data, {"hostname": self.hostname}, {"delivery_mode": 1, "priority": 0},
                            content_type, content_encoding)
        try:
            broker = self.app.broker
            if not self._declared:
                broker.declare_exchange(Exchange(self.exchange, "topic", durable=True, auto_delete=False),
                                        retry=_ONE_TRY)
                self._declared = True
            broker.publish_fanout(self.exchange, envelope, routing_key, retry=_ONE_TRY)
        except Exception as exc:  # the broker is down: the event is lost, the worker goes on
            logger.warning("Could not send event %s: %r", routing_key, exc)


class Heart(threading.Thread):
    """Sends `worker-online`, then a `worker-heartbeat` every `HEARTBEAT_INTERVAL` seconds,
    and `worker-offline` when stopped.

    Args:
        dispatcher: The worker's dispatcher.
        stats: Returns (active, processed): tasks running now and finished so far.
    """

    def __init__(self, dispatcher: EventDispatcher, stats: Any) -> None:
        super().__init__(name="celeriac-heart", daemon=True)
        self.dispatcher = dispatcher
        self.stats = stats
        self._stopping = threading.Event()

    def fields(self) -> dict[str, Any]:
        active, processed = self.stats()
        loadavg = [round(n, 2) for n in os.getloadavg()] if hasattr(os, "getloadavg") else [0.0, 0.0, 0.0]
        return {"freq": HEARTBEAT_INTERVAL, "active": active, "processed": processed, "loadavg": loadavg,
                "sw_ident": "py-celeriac", "sw_ver": __version__, "sw_sys": platform.system()}

    def beat(self) -> None:
        """Send a heartbeat now (also the `heartbeat` remote-control command)."""
        self.dispatcher.send("worker-heartbeat", **self.fields())

    def run(self) -> None:
        self.dispatcher.send("worker-online", **self.fields())
        while not self._stopping.wait(HEARTBEAT_INTERVAL):
            self.beat()

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(3)
        self.dispatcher.send("worker-offline", **self.fields())
