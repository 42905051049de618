"""`-P asyncio`: `async def` tasks run natively on one event loop; sync tasks run in threads.

Beyond Celery (celery#3884, #6552): an `async def` task is awaited as an asyncio task on a
loop in its own thread, so thousands of I/O-bound tasks need no thread each. `-c` limits how
many tasks (async and sync together) run at once. Sync tasks of the same worker run on a
thread pool of that size, as in the `threads` pool.

`self.request` is per asyncio task, not only per thread: it lives in a `ContextLocal`
(celeriac._state), a thread-local that is also separate per asyncio task.

Revoke with terminate cancels an async task; time limits cancel it too, and the task sees
`asyncio.CancelledError` (cancellation is how asyncio interrupts a coroutine): the result
stored is `SoftTimeLimitExceeded` or `TimeLimitExceeded`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import threading
from typing import Any

from .. import states
from ..exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded
from .execute import ACK, Job, Outcome, execute_job_async
from .pools import Runner, ThreadPool

logger = logging.getLogger("celeriac.worker")


def is_async_task(task: Any) -> bool:
    run = getattr(task, "run", None)
    return inspect.iscoroutinefunction(run) or inspect.iscoroutinefunction(getattr(task, "__wrapped__", None))


class AsyncioPool:
    """Runs `async def` tasks on an event loop thread and sync tasks on threads."""

    name = "asyncio"

    def __init__(self, runner: Runner, limit: int, *, app: Any = None, hostname: str = "",
                 on_lost: Any = None, **options: Any) -> None:
        self.runner = runner
        self.app = app
        self.hostname = hostname
        self.on_lost = on_lost
        # Sync tasks run on its threads; it also counts the async ones (`reserve`), whose
        # outcomes go to its queue: one count of busy slots for both.
        self._threads = ThreadPool(runner, limit)
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._run_loop, name="celeriac-asyncio", daemon=True)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._why: dict[int, BaseException] = {}

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def start(self) -> None:
        self._threads.start()
        self._loop_thread.start()

    @property
    def limit(self) -> int:
        return self._threads.limit

    def free(self) -> int:
        return self._threads.free()

    def running(self) -> int:
        return self._threads.running()

    def submit(self, job: Job) -> None:
        task = self.app.tasks.get(job.task_name) if self.app is not None else None
        if task is not None and is_async_task(task):
            job.worker_pid = os.getpid()
            self._threads.reserve()
            # A fresh context: the task's `self.request` starts empty, whoever submits.
            self._loop.call_soon_threadsafe(self._start, job, context=contextvars.Context())
        else:
            self._threads.submit(job)

    def _start(self, job: Job) -> None:
        self._tasks[job.tag] = self._loop.create_task(self._run(job), context=contextvars.Context())

    async def _run(self, job: Job) -> None:
        hard, soft = job.time_limit
        timers = []
        if soft and (not hard or soft < hard):
            timers.append(self._loop.call_later(soft, self._cancel, job.tag,
                                                SoftTimeLimitExceeded(f"SoftTimeLimitExceeded({soft})")))
        if hard:
            timers.append(self._loop.call_later(hard, self._cancel, job.tag, TimeLimitExceeded(hard)))
        try:
            outcome = await execute_job_async(self.app, job, self.hostname)
        except asyncio.CancelledError:
            outcome = self._cancelled(job)
        except BaseException as exc:  # execute_job_async reports errors; keep the count right
            outcome = Outcome(job.tag, states.FAILURE, ACK, summary=repr(exc))
        finally:
            for timer in timers:
                timer.cancel()
            self._tasks.pop(job.tag, None)
        self._threads.done.put(outcome)

    def _cancel(self, tag: int, why: BaseException) -> None:
        task = self._tasks.get(tag)
        if task is not None and not task.done():
            self._why[tag] = why
            task.cancel()

    def _cancelled(self, job: Job) -> Outcome:
        why = self._why.pop(job.tag, None) or TaskRevokedError("terminated")
        if isinstance(why, SoftTimeLimitExceeded | TimeLimitExceeded):
            logger.error("%s time limit exceeded for %s[%s]",
                         "Soft" if isinstance(why, SoftTimeLimitExceeded) else "Hard",
                         job.task_name, job.task_id)
        if self.on_lost is not None:
            return self.on_lost(job, why)  # type: ignore[no-any-return]
        return Outcome(job.tag, states.FAILURE, ACK, summary=repr(why))

    def poll(self, timeout: float) -> list[Outcome]:
        return self._threads.poll(timeout)

    def terminate_job(self, tag: int, signum: int) -> bool:
        """Cancel a running `async def` task (sync ones, on threads, cannot be stopped)."""
        if tag not in self._tasks:
            return False
        self._loop.call_soon_threadsafe(self._cancel, tag, TaskRevokedError("terminated"))
        return True

    def grow(self, n: int = 1) -> None:
        self._threads.grow(n)

    def shrink(self, n: int = 1) -> None:
        self._threads.shrink(n)

    def stop(self, wait: bool = True) -> None:
        if not wait:
            for tag in list(self._tasks):
                self._loop.call_soon_threadsafe(self._cancel, tag, TaskRevokedError("worker stopped"))
        self._threads.stop(wait)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(5)

    def info(self) -> dict[str, Any]:
        return {"implementation": "asyncio", "max-concurrency": self.limit, "processes": [os.getpid()]}
