"""The Django fixup: task class, django.setup() before task imports, connection hygiene."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections

from celeriac import Celery, signals
from celeriac.contrib.django import fixup
from celeriac.contrib.django.task import DjangoTask
from celeriac.task import Task


@pytest.fixture
def disconnect_afterwards() -> Iterator[None]:
    yield
    # The receivers are process-wide: leave other tests' workers alone.
    signals.task_prerun.disconnect(fixup._close_old_connections)
    signals.task_postrun.disconnect(fixup._close_old_connections)
    signals.worker_process_init.disconnect(fixup._drop_inherited_connections)


def test_install_makes_djangotask_the_task_class(disconnect_afterwards: None) -> None:
    app = Celery("fx", broker="memory://", backend="memory://", set_as_current=False)
    fixup.install(app)
    fixup.install(app)  # once is enough
    assert fixup.is_installed(app) and app.task_cls is DjangoTask

    @app.task
    def hello() -> str:
        return "hi"

    assert isinstance(hello, DjangoTask) and hasattr(hello, "delay_on_commit")
    app.finalize()  # runs django.setup() (already done here: a no-op)

    class Mine(Task):
        pass

    custom = Celery("fx2", broker="memory://", backend="memory://", set_as_current=False, task_cls=Mine)
    fixup.install(custom, custom_task_cls=True)
    assert custom.task_cls is Mine


def test_connections_are_checked_around_each_task(disconnect_afterwards: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import django.db

    from celeriac.testing import start_worker

    calls: list[int] = []
    monkeypatch.setattr(django.db, "close_old_connections", lambda: calls.append(1))
    app = Celery("fx3", broker=f"memory://{uuid.uuid4().hex}", backend="memory://", set_as_current=False)
    fixup.install(app)

    @app.task
    def work() -> int:
        return 1

    with start_worker(app):
        assert work.delay().get(timeout=10) == 1
    assert len(calls) >= 2  # before and after the task
    calls.clear()
    assert work.apply().get() == 1  # eager: inside the caller's transaction, left alone
    assert calls == []


def test_a_forked_child_drops_inherited_connections_without_closing_them(sqlite_alias: str) -> None:
    conn = connections["default"]
    conn.ensure_connection()
    inherited: Any = conn.connection
    kept_before = len(fixup._inherited)
    fixup._drop_inherited_connections()
    assert conn.connection is None
    assert inherited in fixup._inherited
    inherited.execute("SELECT 1")  # still open: the parent's session was not ended
    with conn.cursor() as cursor:  # and Django connects afresh
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    for raw in fixup._inherited[kept_before:]:  # every initialized alias was dropped: close them
        raw.close()
    del fixup._inherited[kept_before:]
