"""Pools run jobs: `solo` (in the consumer's thread), `threads`, `prefork` (prefork.py) and
`asyncio` (asyncio_pool.py).

A pool takes jobs with `submit()` while `free()` > 0 and hands back `Outcome`s from `poll()`.
Every pool has `limit` (its size), `grow(n)`/`shrink(n)` where it can change size, and
`terminate_job(tag, signum)` where it can stop a running job (revoke with terminate).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from .. import states
from .execute import ACK, Job, Outcome

Runner = Callable[[Job], Outcome]


def drain_queue(done: queue.SimpleQueue[Outcome], timeout: float) -> list[Outcome]:
    """Every outcome waiting in `done`, waiting up to `timeout` seconds for the first."""
    out = []
    try:
        out.append(done.get(timeout=timeout) if timeout > 0 else done.get_nowait())
        while True:
            out.append(done.get_nowait())
    except queue.Empty:
        pass
    return out


class SoloPool:
    """Runs each job at once in the calling thread: no hand-off, the fastest for short tasks.

    Time limits use SIGALRM when that thread is the main thread (the `worker` command).
    """

    name = "solo"

    def __init__(self, runner: Runner, limit: int = 1) -> None:
        self.runner = runner
        self.limit = 1
        self._done: list[Outcome] = []

    def start(self) -> None:
        pass

    def free(self) -> int:
        return 1

    def running(self) -> int:
        return 0

    def submit(self, job: Job) -> None:
        job.worker_pid = os.getpid()
        self._done.append(self.runner(job))

    def poll(self, timeout: float) -> list[Outcome]:
        done, self._done = self._done, []
        return done

    def terminate_job(self, tag: int, signum: int) -> bool:
        return False  # the job runs in the consumer's own thread

    def stop(self, wait: bool = True) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"implementation": "solo", "max-concurrency": 1, "processes": [os.getpid()]}


class ThreadPool:
    """Runs jobs on `limit` threads; `grow`/`shrink` add or retire threads.

    Threads cannot be killed: time limits are raised inside the task's thread at its next
    bytecode (see timelimits.py), and revoke's `terminate` cannot stop a running task.
    """

    name = "threads"

    def __init__(self, runner: Runner, limit: int) -> None:
        self.runner = runner
        self.limit = limit
        self._busy = 0
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._add_threads(self.limit)

    def _add_threads(self, n: int) -> None:
        for _ in range(n):
            thread = threading.Thread(target=self._work, name=f"celeriac-worker-{len(self._threads) + 1}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                outcome = self.runner(job)
            except BaseException as exc:  # the runner never raises; keep the count right if it does
                outcome = Outcome(job.tag, states.FAILURE, ACK, summary=repr(exc))
            self.done.put(outcome)

    def free(self) -> int:
        return max(self.limit - self._busy, 0)

    def running(self) -> int:
        return self._busy

    def reserve(self) -> None:
        """Count a job that runs elsewhere and puts its outcome in this pool's queue (the
        asyncio pool's coroutines): `free`, `running` and `poll` then count it too."""
        with self._lock:
            self._busy += 1

    def submit(self, job: Job) -> None:
        job.worker_pid = os.getpid()
        self.reserve()
        self._jobs.put(job)

    def poll(self, timeout: float) -> list[Outcome]:
        out = drain_queue(self.done, timeout)
        with self._lock:
            self._busy -= len(out)
        return out

    def grow(self, n: int = 1) -> None:
        self.limit += n
        self._add_threads(n)

    def shrink(self, n: int = 1) -> None:
        n = min(n, self.limit - 1)
        if n <= 0:
            raise ValueError("can't shrink the pool below one thread")
        self.limit -= n
        self._threads = self._threads[n:]
        for _ in range(n):  # a thread takes one after its current job, and exits
            self._jobs.put(None)

    def terminate_job(self, tag: int, signum: int) -> bool:
        return False

    def stop(self, wait: bool = True) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
        self._threads = []

    def info(self) -> dict[str, Any]:
        return {"implementation": "threads", "max-concurrency": self.limit,
                "processes": [os.getpid()]}


def create_pool(name: str, runner: Runner, limit: int, **options: Any) -> Any:
    """The pool named by `-P`: prefork (default), threads, solo, asyncio."""
    if name == "solo":
        return SoloPool(runner)
    if name in ("threads", "thread"):
        return ThreadPool(runner, limit)
    if name == "prefork":
        from .prefork import PreforkPool

        return PreforkPool(runner, limit, **options)
    if name == "asyncio":
        from .asyncio_pool import AsyncioPool

        return AsyncioPool(runner, limit, **options)
    raise ValueError(f"Unknown pool {name!r}: use prefork, threads, solo or asyncio")
