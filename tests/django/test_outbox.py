"""delay_on_commit / apply_async_on_commit, and the transactional outbox."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections, transaction

from celeriac import Celery, _state
from celeriac.contrib.django import outbox
from celeriac.contrib.django.models import OutboxMessage
from celeriac.contrib.django.task import DjangoTask


class Boom(Exception):
    pass


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("outboxtests", broker=f"memory://{uuid.uuid4().hex}", backend="memory://",
                 task_cls=DjangoTask, set_as_current=False)
    previous = _state._current_app
    _state.set_current_app(app)  # the management command and the admin use the current app
    yield app
    _state._current_app = previous
    app.close()


@pytest.fixture
def ping(app: Celery) -> Any:
    @app.task(name="tests.ping")
    def ping(x: int) -> int:
        return x

    return ping


def sent(app: Celery) -> list[dict[str, Any]]:
    """The headers of the messages waiting in the default queue (taken off it)."""
    subscription = app.broker.subscribe(["celery"], prefetch=1000)
    deliveries = subscription.get_many(1000, 0.05)
    subscription.ack_many(deliveries)
    subscription.close()
    return [d.envelope.headers for d in deliveries]


def test_delay_on_commit_waits_for_the_commit(app: Celery, ping: Any, sqlite_alias: str) -> None:
    with transaction.atomic():
        assert ping.delay_on_commit(1) is None
        assert sent(app) == []
    assert [h["task"] for h in sent(app)] == ["tests.ping"]
    with pytest.raises(Boom), transaction.atomic():
        ping.delay_on_commit(2)
        raise Boom
    assert sent(app) == []
    ping.delay_on_commit(3)  # outside a transaction: at once
    assert len(sent(app)) == 1


def test_apply_async_on_commit_on_another_database(app: Celery, ping: Any, alias: str) -> None:
    with transaction.atomic(using=alias):
        ping.apply_async_on_commit((1,), priority=3, using=alias)
        assert sent(app) == []
    assert [h["task"] for h in sent(app)] == ["tests.ping"]
    with pytest.raises(Boom), transaction.atomic(using=alias):
        ping.apply_async_on_commit((2,), using=alias)
        raise Boom
    assert sent(app) == []


def test_outbox_row_is_written_in_the_transaction_and_relayed_after(app: Celery, ping: Any, alias: str) -> None:
    with transaction.atomic(using=alias):
        result = ping.apply_async((1,), outbox=True, task_id="fixed-id", queue="celery")
        assert result.id == "fixed-id"
        row = OutboxMessage.objects.using(alias).get()
        assert (row.task_id, row.task_name, row.queue) == ("fixed-id", "tests.ping", "celery")
        assert sent(app) == []
    headers = sent(app)
    assert [(h["id"], h["task"]) for h in headers] == [("fixed-id", "tests.ping")]
    assert not OutboxMessage.objects.using(alias).exists()


def test_a_rollback_sends_nothing(app: Celery, ping: Any, alias: str) -> None:
    with pytest.raises(Boom), transaction.atomic(using=alias):
        ping.apply_async((1,), outbox=True)
        raise Boom
    assert sent(app) == []
    assert not OutboxMessage.objects.using(alias).exists()


def test_the_setting_and_the_task_attribute_turn_the_outbox_on(app: Celery, alias: str) -> None:
    app.conf.task_outbox = True

    @app.task(name="tests.by_setting")
    def by_setting() -> None: ...

    @app.task(name="tests.opted_out", outbox=False)
    def opted_out() -> None: ...

    with transaction.atomic(using=alias):
        by_setting.delay()
        opted_out.delay()  # straight to the broker
        assert [h["task"] for h in sent(app)] == ["tests.opted_out"]
        assert OutboxMessage.objects.using(alias).count() == 1
    assert [h["task"] for h in sent(app)] == ["tests.by_setting"]


def test_outside_a_transaction_the_outbox_is_skipped(app: Celery, ping: Any, alias: str) -> None:
    ping.apply_async((1,), outbox=True)
    assert len(sent(app)) == 1
    assert not OutboxMessage.objects.using(alias).exists()


def test_rows_left_by_a_crash_are_relayed_later(app: Celery, ping: Any, alias: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(app.broker, "publish_many", broker_down)
    with transaction.atomic(using=alias):
        first = ping.apply_async((1,), outbox=True)
        second = ping.apply_async((2,), countdown=60, outbox=True)
    assert OutboxMessage.objects.using(alias).count() == 2  # committed, not relayed
    monkeypatch.undo()
    assert outbox.relay(app, older_than=3600, using=alias) == 0  # too fresh for the recovery relay
    assert outbox.relay(app, using=alias) == 2
    assert [h["id"] for h in sent(app)] == [first.id]
    delayed = app.broker._store.delayed
    assert [item.envelope.headers["id"] for _, _, _, item in delayed] == [second.id]  # eta kept
    assert not OutboxMessage.objects.using(alias).exists()


def test_management_command_relays_once(app: Celery, ping: Any, alias: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox, "_relay_after_commit", lambda *args: None)  # as if the process died
    with transaction.atomic(using=alias):
        ping.apply_async((1,), outbox=True)
    call_command("celeriac_outbox", "--once", "--older-than", "0", "--database", alias)
    assert len(sent(app)) == 1
    assert not OutboxMessage.objects.using(alias).exists()


def test_parallel_relays_send_each_row_once(app: Celery, ping: Any, alias: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    if alias == "default":
        pytest.skip("SQLite has a single writer: nothing runs in parallel")
    monkeypatch.setattr(outbox, "_relay_after_commit", lambda *args: None)
    with transaction.atomic(using=alias):
        ids = {ping.apply_async((i,), outbox=True).id for i in range(40)}
    counts: list[int] = []

    def run() -> None:
        try:
            counts.append(outbox.relay(app, limit=5, using=alias))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    headers = sent(app)
    assert sum(counts) == 40
    assert sorted(h["id"] for h in headers) == sorted(ids)
