"""`DjangoTask`: send tasks when the database transaction commits, or through the outbox.

The Django fixup makes this the app's task class (as Celery 5.4 does), so every
``@shared_task`` and ``@app.task`` in a Django project has these methods.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from django.db import transaction

from ...result import AsyncResult
from ...task import Task


class DjangoTask(Task):
    """A Task with Django transaction helpers.

    Attributes:
        outbox: Send through the transactional outbox when called inside
            ``transaction.atomic()``: the message is written to the outbox table in the same
            transaction and relayed to the broker after commit, so a rollback sends nothing
            and a crash after commit loses nothing. None: the `task_outbox` setting
            (``CELERY_TASK_OUTBOX`` in Django settings), default False.
    """

    outbox: bool | None = None

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """`delay()` when the current transaction commits (at once outside a transaction).

        Returns None: the task id is not known until the transaction commits. Use
        ``apply_async_on_commit(task_id=...)`` to choose it beforehand.
        """
        transaction.on_commit(functools.partial(self.delay, *args, **kwargs))

    def apply_async_on_commit(self, args: Sequence[Any] | None = None,
                              kwargs: dict[str, Any] | None = None, **options: Any) -> None:
        """`apply_async()` when the current transaction commits (at once outside a transaction)."""
        using = options.pop("using", None)
        transaction.on_commit(functools.partial(self.apply_async, args, kwargs, **options), using=using)

    def apply_async(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
                    task_id: str | None = None, link: Any = None, link_error: Any = None,
                    shadow: str | None = None, **options: Any) -> AsyncResult[Any]:
        """As `Task.apply_async`; with ``outbox=True`` (or the task's `outbox`) inside a
        transaction, the message goes through the outbox (``using=`` picks the database)."""
        outbox = options.pop("outbox", None)
        using = options.pop("using", None)
        if outbox is None:
            outbox = self.outbox if self.outbox is not None else bool(self.app.conf.get("task_outbox"))
        if outbox and not self.app.conf.task_always_eager:
            from . import outbox as outbox_module

            if outbox_module.in_transaction(using):
                for key, value in (("task_id", task_id), ("link", link),
                                   ("link_error", link_error), ("shadow", shadow)):
                    if value is not None:
                        options[key] = value
                return outbox_module.enqueue(self.app, self.name, args, kwargs, options,
                                             task=self, using=using)
        return super().apply_async(args, kwargs, task_id=task_id, link=link,
                                   link_error=link_error, shadow=shadow, **options)
