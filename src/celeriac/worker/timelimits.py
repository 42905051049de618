"""Time limits inside the process or thread that runs a task.

`soft_time_limit` raises `SoftTimeLimitExceeded` in the task, which may catch it and clean
up; `time_limit` (hard) ends the task. How each is delivered depends on where the task runs:

- in a process's main thread (prefork children, the solo pool): SIGALRM, raised at once
  even in a blocking call such as `time.sleep`. In prefork children the hard limit is left
  to the parent, which kills and replaces the child (`prefork.py`); with solo it is raised
  as `TimeLimitExceeded`, the most a single process can do.
- in other threads (threads pool, sync tasks of the asyncio pool): a timer thread raises the
  exception asynchronously in the task's thread (`PyThreadState_SetAsyncExc`). Python
  delivers it at the task's next bytecode, so a task blocked in one long C call (a socket
  read, `time.sleep`) sees it only when that call returns, and a task can catch even the
  hard limit: threads cannot be killed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

#: Set in prefork children: the parent enforces hard limits by killing the child.
hard_limit_by_parent = False


@contextmanager
def time_limits(soft: float | None, hard: float | None) -> Iterator[None]:
    """Enforce the limits (seconds, None for none) on the code inside the block."""
    if hard_limit_by_parent:
        hard = None
    if not soft and not hard:
        yield
        return
    if threading.current_thread() is threading.main_thread():
        with _alarm(soft, hard):
            yield
    else:
        with _async_raise(soft, hard):
            yield


def _schedule(soft: float | None, hard: float | None) -> list[tuple[float, BaseException]]:
    steps: list[tuple[float, BaseException]] = []
    if soft and (not hard or soft < hard):
        steps.append((soft, SoftTimeLimitExceeded(f"SoftTimeLimitExceeded({soft})")))
    if hard:
        steps.append((hard, TimeLimitExceeded(hard)))
    return steps


@contextmanager
def _alarm(soft: float | None, hard: float | None) -> Iterator[None]:
    steps = _schedule(soft, hard)

    def on_alarm(signum: int, frame: Any) -> None:
        at, exc = steps.pop(0)
        if steps:  # re-arm for the hard limit before raising the soft one
            signal.setitimer(signal.ITIMER_REAL, steps[0][0] - at)
        raise exc

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, steps[0][0])
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _set_async_exc(thread_id: int, exc: Any) -> None:
    import ctypes  # here, on the rare limit that fires: not a cost of every worker

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


class _ThreadTimers:
    """Timers that raise an exception class in one thread, until disarmed."""

    def __init__(self, steps: list[tuple[float, BaseException]]) -> None:
        self.thread_id = threading.get_ident()
        self.lock = threading.Lock()
        self.armed = True
        self.timers = [threading.Timer(at, self._fire, (type(exc),)) for at, exc in steps]
        for timer in self.timers:
            timer.daemon = True
            timer.start()

    def _fire(self, exc_type: type[BaseException]) -> None:
        with self.lock:
            if self.armed:
                _set_async_exc(self.thread_id, exc_type)

    def disarm(self) -> None:
        with self.lock:
            self.armed = False
            for timer in self.timers:
                timer.cancel()
            _set_async_exc(self.thread_id, None)  # drop one raised but not yet delivered


@contextmanager
def _async_raise(soft: float | None, hard: float | None) -> Iterator[None]:
    timers = _ThreadTimers(_schedule(soft, hard))
    try:
        yield
    finally:
        while True:  # a limit delivered while disarming must not escape into worker code
            try:
                timers.disarm()
                break
            except (SoftTimeLimitExceeded, TimeLimitExceeded):
                continue  # the task had already returned: its outcome stands
