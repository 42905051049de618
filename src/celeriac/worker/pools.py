"""Pools run jobs: `solo` (in the consumer's thread), `threads`, and `prefork` (see prefork.py).

A pool takes jobs with `submit()` while `free()` > 0 and hands back `Outcome`s from `poll()`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .execute import Job, Outcome

Runner = Callable[[Job], Outcome]


class SoloPool:
    """Runs each job at once in the calling thread: no hand-off, the fastest for short tasks."""

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
        self._done.append(self.runner(job))

    def poll(self, timeout: float) -> list[Outcome]:
        done, self._done = self._done, []
        return done

    def stop(self, wait: bool = True) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"implementation": "solo", "max-concurrency": 1}


class ThreadPool:
    """Runs jobs on `limit` threads. Hard time limits cannot stop a thread (see ARCHITECTURE)."""

    name = "threads"

    def __init__(self, runner: Runner, limit: int) -> None:
        self.runner = runner
        self.limit = limit
        self._busy = 0
        self._lock = threading.Lock()
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.limit, thread_name_prefix="celeriac-worker")

    def free(self) -> int:
        return self.limit - self._busy

    def running(self) -> int:
        return self._busy

    def _run(self, job: Job) -> None:
        try:
            self._done.put(self.runner(job))
        except BaseException as exc:  # the runner never raises; keep the count right if it does
            from .. import states

            self._done.put(Outcome(job.tag, states.FAILURE, "ack", summary=repr(exc)))

    def submit(self, job: Job) -> None:
        assert self._executor is not None
        with self._lock:
            self._busy += 1
        self._executor.submit(self._run, job)

    def poll(self, timeout: float) -> list[Outcome]:
        out = []
        try:
            out.append(self._done.get(timeout=timeout) if timeout > 0 else self._done.get_nowait())
            while True:
                out.append(self._done.get_nowait())
        except queue.Empty:
            pass
        with self._lock:
            self._busy -= len(out)
        return out

    def stop(self, wait: bool = True) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=not wait)

    def info(self) -> dict[str, Any]:
        return {"implementation": "threads", "max-concurrency": self.limit}


def create_pool(name: str, runner: Runner, limit: int, **options: Any) -> Any:
    """The pool named by `-P`: prefork (default), threads, solo."""
    if name == "solo":
        return SoloPool(runner)
    if name in ("threads", "thread"):
        return ThreadPool(runner, limit)
    if name == "prefork":
        from .prefork import PreforkPool

        return PreforkPool(runner, limit, **options)
    raise ValueError(f"Unknown pool {name!r}: use prefork, threads or solo")
