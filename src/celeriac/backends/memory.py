"""Results in this process's memory (tests). Waiters wake as soon as a result is stored."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from .. import states
from ..exceptions import TimeoutError
from .base import TASK_KEYPREFIX, Backend

_stores: dict[str, tuple[threading.Condition, dict[str, tuple[bytes, float | None]]]] = {}
_lock = threading.Lock()


class MemoryBackend(Backend):
    supports_native_join = True

    def __init__(self, app: Any, url: str | None = "memory://") -> None:
        super().__init__(app, url)
        with _lock:
            self._cond, self._data = _stores.setdefault(self.url, (threading.Condition(), {}))

    def _get(self, key: str) -> bytes | None:
        with self._cond:
            item = self._data.get(key)
            if item is None:
                return None
            value, expires_at = item
            if expires_at is not None and expires_at < time.time():
                del self._data[key]
                return None
            return value

    def _set(self, key: str, value: bytes, ttl: int | None) -> None:
        with self._cond:
            self._data[key] = (value, time.time() + ttl if ttl else None)
            self._cond.notify_all()

    def _delete(self, key: str) -> None:
        with self._cond:
            self._data.pop(key, None)

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        key = TASK_KEYPREFIX + task_id
        with self._cond:
            while True:
                data = self._get(key)
                if data is not None:
                    meta = self.decode(data)
                    if meta["status"] in states.READY_STATES:
                        return meta
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"The operation timed out waiting for task {task_id}.")
                self._cond.wait(remaining)

    def _mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._get(key) for key in keys]
