"""The prefork pool: child processes forked from the worker, one job at a time each.

Children inherit the loaded app (fork), so jobs travel as plain data over a pipe. The
parent watches each child's pipe and its process sentinel: a child that dies mid-task
(SIGKILL, OOM) is replaced, and its job comes back as a WorkerLostError outcome, which the
consumer requeues for acks_late tasks. A hard time limit kills the child the same way.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection, wait
from typing import Any

from .. import signals, states
from ..exceptions import SoftTimeLimitExceeded
from .execute import ACK, REQUEUE, Job, Outcome

logger = logging.getLogger("celeriac.worker")


def _raise_soft_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded()


def _child_main(conn: Connection, runner: Any, max_tasks: int | None, init: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when children stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, _raise_soft_limit)
    if init is not None:
        init()
    signals.worker_process_init.send(sender=None)
    done = 0
    while max_tasks is None or done < max_tasks:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break
        if job is None:
            break
        soft = job.time_limit[1]
        if soft:
            signal.setitimer(signal.ITIMER_REAL, soft)
        try:
            outcome = runner(job)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        conn.send(outcome)
        done += 1
    signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)


class _Child:
    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.job: Job | None = None
        self.started = 0.0


class PreforkPool:
    name = "prefork"

    def __init__(self, runner: Any, limit: int, max_tasks_per_child: int | None = None,
                 on_lost: Any = None, child_init: Any = None) -> None:
        self.runner = runner
        self.limit = limit
        self.max_tasks_per_child = max_tasks_per_child
        self.on_lost = on_lost
        self.child_init = child_init
        self._ctx = multiprocessing.get_context("fork")
        self.children: list[_Child] = []

    def _spawn(self) -> _Child:
        parent_conn, child_conn = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_child_main, args=(child_conn, self.runner, self.max_tasks_per_child, self.child_init),
            name=f"ForkPoolWorker-{len(self.children) + 1}", daemon=True,
        )
        process.start()
        child_conn.close()
        return _Child(process, parent_conn)

    def start(self) -> None:
        self.children = [self._spawn() for _ in range(self.limit)]

    def free(self) -> int:
        return sum(1 for child in self.children if child.job is None)

    def running(self) -> int:
        return sum(1 for child in self.children if child.job is not None)

    def submit(self, job: Job) -> None:
        for child in self.children:
            if child.job is None and child.process.is_alive():
                child.job = job
                child.started = time.monotonic()
                try:
                    child.conn.send(job)
                except (BrokenPipeError, OSError):
                    pass  # its death is noticed by poll(), which reports the job as lost
                return
        raise RuntimeError("no free process in the pool")

    def _replace(self, child: _Child) -> None:
        child.conn.close()
        index = self.children.index(child)
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
                    out.append(child.conn.recv())
                    child.job = None
                except (EOFError, OSError):
                    pass  # died while answering: the sentinel below reports it
        for obj in ready:
            child = by_sentinel.get(obj)  # type: ignore[call-overload]
            if child is None or child.process.is_alive():
                continue
            child.process.join(0)
            if child.job is not None:
                from ..exceptions import WorkerLostError

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
        from ..exceptions import TimeLimitExceeded

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
                "processes": [child.process.pid for child in self.children]}
