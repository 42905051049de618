"""Result backends by URL scheme."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Backend

if TYPE_CHECKING:
    from ..app import Celery

__all__ = ["Backend", "backend_from_url"]


def backend_from_url(app: Celery, url: str | None) -> Any:
    """Create the backend for `result_backend` (None: results are disabled, as in Celery)."""
    if not url:
        from .disabled import DisabledBackend

        return DisabledBackend(app)
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.lower()
    if scheme.startswith("db+") or scheme == "database":
        # Celery's SQLAlchemy backend and table layout (db+postgresql, db+mysql, db+sqlite, ...)
        from .database import DatabaseBackend

        return DatabaseBackend(app, None if scheme == "database" else url)
    if scheme in ("cache+memcached", "cache+memcache", "cache+pymemcache", "cache+pylibmc"):
        from .cache import CacheBackend

        return CacheBackend(app, url)
    if scheme in ("django-db", "django_db"):
        from ..contrib.django.backend import DatabaseBackend as DjangoDatabaseBackend

        return DjangoDatabaseBackend(app, url)
    if scheme == "sqlite":
        from .sqlite import SQLiteBackend

        return SQLiteBackend(app, url)
    if scheme in ("memory", "cache+memory"):
        from .memory import MemoryBackend

        return MemoryBackend(app, url)
    if scheme in ("redis", "rediss", "redis+socket", "sentinel"):
        from .redis import RedisBackend

        return RedisBackend(app, url)
    if scheme in ("rpc", "amqp"):
        from .rpc import RPCBackend

        return RPCBackend(app, url)
    from ..exceptions import ImproperlyConfigured
    from ..urls import mask_url

    raise ImproperlyConfigured(
        f"Unknown result backend {scheme!r} in result_backend {mask_url(url)!r}: "
        "use sqlite://, db+postgresql://, db+mysql://, db+sqlite://, cache+memcached://, "
        "django-db, memory://, redis:// or rpc://"
    )
