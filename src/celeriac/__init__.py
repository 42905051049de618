"""celeriac: a fast, Celery-compatible distributed task queue."""

from __future__ import annotations

__version__ = "0.1.0"

from . import states  # noqa: E402
from ._state import get_current_app as _get_current_app  # noqa: E402
from .app import Celeriac, Celery  # noqa: E402
from .canvas import Signature, signature  # noqa: E402
from .entities import Broadcast, Exchange, Queue  # noqa: E402
from .result import AsyncResult, EagerResult, GroupResult, ResultSet  # noqa: E402
from .task import Task, shared_task  # noqa: E402


def __getattr__(name: str) -> object:
    # `from celeriac import current_app` gives the app current at import time, as in Celery.
    if name == "current_app":
        return _get_current_app()
    raise AttributeError(f"module 'celeriac' has no attribute {name!r}")


__all__ = [
    "AsyncResult", "Broadcast", "Celeriac", "Celery", "EagerResult", "Exchange", "GroupResult", "Queue",
    "ResultSet", "Signature", "Task", "__version__", "shared_task", "signature", "states",
]
