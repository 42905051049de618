"""Rate limits per task type, per worker, as Celery applies them.

`rate_limit='10/s'` lets one task of that type start every 0.1 s on this worker (Celery's
token bucket of capacity 1). The consumer asks `RateLimits.reserve(name)` for the time a
job may start and holds it on its timer until then: jobs are delayed, never dropped, and
other task types are not held up.
"""

from __future__ import annotations

import time
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
    """When the next job of each task type may start.

    Args:
        tasks: The app's task registry (each task's current `rate_limit` is read).
        disabled: `worker_disable_rate_limits`.
    """

    def __init__(self, tasks: Any, disabled: bool = False) -> None:
        self.tasks = tasks
        self.disabled = disabled
        self._rates: dict[str, float] = {}
        self._next: dict[str, float] = {}

    def rate(self, name: str) -> float:
        """Tasks per second allowed for `name` (0.0: unlimited); cached until `reset`."""
        rate = self._rates.get(name)
        if rate is None:
            task = self.tasks.get(name)
            try:
                rate = parse_rate(getattr(task, "rate_limit", None))
            except ValueError:
                rate = 0.0
            self._rates[name] = rate
        return rate

    def reserve(self, name: str, now: float | None = None) -> float:
        """The time (epoch seconds) a job of `name` may start; books that slot."""
        now = time.time() if now is None else now
        if self.disabled:
            return now
        rate = self.rate(name)
        if rate <= 0:
            return now
        start = max(now, self._next.get(name, now))
        self._next[name] = start + 1.0 / rate
        return start

    def reset(self, name: str | None = None) -> None:
        """Read `rate_limit` again (after `app.control.rate_limit`)."""
        if name is None:
            self._rates = {}
            self._next = {}
        else:
            self._rates.pop(name, None)
            self._next.pop(name, None)
