"""The prefork pool: child processes forked from the worker.

Children inherit the loaded app (fork), so jobs travel as plain data over pipes (a pickled
tuple per job, length-prefixed; outcomes come back in lists). The parent watches each
child's pipe and its process sentinel with one selector.

Queueing ahead, for speed: when tasks are fast (a moving average of their runtimes), the
parent sends a child up to `AHEAD_BUDGET` seconds of work beyond the job it runs (at most
`AHEAD_MAX` jobs), so a child never waits for the parent between jobs; slow tasks go one
at a time, as before. A child sends its outcomes in one write when it has nothing left to
run or when the oldest is `FLUSH_AFTER` old, and stores the final results of those jobs in
one round trip just before (`Backend.batched_writes`, as the solo pool). With acks_late (fair
mode) the consumer holds no more jobs than the pool has children, so nothing queues ahead.

What each child is doing lives in a small shared memory page the child writes and the
parent reads: the running job's tag and start time (hard time limits count from the start
in the child, not from the hand-over), how many jobs it took off its queue and how many it
finished (results stored). So when a child dies (SIGKILL, OOM, a hard time limit, revoke
with terminate), each job sent to it is known to be either
- finished but not reported: acknowledged, its outcome is lost with the process;
- taken (running, or finished but its results not yet stored): reported lost
  (`WorkerLostError`, or `TimeLimitExceeded` for the one killed by its limit), which
  requeues an acks_late task unless `reject_on_worker_lost=False`;
- not started: sent again to another child, never lost and never run twice.
Revoke with terminate of a job still queued in a child tells the child to skip it.

A child exits after `max_tasks_per_child` tasks (it is never sent more), or after the task
that took its peak resident memory past `max_memory_per_child` KiB (as Celery, from
getrusage); it is replaced, and what was queued to it goes to another child.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing
import os
import pickle
import resource
import select
import selectors
import signal
import struct
import sys
import time
from collections import deque
from typing import Any

from .. import signals, states
from ..brokers.base import Envelope
from ..exceptions import TaskRevokedError, TimeLimitExceeded, WorkerLostError
from ..protocol import TaskMessage
from . import timelimits
from .execute import ACK, REQUEUE, Job, Outcome

logger = logging.getLogger("celeriac.worker")

#: Work queued to a child beyond the job it runs (seconds, by the mean runtime), at most
#: AHEAD_MAX jobs. Slow tasks are not queued ahead (a revoke or an idle sibling can still
#: take them); fast ones are, so the child never waits for the parent between two jobs.
AHEAD_BUDGET = 0.005
AHEAD_MAX = 63
#: A child sends its outcomes (and stores their results) when it has nothing left to run,
#: or before starting a job once the oldest unsent outcome is this old (seconds).
FLUSH_AFTER = 0.002

#: Slots of a child's shared state page (doubles).
RUNNING, STARTED_AT, TAKEN, FINISHED = range(4)
#: State of a job finished by a child that died before reporting it.
LOST_OUTCOME = "UNKNOWN"

_LENGTH = struct.Struct("<I")
_READ_SIZE = 1 << 18


def peak_rss_kib() -> int:
    """This process's peak resident memory in KiB (getrusage; BSD and macOS give bytes)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value // 1024 if sys.platform == "darwin" or "bsd" in sys.platform else value


# -- the wire between parent and child ------------------------------------------------------


def _frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class _Frames:
    """Cuts a byte stream into the objects `_frame` wrote."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self.buffer
        buffer += data
        out, pos, end = [], 0, len(buffer)
        while end - pos >= 4:
            (size,) = _LENGTH.unpack_from(buffer, pos)
            if end - pos - 4 < size:
                break
            out.append(pickle.loads(buffer[pos + 4:pos + 4 + size]))
            pos += 4 + size
        del buffer[:pos]
        return out


def _pack_job(job: Job) -> tuple[Any, ...]:
    # Builtins only: pickling the dataclasses costs ~4x more.
    message = job.message
    envelope = message.envelope
    return (job.tag, envelope.body, envelope.headers, envelope.properties, envelope.content_type,
            envelope.content_encoding, message.headers, message.protocol, message.v1_body,
            job.delivery_info, job.accept, job.acks_late, job.time_limit, job.time_start,
            job.worker_pid)


def _unpack_job(packed: tuple[Any, ...]) -> Job:
    (tag, body, envelope_headers, properties, content_type, content_encoding, headers, protocol,
     v1_body, delivery_info, accept, acks_late, time_limit, time_start, worker_pid) = packed
    envelope = Envelope(body, envelope_headers, properties, content_type, content_encoding)
    message = TaskMessage(headers, envelope, protocol, v1_body)
    return Job(tag, message, delivery_info, accept, acks_late, time_limit, time_start, worker_pid)


def _pack_outcome(outcome: Outcome) -> tuple[Any, ...]:
    return (outcome.tag, outcome.state, outcome.action, outcome.runtime, outcome.summary,
            outcome.traceback, outcome.extra)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- the child --------------------------------------------------------------------------------


class _ChildLoop:
    """A child's side: take jobs off the pipe in order, run them, report in batches."""

    def __init__(self, inbox: int, outbox: int, state: Any, runner: Any, max_tasks: int | None,
                 max_memory: int | None, app: Any) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.state = state
        self.runner = runner
        self.max_tasks = max_tasks
        self.max_memory = max_memory if max_memory and max_memory > 0 else None
        self.app = app  # its backend is taken once a task has made it (see run)
        self.frames = _Frames()
        self.pending: deque[tuple[Any, ...]] = deque()
        self.skip: set[int] = set()
        self.stopping = False
        self.unsent: list[tuple[Any, ...]] = []
        self.unsent_since = 0.0
        self.unstored = 0  # finished jobs whose results wait in the batch
        self.batch: Any = None

    def run(self) -> None:
        done = 0
        while True:
            if not self._take(block=not self.pending):
                break  # the parent is gone
            if not self.pending:
                if self.stopping:
                    break
                continue
            packed = self.pending.popleft()
            tag = packed[0]
            state = self.state
            state[TAKEN] += 1
            if tag in self.skip:  # revoked with terminate while it waited here
                self.skip.discard(tag)
                self.unstored += 1  # FINISHED counts every job taken, in order
                self.unsent.append(("c", tag))
                self._flush()
                continue
            job = _unpack_job(packed)
            hard = job.time_limit[0]
            if self.unsent and (hard or time.monotonic() - self.unsent_since >= FLUSH_AFTER):
                self._flush()
            state[STARTED_AT] = time.monotonic()
            state[RUNNING] = float(tag)
            if hard:  # wake the parent: it times the limit from STARTED_AT
                _write_all(self.outbox, _frame([("s", tag)]))
            # Batch result writes once a task has loaded the backend: a child whose tasks
            # ignore results never imports the backend's client (idle RSS stays small).
            if self.batch is None and self.app is not None and self.app._backend is not None:
                self.batch = self.app._backend.batched_writes()
                self.batch.__enter__()
            outcome = self.runner(job)
            state[RUNNING] = 0
            done += 1
            self.unstored += 1
            over_memory = self.max_memory is not None and peak_rss_kib() > self.max_memory
            if over_memory:
                logger.warning("child process exiting after exceeding memory limit (%sKiB / %sKiB)",
                               peak_rss_kib(), self.max_memory)
            last = over_memory or (self.max_tasks is not None and done >= self.max_tasks)
            if last:  # tell the parent, so it sends this child no more jobs
                outcome.extra["child_exits"] = True
            if not self.unsent:
                self.unsent_since = time.monotonic()
            self.unsent.append(("o", _pack_outcome(outcome)))
            if last:
                break
        self._flush()

    def _take(self, block: bool) -> bool:
        """Read what the parent sent (waiting for it when `block`); False at end of file."""
        while True:
            try:
                data = os.read(self.inbox, _READ_SIZE)
            except BlockingIOError:
                if not block:
                    return True
                self._flush()  # nothing to run: report first
                select.select([self.inbox], [], [])
                continue
            except OSError:
                return False
            if not data:
                return False
            for item in self.frames.feed(data):
                if item is None:
                    self.stopping = True
                elif item[0] == "j":
                    self.pending.append(item[1])
                else:
                    self.skip.add(item[1])
            if self.pending or self.stopping or not block:
                return True

    def _flush(self) -> None:
        """Store the finished jobs' results in one round trip, then report them."""
        if self.batch is not None:
            batch, self.batch = self.batch, None
            try:
                batch.__exit__(None, None, None)
            except Exception:  # the backend is down: the tasks ran, their results are lost
                logger.exception("Could not store the results of %s tasks", self.unstored)
        if self.unstored:
            self.state[FINISHED] += self.unstored
            self.unstored = 0
        if self.unsent:
            unsent, self.unsent = self.unsent, []
            _write_all(self.outbox, _frame(unsent))


def _child_main(inbox: int, outbox: int, state: Any, runner: Any, max_tasks: int | None,
                max_memory: int | None, init: Any, hostname: str | None, app: Any,
                inherited: list[int]) -> None:
    for fd in inherited:  # the parent's ends and other children's: EOF when the parent dies
        try:
            os.close(fd)
        except OSError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when children stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    timelimits.hard_limit_by_parent = True
    os.set_blocking(inbox, False)
    if init is not None:
        init()
    signals.worker_process_init.send(sender=hostname)
    try:
        _ChildLoop(inbox, outbox, state, runner, max_tasks, max_memory, app).run()
    except (BrokenPipeError, EOFError):
        pass  # the parent is gone
    signals.worker_process_shutdown.send(sender=hostname, pid=os.getpid(), exitcode=0)


# -- the parent -------------------------------------------------------------------------------


class _Child:
    def __init__(self, process: Any, to_child: int, from_child: int, page: mmap.mmap) -> None:
        self.process = process
        self.to_child = to_child      # write end, non-blocking: the parent never waits on it
        self.from_child = from_child  # read end, non-blocking
        self.page = page
        self.state = memoryview(page).cast("d")
        self.jobs: dict[int, Job] = {}  # sent and not reported, in the order sent
        self.sent = 0
        self.outbuf = bytearray()       # what the pipe would not take yet
        self.frames = _Frames()
        self.retire = False  # exit once its jobs are done (pool_shrink on a busy child)
        self.exiting = False  # exits by itself (task or memory budget): to be replaced

    def running(self) -> tuple[Job | None, float]:
        """The job it runs now and when it started (monotonic)."""
        state = self.state
        while True:
            tag, started = state[RUNNING], state[STARTED_AT]
            if state[RUNNING] == tag:
                break
        job = self.jobs.get(int(tag)) if tag else None
        return job, started


class PreforkPool:
    """`-c` child processes; see the module docstring."""

    name = "prefork"

    def __init__(self, runner: Any, limit: int, max_tasks_per_child: int | None = None,
                 max_memory_per_child: int | None = None, on_lost: Any = None,
                 child_init: Any = None, hostname: str | None = None, app: Any = None) -> None:
        self.runner = runner
        self.limit = limit
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child
        self.on_lost = on_lost
        self.child_init = child_init
        self.hostname = hostname
        self.app = app
        self._ctx = multiprocessing.get_context("fork")
        self._spawned = 0
        self._selector = selectors.DefaultSelector()
        self.children: list[_Child] = []
        self._backlog: deque[Job] = deque()  # taken by the pool, to be sent to a child
        self._outcomes: list[Outcome] = []   # settled outside poll(), reported by it
        self.mean_runtime: float | None = None  # seconds, moving average of outcomes
        self._ahead = 0

    def _spawn(self) -> _Child:
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        page = mmap.mmap(-1, mmap.PAGESIZE)
        self._spawned += 1
        inherited = [to_w, from_r, self._selector.fileno()]
        inherited += [fd for child in self.children for fd in (child.to_child, child.from_child)]
        process = self._ctx.Process(
            target=_child_main,
            args=(to_r, from_w, memoryview(page).cast("d"), self.runner, self.max_tasks_per_child,
                  self.max_memory_per_child, self.child_init, self.hostname, self.app, inherited),
            name=f"ForkPoolWorker-{self._spawned}", daemon=True,
        )
        process.start()
        os.close(to_r)
        os.close(from_w)
        os.set_blocking(to_w, False)
        os.set_blocking(from_r, False)
        child = _Child(process, to_w, from_r, page)
        self._selector.register(from_r, selectors.EVENT_READ, ("read", child))
        self._selector.register(process.sentinel, selectors.EVENT_READ, ("exit", child))
        return child

    def start(self) -> None:
        for _ in range(self.limit):
            self.children.append(self._spawn())

    # -- handing out jobs --------------------------------------------------------------------

    def _room(self, child: _Child) -> int:
        if child.retire or child.exiting:
            return 0
        room = 1 + self._ahead - len(child.jobs)
        if self.max_tasks_per_child:
            room = min(room, self.max_tasks_per_child - child.sent)
        return room

    def _pick(self) -> _Child | None:
        """The child with room and the fewest jobs (an idle one first)."""
        best = None
        for child in self.children:
            if self._room(child) > 0 and (best is None or len(child.jobs) < len(best.jobs)):
                best = child
        return best

    def free(self) -> int:
        return max(0, sum(max(0, self._room(child)) for child in self.children) - len(self._backlog))

    def running(self) -> int:
        return sum(1 for child in self.children if child.jobs)

    def submit(self, job: Job) -> None:
        child = self._pick()
        if child is None:
            raise RuntimeError("no free process in the pool")
        self._send_job(child, job)

    def _send_job(self, child: _Child, job: Job) -> None:
        job.worker_pid = child.process.pid
        child.jobs[job.tag] = job
        child.sent += 1
        self._write(child, _frame(("j", _pack_job(job))))

    def _send_backlog(self) -> None:
        while self._backlog:
            child = self._pick()
            if child is None:
                return
            self._send_job(child, self._backlog.popleft())

    def _write(self, child: _Child, data: bytes) -> None:
        if not child.outbuf:
            try:
                written = os.write(child.to_child, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return  # it died: poll() reports its jobs
            if written == len(data):
                return
            data = data[written:]
            self._selector.register(child.to_child, selectors.EVENT_WRITE, ("write", child))
        child.outbuf += data

    def _write_more(self, child: _Child) -> None:
        try:
            written = os.write(child.to_child, child.outbuf)
        except BlockingIOError:
            return
        except OSError:
            written = len(child.outbuf)  # it died: poll() reports its jobs
        del child.outbuf[:written]
        if not child.outbuf:
            self._selector.unregister(child.to_child)

    def _note_runtime(self, runtime: float) -> None:
        if self.mean_runtime is None:  # seed with the first; a task over ~0.1 s stops queueing ahead
            self.mean_runtime = runtime
        self.mean_runtime += (runtime - self.mean_runtime) * 0.05
        self._ahead = min(AHEAD_MAX, int(AHEAD_BUDGET / max(self.mean_runtime, 1e-6)))

    # -- size ----------------------------------------------------------------------------

    def grow(self, n: int = 1) -> None:
        """Add `n` child processes."""
        for _ in range(n):
            self.children.append(self._spawn())
        self.limit += n

    def shrink(self, n: int = 1) -> None:
        """Retire `n` children: idle ones at once, busy ones after their jobs."""
        n = min(n, self.limit - 1)
        if n <= 0:
            raise ValueError("can't shrink the pool below one process")
        self.limit -= n
        idle = [child for child in self.children if not child.jobs and not child.retire]
        busy = [child for child in self.children if child.jobs and not child.retire]
        for child in (idle + busy)[:n]:
            child.retire = True
            if not child.jobs:
                self._retire(child)

    def _retire(self, child: _Child) -> None:
        self._say_stop(child)
        child.process.join(5)
        if child.process.is_alive():
            child.process.kill()
            child.process.join(2)
        self._forget(child)
        self.children.remove(child)

    def _say_stop(self, child: _Child) -> None:
        try:
            os.set_blocking(child.to_child, True)
            _write_all(child.to_child, bytes(child.outbuf) + _frame(None))
            child.outbuf.clear()
        except OSError:
            pass

    def _forget(self, child: _Child) -> None:
        """Close a child's pipes; jobs it never reported and never took go to the backlog."""
        for fd in (child.from_child, child.process.sentinel, child.to_child):
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError):
                pass
        for fd in (child.to_child, child.from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        child.to_child = child.from_child = -1
        self._backlog.extend(child.jobs.values())
        child.jobs.clear()

    # -- watching --------------------------------------------------------------------------

    def _replace(self, child: _Child) -> None:
        if child.exiting:
            child.process.join(5)  # it is on its way out
        self._forget(child)
        index = self.children.index(child)
        del self.children[index]  # first: a new child must not close the fds its pipes reuse
        if not child.retire:
            self.children.insert(index, self._spawn())

    def _lost(self, job: Job, reason: str, state_exc: BaseException) -> Outcome:
        return self.on_lost(job, state_exc) if self.on_lost else Outcome(  # type: ignore[no-any-return]
            job.tag, states.FAILURE, REQUEUE if job.acks_late else ACK, summary=reason)

    def poll(self, timeout: float) -> list[Outcome]:
        out, self._outcomes = self._outcomes, []
        if out:
            timeout = 0.0
        deadline = self._next_deadline()
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - time.monotonic()))
        exited = []
        for key, _events in self._selector.select(timeout):
            what, child = key.data
            if child not in self.children:
                continue  # replaced earlier in this loop
            if what == "read":
                self._read(child, out)
            elif what == "write":
                self._write_more(child)
            else:
                exited.append(child)
        for child in exited:
            if child in self.children and not child.process.is_alive():
                self._read(child, out)  # what it said before it died
                if child in self.children:
                    self._died(child, out)
        out.extend(self._enforce_time_limits())
        self._send_backlog()
        return out

    def _read(self, child: _Child, out: list[Outcome]) -> None:
        items = []
        while True:
            try:
                data = os.read(child.from_child, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                break
            if not data:
                break
            for frame in child.frames.feed(data):
                items.extend(frame)
            if len(data) < _READ_SIZE:
                break
        for what, value in items:
            if what == "o":
                outcome = Outcome(*value)
                if child.jobs.pop(outcome.tag, None) is None:
                    continue
                self._note_runtime(outcome.runtime)
                if outcome.extra.pop("child_exits", False):
                    child.exiting = True
                out.append(outcome)
            elif what == "c":  # skipped: revoked with terminate while it waited
                job = child.jobs.pop(value, None)
                if job is not None:
                    out.append(self._lost(job, "terminated", TaskRevokedError("terminated")))
        if child.exiting and child in self.children:
            self._replace(child)
        elif child.retire and not child.jobs and child in self.children:
            self._retire(child)

    def _died(self, child: _Child, out: list[Outcome], killed: Job | None = None,
              exc: BaseException | None = None) -> None:
        """Settle the jobs of a dead child (see the module docstring) and replace it."""
        child.process.join(0)
        if exc is None:
            code = child.process.exitcode
            exc = WorkerLostError(f"Worker exited prematurely: exitcode {code} (signal {-code})"
                                  if code and code < 0 else f"Worker exited prematurely: exitcode {code}")
        taken, finished = int(child.state[TAKEN]), int(child.state[FINISHED])
        position = child.sent - len(child.jobs)  # jobs before these were reported
        for job in list(child.jobs.values()):
            if position >= taken:
                break  # this one and those after never started: the backlog gets them
            del child.jobs[job.tag]
            if position < finished:
                out.append(Outcome(job.tag, LOST_OUTCOME, ACK,
                                   summary="finished; its outcome was lost with its process"))
            elif killed is not None and job is not killed:
                lost = WorkerLostError("Worker exited prematurely: killed by a time limit of another task")
                out.append(self._lost(job, str(lost), lost))
            else:
                out.append(self._lost(job, str(exc), exc))
            position += 1
        self._replace(child)

    def _next_deadline(self) -> float | None:
        deadline = None
        for child in self.children:
            if not child.jobs:
                continue
            job, started = child.running()
            if job is not None and job.time_limit[0]:
                end = started + job.time_limit[0]
                deadline = end if deadline is None else min(deadline, end)
        return deadline

    def _enforce_time_limits(self) -> list[Outcome]:
        out: list[Outcome] = []
        now = time.monotonic()
        for child in list(self.children):
            if not child.jobs:
                continue
            job, started = child.running()
            if job is None or not job.time_limit[0] or now - started < job.time_limit[0]:
                continue
            logger.error("Hard time limit (%ss) exceeded for %s[%s]", job.time_limit[0],
                         job.task_name, job.task_id)
            child.process.kill()
            child.process.join(5)
            self._read(child, out)
            if child in self.children:
                self._died(child, out, killed=job, exc=TimeLimitExceeded(job.time_limit[0]))
        return out

    def terminate_job(self, tag: int, signum: int) -> bool:
        """Send `signum` to the child running job `tag` (revoke with terminate); a job still
        waiting in a child is skipped by it, one in the backlog dropped."""
        for job in self._backlog:
            if job.tag == tag:
                self._backlog.remove(job)
                self._outcomes.append(self._lost(job, "terminated", TaskRevokedError("terminated")))
                return True
        for child in self.children:
            if tag not in child.jobs:
                continue
            running, _started = child.running()
            if running is not None and running.tag == tag and child.process.pid:
                try:
                    os.kill(child.process.pid, signum)
                except ProcessLookupError:
                    return False
            else:
                self._write(child, _frame(("c", tag)))
            return True
        return False

    def stop(self, wait: bool = True) -> None:
        for child in self.children:
            if wait:
                self._say_stop(child)
            else:
                child.process.terminate()
        for child in self.children:
            child.process.join(10 if wait else 2)
            if child.process.is_alive():
                child.process.kill()
                child.process.join(2)
            self._forget(child)
        self.children = []
        self._backlog.clear()

    def info(self) -> dict[str, Any]:
        return {"implementation": "prefork", "max-concurrency": self.limit,
                "processes": [child.process.pid for child in self.children],
                "max-tasks-per-child": self.max_tasks_per_child or "N/A",
                "max-memory-per-child": self.max_memory_per_child or "N/A"}
