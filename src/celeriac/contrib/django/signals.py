"""Mark the schedule as changed whenever a periodic task or schedule row is saved or deleted.

Beat reads `PeriodicTasksChanged` to know when to reload. ``QuerySet.update()`` sends no
signals: after a bulk update, call ``PeriodicTasksChanged.touch()``.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from .models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasksChanged


def _schedule_changed(sender: Any, instance: Any, using: str | None = None, **kwargs: Any) -> None:
    PeriodicTasksChanged.touch(using=using)


for _model in (PeriodicTask, IntervalSchedule, CrontabSchedule):
    post_save.connect(_schedule_changed, sender=_model, dispatch_uid=f"celeriac-save-{_model.__name__}")
    post_delete.connect(_schedule_changed, sender=_model, dispatch_uid=f"celeriac-delete-{_model.__name__}")
