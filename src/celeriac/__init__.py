"""celeriac: a fast, Celery-compatible distributed task queue."""

from __future__ import annotations

from . import states
from ._state import get_current_app as _get_current_app
from .app import Celeriac, Celery
from .canvas import (
    Signature,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    signature,
    xmap,
    xstarmap,
)
from .canvas import signature as subtask
from .entities import Broadcast, Exchange, Queue
from .result import AsyncResult, EagerResult, GroupResult, ResultSet
from .task import Task, shared_task
from .version import __version__


def __getattr__(name: str) -> object:
    # `from celeriac import current_app` gives the app current at import time, as in Celery.
    if name == "current_app":
        return _get_current_app()
    raise AttributeError(f"module 'celeriac' has no attribute {name!r}")


__all__ = [
    "AsyncResult", "Broadcast", "Celeriac", "Celery", "EagerResult", "Exchange", "GroupResult",
    "Queue", "ResultSet", "Signature", "Task", "__version__", "chain", "chord", "chunks", "group",
    "maybe_signature", "shared_task", "signature", "states", "subtask", "xmap", "xstarmap",
]
