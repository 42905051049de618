"""`--autoscale=max,min`: grow the pool with load, shrink it when idle (as Celery).

The pool starts with `min` processes. The wanted size is the number of tasks the worker
holds (running and waiting), kept within [min, max]: the pool grows at once, and shrinks
only after `keepalive` seconds (env `AUTOSCALE_KEEPALIVE`, 30 by default, as Celery) with
no growth and no new task.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

logger = logging.getLogger("celeriac.worker")

AUTOSCALE_KEEPALIVE = float(os.environ.get("AUTOSCALE_KEEPALIVE", 30))


def parse_autoscale(value: str) -> tuple[int, int]:
    """``'10,3'`` -> (10, 3); ``'10'`` -> (10, 0)."""
    parts = [int(part) for part in value.split(",") if part.strip()]
    if not parts:
        raise ValueError(f"--autoscale needs max[,min], got {value!r}")
    high = parts[0]
    low = parts[1] if len(parts) > 1 else 0
    return max(high, low), min(high, low)


class Autoscaler:
    """Resizes a pool from the consumer loop; see the module docstring."""

    def __init__(self, pool: Any, max_concurrency: int, min_concurrency: int = 0,
                 keepalive: float = AUTOSCALE_KEEPALIVE) -> None:
        self.pool = pool
        self.max_concurrency = max_concurrency
        self.min_concurrency = min_concurrency
        self.keepalive = keepalive
        self._last_active = time.monotonic()
        self._next_check = 0.0

    def note_received(self) -> None:
        self._last_active = time.monotonic()

    def maybe_scale(self, held: int) -> bool:
        """Resize for `held` tasks (running plus waiting); True when the pool grew."""
        size = self.pool.limit
        wanted = min(held, self.max_concurrency)
        now = time.monotonic()
        if wanted > size:
            logger.info("Scaling up %s processes.", wanted - size)
            self.pool.grow(wanted - size)
            self._last_active = now
            return True
        if now < self._next_check:
            return False
        self._next_check = now + 0.2
        wanted = max(held, self.min_concurrency, 1)
        if wanted < size and now - self._last_active > self.keepalive:
            try:
                self.pool.shrink(size - wanted)
                logger.info("Scaling down %s processes.", size - wanted)
            except ValueError:
                logger.debug("Autoscaler won't scale down: all processes busy.")
            self._last_active = now
        return False

    def update(self, max_concurrency: int | None = None, min_concurrency: int | None = None) -> tuple[int, int]:
        """New bounds (the `autoscale` control command); returns (max, min)."""
        if max_concurrency is not None:
            if max_concurrency < self.pool.limit:
                self.pool.shrink(self.pool.limit - max_concurrency)
            self.max_concurrency = max_concurrency
        if min_concurrency is not None:
            if min_concurrency > self.pool.limit:
                self.pool.grow(min_concurrency - self.pool.limit)
            self.min_concurrency = min_concurrency
        return self.max_concurrency, self.min_concurrency

    def info(self) -> dict[str, Any]:
        return {"max": self.max_concurrency, "min": self.min_concurrency, "current": self.pool.limit}
