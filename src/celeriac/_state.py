"""Process-global state, kept in this one module: the current app and shared tasks."""

from __future__ import annotations

import contextvars
import os
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Celery

_current_app: Celery | None = None
_apps: weakref.WeakSet[Any] = weakref.WeakSet()
#: Functions decorated with @shared_task, with their options: added to every app.
shared_task_factories: list[Any] = []

#: This process's id, kept by a fork hook: what checks "was I forked?" on every send compare
#: with (os.getpid() is a system call).
pid = os.getpid()


def _forked() -> None:
    global pid
    pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class ContextLocal:
    """Like `threading.local`, and also separate per asyncio task (backed by a ContextVar).

    Values live in a dict that is copied on write, so a task never sees a value set by
    another task, nor changes its parent's. `task.request` and the current task use it, so
    they are right in threads and in `async def` tasks on one event loop alike.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_var", contextvars.ContextVar(f"celeriac_local_{id(self):x}"))

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_var").get(None)
        if values is None or name not in values:
            raise AttributeError(name)
        return values[name]

    def __setattr__(self, name: str, value: Any) -> None:
        var = object.__getattribute__(self, "_var")
        var.set({**(var.get(None) or {}), name: value})

    def get(self, name: str) -> Any:
        """The value of `name`, or None: `getattr(local, name, None)` without raising and
        catching an AttributeError when it is unset (a task's request and the current task
        are read this way a few times per task)."""
        values = object.__getattribute__(self, "_var").get(None)
        return values.get(name) if values else None


_local = ContextLocal()


def set_current_app(app: Celery) -> None:
    global _current_app
    _current_app = app
    _apps.add(app)


def get_current_app() -> Celery:
    """The app last created (or set as current); a default one when there is none."""
    global _current_app
    if _current_app is None:
        from .app import Celery

        _current_app = Celery("default")
    return _current_app


def all_apps() -> list[Celery]:
    return list(_apps)


def get_current_task() -> Any:
    """The task running in this thread, if any."""
    stack = _local.get("tasks")
    return stack[-1] if stack else None


def push_current_task(task: Any) -> None:
    stack = _local.get("tasks")
    if stack is None:
        stack = _local.tasks = []
    stack.append(task)


def pop_current_task() -> None:
    _local.get("tasks").pop()
