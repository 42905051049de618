"""What a celeriac app needs in a Django project (Celery's "Django fixup").

The app calls `install` when ``DJANGO_SETTINGS_MODULE`` is set and Django is importable. Then:

- `DjangoTask` is the app's task class, unless one was given (``Celery(task_cls=...)``);
- ``django.setup()`` runs before the app imports task modules (``app.finalize()``), so
  ``autodiscover_tasks()`` can list INSTALLED_APPS and task modules can import models;
- a task starts and ends with ``django.db.close_old_connections()``, so a connection the
  database dropped, or one past ``CONN_MAX_AGE``, is not reused;
- a forked pool process drops the connections it inherited, without closing them on the
  server (that would cut the parent's connection too).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from ... import signals

if TYPE_CHECKING:
    from ...app import Celery

__all__ = ["ensure_setup", "install", "is_installed"]

_installed: weakref.WeakSet[Any] = weakref.WeakSet()
_inherited: list[Any] = []


def is_installed(app: Celery) -> bool:
    """Whether `install` ran for this app."""
    return app in _installed


def install(app: Celery, custom_task_cls: bool = False) -> None:
    """Prepare `app` for a Django project (see the module docstring).

    Args:
        app: The app, from its ``__init__`` (before shared tasks are bound to it).
        custom_task_cls: The user chose a task class: keep it.
    """
    if app in _installed:
        return
    _installed.add(app)
    if not custom_task_cls:
        from .task import DjangoTask

        app.task_cls = DjangoTask
    app.on_after_configure.connect(_setup_django, sender=app)
    signals.task_prerun.connect(_close_old_connections)
    signals.task_postrun.connect(_close_old_connections)
    signals.worker_process_init.connect(_drop_inherited_connections)


def ensure_setup() -> None:
    """Run ``django.setup()`` unless Django's app registry is already loaded."""
    from django.apps import apps

    if not apps.ready:
        import django

        django.setup()


def _setup_django(sender: Any = None, **kwargs: Any) -> None:
    ensure_setup()


def _close_old_connections(sender: Any = None, **kwargs: Any) -> None:
    task = kwargs.get("task") or sender
    request = getattr(task, "request", None)
    if getattr(request, "is_eager", False):
        return  # an eager task runs inside the caller's request and transaction
    from django.db import close_old_connections

    close_old_connections()


def _drop_inherited_connections(sender: Any = None, **kwargs: Any) -> None:
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            # Neither close nor garbage-collect the inherited client: either would send the
            # server a goodbye on the parent's socket. Keep it untouched until this process
            # exits; Django opens a fresh connection on next use.
            _inherited.append(conn.connection)
            conn.connection = None
