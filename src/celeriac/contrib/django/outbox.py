"""The transactional outbox: task messages that commit or roll back with the sender's data.

Inside ``transaction.atomic()``, `enqueue` builds the task message as `apply_async` would and
writes it to ``celeriac_outboxmessage`` in the same transaction; an ``on_commit`` hook then
relays it to the broker and deletes the row. A rollback removes the row and the hook, so
nothing is sent. If the process dies between the commit and the relay, the row stays: `relay`
(run by ``manage.py celeriac_outbox``, or from a periodic task) sends the rows older than a
few seconds.

Delivery is at least once: a relay that dies after publishing but before deleting its rows
sends them again next time, with the same task ids. Rows are locked while relayed
(``SELECT ... FOR UPDATE SKIP LOCKED`` where the database has it), so several relays can run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import OperationalError, router, transaction
from django.utils import timezone

from ...brokers.base import Envelope, Route
from ...producer import _declare_once, prepare_task_message, publish_retry
from ...result import AsyncResult

if TYPE_CHECKING:
    from ...app import Celery
    from ...task import Task

__all__ = ["enqueue", "in_transaction", "relay", "relay_forever"]

logger = logging.getLogger("celeriac.contrib.django.outbox")


def _model() -> Any:
    from .models import OutboxMessage

    return OutboxMessage


def _database(using: str | None) -> str:
    return using or router.db_for_write(_model())


def in_transaction(using: str | None = None) -> bool:
    """Whether the outbox's database connection is inside ``transaction.atomic()``."""
    return transaction.get_connection(_database(using)).in_atomic_block


def enqueue(app: Celery, name: str, args: Sequence[Any] | None = None,
            kwargs: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
            task: Task | None = None, using: str | None = None) -> AsyncResult[Any]:
    """Write a task message to the outbox in the current transaction; relay it on commit.

    Args:
        app: The app whose router, serializer and broker apply.
        name: The task name.
        args: Positional arguments.
        kwargs: Keyword arguments.
        options: `apply_async` options (countdown, eta, queue, priority, task_id, ...).
        task: The task, for its default options.
        using: The database alias (default: the router's choice for the outbox model).

    Returns:
        The task's AsyncResult; the id is fixed now, the message leaves after commit.
    """
    db = _database(using)
    envelope, route, not_before, task_id = prepare_task_message(
        app, name, args, kwargs, dict(options or {}), task)
    row = _model().objects.using(db).create(
        task_id=task_id, task_name=name, body=envelope.body, headers=envelope.headers,
        properties=envelope.properties, content_type=envelope.content_type,
        content_encoding=envelope.content_encoding, queue=route.queue, exchange=route.exchange,
        routing_key=route.routing_key, exchange_type=route.exchange_type, not_before=not_before,
    )
    transaction.on_commit(lambda: _relay_after_commit(app, row.pk, db), using=db)
    return AsyncResult(task_id, app=app, task_name=name)


def _relay_after_commit(app: Celery, pk: int, db: str) -> None:
    try:
        relay(app, ids=[pk], using=db)
    except Exception:
        # The row is committed and stays: the next relay() sends it.
        logger.exception("Could not relay outbox message %s; it will be retried", pk)


def relay(app: Celery, ids: Sequence[int] | None = None, older_than: float = 0.0,
          limit: int = 500, using: str | None = None) -> int:
    """Publish outbox rows and delete them, in one transaction per batch.

    Args:
        app: The app whose broker receives the messages.
        ids: Only these rows (the on-commit path); None: every row old enough.
        older_than: Only rows created at least this many seconds ago (so a recovery relay
            leaves fresh rows to their own on-commit hook).
        limit: Rows per batch.
        using: The database alias.

    Returns:
        How many messages were published.
    """
    db = _database(using)
    sent = 0
    while True:
        count = _relay_batch(app, db, ids, older_than, limit)
        sent += count
        if count == 0 or ids is not None or count < limit:
            return sent


def _relay_batch(app: Celery, db: str, ids: Sequence[int] | None, older_than: float,
                 limit: int) -> int:
    model = _model()
    for attempt in range(5):
        try:
            with transaction.atomic(using=db):
                rows = model.objects.using(db).select_for_update(skip_locked=True).order_by("pk")
                if ids is not None:
                    rows = rows.filter(pk__in=list(ids))
                if older_than:
                    rows = rows.filter(created__lte=timezone.now() - timedelta(seconds=older_than))
                batch = list(rows[:limit])
                if batch:
                    # Delete, then publish: a failed publish rolls the delete back, and a
                    # deadlock on the delete (MySQL) happens before anything was sent.
                    model.objects.using(db).filter(pk__in=[row.pk for row in batch]).delete()
                    _publish(app, batch)
            return len(batch)
        except OperationalError:  # a deadlock or serialization failure: nothing was sent
            if attempt == 4:
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


def _publish(app: Celery, rows: Sequence[Any]) -> None:
    broker = app.broker
    retry = publish_retry(app)  # a broker that is down fails the batch soon: its delete rolls back
    items = []
    for row in rows:
        _declare_once(app, broker, row.queue, retry)
        envelope = Envelope(body=bytes(row.body), headers=row.headers, properties=row.properties,
                            content_type=row.content_type, content_encoding=row.content_encoding)
        route = Route(queue=row.queue, exchange=row.exchange, routing_key=row.routing_key,
                      exchange_type=row.exchange_type)
        items.append((envelope, route, row.not_before))
    broker.publish_many(items, retry=retry)


def relay_forever(app: Celery, interval: float = 5.0, older_than: float = 10.0,
                  using: str | None = None, stop: Any = None) -> None:
    """Relay leftover rows every `interval` seconds until `stop()` returns true."""
    while stop is None or not stop():
        try:
            count = relay(app, older_than=older_than, using=using)
            if count:
                logger.info("Relayed %d outbox message(s) left behind", count)
        except Exception:
            logger.exception("Outbox relay failed; retrying in %.0fs", interval)
        time.sleep(interval)
