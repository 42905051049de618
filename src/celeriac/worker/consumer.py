"""The consumer loop: fetch deliveries, check them on headers alone, hand jobs to the pool,
ack or reject when they end. One loop, top to bottom, in `Consumer.run()`.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import signals, states
from ..brokers.base import Delivery, Subscription
from ..exceptions import DecodeError, NotRegistered, TaskRevokedError
from ..protocol import parse_iso8601, task_message_from_envelope
from .execute import ACK, REJECT, REQUEUE, Job, Outcome

if TYPE_CHECKING:
    from ..app import Celery

logger = logging.getLogger("celeriac.worker")

#: ETAs further away than this are given back to the broker to keep (durably) instead of
#: being held in worker memory.
DEFER_ETA_AFTER = 10.0


class Consumer:
    """Moves messages from a subscription to a pool and back."""

    def __init__(self, app: Celery, subscription: Subscription, pool: Any, *, hostname: str,
                 prefetch: int, accept: frozenset[str] | None) -> None:
        self.app = app
        self.sub = subscription
        self.pool = pool
        self.hostname = hostname
        self.prefetch = max(prefetch, pool.limit)
        self.accept = accept
        self.fetching = True
        self.held: dict[int, tuple[Delivery, Job]] = {}   # received, not finished
        self.waiting: deque[int] = deque()                  # held, ready, not yet in the pool
        self.timers: list[tuple[float, int]] = []           # (due, tag) for near ETAs
        self.to_ack: list[Delivery] = []
        self._tags = 0
        self.task_count = 0

    # -- the loop ----------------------------------------------------------------------

    def run(self, keep_going: Callable[[], bool]) -> None:
        """Consume until `keep_going()` is false; then let running tasks finish."""
        while keep_going():
            self._finish(self.pool.poll(0))
            self._release_due_timers()
            self._dispatch()
            room = self.prefetch - len(self.held)
            if self.fetching and room > 0:
                deliveries = self.sub.get_many(room, self._fetch_timeout())
                for delivery in deliveries:
                    self._receive(delivery)
                self._dispatch()
            else:
                self._finish(self.pool.poll(self._pool_timeout()))
            self._flush_acks()
        self._flush_acks()

    def drain(self, timeout: float | None = None) -> None:
        """Warm stop: fetch nothing more, finish running tasks, give back the rest."""
        self.fetching = False
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pool.running() or self._in_pool():
            if deadline is not None and time.monotonic() > deadline:
                break
            self._finish(self.pool.poll(0.2))
            self._flush_acks()
        self._flush_acks()

    def _in_pool(self) -> bool:
        return any(tag not in self.waiting for tag in self.held) and self.pool.running() > 0

    def _fetch_timeout(self) -> float:
        if self.waiting or self.pool.running():
            return 0.0 if self.waiting else 0.02
        if self.timers:
            return max(0.0, min(1.0, self.timers[0][0] - time.time()))
        return 1.0

    def _pool_timeout(self) -> float:
        if self.timers:
            return max(0.0, min(1.0, self.timers[0][0] - time.time()))
        return 1.0

    # -- receiving ---------------------------------------------------------------------

    def _receive(self, delivery: Delivery) -> None:
        envelope = delivery.envelope
        try:
            message = task_message_from_envelope(envelope, self.accept or None)
        except DecodeError as exc:
            logger.error("Rejecting undecodable message from queue %r: %s", delivery.queue, exc)
            self.sub.reject(delivery, requeue=False)
            return
        headers = message.headers
        name, task_id = headers["task"], headers["id"]
        if self.accept is not None and envelope.content_type not in self.accept:
            logger.error("Refusing to deserialize untrusted content of type %s for task %s[%s]: "
                         "add it to accept_content to allow it; message rejected",
                         envelope.content_type, name, task_id)
            self.sub.reject(delivery, requeue=False)
            return
        task = self.app.tasks.get(name)
        if task is None:
            logger.error("Received unregistered task of type %r (id %s): the message was rejected. "
                         "Did you import the module that defines it (-A, include, autodiscover)?",
                         name, task_id)
            self._store_quietly(task_id, NotRegistered(name), states.FAILURE)
            signals.task_unknown.send(sender=self, name=name, id=task_id, message=message, exc=None)
            self.sub.reject(delivery, requeue=False)
            return
        if self._expired(headers):
            logger.info("Discarding expired task %s[%s]", name, task_id)
            self._store_quietly(task_id, TaskRevokedError("expired"), states.REVOKED)
            signals.task_revoked.send(sender=task, request=None, terminated=False, signum=None, expired=True)
            self.sub.ack(delivery)
            return
        eta = _timestamp(headers.get("eta"))
        if eta is not None and eta - time.time() > DEFER_ETA_AFTER:
            self.sub.defer(delivery, eta)
            return
        logger.info("Task %s[%s] received", name, task_id)
        timelimit = headers.get("timelimit") or (None, None)
        hard = timelimit[0] if timelimit[0] is not None else task.time_limit
        soft = timelimit[1] if len(timelimit) > 1 and timelimit[1] is not None else task.soft_time_limit
        self._tags += 1
        delivery_info = {
            "exchange": envelope.properties.get("delivery_info", {}).get("exchange", ""),
            "routing_key": envelope.properties.get("delivery_info", {}).get("routing_key", delivery.queue),
            "priority": envelope.properties.get("priority"),
            "redelivered": delivery.redelivered,
        }
        job = Job(self._tags, message, delivery_info, self.accept, bool(task.acks_late), (hard, soft))
        self.held[job.tag] = (delivery, job)
        if signals.task_received.receivers:
            signals.task_received.send(sender=self, request=job)
        if eta is not None and eta > time.time():
            heapq.heappush(self.timers, (eta, job.tag))
        else:
            self.waiting.append(job.tag)

    def _expired(self, headers: dict[str, Any]) -> bool:
        expires = _timestamp(headers.get("expires"))
        return expires is not None and expires < time.time()

    def _store_quietly(self, task_id: str, exc: BaseException, state: str) -> None:
        try:
            self.app.backend.store_result(task_id, exc, state)
        except Exception as error:  # no backend configured, or it is down: the log says enough
            logger.debug("Could not store %s for %s: %r", state, task_id, error)

    def _release_due_timers(self) -> None:
        now = time.time()
        while self.timers and self.timers[0][0] <= now:
            _, tag = heapq.heappop(self.timers)
            self.waiting.append(tag)

    def _dispatch(self) -> None:
        while self.waiting and self.pool.free() > 0:
            tag = self.waiting.popleft()
            delivery, job = self.held[tag]
            if not job.acks_late:
                self.to_ack.append(delivery)
            self.pool.submit(job)

    # -- finishing ---------------------------------------------------------------------

    def _finish(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            delivery, job = self.held.pop(outcome.tag)
            self.task_count += 1
            self._log(job, outcome)
            if not job.acks_late:
                continue  # acked when it went to the pool
            if outcome.action == ACK:
                self.to_ack.append(delivery)
            else:
                self._flush_acks()
                self.sub.reject(delivery, requeue=outcome.action == REQUEUE)

    def _log(self, job: Job, outcome: Outcome) -> None:
        name, task_id = job.task_name, job.task_id
        if outcome.state == states.SUCCESS:
            logger.info("Task %s[%s] succeeded in %.6fs: %s", name, task_id, outcome.runtime, outcome.summary)
        elif outcome.state == states.FAILURE:
            logger.error("Task %s[%s] raised unexpected: %s\n%s", name, task_id, outcome.summary,
                         outcome.traceback or "")
        elif outcome.state == states.RETRY:
            logger.info("Task %s[%s] retry: %s", name, task_id, outcome.summary)
        elif outcome.state == states.REJECTED:
            logger.error("Task %s[%s] rejected: %s", name, task_id, outcome.summary)
        else:
            logger.info("Task %s[%s] %s", name, task_id, outcome.summary or outcome.state.lower())

    def _flush_acks(self) -> None:
        if self.to_ack:
            acks, self.to_ack = self.to_ack, []
            self.sub.ack_many(acks)

    def give_back(self) -> None:
        """Return every held message that did not run (warm stop) to the broker."""
        self._flush_acks()
        for tag in list(self.waiting) + [tag for _, tag in self.timers]:
            delivery, job = self.held.pop(tag)
            if job.acks_late or tag in self.waiting or True:
                self.sub.reject(delivery, requeue=True)
        self.waiting.clear()
        self.timers.clear()

    def lost_outcome(self, job: Job, exc: BaseException) -> Outcome:
        """A pool process died or hit its hard time limit while running `job`."""
        requeue = job.acks_late and self.app.tasks[job.task_name].reject_on_worker_lost is not False
        from ..exceptions import TimeLimitExceeded

        if isinstance(exc, TimeLimitExceeded):
            requeue = False
        if not requeue:
            self._store_quietly(job.task_id, exc, states.FAILURE)
        action = REQUEUE if requeue else (ACK if not job.acks_late or
                                          self.app.tasks[job.task_name].acks_on_failure_or_timeout
                                          else REJECT)
        summary = f"{exc!r}" + (" (message requeued)" if requeue else "")
        return Outcome(job.tag, states.FAILURE, action, summary=summary)


def _timestamp(value: Any) -> float | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    try:
        return parse_iso8601(str(value)).timestamp()
    except ValueError:
        return None
