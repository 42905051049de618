"""The Django app configuration of ``celeriac.contrib.django``."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CeleriacConfig(AppConfig):
    """Results, periodic tasks and the task outbox, under the app label ``celeriac``."""

    name = "celeriac.contrib.django"
    label = "celeriac"
    verbose_name = _("Celeriac")
    # The result tables are django-celery-results' tables, whose ids are plain integers.
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import signals  # noqa: F401 - connects the schedule change tracking
