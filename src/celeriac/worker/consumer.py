"""The consumer loop: fetch deliveries, check them on headers alone, hand jobs to the pool,
ack or reject when they end. One loop, top to bottom, in `Consumer.run()`.

Also here, because they decide when a job may start: revoked ids (skipped on receipt and
again before a held job starts), ETAs (near ones on a timer, far ones given back to the
broker), rate limits (a job waits in its task type's line for its slot), and how much to prefetch.
Remote-control commands that change this state run in the loop through `call_soon`.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import signals, states
from ..brokers.base import Delivery, Subscription
from ..chords import on_chord_part_return, send_errbacks
from ..events import EventDispatcher, task_fields
from ..exceptions import (
    DecodeError,
    NotRegistered,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)
from ..protocol import TaskMessage, decode_body, parse_iso8601, task_message_from_envelope
from ..task import Context
from .execute import ACK, REJECT, REQUEUE, Job, Outcome, build_request
from .ratelimit import RateLimits

if TYPE_CHECKING:
    from ..app import Celery
    from .autoscale import Autoscaler
    from .revoked import RevokedTasks

logger = logging.getLogger("celeriac.worker")

#: ETAs further away than this are given back to the broker to keep (durably) instead of
#: being held in worker memory.
DEFER_ETA_AFTER = 10.0

#: Fast tasks are fetched in batches worth this much work (seconds), up to FAST_BATCH_MAX
#: messages, whatever the prefetch multiplier: holding 10 ms of work back from other workers
#: is unnoticeable, while fetching 4 at a time caps a worker at the broker's round-trip rate
#: (bench/: drain, one worker process). Never in fair mode (acks_late, disable_prefetch).
#: The batch follows the measured runtimes once FAST_BATCH_AFTER tasks have ended.
FAST_BATCH_BUDGET = 0.01
FAST_BATCH_MAX = 256
FAST_BATCH_AFTER = 8
#: The batch shrinks only once it is worth less than this share of its size in work.
FAST_BATCH_KEEP = 0.6


class Consumer:
    """Moves messages from a subscription to a pool and back.

    Args:
        prefetch_multiplier: Messages held per pool slot (`worker_prefetch_multiplier`).
        fair: Hold no more messages than there are free slots (`worker_disable_prefetch`,
            and always when a task is `acks_late`): a long task then never keeps messages
            that idle workers could run (celery#2788).
    """

    def __init__(self, app: Celery, subscription: Subscription, pool: Any, *, hostname: str,
                 prefetch_multiplier: int, accept: frozenset[str] | None, queues: list[Any],
                 revoked: RevokedTasks, autoscaler: Autoscaler | None = None,
                 fair: bool = False, events: EventDispatcher | None = None) -> None:
        self.app = app
        self.sub = subscription
        self.pool = pool
        self.hostname = hostname
        self.multiplier = max(1, int(prefetch_multiplier or 1))
        self.accept = accept
        self.queues = list(queues)
        self.revoked = revoked
        self.autoscaler = autoscaler
        self.fair = fair
        #: Task events (`-E`); a dispatcher with them off when none is given.
        self.events = events if events is not None else EventDispatcher(app, hostname)
        self.fetching = True
        self.held: dict[int, tuple[Delivery, Job]] = {}   # received, not finished
        self.waiting: deque[int] = deque()                  # held, ready, not yet in the pool
        self.timers: list[tuple[float, int]] = []           # (due, tag): ETAs and rate limits
        self.limits = RateLimits(app.tasks, bool(app.conf.worker_disable_rate_limits), self.timers)
        self.active: dict[int, Job] = {}                    # in the pool
        self.to_ack: list[Delivery] = []
        self.to_defer: list[tuple[Delivery, float]] = []    # far-off ETAs, back to the broker
        self.calls: deque[Callable[[], None]] = deque()     # from the control thread
        self.totals: Counter[str] = Counter()
        self.terminating: dict[int, int] = {}               # tag -> signal sent (revoke, terminate)
        #: (hard, soft) for tasks that set none: `task_time_limit`, `--time-limit`, ...
        self.default_time_limits: tuple[float | None, float | None] = (None, None)
        self._tags = 0
        self.task_count = 0
        # Seconds: the mean of the first runtimes, then a moving average. It starts slow: no
        # batching until FAST_BATCH_AFTER runtimes are measured.
        self.mean_runtime = 1.0
        self.fast_batch = 0

    @property
    def prefetch(self) -> int:
        """Messages held at most: pool size (autoscale: its max) times the multiplier."""
        size = self.autoscaler.max_concurrency if self.autoscaler is not None else self.pool.limit
        return max(max(size, 1) * self.multiplier, self.fast_batch)

    def _adapt_batch(self) -> None:
        """Grow or shrink the fast-task batch from the measured mean runtime."""
        if self.fair or 0 < self.task_count < FAST_BATCH_AFTER:
            return
        wanted = min(FAST_BATCH_MAX, int(FAST_BATCH_BUDGET / max(self.mean_runtime, 1e-6)))
        target = 1 << (wanted.bit_length() - 1) if wanted > 1 else 0  # powers of two: few changes
        if target < self.fast_batch and wanted > self.fast_batch * FAST_BATCH_KEEP:
            # A mean near a power of two's edge would flip the batch (on RabbitMQ, a basic.qos
            # each time) every few turns: shrink only once well below it.
            return
        if target != self.fast_batch:
            self.fast_batch = target
            self.sub.set_prefetch(self.prefetch)

    # -- the loop ----------------------------------------------------------------------

    def run(self, keep_going: Callable[[], bool]) -> None:
        """Consume until `keep_going()` is false."""
        while keep_going():
            self._run_calls()
            self._finish(self.pool.poll(0))
            self._release_due_timers()
            self._dispatch()
            room = self._room()
            if room > 0:
                # The acks of the last turn ride along with the fetch: one round trip.
                acks, self.to_ack = self.to_ack, []
                for delivery in self.sub.ack_and_get_many(acks, room, self._fetch_timeout(),
                                                          ahead=self._ahead()):
                    self._receive(delivery)
                self._dispatch()
            if self.autoscaler is not None and self.autoscaler.maybe_scale(len(self.held)):
                self._dispatch()
            # The pool is full: wait for a task to end. Else take what ended (a solo batch has
            # all ended), so that the room counted next frees their slots and the acks can
            # wait for the next fetch instead of taking a round trip of their own.
            self._finish(self.pool.poll(self._pool_timeout() if room <= 0 or self.waiting else 0))
            self._flush_acks(keep_acks=self._fetches_next())
            self.events.flush()
        self._flush_acks()
        self.events.flush()

    def drain(self, deadline: float | None = None) -> bool:
        """Warm stop: fetch nothing more, let running tasks finish (until `deadline`, a
        monotonic time). Returns whether all finished."""
        self.fetching = False
        while self.active:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._run_calls()
            self._finish(self.pool.poll(0.2))
            self._flush_acks()
            self.events.flush()
        self._flush_acks()
        self.events.flush()
        return True

    def _fetches_next(self) -> bool:
        """Whether the next turn goes straight to the fetch (nothing runs first), so acks
        can wait for it instead of taking a round trip of their own."""
        if self.waiting or self._room() <= 0:
            return False
        return not (self.timers and self.timers[0][0] <= time.time())

    def _ahead(self) -> int:
        """Fast tasks run inline (solo): fetch half the batch ahead, to run one half while the
        broker serves the other (prefetch unchanged: the half asked for ahead counts as held).
        Other pools run tasks in other threads or processes while this one waits for the
        broker; there, a fetch ahead measured slower (prefork -c 1: ~19,000 -> ~14,000/s)."""
        if self.fast_batch > 1 and not self.fair and self.pool.name == "solo":
            return self.fast_batch // 2
        return 0

    def _room(self) -> int:
        if not self.fetching or not self.queues:
            return 0
        room = self.prefetch - len(self.held) - self.sub.in_flight
        if self.fair:  # only what free slots (autoscale: slots it may grow to) can start now
            size = self.autoscaler.max_concurrency if self.autoscaler is not None else self.pool.limit
            room = min(room, size - len(self.active) - len(self.waiting))
        return room

    def _fetch_timeout(self) -> float:
        if self.waiting:
            return 0.0  # work is at hand: take what is there and go wait for the pool
        if self.active:
            return 0.02  # a slot is free: wait for a message, but not long (acks, outcomes)
        return self._pool_timeout()

    def _pool_timeout(self) -> float:
        if self.timers:
            return max(0.0, min(1.0, self.timers[0][0] - time.time()))
        return 1.0

    def _run_calls(self) -> None:
        while self.calls:
            call = self.calls.popleft()
            try:
                call()
            except Exception:
                logger.exception("Control command failed in the consumer")

    def call_soon(self, call: Callable[[], None]) -> None:
        """Run `call` in the consumer's thread at the start of its next turn."""
        self.calls.append(call)

    # -- receiving ---------------------------------------------------------------------

    def _receive(self, delivery: Delivery) -> None:
        envelope = delivery.envelope
        try:
            message = task_message_from_envelope(envelope, self.accept or None)
        except DecodeError as exc:
            logger.error("Rejecting undecodable message from queue %r: %s", delivery.queue, exc)
            signals.task_rejected.send(sender=self, message=envelope, exc=exc)
            self.sub.reject(delivery, requeue=False)
            return
        headers = message.headers
        name, task_id = headers["task"], headers["id"]
        if self.accept is not None and envelope.content_type not in self.accept:
            logger.error("Refusing to deserialize untrusted content of type %s for task %s[%s]: "
                         "add it to accept_content to allow it; message rejected",
                         envelope.content_type, name, task_id)
            signals.task_rejected.send(sender=self, message=envelope, exc=None)
            self.sub.reject(delivery, requeue=False)
            return
        task = self.app.tasks.get(name)
        if task is None:
            logger.error("Received unregistered task of type %r (id %s): the message was rejected. "
                         "Did you import the module that defines it (-A, include, autodiscover)?",
                         name, task_id)
            self._store_quietly(task_id, NotRegistered(name), states.FAILURE)
            self.events.buffer_task("task-failed", uuid=task_id, exception=repr(NotRegistered(name)))
            signals.task_unknown.send(sender=self, name=name, id=task_id, message=message, exc=None)
            self.sub.reject(delivery, requeue=False)
            return
        if self._expired(headers) or task_id in self.revoked:
            expired = task_id not in self.revoked
            self._discard(self._make_job(0, delivery, message, task), task, expired=expired)
            self.sub.ack(delivery)
            return
        eta = _timestamp(headers.get("eta"))
        if eta is not None and eta - time.time() > DEFER_ETA_AFTER:
            self.to_defer.append((delivery, eta))
            self.mean_runtime -= self.mean_runtime * 0.05  # costs no work here: fetch more at once
            return
        logger.info("Task %s[%s] received", name, task_id)
        self._tags += 1
        job = self._make_job(self._tags, delivery, message, task)
        self.held[job.tag] = (delivery, job)
        if self.events.task_events:
            self.events.buffer_task("task-received", **task_fields(headers))
        if signals.task_received.receivers:
            signals.task_received.send(sender=self, request=job)
        if self.autoscaler is not None:
            self.autoscaler.note_received()
        if eta is not None and eta > time.time():
            heapq.heappush(self.timers, (eta, job.tag))
        else:
            self.waiting.append(job.tag)

    def _make_job(self, tag: int, delivery: Delivery, message: TaskMessage, task: Any) -> Job:
        headers = message.headers
        timelimit = list(headers.get("timelimit") or ()) + [None, None]
        default_hard, default_soft = self.default_time_limits
        hard = _first(timelimit[0], task.time_limit, default_hard)
        soft = _first(timelimit[1], task.soft_time_limit, default_soft)
        properties = delivery.envelope.properties
        info = properties.get("delivery_info") or {}
        delivery_info = {
            "exchange": info.get("exchange", ""),
            "routing_key": info.get("routing_key", delivery.queue),
            "priority": properties.get("priority"),
            "redelivered": delivery.redelivered,
        }
        return Job(tag, message, delivery_info, self.accept, bool(task.acks_late), (hard, soft))

    def _expired(self, headers: dict[str, Any]) -> bool:
        expires = _timestamp(headers.get("expires"))
        return expires is not None and expires < time.time()

    def _discard(self, job: Job, task: Any, *, expired: bool, terminated: bool = False,
                 signum: int | None = None) -> None:
        """A revoked or expired task: store REVOKED, tell task_revoked receivers."""
        why = "expired" if expired else "terminated" if terminated else "revoked"
        logger.info("Discarding %s task %s[%s]", why, job.task_name, job.task_id)
        if not task.ignore_result or task.store_errors_even_if_ignored:
            self._store_quietly(job.task_id, TaskRevokedError(why), states.REVOKED)
        request = self.request_of(job)
        if request.chord:  # the chord must not wait forever for a part that will not run
            on_chord_part_return(self.app, request, states.REVOKED, TaskRevokedError(why))
        self.events.buffer_task("task-revoked", uuid=job.task_id, terminated=terminated, signum=signum,
                                expired=expired)
        if signals.task_revoked.receivers:
            signals.task_revoked.send(sender=task, request=request, terminated=terminated,
                                      signum=signum, expired=expired)

    def request_of(self, job: Job) -> Context:
        """`self.request` as the task would see it (arguments decoded when possible)."""
        try:
            args, kwargs, embed = decode_body(job.message, job.accept)
        except Exception:  # a revoked message need not be decodable to be skipped
            args, kwargs, embed = None, None, {}
        return build_request(job, args, kwargs, embed, self.hostname)

    def _store_quietly(self, task_id: str, exc: BaseException, state: str) -> None:
        try:
            self.app.backend.store_result(task_id, exc, state)
        except Exception as error:  # no backend configured, or it is down: the log says enough
            logger.debug("Could not store %s for %s: %r", state, task_id, error)

    def _release_due_timers(self) -> None:
        now = time.time()
        while self.timers and self.timers[0][0] <= now:
            _, tag = heapq.heappop(self.timers)
            if tag in self.held:
                self.waiting.append(tag)

    def _dispatch(self) -> None:
        if self.fast_batch and self.pool.name == "solo" and len(self.waiting) > 1:
            # Fast tasks run inline: store their results in one round trip, before the acks.
            with self.app.backend.batched_writes():
                self._dispatch_each()
        else:
            self._dispatch_each()

    def _dispatch_each(self) -> None:
        while self.waiting and self.pool.free() > 0:
            tag = self.waiting.popleft()
            delivery, job = self.held[tag]
            if job.task_id in self.revoked:
                del self.held[tag]
                self.limits.leave(job.task_name, tag)
                self._discard(job, self.app.tasks[job.task_name], expired=False)
                self.sub.ack(delivery)
                continue
            if not self.limits.start(job.task_name, tag):  # it waits for its rate-limit slot
                continue
            job.time_start = time.time()
            if self.events.task_events:
                self.events.buffer_task("task-started", uuid=job.task_id)
            self.active[tag] = job
            if not job.acks_late:
                self.to_ack.append(delivery)
            self.pool.submit(job)

    # -- finishing ---------------------------------------------------------------------

    def _finish(self, outcomes: list[Outcome]) -> None:
        if outcomes:
            self._finish_each(outcomes)
            self._adapt_batch()

    def _finish_each(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            delivery, job = self.held.pop(outcome.tag)
            self.active.pop(outcome.tag, None)
            self.terminating.pop(outcome.tag, None)
            self.task_count += 1
            self.totals[job.task_name] += 1
            # A plain mean of the first 20, so the slow start lasts a few tasks (at a 2 ms
            # broker round trip, fetching 4 at a time for the ~130 tasks the moving average
            # takes to forget its start was most of a 500-task drain).
            self.mean_runtime += (outcome.runtime - self.mean_runtime) * max(0.05, 1 / self.task_count)
            self._log(job, outcome)
            if self.events.task_events:
                self._send_outcome(job, outcome)
            if not job.acks_late:
                continue  # acked when it went to the pool
            if outcome.action == ACK:
                self.to_ack.append(delivery)
            else:
                self._flush_acks()
                self.sub.reject(delivery, requeue=outcome.action == REQUEUE)

    def _send_outcome(self, job: Job, outcome: Outcome) -> None:
        """The task event of how a job ended (REVOKED ones are sent by `_discard`)."""
        state, events = outcome.state, self.events
        if state == states.SUCCESS:
            events.buffer_task("task-succeeded", uuid=job.task_id, result=outcome.summary, runtime=outcome.runtime)
        elif state == states.FAILURE:
            events.buffer_task("task-failed", uuid=job.task_id, exception=outcome.summary,
                               traceback=outcome.traceback)
        elif state == states.RETRY:
            events.buffer_task("task-retried", uuid=job.task_id, exception=outcome.summary,
                               traceback=outcome.traceback)
        elif state == states.REJECTED:
            events.buffer_task("task-rejected", uuid=job.task_id, requeue=outcome.action == REQUEUE)

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

    def _flush_acks(self, keep_acks: bool = False) -> None:
        """Settle in batches: far-off ETAs go back to the broker, finished messages are acked
        (unless `keep_acks`: they go with the next fetch)."""
        if self.to_defer:
            deferred, self.to_defer = self.to_defer, []
            self.sub.defer_many(deferred)
            self._adapt_batch()
        if self.to_ack and not keep_acks:
            acks, self.to_ack = self.to_ack, []
            self.sub.ack_many(acks)

    def give_back(self) -> None:
        """Return every held message that is not running to the broker (warm stop)."""
        self._flush_acks()
        for tag in [tag for tag in self.held if tag not in self.active]:
            delivery, _job = self.held.pop(tag)
            self.sub.reject(delivery, requeue=True)
        self.waiting.clear()
        self.timers.clear()
        self.limits.clear_lines()

    def lost_outcome(self, job: Job, exc: BaseException) -> Outcome:
        """A job that did not end by itself: its process died, a hard (or, for async tasks,
        soft) time limit stopped it, or revoke terminated it."""
        task = self.app.tasks[job.task_name]
        if job.task_id in self.revoked:
            signum = self.terminating.get(job.tag)
            self._discard(job, task, expired=False, terminated=True, signum=signum)
            return Outcome(job.tag, states.REVOKED, ACK, summary=f"terminated by revoke ({exc!r})")
        store = not task.ignore_result or task.store_errors_even_if_ignored
        if isinstance(exc, TimeLimitExceeded | SoftTimeLimitExceeded):
            requeue = False
        else:
            requeue = job.acks_late and task.reject_on_worker_lost is not False
        if not requeue and store:
            self._store_quietly(job.task_id, exc, states.FAILURE)
        if not requeue:  # as a failure inside the task: chord part, rest of the chain, errbacks
            send_errbacks(self.app, self.request_of(job), exc, None)
        if requeue:
            action = REQUEUE
        else:
            action = ACK if not job.acks_late or task.acks_on_failure_or_timeout else REJECT
        summary = f"{exc!r}" + (" (message requeued)" if requeue else "")
        return Outcome(job.tag, states.FAILURE, action, summary=summary)

    # -- remote control ----------------------------------------------------------------

    def terminate(self, task_id: str, signum: int) -> bool:
        """Stop the running task `task_id` (revoke with terminate); False if not running here
        or the pool cannot stop it."""
        for tag, job in list(self.active.items()):
            if job.task_id == task_id:
                self.terminating[tag] = signum
                return bool(self.pool.terminate_job(tag, signum))
        return False

    def add_queue(self, queue: Any) -> None:
        if any(q.name == queue.name for q in self.queues):
            return
        self.app.broker.declare([queue])
        self.queues.append(queue)
        self.sub.set_queues([q.name for q in self.queues])
        logger.info("Started consuming from %s", queue.name)

    def cancel_queue(self, name: str) -> None:
        kept = [q for q in self.queues if q.name != name]
        if len(kept) == len(self.queues):
            return
        self.queues = kept
        self.sub.set_queues([q.name for q in kept])
        logger.info("Stopped consuming from %s", name)

    def resize_pool(self, n: int) -> None:
        """Grow (n > 0) or shrink (n < 0) the pool; the prefetch follows."""
        if n > 0:
            self.pool.grow(n)
        elif n < 0:
            self.pool.shrink(-n)
        self.sub.set_prefetch(self.prefetch)

    def jobs(self) -> tuple[list[Job], list[Job], list[tuple[float, Job]]]:
        """(active, reserved, scheduled) jobs, for inspect commands from another thread."""
        held = dict(list(self.held.items()))
        active = list(self.active.values())
        lined = self.limits.waiting()  # waiting for a rate-limit slot: reserved, not scheduled
        timed = {tag: due for due, tag in list(self.timers) if tag not in lined}
        reserved = [job for tag, (_d, job) in held.items() if tag not in self.active and tag not in timed]
        scheduled = [(due, held[tag][1]) for tag, due in timed.items() if tag in held]
        return active, reserved, scheduled


def _first(a: Any, b: Any, c: Any) -> Any:
    """The first of three that is not None (a generator here cost ~1 us per task)."""
    return a if a is not None else b if b is not None else c


def _timestamp(value: Any) -> float | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    try:
        return parse_iso8601(str(value)).timestamp()
    except ValueError:
        return None
