"""Rate limits per task type, per worker, as Celery applies them.

`rate_limit='10/s'` lets one task of that type start every 0.1 s on this worker: Celery's
token bucket of capacity 1, taken when a job starts. A job that finds the slot taken waits in
its type's line, in order; only the first in line is on the consumer's timer, woken when the
slot frees. The slot is counted from when a job actually starts, so a late start never lets
the next one start sooner. Jobs are delayed, never dropped; other task types go on.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from typing import Any

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: Any) -> float:
    """Tasks per second of a rate limit: ``'10/s'``, ``'100/m'``, ``'1000/h'``, or a number
    (per second). None, 0 or ``''`` mean no limit (0.0).

    Raises:
        ValueError: Not a rate limit.
    """
    if value is None or value == "":
        return 0.0
    if isinstance(value, int | float):
        return max(float(value), 0.0)
    text = str(value).strip()
    count, _, unit = text.partition("/")
    try:
        amount = float(count)
    except ValueError:
        raise ValueError(f"Invalid rate limit {value!r}: use e.g. '10/s', '100/m' or '1000/h'") from None
    unit = (unit or "s").strip().lower()[:1]
    if unit not in _UNITS:
        raise ValueError(f"Invalid rate limit unit in {value!r}: use /s, /m or /h")
    return max(amount / _UNITS[unit], 0.0)


class RateLimits:
    """When jobs of each task type may start, and which wait for their slot.

    Args:
        tasks: The app's task registry (each task's current `rate_limit` is read).
        disabled: `worker_disable_rate_limits`.
        timers: The consumer's heap of (due, tag): the first in each line goes on it.
    """

    def __init__(self, tasks: Any, disabled: bool = False, timers: list[tuple[float, int]] | None = None) -> None:
        self.tasks = tasks
        self.disabled = disabled
        self.timers: list[tuple[float, int]] = [] if timers is None else timers
        self._rates: dict[str, float] = {}
        self._next: dict[str, float] = {}         # type -> when its next job may start
        self._lines: dict[str, deque[int]] = {}   # type -> tags of jobs waiting, in order
        self._woken: dict[str, int] = {}          # type -> the first in line, once on the timer

    def rate(self, name: str) -> float:
        """Tasks per second allowed for `name` (0.0: unlimited); cached until `reset`."""
        if self.disabled:
            return 0.0
        rate = self._rates.get(name)
        if rate is None:
            task = self.tasks.get(name)
            try:
                rate = parse_rate(getattr(task, "rate_limit", None))
            except ValueError:
                rate = 0.0
            self._rates[name] = rate
        return rate

    def start(self, name: str, tag: int, now: float | None = None) -> bool:
        """Whether job `tag` of type `name` may start now. If so it takes the slot (the next
        may start 1/rate later); if not it waits in its type's line, the first on the timer."""
        rate = self.rate(name)
        line = self._lines.get(name)
        if rate <= 0 and not line:
            return True
        if line is None:
            line = self._lines[name] = deque()
        if line and line[0] != tag:  # others of its type wait before it
            line.append(tag)
            return False
        now = time.time() if now is None else now
        if now < self._next.get(name, now):
            if not line:
                line.append(tag)
            self._woken.pop(name, None)  # the first in line: on the timer (again)
            self._wake(name)
            return False
        if rate > 0:
            self._next[name] = now + 1.0 / rate
        if line:
            self.leave(name, tag)  # the next in line: on the timer for the slot after this one
        return True

    def leave(self, name: str, tag: int) -> None:
        """Job `tag` leaves the head of `name`'s line (it starts, or it was revoked); the next
        goes on the timer."""
        line = self._lines.get(name)
        if line and line[0] == tag:
            line.popleft()
            self._woken.pop(name, None)
            self._wake(name)

    def _wake(self, name: str) -> None:
        """Put the first in `name`'s line on the timer for its slot, unless it is on it
        already: a tag is never on the timer twice, so it is never handed out twice."""
        line = self._lines.get(name)
        if line and self._woken.get(name) != line[0]:
            self._woken[name] = line[0]
            heapq.heappush(self.timers, (self._next.get(name, 0.0), line[0]))

    def waiting(self) -> set[int]:
        """Tags of the jobs waiting for their slot."""
        return {tag for line in list(self._lines.values()) for tag in list(line)}

    def clear_lines(self) -> None:
        """Forget the waiting jobs (given back to the broker)."""
        self._lines = {}
        self._woken = {}

    def reset(self, name: str | None = None) -> None:
        """Read `rate_limit` again (after `app.control.rate_limit`). Jobs in line keep their
        place; the first keeps its time on the timer."""
        if name is None:
            self._rates = {}
            self._next = {}
        else:
            self._rates.pop(name, None)
            self._next.pop(name, None)
