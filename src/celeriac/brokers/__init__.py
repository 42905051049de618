"""Brokers by URL scheme: the one place a URL string picks a class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Broker, Delivery, Envelope, Route, Subscription

__all__ = ["Broker", "Delivery", "Envelope", "Route", "Subscription", "broker_from_url"]


def broker_from_url(url: str, conf: Mapping[str, Any]) -> Broker:
    """Create the broker for a URL (`sqlite:///x.db`, `memory://`, `redis://...`, `amqp://...`)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.lower()
    if scheme == "sqlite":
        from .sqlite import SQLiteBroker

        return SQLiteBroker(url, conf)
    if scheme == "memory":
        from .memory import MemoryBroker

        return MemoryBroker(url, conf)
    if scheme in ("redis", "rediss", "redis+socket", "sentinel"):
        from .redis import RedisBroker

        return RedisBroker(url, conf)
    if scheme in ("amqp", "amqps", "pyamqp"):
        from .amqp import AMQPBroker

        return AMQPBroker(url, conf)
    from ..exceptions import ImproperlyConfigured
    from ..urls import mask_url

    raise ImproperlyConfigured(
        f"Unknown broker transport {scheme!r} in broker_url {mask_url(url)!r}: "
        "use sqlite://, memory://, redis://, rediss://, sentinel:// or amqp://"
    )
