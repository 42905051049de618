"""No result backend: results are not stored, and asking for one says how to get them."""

from __future__ import annotations

from typing import Any

from .base import Backend

_MESSAGE = (
    "No result backend is configured. Set result_backend (for example "
    "Celery('proj', broker=..., backend='redis://localhost/0')) to keep task results."
)


class DisabledBackend(Backend):
    def __init__(self, app: Any, url: str | None = None) -> None:
        super().__init__(app, url)

    def _get(self, key: str) -> bytes | None:
        raise NotImplementedError(_MESSAGE)

    def _set(self, key: str, value: bytes, ttl: int | None) -> None:
        pass  # a worker without a backend just does not store results

    def _delete(self, key: str) -> None:
        pass

    def store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                     request: Any = None, children: list | None = None) -> dict[str, Any]:
        return {}

    def store_many(self, metas: Any) -> None:
        pass

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict[str, Any]:
        raise NotImplementedError(_MESSAGE)
