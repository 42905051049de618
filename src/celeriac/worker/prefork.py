"""The prefork pool: child processes forked from the worker, one job at a time each.

Children inherit the loaded app (fork), so jobs travel as plain data over a pipe. The
parent watches each child's pipe and its process sentinel: a child that dies mid-task
(SIGKILL, OOM) is replaced, and its job comes back as a WorkerLostError outcome, which the
consumer requeues for acks_late tasks. A hard time limit kills the child the same way.

A child exits after `max_tasks_per_child` tasks, or after the task that took its peak
resident memory past `max_memory_per_child` KiB (as Celery, from getrusage), and is replaced.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import signal
import sys
import time
from multiprocessing.connection import Connection, wait
from typing import Any

from .. import signals, states
from ..exceptions import TimeLimitExceeded, WorkerLostError
from . import timelimits
from .execute import ACK, REQUEUE, Job, Outcome

logger = logging.getLogger("celeriac.worker")


def peak_rss_kib() -> int:
    """This process's peak resident memory in KiB (getrusage; BSD and macOS give bytes)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value // 1024 if sys.platform == "darwin" or "bsd" in sys.platform else value


def _child_main(conn: Connection, runner: Any, max_tasks: int | None, max_memory: int | None,
                init: Any, hostname: str | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when children stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    timelimits.hard_limit_by_parent = True
    if init is not None:
        init()
    signals.worker_process_init.send(sender=hostname)
    done = 0
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break
        if job is None:
            break
        outcome = runner(job)
        done += 1
        over_memory = max_memory is not None and max_memory > 0 and peak_rss_kib() > max_memory
        if over_memory:
            logger.warning("child process exiting after exceeding memory limit (%sKiB / %sKiB)",
                           peak_rss_kib(), max_memory)
        last = over_memory or (max_tasks is not None and done >= max_tasks)
        if last:  # tell the parent, so it sends this child no more jobs
            outcome.extra["child_exits"] = True
        conn.send(outcome)
        if last:
            break
    signals.worker_process_shutdown.send(sender=hostname, pid=os.getpid(), exitcode=0)


class _Child:
    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.job: Job | None = None
        self.started = 0.0
        self.retire = False  # exit after the current job (pool_shrink on a busy child)
        self.exiting = False  # exits by itself (task or memory budget): to be replaced


class PreforkPool:
    """`-c` child processes; see the module docstring."""

    name = "prefork"

    def __init__(self, runner: Any, limit: int, max_tasks_per_child: int | None = None,
                 max_memory_per_child: int | None = None, on_lost: Any = None,
                 child_init: Any = None, hostname: str | None = None) -> None:
        self.runner = runner
        self.limit = limit
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child
        self.on_lost = on_lost
        self.child_init = child_init
        self.hostname = hostname
        self._ctx = multiprocessing.get_context("fork")
        self._spawned = 0
        self.children: list[_Child] = []

    def _spawn(self) -> _Child:
        parent_conn, child_conn = self._ctx.Pipe()
        self._spawned += 1
        process = self._ctx.Process(
            target=_child_main,
            args=(child_conn, self.runner, self.max_tasks_per_child, self.max_memory_per_child,
                  self.child_init, self.hostname),
            name=f"ForkPoolWorker-{self._spawned}", daemon=True,
        )
        process.start()
        child_conn.close()
        return _Child(process, parent_conn)

    def start(self) -> None:
        self.children = [self._spawn() for _ in range(self.limit)]

    def free(self) -> int:
        return sum(1 for child in self.children if child.job is None and not (child.retire or child.exiting))

    def running(self) -> int:
        return sum(1 for child in self.children if child.job is not None)

    def submit(self, job: Job) -> None:
        for child in self.children:
            if child.job is None and not (child.retire or child.exiting):
                child.job = job
                child.started = time.monotonic()
                job.worker_pid = child.process.pid
                try:
                    child.conn.send(job)
                except (BrokenPipeError, OSError):
                    pass  # its death is noticed by poll(), which reports the job as lost
                return
        raise RuntimeError("no free process in the pool")

    # -- size ----------------------------------------------------------------------------

    def grow(self, n: int = 1) -> None:
        """Add `n` child processes."""
        self.children += [self._spawn() for _ in range(n)]
        self.limit += n

    def shrink(self, n: int = 1) -> None:
        """Retire `n` children: idle ones at once, busy ones after their current job."""
        n = min(n, self.limit - 1)
        if n <= 0:
            raise ValueError("can't shrink the pool below one process")
        self.limit -= n
        idle = [child for child in self.children if child.job is None and not child.retire]
        busy = [child for child in self.children if child.job is not None and not child.retire]
        for child in (idle + busy)[:n]:
            child.retire = True
            if child.job is None:
                self._retire(child)

    def _retire(self, child: _Child) -> None:
        try:
            child.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        child.process.join(5)
        if child.process.is_alive():
            child.process.kill()
            child.process.join(2)
        child.conn.close()
        self.children.remove(child)

    # -- watching --------------------------------------------------------------------------

    def _replace(self, child: _Child) -> None:
        if child.exiting:
            child.process.join(5)  # it is on its way out
        child.conn.close()
        index = self.children.index(child)
        if child.retire:
            del self.children[index]
        else:
            self.children[index] = self._spawn()

    def _lost(self, child: _Child, reason: str, state_exc: BaseException) -> Outcome:
        job = child.job
        assert job is not None
        child.job = None
        return self.on_lost(job, state_exc) if self.on_lost else Outcome(
            job.tag, states.FAILURE, REQUEUE if job.acks_late else ACK, summary=reason)

    def poll(self, timeout: float) -> list[Outcome]:
        out: list[Outcome] = []
        deadline = self._next_deadline()
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - time.monotonic()))
        by_conn = {child.conn: child for child in self.children if child.job is not None}
        by_sentinel = {child.process.sentinel: child for child in self.children}
        ready = wait(list(by_conn) + list(by_sentinel), timeout)
        for obj in ready:
            child = by_conn.get(obj)  # type: ignore[call-overload]
            if child is not None and child.job is not None:
                try:
                    outcome = child.conn.recv()
                except (EOFError, OSError):
                    continue  # died while answering: the sentinel below reports it
                out.append(outcome)
                child.job = None
                if outcome.extra.pop("child_exits", False):
                    child.exiting = True
                    self._replace(child)
                elif child.retire:
                    self._retire(child)
        for obj in ready:
            child = by_sentinel.get(obj)  # type: ignore[call-overload]
            if child is None or child not in self.children or child.process.is_alive():
                continue
            child.process.join(0)
            if child.job is not None:
                code = child.process.exitcode
                exc = WorkerLostError(f"Worker exited prematurely: exitcode {code} "
                                      f"(signal {-code})" if code and code < 0 else
                                      f"Worker exited prematurely: exitcode {code}")
                out.append(self._lost(child, str(exc), exc))
            self._replace(child)
        out.extend(self._enforce_time_limits())
        return out

    def _next_deadline(self) -> float | None:
        deadlines = [child.started + child.job.time_limit[0] for child in self.children
                     if child.job is not None and child.job.time_limit[0]]
        return min(deadlines) if deadlines else None

    def _enforce_time_limits(self) -> list[Outcome]:
        out = []
        now = time.monotonic()
        for child in list(self.children):
            job = child.job
            if job is None or not job.time_limit[0] or now - child.started < job.time_limit[0]:
                continue
            logger.error("Hard time limit (%ss) exceeded for %s[%s]", job.time_limit[0],
                         job.task_name, job.task_id)
            child.process.kill()
            child.process.join(5)
            exc = TimeLimitExceeded(job.time_limit[0])
            out.append(self._lost(child, f"TimeLimitExceeded({job.time_limit[0]})", exc))
            self._replace(child)
        return out

    def terminate_job(self, tag: int, signum: int) -> bool:
        """Send `signum` to the child running job `tag` (revoke with terminate)."""
        for child in self.children:
            if child.job is not None and child.job.tag == tag and child.process.pid:
                try:
                    os.kill(child.process.pid, signum)
                except ProcessLookupError:
                    return False
                return True
        return False

    def stop(self, wait: bool = True) -> None:
        for child in self.children:
            try:
                if wait:
                    child.conn.send(None)
                else:
                    child.process.terminate()
            except (BrokenPipeError, OSError):
                pass
        for child in self.children:
            child.process.join(10 if wait else 2)
            if child.process.is_alive():
                child.process.kill()
                child.process.join(2)
            child.conn.close()
        self.children = []

    def info(self) -> dict[str, Any]:
        return {"implementation": "prefork", "max-concurrency": self.limit,
                "processes": [child.process.pid for child in self.children],
                "max-tasks-per-child": self.max_tasks_per_child or "N/A",
                "max-memory-per-child": self.max_memory_per_child or "N/A"}
