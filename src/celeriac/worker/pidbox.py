"""The worker's mailbox: a thread that listens for remote-control requests and answers them.

Requests arrive on the fanout exchange ``celery.pidbox`` (celery-wire.md 2.7). A request is
for this worker when its ``destination`` names it, or its ``pattern`` matches it (``glob``
or ``pcre``), or it names no one; requests past their ``expires`` header are ignored. The
command runs here (worker/control.py) and the reply ``{hostname: reply}`` goes to the
requester's ``reply_to`` exchange and routing key, with the request's ticket.

A thread, not a step of the consumer loop: a `solo` worker busy with a long task still
answers `ping` (Celery's does not), and replies do not wait for the loop's broker poll.
Each request is handled under `fork_lock`, as other background threads that may touch
SQLite are, so a pool child is never forked in the middle of it.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from ..brokers.base import Envelope, Route
from ..control import decode, encode, node_queue_name, pidbox_exchange, queue_arguments
from ..sqlite_util import fork_lock
from . import control

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("celeriac.worker")


def addressed_to(hostname: str, body: dict[str, Any]) -> bool:
    """Whether a request's destination, or pattern and matcher, include `hostname`."""
    destination = body.get("destination")
    if destination:
        return hostname in destination
    pattern, matcher = body.get("pattern"), body.get("matcher")
    if pattern and matcher:
        if matcher == "pcre":
            return re.match(pattern, hostname) is not None
        return fnmatch.fnmatch(hostname, pattern)
    return True


class Mailbox(threading.Thread):
    """Listens on the pidbox exchange until `stop()`."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name="celeriac-pidbox", daemon=True)
        self.worker = worker
        self.app = worker.app
        self.hostname = worker.hostname
        self._stopping = threading.Event()
        self.subscription = self.app.broker.subscribe_fanout(pidbox_exchange(self.app),
                                        node_queue_name(self.app, self.hostname),
                                        queue_arguments(self.app))

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                envelope = self.subscription.get(0.25)
            except Exception as exc:  # the broker is away: keep trying, quietly
                logger.warning("Remote control: cannot read from the broker: %r", exc)
                self._stopping.wait(1.0)
                continue
            if envelope is not None:
                with fork_lock:
                    self.handle(envelope)

    def handle(self, envelope: Envelope) -> Any:
        """Run one request if it is for this worker; reply when asked to."""
        try:
            body = decode(self.app, envelope)
        except Exception as exc:
            logger.error("Cannot decode remote-control message: %r", exc)
            return None
        if not isinstance(body, dict) or not addressed_to(self.hostname, body):
            return None
        expires = (envelope.headers or {}).get("expires")
        if expires and time.time() > float(expires):
            return None
        self.worker.clock += 1
        method = str(body.get("method"))
        try:
            reply = control.dispatch(self.worker, method, dict(body.get("arguments") or {}))
        except KeyError as exc:
            logger.error("No such control command: %s", method)
            reply = {"error": f"No such control command: {exc}"}
        except Exception as exc:
            logger.error("Control command error: %r", exc, exc_info=True)
            reply = {"error": repr(exc)}
        reply_to = body.get("reply_to")
        if reply_to:
            self.reply({self.hostname: reply}, reply_to, body.get("ticket"))
        return reply

    def reply(self, data: Any, reply_to: dict[str, Any], ticket: Any) -> None:
        envelope = encode(self.app, data, {"ticket": ticket}, 1)
        route = Route(queue="", exchange=str(reply_to.get("exchange") or ""),
                      routing_key=str(reply_to.get("routing_key") or ""), exchange_type="direct")
        try:
            self.app.broker.publish(envelope, route)
        except Exception as exc:  # the requester may be gone
            logger.warning("Could not send remote-control reply: %r", exc)

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(3)
        try:
            self.subscription.close()
        except Exception:  # closing a lost connection
            pass
