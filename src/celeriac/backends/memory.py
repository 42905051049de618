"""Results in this process's memory (tests). Waiters wake as soon as a result is stored."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from .. import states
from ..exceptions import TimeoutError
from .base import GROUP_KEYPREFIX, TASK_KEYPREFIX, Backend, exception_to_dict

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

    def chord_init(self, group_id: str, size: int) -> None:
        with self._cond:
            chord = {"size": size, "parts": {}, "done": False}
            self._data[GROUP_KEYPREFIX + group_id + ".chord"] = (chord, None)  # type: ignore[assignment]

    def chord_part_done(self, group_id: str, task_id: str, group_index: int | None, state: str,
                        result: Any) -> list[tuple[str, str, Any]] | None:
        if isinstance(result, BaseException):
            result = exception_to_dict(result)
        entry = self.encode([task_id, state, result])  # stored as a store would: JSON round trip
        with self._cond:
            item = self._data.get(GROUP_KEYPREFIX + group_id + ".chord")
            chord: Any = None if item is None else item[0]
            if chord is None or chord["done"]:
                return None
            chord["parts"].setdefault(f"{task_id}:{group_index}", (group_index, entry))
            if len(chord["parts"]) < chord["size"]:
                return None
            chord["done"] = True
            parts = sorted(chord["parts"].values(),
                           key=lambda part: (part[0] is None, part[0] or 0))
            chord["parts"] = {}
        return [tuple(self.decode(data)) for _, data in parts]  # type: ignore[misc]
