"""Send the result, schedule and outbox models to the database a test picked."""

from __future__ import annotations

from typing import Any

#: The alias the celeriac (and django-celery-results) models use now.
CURRENT = "default"

_ROUTED = {"celeriac", "django_celery_results"}


class AliasRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return CURRENT if model._meta.app_label in _ROUTED else None

    db_for_write = db_for_read

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        # django-celery-results' tables are ours: it must not create them a second time.
        return app_label != "django_celery_results"
